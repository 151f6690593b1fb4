"""The kazoo client's connection attempts against a server that accepts and never answers.

ZooKeeper 3.8.0 accepts connections on its client port before its database is loaded and
leaves them open, unanswered. kazoo would wait a whole session timeout for the reply to its
Connect request (one host), long enough for the restarted server to expire the session it
had just restored. make_client caps that wait; this test holds it to the cap without a real
server, so it runs in the unit suite.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from tests.util import wait_until
from xconsumer.zk import make_client


class SilentServer:
    """A listening socket that accepts every connection, reads nothing, answers nothing."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted: list[float] = []
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:  # closed: the test is over
                return
            self.accepted.append(time.monotonic())
            self._conns.append(conn)

    def close(self) -> None:
        # A close alone leaves accept() blocked for ever on Linux: shut it down first.
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._thread.join(2.0)
        for conn in self._conns:
            conn.close()


@pytest.fixture
def silent() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()


def test_an_unanswered_connect_is_abandoned_within_a_third_of_the_session(
        silent: SilentServer) -> None:
    session = 3.0
    client, _ = make_client(f"127.0.0.1:{silent.port}", session)
    client.start_async()
    try:
        # Two attempts: the first is abandoned, the second follows after the retry delay.
        wait_until(lambda: len(silent.accepted) >= 2, session * 2,
                   message=lambda: f"attempts at {silent.accepted}")
    finally:
        client.stop()
        client.close()
    gap = silent.accepted[1] - silent.accepted[0]
    # Cap plus kazoo's retry delay (at most 0.2 s with jitter) and scheduling slack; kazoo
    # alone waits the whole session (3 s) here.
    assert gap < session / 3 + 0.9, f"second attempt {gap:.2f}s after the first"
