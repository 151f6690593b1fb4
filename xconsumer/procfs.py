"""What /proc says of a process's threads.

SIGSTOP stops each thread of a process only when that thread next runs kernel code, so
`kill()` returns while threads may still run: on a loaded 2-core machine a thread ran for
3 ms after it, and a paused ZooKeeper answered a four-letter word after `pause()` returned.
Whoever must know that a process is frozen (a fault drill pausing ZooKeeper, the tests
freezing a node) waits until every thread shows as stopped.
"""

from __future__ import annotations

import time
from pathlib import Path


def thread_states(pid: int) -> set[str]:
    """The /proc states of `pid`'s threads (R, S, D, T, ...); empty once it is gone."""
    try:
        tids = list(Path(f"/proc/{pid}/task").iterdir())
    except FileNotFoundError:
        return set()
    states = set()
    for tid in tids:
        try:
            stat = (tid / "stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue  # the thread ended meanwhile
        states.add(stat.rsplit(")", 1)[1].split()[0])
    return states


def threads_stopped(pid: int) -> bool:
    """Every thread of `pid` is stopped (or gone): /proc's state T, t, Z or X."""
    return thread_states(pid) <= {"T", "t", "Z", "X"}


def wait_stopped(pid: int, timeout: float) -> bool:
    """Whether every thread of `pid` stopped within `timeout` seconds (polled every 2 ms:
    a JVM has dozens of threads, and the kernel stops them within milliseconds)."""
    deadline = time.monotonic() + timeout
    while not threads_stopped(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.002)
    return True
