"""Flask app factory for the admin API and dashboard.

Reads are open on the bound address; every mutation needs `Authorization: Bearer <token>`
when `[admin] token` is set. A mutation sent to any node takes effect cluster-wide because it
is written to ZooKeeper, where the leader watches it.
"""

from __future__ import annotations

import hmac
from importlib import resources
from typing import Any

from flask import Flask, Response, jsonify, request
from kazoo.exceptions import KazooException
from kazoo.handlers.threading import KazooTimeoutError
from werkzeug.exceptions import HTTPException

from ..overrides import OverrideError
from .api import register_api
from .openapi import openapi_document

MUTATING = {"POST", "PUT", "PATCH", "DELETE"}


def create_app(node: Any, *, token: str | None = None) -> Flask:
    app = Flask("xconsumer.admin")
    app.json.sort_keys = False  # type: ignore[attr-defined]
    secret = token if token is not None else getattr(node.config.admin, "token", None)

    def error(status: int, code: str, message: str) -> Any:
        return jsonify(error=code, message=message), status

    @app.before_request
    def authorize() -> Any:
        if request.method in MUTATING and secret:
            given = request.headers.get("Authorization", "")
            expected = f"Bearer {secret}"
            if not hmac.compare_digest(given.encode(), expected.encode()):
                resp = error(401, "unauthorized",
                             "this endpoint changes the cluster: send Authorization: Bearer "
                             "<token> ([admin] token)")
                resp[0].headers["WWW-Authenticate"] = 'Bearer realm="xconsumer"'
                return resp
        return None

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        return error(exc.code or 500, (exc.name or "error").lower().replace(" ", "_"),
                     exc.description or "")

    @app.errorhandler(OverrideError)
    def override_error(exc: OverrideError) -> Any:
        codes = {400: "bad_request", 404: "not_found", 409: "conflict"}
        return error(exc.status, codes.get(exc.status, "error"), str(exc))

    @app.errorhandler(KazooException)
    @app.errorhandler(KazooTimeoutError)
    def zk_error(exc: Exception) -> Any:
        return error(503, "zookeeper_unavailable",
                     f"ZooKeeper did not answer: {type(exc).__name__}")

    @app.get("/healthz")
    def healthz() -> Any:
        view = node.node_view()
        ok = bool(view.get("connected")) and view.get("state") == "started"
        return jsonify(status="ok" if ok else "degraded", node=view.get("id"),
                       leader=view.get("leader")), (200 if ok else 503)

    @app.get("/metrics")
    def metrics() -> Response:
        node.refresh_metrics()
        return Response(node.metrics.render(), mimetype=node.metrics.content_type)

    @app.get("/openapi.json")
    def openapi() -> Any:
        return jsonify(openapi_document(app))

    @app.get("/")
    def dashboard() -> Response:
        html = resources.files("xconsumer.admin").joinpath("dashboard.html").read_text()
        return Response(html, mimetype="text/html")

    register_api(app, node)
    return app
