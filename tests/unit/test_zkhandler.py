"""xconsumer.zkhandler.poll_select against kazoo's own selector_select, case by case.

kazoo's connection loop reacts to what select returns and raises (an empty list is a
time-out, OSError a dropped connection, anything else an unhandled error that stops the
loop), so every case runs on both functions and expects the same answer.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kazoo.handlers.threading import SequentialThreadingHandler
from kazoo.handlers.utils import selector_select
from kazoo.protocol.states import KazooState

from tests.util import wait_until
from xconsumer.zk import make_client
from xconsumer.zkhandler import PollingThreadingHandler, poll_select

Select = Callable[..., tuple[list[Any], list[Any], list[Any]]]


@pytest.fixture(params=[selector_select, poll_select], ids=["kazoo", "poll"])
def select_fn(request: pytest.FixtureRequest) -> Select:
    return request.param


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe()
    yield r, w
    os.close(r)
    os.close(w)


def test_a_pipe_with_data_is_readable(select_fn: Select, pipe: tuple[int, int]) -> None:
    r, w = pipe
    assert select_fn([r], [], [], 0) == ([], [], [])
    os.write(w, b"x")
    assert select_fn([r], [], [], 0) == ([r], [], [])
    assert select_fn([r], [w], [], None) == ([r], [w], [])


def test_ready_objects_come_back_as_passed(select_fn: Select, pair: tuple[socket.socket,
                                           socket.socket]) -> None:
    a, b = pair
    b.send(b"x")
    readable, writable, exceptional = select_fn([a], [b], [a], 0)
    assert readable == [a] and readable[0] is a
    assert writable == [b] and writable[0] is b
    assert exceptional == []
    # kazoo's quirk, kept: a ready fd carries every object passed for it, from both lists.
    assert select_fn([a, b], [b], [], 0) == ([a], [b, b], [])


def test_the_connection_loops_set_socket_and_wake_up_pipe(
        select_fn: Select, pair: tuple[socket.socket, socket.socket]) -> None:
    sock, server = pair
    wake_r, wake_w = socket.socketpair()
    try:
        assert select_fn([sock, wake_r], [], [], 0) == ([], [], [])
        wake_w.send(b"\0")
        assert select_fn([sock, wake_r], [], [], 0)[0] == [wake_r]
        server.send(b"reply")
        assert sorted(select_fn([sock, wake_r], [], [], 0)[0], key=id) == sorted(
            [sock, wake_r], key=id)
    finally:
        wake_r.close()
        wake_w.close()


def test_timeout_zero_returns_at_once_and_a_timeout_is_waited_out(
        select_fn: Select, pair: tuple[socket.socket, socket.socket]) -> None:
    a, _ = pair
    t = time.monotonic()
    assert select_fn([a], [], [], 0) == ([], [], [])
    assert select_fn([], [], [], 0) == ([], [], [])
    assert time.monotonic() - t < 0.05
    t = time.monotonic()
    assert select_fn([a], [], [], 0.05) == ([], [], [])
    assert time.monotonic() - t >= 0.045


def test_a_ready_fd_ends_an_unbounded_wait(select_fn: Select,
                                           pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    timer = threading.Timer(0.05, b.send, args=(b"x",))
    timer.start()
    try:
        assert select_fn([a], [], [], None) == ([a], [], [])
    finally:
        timer.join()


def test_an_fd_in_both_lists_that_is_readable_lands_in_the_readable_list_only(
        select_fn: Select, pair: tuple[socket.socket, socket.socket]) -> None:
    # kazoo's quirk, kept: readable wins, and carries every object passed for that fd.
    a, b = pair
    b.send(b"x")
    assert select_fn([a], [a.fileno()], [], 0) == ([a, a.fileno()], [], [])


def test_a_hung_up_peer_reads_as_readable_and_writable(select_fn: Select,
                                                        pair: tuple[socket.socket,
                                                                    socket.socket]) -> None:
    a, b = pair
    b.close()
    assert select_fn([a], [], [], 0) == ([a], [], [])
    assert select_fn([], [a], [], 0) == ([], [a], [])
    assert a.recv(1) == b""  # what turns into kazoo's ConnectionDropped


def test_a_closed_fd_is_a_value_error_without_waiting(select_fn: Select,
                                                      pipe: tuple[int, int]) -> None:
    # A number above every open fd: a freshly closed low one would be taken by the epoll
    # instance kazoo's select creates (EINVAL: still ValueError), or, while a failed call's
    # leaked epoll instance waits for the garbage collector, be that instance (no error).
    _, w = pipe
    closed = 1900
    with pytest.raises(OSError):
        os.fstat(closed)
    t = time.monotonic()
    with pytest.raises(ValueError, match="Invalid event mask or fd"):
        select_fn([closed], [], [], 0)
    with pytest.raises(ValueError, match="Invalid event mask or fd"):
        select_fn([], [w, closed], [], 1.0)
    assert time.monotonic() - t < 0.5


def test_a_closed_socket_is_a_type_error(select_fn: Select,
                                         pair: tuple[socket.socket, socket.socket]) -> None:
    a, _ = pair
    a.close()  # fileno() is now -1
    with pytest.raises(TypeError):
        select_fn([a], [], [], 0)
    with pytest.raises(TypeError):
        select_fn([object()], [], [], 0)


@pytest.mark.parametrize("timeout, error", [(-1, ValueError), ("1", TypeError)])
def test_a_bad_timeout_is_refused(select_fn: Select, timeout: Any, error: type) -> None:
    with pytest.raises(error):
        select_fn([], [], [], timeout)


def test_fds_above_1024_work(select_fn: Select, pipe: tuple[int, int]) -> None:
    r, w = pipe
    high = os.dup2(r, 1500)
    try:
        os.write(w, b"x")
        assert select_fn([high], [], [], 0) == ([high], [], [])
    finally:
        os.close(high)


def test_a_signal_handler_raising_interrupted_error_ends_the_wait_with_nothing(
        select_fn: Select, pair: tuple[socket.socket, socket.socket]) -> None:
    a, _ = pair

    def interrupt(_sig: int, _frame: Any) -> None:
        raise InterruptedError

    old = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        t = time.monotonic()
        assert select_fn([a], [], [], 2.0) == ([], [], [])
        assert time.monotonic() - t < 1.0
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def test_make_client_uses_the_polling_handler_and_keeps_its_options() -> None:
    client, _ = make_client("127.0.0.1:1", 3.0)
    assert type(client.handler) is PollingThreadingHandler
    assert client._conn_retry.max_tries == -1 and client._retry.max_tries == 3
    assert client._conn_retry.sleep_func is client.handler.sleep_func
    assert client.handler.select.__func__ is PollingThreadingHandler.select
    other = SequentialThreadingHandler()
    assert make_client("127.0.0.1:1", 3.0, handler=other)[0].handler is other


def test_a_server_that_drops_every_connection_is_retried_not_fatal(
        caplog: pytest.LogCaptureFixture) -> None:
    """The hang-up reaches kazoo as ConnectionDropped: the loop reconnects and never dies."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    accepted: list[float] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            accepted.append(time.monotonic())
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    caplog.set_level(logging.WARNING, logger="kazoo")
    client, _ = make_client(f"127.0.0.1:{port}", 3.0)
    client.start_async()
    try:
        wait_until(lambda: len(accepted) >= 3, 5.0, message=lambda: f"attempts {accepted}")
        assert client.state in (KazooState.SUSPENDED, KazooState.LOST)
        assert client._connection._connection_routine.is_alive()
    finally:
        client.stop()
        client.close()
        with contextlib.suppress(OSError):
            server.shutdown(socket.SHUT_RDWR)  # a close alone leaves accept() blocked
        server.close()
        thread.join(2.0)
    messages = [r.getMessage() for r in caplog.records]
    assert any("Connection dropped" in m for m in messages), messages
    assert not any("Unhandled exception" in m for m in messages), messages
