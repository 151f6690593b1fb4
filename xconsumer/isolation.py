"""`isolation = "process"`: a slot whose handler runs in a child process that can be killed.

Python threads cannot be killed, so a thread handler that ignores `ctx.stopping` stays stuck
for good. In a child process it is asked to stop first (same `ctx.stopping` contract), then
sent SIGTERM after `stop_timeout`, then SIGKILL after a short grace: the slot's owner znode is
released only once the child is gone, so the slot still never runs twice.

The child cannot see ZooKeeper. It sees the parent's lease deadline in shared memory, on the
system-wide monotonic clock: if the parent is frozen or loses its session, the deadline stops
moving and the child's `ctx.stopping` turns true on time by itself.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import queue
import signal
import threading
import time
from typing import Any

from loguru import logger

from .lease import lease_clock

KILL_GRACE = 2.0  # seconds between SIGTERM and SIGKILL
EXIT_ORPHANED = 70
EXIT_LEASE = 71
_POLL = 0.05


class ChildContext:
    """`ctx` inside the child process: the same contract as a thread slot's context."""

    def __init__(self, spec: dict[str, Any], deadline: Any, stop: Any) -> None:
        self.task = spec["task"]["name"]
        self.work_name = spec["task"]["workName"]
        self.slot = spec["slot"]
        self.node = spec["node"]
        self.generation = spec["generation"]
        self.fence = spec["fence"]
        self._deadline = deadline
        self._stop = stop
        self._hard_margin = spec["hard_margin"]
        self._parent = spec["parent_pid"]
        self.stop_event = threading.Event()
        self.logger = logger.bind(task=self.task, slot=self.slot)
        threading.Thread(target=self._mirror, name="xc-child-stop", daemon=True).start()

    def _mirror(self) -> None:
        """Mirror the cross-process stop (and the lease deadline) into a local Event, so
        `ctx.stop_event.wait()` works in the child as it does in a thread slot; and end the
        child outright when its parent is gone or the lease is past saving (see _guard)."""
        while True:
            if self.stop_event.is_set():
                time.sleep(_POLL)
            elif self._stop.wait(_POLL) or lease_clock() >= self._deadline.value:
                self.stop_event.set()
            _guard(self._deadline, self._hard_margin, self._parent)

    @property
    def stopping(self) -> bool:
        return (self.stop_event.is_set() or self._stop.is_set()
                or lease_clock() >= self._deadline.value)

    def sleep(self, seconds: float) -> bool:
        end = time.monotonic() + max(0.0, seconds)
        while not self.stopping:
            now = time.monotonic()
            if now >= end:
                return True
            left = max(self._deadline.value - lease_clock(), 0.0)
            self.stop_event.wait(min(end - now, left, _POLL * 4))
        return False


def _guard(deadline: Any, hard_margin: float, parent: int) -> None:
    """Exit at once when the parent died (kill -9 leaves children running) or when the lease
    ended more than `hard_margin` ago: past that point the session may expire and another
    node may start this slot, so a handler that ignores ctx.stopping must not run on."""
    if os.getppid() != parent:
        os._exit(EXIT_ORPHANED)
    if lease_clock() >= deadline.value + hard_margin:
        os._exit(EXIT_LEASE)


def _die_with_parent() -> None:
    """Linux: have the kernel SIGKILL this child when its parent thread dies."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def child_main(spec: dict[str, Any], deadline: Any, stop: Any, results: Any) -> None:
    """Entry point of the child process (spawned: a fresh interpreter)."""
    _die_with_parent()
    _guard(deadline, spec["hard_margin"], spec["parent_pid"])
    from .config import TaskConfig
    from .logs import setup_logging
    from .loop import handler_loop
    from .works import discover

    setup_logging(spec.get("log_level", "INFO"), node=spec["node"])
    task = TaskConfig.from_dict(spec["task"], where="isolated slot")
    handler = discover(spec["works_dir"]).resolve(task.work_name)
    ctx = ChildContext(spec, deadline, stop)

    def report(kind: str, seconds: float, error: BaseException | None, backoff: float) -> None:
        if error is not None:
            ctx.logger.opt(exception=error).error("handler raised {}: {}",
                                                  type(error).__name__, error)
        text = f"{type(error).__name__}: {error}" if error is not None else None
        results.put((kind, seconds, text, backoff))

    completed = handler_loop(handler, ctx, task, report)
    results.put(("completed" if completed else "ended", 0.0, None, 0.0))


def run_isolated(runner: Any, ctx: Any, report: Any) -> bool:
    """Run the slot's handler loop in a child; True when a once-slot completed there."""
    lease = runner._lease
    # The lease ends at 2/3 of the session; half of the remaining third is the most a child
    # may overrun it before it exits by itself (or is killed here).
    hard_margin = lease.session_timeout / 6.0
    mp = multiprocessing.get_context("spawn")
    deadline = mp.Value("d", lease.now() + max(lease.remaining(), 0.0), lock=False)
    stop = mp.Event()
    results = mp.Queue()
    spec = {"task": runner.task.to_dict(), "slot": runner.slot.index, "node": runner.node,
            "generation": runner.generation, "fence": ctx.fence,
            "works_dir": str(runner._registry.path), "log_level": "INFO",
            "parent_pid": os.getpid(), "hard_margin": hard_margin}
    proc = mp.Process(target=child_main, args=(spec, deadline, stop, results),
                      name=f"xc-slot-{runner.slot.task}-{runner.slot.index}", daemon=True)
    proc.start()
    runner.child_pid = proc.pid
    runner.log.info("handler running in child process {}", proc.pid)
    def limit(seconds: float) -> float:
        # A stop caused by the lease cannot wait for stop_timeout: the session may expire.
        return seconds if lease.valid() else min(seconds, hard_margin)

    completed = False
    asked_at: float | None = None
    signalled = ""
    while True:
        deadline.value = lease.now() + max(lease.remaining(), 0.0)
        completed = _drain(results, report) or completed
        if not proc.is_alive():
            break
        if ctx.stopping:
            now = time.monotonic()
            if asked_at is None:
                stop.set()
                asked_at = now
            elif not signalled and now - asked_at > limit(runner.task.stop_timeout):
                runner.log.warning("child {} ignored stop for {:.1f}s: terminating it",
                                   proc.pid, now - asked_at)
                proc.terminate()
                signalled = "term"
            elif signalled == "term" and now - asked_at > limit(runner.task.stop_timeout
                                                                + KILL_GRACE):
                runner.log.warning("child {} survived SIGTERM: killing it", proc.pid)
                proc.kill()
                signalled = "kill"
        proc.join(_POLL)
    completed = _drain(results, report) or completed
    if proc.exitcode not in (0, None):
        runner.log.info("child process {} ended with exit code {}", proc.pid, proc.exitcode)
    results.close()
    runner.child_pid = None
    return completed and proc.exitcode == 0


def _drain(results: Any, report: Any) -> bool:
    completed = False
    while True:
        try:
            kind, seconds, error, backoff = results.get_nowait()
        except queue.Empty:
            return completed
        except (EOFError, OSError):
            return completed
        if kind == "completed":
            completed = True
        elif kind != "ended":
            report(kind, seconds, error, backoff)
