"""The handler loop shared by slots that run in a thread and slots isolated in a process.

It knows the task's mode, interval, backoff and breaker; everything the node wants to know
about a run (state, metrics, events) goes through `report`, so the thread and the child
process feed the same bookkeeping.

A run's time limit (`run_timeout`) is enforced by whoever can stop the run: in a thread the
run gets a view of the context whose `stopping` turns true at its deadline (`for_run`), and
a run that ends past it is reported as `timeout`; a child process gets no such view, because
its parent terminates the child at the deadline and reports the timeout itself. A coroutine
executor (none exists yet) would do the same in `_call`: cancel the run's task at the
deadline (`asyncio.wait_for`) and report `timeout`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

# report(kind, seconds, error, backoff): kind is "running", "ok", "failed" or "timeout".
Report = Callable[[str, float, BaseException | str | None, float], None]


class LoopTask(Protocol):
    mode: str
    interval: float
    retry_backoff: float
    retry_backoff_max: float
    run_timeout: float | None
    breaker_failures: int | None
    breaker_cooldown: float


class LoopContext(Protocol):
    @property
    def stopping(self) -> bool: ...
    def sleep(self, seconds: float) -> bool: ...


class Gate(Protocol):
    """The slot's circuit breaker as the loop sees it (see breaker.py)."""

    def gate(self, task: Any) -> float: ...


class RunTimedOut(Exception):
    """What a run that exceeded `run_timeout` is reported with."""

    def __init__(self, limit: float, seconds: float) -> None:
        super().__init__(f"run exceeded run_timeout ({limit:g}s) after {seconds:.1f}s")


def next_backoff(backoff: float, task: LoopTask) -> float:
    """The wait after one more failure in a row: retry_backoff, then doubling to the cap."""
    return min(backoff * 2, task.retry_backoff_max) if backoff else task.retry_backoff


def _run_view(ctx: Any, task: LoopTask) -> Any:
    """A fresh per-run view of `ctx` that enforces the task's run_timeout (read live), when
    the context can (a slot thread's can; a child's cannot: its parent kills it instead)."""
    for_run = getattr(ctx, "for_run", None)
    return for_run(lambda: task.run_timeout) if for_run is not None else ctx


def _call(handler: Callable[[Any], Any], run: Any) -> BaseException | None:
    """One handler run; its error, or None. (The hook for a coroutine executor: see the
    module docstring.)"""
    try:
        handler(run)
    except Exception as exc:  # noqa: BLE001 - handler errors are retried, never fatal
        return exc
    return None


def handler_loop(handler: Callable[[Any], Any], ctx: LoopContext, task: LoopTask,
                 report: Report, *, breaker: Gate | None = None, backoff: float = 0.0) -> bool:
    """Run until `ctx.stopping`. True only when a once-slot completed: its handler returned
    normally while the slot was not being stopped (a return during a stop may be an early
    exit, so the slot runs again on its next owner).

    `task` is read afresh on every run, so a live task object makes changes of interval,
    backoff, run_timeout and breaker keys apply from the next run. `backoff` is the wait
    the previous failure in a row used (a restarted child continues the doubling)."""
    while not ctx.stopping:
        wait = breaker.gate(task) if breaker is not None else 0.0
        if wait > 0:
            ctx.sleep(wait)  # open breaker: no call until its cooldown is over
            continue
        report("running", 0.0, None, 0.0)
        run = _run_view(ctx, task)
        began = time.monotonic()
        error = _call(handler, run)
        seconds = time.monotonic() - began
        if run is not ctx and run.timed_out:
            error = RunTimedOut(run.limit or 0.0, seconds)
        if error is not None:
            backoff = next_backoff(backoff, task)
            kind = "timeout" if isinstance(error, RunTimedOut) else "failed"
            report(kind, seconds, error, backoff)
            ctx.sleep(backoff)
            continue
        report("ok", seconds, None, 0.0)
        backoff = 0.0
        if task.mode == "once":
            return not ctx.stopping
        if task.interval > 0:
            ctx.sleep(task.interval)
    return False
