"""Flask app factory for the admin API and dashboard.

Reads are open on the bound address; every mutation needs `Authorization: Bearer <token>`
when `[admin] token` is set. A mutation sent to any node takes effect cluster-wide because it
is written to ZooKeeper, where the leader watches it.

Whatever the token setting, every request first passes the Host / Origin / Sec-Fetch-Site
rules of `guard` (403), and every mutation must be `Content-Type: application/json` (415):
a browser can only send that type cross-site after a CORS preflight, which we never grant,
so a hostile web page cannot change the cluster even when no token is configured.
"""

from __future__ import annotations

import hmac
import traceback
from importlib import resources
from typing import Any

from flask import Flask, Response, jsonify, request
from kazoo.exceptions import KazooException
from kazoo.handlers.threading import KazooTimeoutError
from loguru import logger
from werkzeug.exceptions import HTTPException

from ..overrides import OverrideError
from .api import MAX_BODY, register_api
from .guard import HostPolicy, own_host_names, refusal
from .openapi import ERROR_CODES, openapi_document

MUTATING = {"POST", "PUT", "PATCH", "DELETE"}
# Answered whatever the Host says (container health checks, load balancers).
ANY_HOST_PATHS = frozenset({"/healthz"})

def one_line(text: str, limit: int = 300) -> str:
    """Error messages are one line: werkzeug's descriptions wrap, and values may hold \n."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def create_app(node: Any, *, token: str | None = None,
               allowed_hosts: tuple[str, ...] | None = None) -> Flask:
    app = Flask("xconsumer.admin")
    app.json.sort_keys = False  # type: ignore[attr-defined]
    # werkzeug answers 413 itself for a longer body, before anything parses it.
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    admin = getattr(node.config, "admin", None)
    secret = token if token is not None else getattr(admin, "token", None)
    if allowed_hosts is None:
        allowed_hosts = tuple(getattr(admin, "allowed_hosts", None) or ())
    policy = HostPolicy.build(allowed_hosts, own_host_names())

    def error(status: int, code: str, message: str) -> Any:
        return jsonify(error=code, message=one_line(message)), status

    @app.before_request
    def guard_and_authorize() -> Any:
        environ = request.environ
        why = refusal(request.headers, path=request.path,
                      bound_host=str(environ.get("SERVER_NAME", "")),
                      bound_port=int(environ.get("SERVER_PORT") or 0), policy=policy,
                      open_paths=ANY_HOST_PATHS)
        if why is not None:
            return error(403, "forbidden", why)
        if request.routing_exception is not None:
            return None  # 404 / 405 (with Allow) come from routing, whatever the method
        if request.method in MUTATING and secret:
            given = request.headers.get("Authorization", "")
            expected = f"Bearer {secret}"
            if not hmac.compare_digest(given.encode(), expected.encode()):
                resp = error(401, "unauthorized",
                             "this endpoint changes the cluster: send Authorization: Bearer "
                             "<token> ([admin] token)")
                resp[0].headers["WWW-Authenticate"] = 'Bearer realm="xconsumer"'
                return resp
        if request.method in MUTATING:
            if request.headers.get("Transfer-Encoding"):
                # Without a length the body is either cut at the cap or, behind a server
                # that does not terminate the stream, dropped: both would apply a change
                # the client did not send. A change is a few hundred bytes: ask for it whole.
                return error(411, "length_required",
                             "send the change with a Content-Length (no chunked bodies)")
            if (request.content_length or 0) > MAX_BODY:
                return error(413, "payload_too_large",
                             f"request body over {MAX_BODY} bytes")
            if request.mimetype != "application/json":
                given = request.headers.get("Content-Type")
                return error(415, "unsupported_media_type",
                             "send Content-Type: application/json with every change (got "
                             + (repr(given[:100]) if given else "none") + ")")
        return None

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        status = exc.code or 500
        code = ERROR_CODES.get(status, (exc.name or "error").lower().replace(" ", "_"))
        body, _ = error(status, code, exc.description or exc.name or "")
        resp = app.make_response((body, status))
        for name, value in exc.get_headers():
            if name.lower() != "content-type":  # e.g. Allow on a 405
                resp.headers[name] = value
        return resp

    @app.errorhandler(OverrideError)
    def override_error(exc: OverrideError) -> Any:
        return error(exc.status, ERROR_CODES.get(exc.status, "error"), str(exc))

    @app.errorhandler(KazooException)
    @app.errorhandler(KazooTimeoutError)
    def zk_error(exc: Exception) -> Any:
        return error(503, "zookeeper_unavailable",
                     f"ZooKeeper did not answer: {type(exc).__name__}")

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Any:
        # A bug, never bad input (that is a 4xx above): JSON like every other answer, and
        # the traceback in the node's log rather than in the response.
        # A plain traceback: loguru's annotated one would print local values, request
        # headers (the bearer token) included.
        logger.error("admin API {} {} failed:\n{}", request.method, request.path,
                     "".join(traceback.format_exception(exc)).rstrip())
        return error(500, "internal_error",
                     f"the node failed to answer ({type(exc).__name__}); see its log")

    @app.get("/healthz")
    def healthz() -> Any:
        view = node.node_view()
        ok = bool(view.get("connected")) and view.get("state") == "started"
        return jsonify(status="ok" if ok else "degraded", node=view.get("id"),
                       leader=view.get("leader")), (200 if ok else 503)

    @app.get("/metrics")
    def metrics() -> Response:
        node.refresh_metrics()
        # content_type, not mimetype: the Prometheus type already carries its charset, and
        # mimetype= would append a second one.
        return Response(node.metrics.render(), content_type=node.metrics.content_type)

    @app.get("/openapi.json")
    def openapi() -> Any:
        return jsonify(openapi_document(app))

    @app.get("/")
    def dashboard() -> Response:
        html = resources.files("xconsumer.admin").joinpath("dashboard.html").read_text()
        return Response(html, mimetype="text/html")

    register_api(app, node)
    return app
