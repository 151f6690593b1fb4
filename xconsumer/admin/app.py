"""Flask app factory for the admin API.

The app talks to its node only through `cluster_view()` and `node_view()`, so tests can hand
it any object with those two methods.
"""

from __future__ import annotations

from typing import Any, Protocol

from flask import Flask, jsonify
from kazoo.exceptions import KazooException
from kazoo.handlers.threading import KazooTimeoutError
from werkzeug.exceptions import HTTPException


class NodeLike(Protocol):
    def cluster_view(self) -> dict[str, Any]: ...
    def node_view(self) -> dict[str, Any]: ...


def create_app(node: NodeLike) -> Flask:
    app = Flask("xconsumer.admin")
    app.json.sort_keys = False  # type: ignore[attr-defined]

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        return jsonify(error=exc.name.lower().replace(" ", "_"),
                       message=exc.description), exc.code

    @app.errorhandler(KazooException)
    @app.errorhandler(KazooTimeoutError)
    def zk_error(exc: Exception) -> Any:
        return jsonify(error="zookeeper_unavailable",
                       message=f"ZooKeeper did not answer: {type(exc).__name__}"), 503

    @app.get("/healthz")
    def healthz() -> Any:
        view = node.node_view()
        ok = bool(view.get("connected")) and view.get("state") == "started"
        return jsonify(status="ok" if ok else "degraded", node=view.get("id"),
                       leader=view.get("leader")), (200 if ok else 503)

    @app.get("/api/cluster")
    def cluster() -> Any:
        return jsonify(node.cluster_view())

    @app.get("/api/node")
    def this_node() -> Any:
        return jsonify(node.node_view())

    return app
