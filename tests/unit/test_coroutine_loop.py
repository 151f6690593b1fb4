"""The loop's policy (`loop_steps`) driven step by step, and coroutine slots on a real event
loop with a fake slot context (no ZooKeeper): cancellation on stop, run_timeout, once mode,
retries, the blocked-loop watchdog and the loop thread's lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from loguru import logger

from tests.util import wait_until
from xconsumer.assignment import Slot
from xconsumer.breaker import Breaker
from xconsumer.events import EventLog
from xconsumer.executors import coroutine as co
from xconsumer.executors import executor_for
from xconsumer.loop import RUN, Overran, RunTimedOut, loop_steps
from xconsumer.metrics import Metrics
from xconsumer.works import make_handler


@dataclass
class Task:
    mode: str = "loop"
    interval: float = 0.0
    retry_backoff: float = 0.1
    retry_backoff_max: float = 0.4
    run_timeout: float | None = None
    breaker_failures: int | None = None
    breaker_cooldown: float = 1.0
    stop_timeout: float = 2.0
    isolation: str = "thread"


@dataclass
class Reports:
    seen: list[tuple[str, float, Any, float]] = field(default_factory=list)

    def __call__(self, kind: str, seconds: float, error: Any, backoff: float) -> None:
        self.seen.append((kind, seconds, error, backoff))

    def kinds(self) -> list[str]:
        return [k for k, *_ in self.seen]


# --- loop_steps: the policy alone --------------------------------------------------------


def test_steps_loop_mode_runs_then_waits_the_interval_and_stops_when_asked() -> None:
    stop = threading.Event()
    reports = Reports()
    steps = loop_steps(Task(interval=2.5), reports, stop.is_set)
    assert steps.send(None) is RUN
    assert steps.send(None) == 2.5  # ok, then the interval
    assert steps.send(None) is RUN
    stop.set()
    assert steps.send(None) == 2.5
    with pytest.raises(StopIteration) as end:
        steps.send(None)
    assert end.value.value is False
    assert reports.kinds() == ["running", "ok", "running", "ok"]


def test_steps_failures_back_off_doubling_to_the_cap_and_a_success_resets() -> None:
    reports = Reports()
    steps = loop_steps(Task(), reports, lambda: False)
    waits = []
    assert steps.send(None) is RUN
    for _ in range(4):
        waits.append(steps.send(RuntimeError("x")))
        assert steps.send(None) is RUN
    assert waits == [0.1, 0.2, 0.4, 0.4]
    assert steps.send(None) is RUN  # interval 0: straight on
    assert steps.send(ValueError("y")) == 0.1
    assert [k for k in reports.kinds() if k != "running"] == ["failed"] * 4 + ["ok", "failed"]


def test_steps_an_overrun_is_reported_as_a_timeout() -> None:
    reports = Reports()
    steps = loop_steps(Task(), reports, lambda: False)
    steps.send(None)
    assert steps.send(Overran(0.3)) == 0.1
    kind, _, error, backoff = reports.seen[-1]
    assert kind == "timeout" and isinstance(error, RunTimedOut) and backoff == 0.1
    assert "run exceeded run_timeout (0.3s)" in str(error)


@pytest.mark.parametrize(("stopped_during_run", "completed"), [(False, True), (True, False)])
def test_steps_once_mode_completes_only_without_a_stop(stopped_during_run: bool,
                                                      completed: bool) -> None:
    stop = threading.Event()
    steps = loop_steps(Task(mode="once"), Reports(), stop.is_set)
    assert steps.send(None) is RUN
    if stopped_during_run:
        stop.set()
    with pytest.raises(StopIteration) as end:
        steps.send(None)
    assert end.value.value is completed


def test_steps_an_open_breaker_waits_its_cooldown_before_the_trial() -> None:
    clock = [100.0]
    breaker = Breaker(clock=lambda: clock[0])
    task = Task(breaker_failures=2, breaker_cooldown=5.0)
    reports = Reports()

    def record(kind: str, seconds: float, error: Any, backoff: float) -> None:
        reports(kind, seconds, error, backoff)
        if kind in ("ok", "failed"):
            breaker.record(kind == "ok", task)

    steps = loop_steps(task, record, lambda: False, breaker=breaker)
    steps.send(None)
    steps.send(RuntimeError("1"))
    assert steps.send(None) is RUN
    steps.send(RuntimeError("2"))  # opens
    assert steps.send(None) == 5.0  # the cooldown, no call
    clock[0] += 5.0
    assert steps.send(None) is RUN  # half-open trial


# --- coroutine slots on a real loop ---------------------------------------------------------


class FakeCtx:
    def __init__(self) -> None:
        self.task, self.slot, self.fence, self.key, self.param = "t", 0, 9, None, {"p": 1}
        self.stop_event = threading.Event()
        self.commits: list[Any] = []
        self.commit_threads: list[str] = []
        self.logger = logger.bind(task="t", slot=0)

    @property
    def stopping(self) -> bool:
        return self.stop_event.is_set()

    def commit(self, value: Any) -> None:
        self.commit_threads.append(threading.current_thread().name)
        self.commits.append(value)


class FakeRunner:
    def __init__(self, task: Task, index: int = 0, host: Any = None) -> None:
        self.slot = Slot("t", index)
        self.task = task
        self.breaker = Breaker()
        self.log = logger.bind(task="t", slot=index)
        if host is not None:
            self.event_loop = host


@pytest.fixture
def host() -> Any:
    metrics, events = Metrics(), EventLog()
    loop_host = co.EventLoopThread(name="xc-asyncio-test", metrics=metrics, events=events)
    loop_host.metrics, loop_host.events = metrics, events  # for the assertions
    yield loop_host
    loop_host.stop(timeout=5)


def run_in_thread(host: Any, handler: Any, task: Task, ctx: FakeCtx,
                  index: int = 0) -> tuple[threading.Thread, dict[str, Any], Reports]:
    """What a slot thread does: executor.run(...), here on a thread of the test's own."""
    reports = Reports()
    out: dict[str, Any] = {}
    runner = FakeRunner(task, index, host)
    wrapped = make_handler("RunX", handler)
    executor = executor_for(task, wrapped)
    assert executor.kind == "asyncio"

    def target() -> None:
        try:
            out["result"] = executor.run(runner, ctx, wrapped, reports)
        except BaseException as exc:  # noqa: BLE001 - the test looks at it
            out["error"] = exc

    thread = threading.Thread(target=target, name=f"test-slot-{index}", daemon=True)
    thread.start()
    return thread, out, reports


