"""Serve the admin app from a named background thread with werkzeug's threaded server.

Not Flask's debug server: no reloader, no debugger, and a `shutdown()` we can call and join.
"""

from __future__ import annotations

import socket
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
        return f"http://{host}:{self._server.port}"

    def start(self) -> None:
        # Bind the socket ourselves: werkzeug reports a busy port by printing to stderr and
        # calling sys.exit(), which would bypass our one-line error.
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self._host, self._port))
            sock.listen(128)
        except OSError as exc:
            sock.close()
            raise ConfigError(
                f"admin HTTP cannot listen on {self._host}:{self._port}: {exc.strerror or exc} "
                "(set [admin] port, or --admin-port 0 for a free port)") from None
        try:
            self._server = make_server(self._host, self._port, self._app, threaded=True,
                                       fd=sock.fileno())
        finally:
            sock.close()  # werkzeug works on its own duplicate of the descriptor
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
