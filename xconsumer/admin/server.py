"""Serve the admin app from a named background thread with werkzeug's threaded server.

Not Flask's debug server: no reloader, no debugger, and a `shutdown()` we can call and join.
"""

from __future__ import annotations

import threading
from typing import Any

from werkzeug.serving import BaseWSGIServer, make_server

from ..errors import ConfigError


class AdminServer:
    def __init__(self, app: Any, *, host: str, port: int) -> None:
        self._app = app
        self._host = host
        self._port = port
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "not started"
        host = self._host if self._host not in ("0.0.0.0", "::", "") else "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self._server.server_port}"

    def start(self) -> None:
        try:
            self._server = make_server(self._host, self._port, self._app, threaded=True)
        except OSError as exc:
            raise ConfigError(
                f"admin HTTP cannot listen on {self._host}:{self._port}: {exc.strerror or exc} "
                "(use --admin-port 0 for a free port)") from None
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.1}, name="xc-admin",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout)
        self._server = None
