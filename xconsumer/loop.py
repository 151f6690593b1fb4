"""The handler loop shared by slots that run in a thread, in a process, or on the event loop.

It knows the task's mode, interval, backoff and breaker; everything the node wants to know
about a run (state, metrics, events) goes through `report`, so the thread, the child process
and the coroutine feed the same bookkeeping.

The policy (when to call, how long to wait, what a run's outcome means, when a once-slot is
done) is `loop_steps`, a generator that neither calls nor sleeps: it yields what to do next
and is told how the run went. `handler_loop` drives it with blocking calls and `ctx.sleep`;
the coroutine executor drives the same generator with `await`s, so the two cannot drift
apart.

A run's time limit (`run_timeout`) is enforced by whoever can stop the run: in a thread the
run gets a view of the context whose `stopping` turns true at its deadline (`for_run`), and
a run that ends past it is reported as `timeout`; a child process gets no such view, because
its parent terminates the child at the deadline and reports the timeout itself; a coroutine
run is cancelled at its deadline. Each tells the steps with `Overran(limit)`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from typing import Any, NamedTuple, Protocol

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


class Overran(NamedTuple):
    """What a driver sends back for a run stopped at (or ended past) its run_timeout."""

    limit: float


# What `loop_steps` yields: RUN (call the handler once, then send back its outcome), or a
# number of seconds to wait, stop-aware, before the next step.
RUN = None
Step = float | None
Outcome = BaseException | Overran | None
Steps = Generator[Step, Outcome, bool]


def loop_steps(task: LoopTask, report: Report, stopping: Callable[[], bool], *,
               breaker: Gate | None = None, backoff: float = 0.0) -> Steps:
    """The handler loop's decisions, for any driver: yields RUN or a wait, and for a RUN
    receives the run's error, `Overran`, or None. Returns (StopIteration.value) True only
    when a once-slot completed: its handler returned normally while the slot was not being
    stopped (a return during a stop may be an early exit, so the slot runs again on its next
    owner).

    `task` is read afresh on every step, so a live task object makes changes of interval,
    backoff, run_timeout and breaker keys apply from the next run. `backoff` is the wait
    the previous failure in a row used (a restarted child continues the doubling)."""
    while not stopping():
        wait = breaker.gate(task) if breaker is not None else 0.0
        if wait > 0:
            yield wait  # open breaker: no call until its cooldown is over
            continue
        report("running", 0.0, None, 0.0)
        began = time.monotonic()
        outcome = yield RUN
        seconds = time.monotonic() - began
        error = (RunTimedOut(outcome.limit, seconds) if isinstance(outcome, Overran)
                 else outcome)
        if error is not None:
            backoff = next_backoff(backoff, task)
            report("timeout" if isinstance(error, RunTimedOut) else "failed", seconds, error,
                   backoff)
            yield backoff
            continue
        report("ok", seconds, None, 0.0)
        backoff = 0.0
        if task.mode == "once":
            return not stopping()
        if task.interval > 0:
            yield task.interval
    return False


class Done(NamedTuple):
    """The loop is over; `completed`: a once-slot's run succeeded (see `loop_steps`)."""

    completed: bool


def advance(steps: Steps, outcome: Outcome) -> Step | Done:
    """Tell the steps how the last step went; the next step, or Done."""
    try:
        return steps.send(outcome)
    except StopIteration as end:
        return Done(bool(end.value))


def _call(handler: Callable[[Any], Any], run: Any) -> BaseException | None:
    """One handler run in this thread; its error, or None."""
    try:
        handler(run)
    except Exception as exc:  # noqa: BLE001 - handler errors are retried, never fatal
        return exc
    return None


def handler_loop(handler: Callable[[Any], Any], ctx: LoopContext, task: LoopTask,
                 report: Report, *, breaker: Gate | None = None, backoff: float = 0.0) -> bool:
    """Run until `ctx.stopping`, in this thread; see `loop_steps` for what it returns."""
    steps = loop_steps(task, report, lambda: ctx.stopping, breaker=breaker, backoff=backoff)
    step = advance(steps, None)
    while not isinstance(step, Done):
        if step is RUN:
            run = _run_view(ctx, task)
            error = _call(handler, run)
            # Whether it returned or raised, a run that ends past its limit timed out.
            timed_out = run is not ctx and run.timed_out
            step = advance(steps, Overran(run.limit or 0.0) if timed_out else error)
        else:
            ctx.sleep(step)
            step = advance(steps, None)
    return step.completed