def test_a_stop_wakes_ctx_sleep_with_false(host: Any) -> None:
    seen: list[Any] = []

    async def handler(ctx: Any) -> None:
        seen.append((ctx.task, ctx.fence, ctx.param))
        seen.append(await ctx.sleep(3600))

    ctx = FakeCtx()
    thread, out, reports = run_in_thread(host, handler, Task(), ctx)
    wait_until(lambda: len(seen) == 1, 5)
    began = time.monotonic()
    ctx.stop_event.set()
    thread.join(5)
    assert not thread.is_alive() and out == {"result": False}
    assert seen == [("t", 9, {"p": 1}), False]
    assert time.monotonic() - began < 1.0
    assert reports.kinds() == ["running", "ok"]


def sleeps_an_hour(seen: list[str]) -> Any:
    """A handler that never looks at ctx: only cancellation ends its run (noted in `seen`)."""
    async def handler(ctx: Any) -> None:
        seen.append("start")
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise
    return handler


def test_a_stop_cancels_a_coroutine_that_does_not_sleep_on_ctx(host: Any) -> None:
    seen: list[str] = []
    ctx = FakeCtx()
    thread, out, _ = run_in_thread(host, sleeps_an_hour(seen), Task(), ctx)
    wait_until(lambda: seen == ["start"], 5)
    ctx.stop_event.set()
    thread.join(5)
    assert seen == ["start", "cancelled"] and out == {"result": False}


def test_a_coroutine_that_swallows_cancellation_keeps_its_slot_thread_waiting(host) -> None:
    release, started = threading.Event(), threading.Event()

    async def handler(ctx: Any) -> None:
        started.set()
        while not release.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(0.02)

    ctx = FakeCtx()
    thread, out, _ = run_in_thread(host, handler, Task(), ctx)
    wait_until(started.is_set, 5)
    ctx.stop_event.set()
    time_limit = time.monotonic() + 0.6
    wait_until(lambda: time.monotonic() > time_limit, 2)
    assert thread.is_alive()  # the executor must not return while the coroutine runs
    release.set()
    thread.join(5)
    assert out == {"result": False}


def test_once_mode_completes_and_retries_back_off(host: Any) -> None:
    calls: list[float] = []

    async def handler(ctx: Any) -> None:
        calls.append(time.monotonic())
        if len(calls) < 3:
            raise RuntimeError(f"failure {len(calls)}")

    thread, out, reports = run_in_thread(host, handler, Task(mode="once", retry_backoff=0.1,
                                                              retry_backoff_max=0.15),
                                         FakeCtx())
    thread.join(5)
    assert out == {"result": True}
    assert [k for k in reports.kinds() if k != "running"] == ["failed", "failed", "ok"]
    assert str(reports.seen[1][2]) == "failure 1"
    assert calls[1] - calls[0] >= 0.09 and calls[2] - calls[1] >= 0.14


