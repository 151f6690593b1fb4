"""A kazoo handler whose `select` is one poll(2) call instead of a new epoll instance.

kazoo's connection thread calls `handler.select` four to five times per request (wait on
the socket and the wake-up pipe, wait to write, wait for the reply's length, wait for its
body), and kazoo's `selector_select` builds a `selectors.DefaultSelector` for every call:
epoll_create1, one epoll_ctl per fd, epoll_wait and close, plus the selectors module's
bookkeeping: 30-50 % of the client's CPU per request (bench/kazoo_io.py). A `select.poll()`
object holds no fd, so registering costs nothing and the wait is a single syscall; unlike
`select.select` it also takes fds above 1024, which is why kazoo left `select.select`.
"""

from __future__ import annotations

import math
import select
from collections.abc import Sequence
from typing import Any

from kazoo.handlers.threading import SequentialThreadingHandler
from kazoo.handlers.utils import fileobj_to_fd

_IN, _OUT, _NVAL = select.POLLIN, select.POLLOUT, select.POLLNVAL


def poll_select(rlist: Sequence[Any], wlist: Sequence[Any], xlist: Sequence[Any],
                timeout: float | None = None) -> tuple[list[Any], list[Any], list[Any]]:
    """kazoo.handlers.utils.selector_select, to the letter of its results and errors.

    Objects with fileno() or ints; the ready objects come back as they were passed in, each
    fd's objects in the readable list if it is readable, else in the writable list (an
    error or hang-up counts as both, as in `selectors`); `xlist` is ignored and the third
    list is always empty. Errors as kazoo's, since its connection loop turns only OSError
    into a reconnect: TypeError for a bad object or negative fd (a closed socket), ValueError
    for a closed fd (epoll_ctl's EBADF there, POLLNVAL here) or a negative timeout. A wait
    interrupted by a signal handler that raises InterruptedError returns nothing ready.
    """
    if timeout is not None:
        if not isinstance(timeout, (int, float)):
            raise TypeError("timeout must be a number")
        if timeout < 0:
            raise ValueError("timeout must be non-negative")
    masks: dict[int, int] = {}
    objs: dict[int, list[Any]] = {}
    for mask, fileobjs in ((_IN, rlist), (_OUT, wlist)):
        for fileobj in fileobjs:
            fd = fileobj_to_fd(fileobj)
            masks[fd] = masks.get(fd, 0) | mask
            objs.setdefault(fd, []).append(fileobj)
    poller = select.poll()
    for fd, mask in masks.items():
        poller.register(fd, mask)
    readable: list[Any] = []
    writable: list[Any] = []
    try:
        ready = poller.poll(None if timeout is None else math.ceil(timeout * 1e3))
    except InterruptedError:
        return readable, writable, []
    for fd, revents in ready:
        if revents & _NVAL:
            raise ValueError("Invalid event mask or fd")
        if revents & ~_OUT and masks[fd] & _IN:
            readable.extend(objs[fd])
        elif revents & ~_IN and masks[fd] & _OUT:
            writable.extend(objs[fd])
    return readable, writable, []


class PollingThreadingHandler(SequentialThreadingHandler):
    """kazoo's threading handler with `poll_select` (see the module docstring for why)."""

    def select(self, *args: Any, **kwargs: Any) -> tuple[list[Any], list[Any], list[Any]]:
        return poll_select(*args, **kwargs)
