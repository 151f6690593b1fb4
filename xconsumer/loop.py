"""The handler loop shared by slots that run in a thread and slots isolated in a process.

It knows the task's mode, interval and backoff; everything the node wants to know about a
run (state, metrics, events) goes through `report`, so the thread and the child process
feed the same bookkeeping.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

# report(kind, seconds, error, backoff): kind is "running", "ok" or "failed".
Report = Callable[[str, float, BaseException | None, float], None]


class LoopTask(Protocol):
    mode: str
    interval: float
    retry_backoff: float
    retry_backoff_max: float


class LoopContext(Protocol):
    @property
    def stopping(self) -> bool: ...
    def sleep(self, seconds: float) -> bool: ...


def handler_loop(handler: Callable[[Any], Any], ctx: LoopContext, task: LoopTask,
                 report: Report) -> bool:
    """Run until `ctx.stopping`. True only when a once-slot completed: its handler returned
    normally while the slot was not being stopped (a return during a stop may be an early
    exit, so the slot runs again on its next owner)."""
    backoff = 0.0
    while not ctx.stopping:
        report("running", 0.0, None, 0.0)
        began = time.monotonic()
        try:
            handler(ctx)
        except Exception as exc:  # noqa: BLE001 - handler errors are retried, never fatal
            backoff = min(backoff * 2, task.retry_backoff_max) if backoff else task.retry_backoff
            report("failed", time.monotonic() - began, exc, backoff)
            ctx.sleep(backoff)
            continue
        report("ok", time.monotonic() - began, None, 0.0)
        backoff = 0.0
        if task.mode == "once":
            return not ctx.stopping
        if task.interval > 0:
            ctx.sleep(task.interval)
    return False