def test_run_timeout_cancels_the_run_and_reports_a_timeout(host: Any) -> None:
    seen: list[str] = []
    ctx = FakeCtx()
    thread, out, reports = run_in_thread(host, sleeps_an_hour(seen), Task(run_timeout=0.2,
                                                              retry_backoff=0.05), ctx)
    wait_until(lambda: reports.kinds().count("timeout") >= 2, 5)
    ctx.stop_event.set()
    thread.join(5)
    timeouts = [r for r in reports.seen if r[0] == "timeout"]
    assert all(0.2 <= seconds < 0.6 for _, seconds, _, _ in timeouts)
    assert "run exceeded run_timeout (0.2s)" in str(timeouts[0][2])
    assert seen.count("cancelled") >= 2 and out == {"result": False}


def test_a_run_timeout_set_while_a_run_hangs_bounds_that_run(host: Any) -> None:
    task = Task()

    async def handler(ctx: Any) -> None:
        await asyncio.sleep(3600)

    ctx = FakeCtx()
    thread, _, reports = run_in_thread(host, handler, task, ctx)
    wait_until(lambda: reports.kinds() == ["running"], 5)
    task.run_timeout = 0.1
    wait_until(lambda: "timeout" in reports.kinds(), 3)
    ctx.stop_event.set()
    thread.join(5)


def test_a_handlers_own_timeout_error_is_a_failure_not_a_timeout(host: Any) -> None:
    async def handler(ctx: Any) -> None:
        raise TimeoutError("the database did not answer")

    ctx = FakeCtx()
    thread, _, reports = run_in_thread(host, handler, Task(mode="once", run_timeout=5), ctx)
    wait_until(lambda: "failed" in reports.kinds(), 5)
    ctx.stop_event.set()
    thread.join(5)
    assert "timeout" not in reports.kinds()


def test_commit_runs_off_the_loop_and_other_attributes_are_forwarded(host: Any) -> None:
    seen: list[Any] = []

    async def handler(ctx: Any) -> None:
        await ctx.commit({"offset": 3})
        seen.append((ctx.key, ctx.commits))

    ctx = FakeCtx()
    thread, out, _ = run_in_thread(host, handler, Task(mode="once"), ctx)
    thread.join(5)
    assert out == {"result": True} and seen == [(None, [{"offset": 3}])]
    assert ctx.commit_threads[0].startswith("xc-asyncio-test-io")


def test_a_blocking_coroutine_is_reported_and_other_slots_still_stop(host: Any) -> None:
    async def blocker(ctx: Any) -> None:
        time.sleep(1.6)  # blocks the whole loop
        await ctx.sleep(0.05)

    async def polite(ctx: Any) -> None:
        await ctx.sleep(3600)

    blocked_ctx, polite_ctx = FakeCtx(), FakeCtx()
    polite_thread, polite_out, _ = run_in_thread(host, polite, Task(), polite_ctx, index=1)
    thread, _, reports = run_in_thread(host, blocker, Task(), blocked_ctx, index=0)
    wait_until(lambda: host.blocked >= 1, 5)
    polite_ctx.stop_event.set()  # queued behind the blocking call, done once it returns
    polite_thread.join(5)
    assert polite_out == {"result": False}
    events = [e for e in host.events.since(0) if e["kind"] == "loop_blocked"]
    assert events[0]["task"] == "t" and events[0]["slot"] == 0
    assert "t/0 blocks the event loop" in events[0]["message"]
    assert host.metrics.loop_blocked.labels("t")._value.get() >= 1
    blocked_ctx.stop_event.set()
    thread.join(5)


def test_the_loop_starts_lazily_and_stop_joins_its_threads() -> None:
    host = co.EventLoopThread(name="xc-asyncio-life")
    names = lambda: [t.name for t in threading.enumerate()  # noqa: E731
                     if t.name.startswith("xc-asyncio-life")]
    assert names() == [] and not host.alive
    assert host.stop(timeout=1)  # never started: nothing to do

    async def handler(ctx: Any) -> None:
        await asyncio.to_thread(time.sleep, 0.01)  # the io pool's thread too
        await ctx.sleep(3600)

    ctx = FakeCtx()
    thread, _, reports = run_in_thread(host, handler, Task(), ctx)
    wait_until(lambda: reports.kinds() == ["running"], 5)
    assert "xc-asyncio-life" in names() and "xc-asyncio-life-watchdog" in names()
    ctx.stop_event.set()
    thread.join(5)
    assert host.stop(timeout=5)
    assert names() == []


def test_a_runner_without_a_runtime_gets_a_loop_for_its_slot_alone() -> None:
    async def handler(ctx: Any) -> str:
        return "done"

    runner = FakeRunner(Task(mode="once"))
    executor = co.CoroutineExecutor()
    assert executor.run(runner, FakeCtx(), make_handler("RunX", handler), Reports()) is True
    assert not [t for t in threading.enumerate() if t.name.startswith("xc-asyncio-t-0")]


# --- blocking calls handed to the loop's pool (asyncio.to_thread) ---------------------------


def blocking_work(log: list[str], release: threading.Event, name: str = "work") -> Any:
    def work() -> None:
        log.append(f"{name}_start")
        release.wait(10)
        log.append(f"{name}_end")
    return work


def test_a_stopped_slot_returns_only_once_its_to_thread_call_has(host: Any) -> None:
    """A cancelled await ends the coroutine, not the call: the slot thread (whose return
    lets go of the owner znode) waits for the call."""
    log: list[str] = []
    release = threading.Event()

    async def handler(ctx: Any) -> None:
        await asyncio.to_thread(blocking_work(log, release))

    ctx = FakeCtx()
    thread, out, _ = run_in_thread(host, handler, Task(), ctx)
    wait_until(lambda: log == ["work_start"], 5)
    ctx.stop_event.set()  # the coroutine is cancelled after CANCEL_GRACE
    wait_until(lambda: not [t for t in asyncio.all_tasks(host.loop())
                            if t.get_name().startswith("xc-slot-")], 5)
    thread.join(0.3)
    assert thread.is_alive(), "the slot thread returned while its call still ran"
    release.set()
    thread.join(5)
    assert not thread.is_alive() and log == ["work_start", "work_end"]
    assert out == {"result": False}


@dataclass
class Overdue:
    """A slot whose first run went over its run_timeout (0.1 s) while its asyncio.to_thread
    call is held by `release`: the next run is waiting for that call (the drain said so)."""

    ctx: FakeCtx
    thread: threading.Thread
    out: dict[str, Any]
    reports: Reports
    release: threading.Event
    log: list[str]  # the calls' start and end, named w1, w2, ... by run
    runs: list[int]


@contextlib.contextmanager
def overdue_run(host: Any) -> Iterator[Overdue]:
    log: list[str] = []
    release = threading.Event()
    runs: list[int] = []
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(m.record["message"]), level="INFO")

    async def handler(ctx: Any) -> None:
        runs.append(len(runs))
        await asyncio.to_thread(blocking_work(log, release, f"w{len(runs)}"))

    ctx = FakeCtx()
    thread: threading.Thread | None = None
    try:
        thread, out, reports = run_in_thread(host, handler, Task(run_timeout=0.1,
                                                                retry_backoff=0.01), ctx)
        wait_until(lambda: any("ran over its run_timeout" in line for line in lines), 5)
        yield Overdue(ctx, thread, out, reports, release, log, runs)
    finally:
        ctx.stop_event.set()  # a failed test leaves no slot thread running on
        release.set()
        if thread is not None:
            thread.join(5)
        logger.remove(sink)


def test_a_run_over_its_run_timeout_ends_its_call_before_the_next_run(host: Any) -> None:
    """Cancelled at its deadline, a run's call runs on: the next run waits for it (and says
    so), so two runs of one slot never run side by side on the node, as an overdue thread
    run holds its slot. A call a task left running starts later does not extend the wait."""
    with overdue_run(host) as o:
        assert "timeout" in o.reports.kinds()
        assert o.runs == [0] and o.log == ["w1_start"], "a second run started beside the call"
        o.release.set()
        wait_until(lambda: len(o.runs) >= 2, 5)
        assert o.log[:2] == ["w1_start", "w1_end"]
        o.ctx.stop_event.set()
        o.thread.join(5)
        assert not o.thread.is_alive()


def test_a_stop_while_a_timed_out_runs_call_drains_waits_for_the_call(host: Any) -> None:
    """Stopped while the next run waits for an overdue run's call (the drain), the slot
    thread still returns only once the call has, and no run starts after the stop."""
    with overdue_run(host) as o:
        o.ctx.stop_event.set()  # the drain is cancelled after CANCEL_GRACE
        wait_until(lambda: not [t for t in asyncio.all_tasks(host.loop())
                                if t.get_name().startswith("xc-slot-")], 5)
        o.thread.join(0.3)
        assert o.thread.is_alive(), "the slot thread returned while its run's call still ran"
        assert o.log == ["w1_start"]
        o.release.set()
        o.thread.join(5)
        assert not o.thread.is_alive()
        assert o.runs == [0] and o.log == ["w1_start", "w1_end"], "a run started after the stop"
        assert "error" not in o.out, o.out
