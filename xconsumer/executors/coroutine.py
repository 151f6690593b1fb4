"""Coroutine handlers (`async def RunX(ctx)`): the `asyncio` executor and the node's loop.

Threads cannot be killed; a coroutine can be cancelled at its next `await`. So a coroutine
slot runs on an event loop, and a stop (revoke, node leaving, lease ended) is real
cancellation: `CancelledError` inside the handler. One loop thread serves every coroutine
slot of a node (`EventLoopThread`, owned by the runtime, started with the first coroutine
slot and joined when the node stops); the slot's own thread only submits the slot's loop
and waits for it, and for the blocking calls the run handed to the loop's pool
(`_SlotPool`), because the runner releases the owner znode as soon as `run()` returns and
nothing the slot started may still run by then. (A task the handler spawned and never
awaited is the one exception: it is not waited for, and what it starts after the slot let
go is not the slot's.)

A stop first wakes the handler's `await ctx.sleep()` (it returns False, as for threads),
then cancels the coroutine if it is still running `CANCEL_GRACE` seconds later. A coroutine
that swallows the cancellation keeps the slot and is reported stuck by the runtime after
`stop_timeout`, exactly like a thread that ignores `ctx.stopping`.

One loop for many slots has one weakness: a coroutine that blocks (`time.sleep` in an
`async def`) stalls all of them. A watchdog thread pings the loop; a ping unanswered for
`BLOCKED_AFTER` seconds is reported (log line naming the slot, `loop_blocked` event,
`xconsumer_loop_blocked_total`). The other slots' stops are queued on the loop and happen
as soon as it is free again.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from typing import Any

from loguru import logger

from ..loop import RUN, Done, LoopTask, Outcome, Overran, Report, advance, loop_steps
from .thread import _LiveTask

LOOP_THREAD = "xc-asyncio"
PING_EVERY = 0.25  # the watchdog's ping period
BLOCKED_AFTER = 1.0  # an unanswered ping this old means a coroutine blocks the loop
CANCEL_GRACE = 0.2  # after a stop, sleeps return False at once; cancellation comes this late
POLL = 0.05  # how often a waiting slot thread looks at ctx.stopping (a lease ends silently)
LIVE_LIMIT_EVERY = 0.25  # how often a run's deadline follows a run_timeout changed live
START_TIMEOUT = 5.0
IO_THREADS = 8  # `await ctx.commit()` and the handlers' asyncio.to_thread calls


class _Run:
    """One run of a slot on the loop (run_slot): the blocking calls it handed to the pool."""

    __slots__ = ("closed", "log", "pool", "stop_timeout")

    def __init__(self, pool: _SlotPool | None, log: Any, stop_timeout: float) -> None:
        self.pool = pool
        self.log = log
        self.stop_timeout = stop_timeout
        self.closed = False  # the slot has let go: its calls are no longer tracked

    async def drain(self, why: str) -> None:
        """Wait, on the loop, for the calls of this run in the pool *now* (see _SlotPool);
        those started later (by a task the handler left running) do not extend the wait.
        Said when it starts, and again if it lasts past stop_timeout."""
        pool = self.pool
        if pool is None:
            return
        waiting = pool.pending(self)
        if not waiting:
            return
        self.log.info("waiting for {} asyncio.to_thread call(s) {}", len(waiting), why)
        began, said = time.monotonic(), False
        while any(not f.done() for f in waiting):
            await asyncio.sleep(POLL)
            if not said and time.monotonic() - began > self.stop_timeout:
                said = True
                self.log.warning("still waiting after {:.1f}s for {} asyncio.to_thread "
                                 "call(s) {}: a blocking call that does not return holds "
                                 "the slot", time.monotonic() - began,
                                 sum(not f.done() for f in waiting), why)


# The run of a slot whose coroutine is running, set in its task's context (which the tasks
# it spawns copy): what the pool files a blocking call under, since asyncio.to_thread and
# run_in_executor submit from the calling task.
_RUN: contextvars.ContextVar[_Run | None] = contextvars.ContextVar("xc_slot_run",
                                                                  default=None)


class _SlotPool(ThreadPoolExecutor):
    """The loop's default executor (`asyncio.to_thread`, `run_in_executor(None, ...)`), which
    knows which slot's run submitted each call. A cancelled `await asyncio.to_thread(f)`
    ends the coroutine, not `f`: the thread runs on. Found in review: the slot thread then
    returned and the runner released the owner znode while `f` still ran, so the slot's new
    owner could start beside it. The slot now ends only once its calls have (`pending`); one
    past `stop_timeout` makes it stuck, its owner znode kept, like a thread that ignores a
    stop. A call submitted for a run that has let go (by a task the handler spawned and
    left running) is not the slot's any more and is not tracked."""

    def __init__(self, workers: int, *, thread_name_prefix: str) -> None:
        super().__init__(workers, thread_name_prefix=thread_name_prefix)
        self._by_run: dict[_Run, set[Future[Any]]] = {}
        self._runs_lock = threading.Lock()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        run = _RUN.get()
        if run is None or run.pool is not self:
            return super().submit(fn, *args, **kwargs)
        with self._runs_lock:  # filed before `pending` can look: no call is missed
            future = super().submit(fn, *args, **kwargs)
            if run.closed:
                # From a task the handler left running after its slot let go (a shared
                # client's refresher, say): not the slot's any more, so not tracked; such
                # a task is not covered (docs/HANDLERS.md). Refusing it, tried after a
                # review, broke node-wide tasks a slot happened to start.
                return future
            self._by_run.setdefault(run, set()).add(future)
        future.add_done_callback(lambda f, r=run: self._forget(r, f))
        return future

    def _forget(self, run: _Run, future: Future[Any]) -> None:
        with self._runs_lock:
            left = self._by_run.get(run)
            if left is not None:
                left.discard(future)
                if not left:
                    del self._by_run[run]

    def pending(self, run: _Run, *, close: bool = False) -> set[Future[Any]]:
        """The run's calls still queued or running; with `close`, when there are none, the
        run is closed in the same step, so no call can start after the answer."""
        with self._runs_lock:
            left = {f for f in self._by_run.get(run, ()) if not f.done()}
            if close and not left:
                run.closed = True
            return left


class AsyncSlotContext:
    """What a coroutine handler receives: the slot's context, with the blocking parts made
    awaitable (`sleep`, `commit`); everything else (`task`, `slot`, `fence`, `key`, `param`,
    `checkpoint`, `logger`, ...) is the slot context's own."""

    def __init__(self, ctx: Any) -> None:
        self._ctx = ctx
        self._stopped = asyncio.Event()  # set on the loop when the slot must stop

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ctx, name)

    @property
    def stopping(self) -> bool:
        return bool(self._ctx.stopping)

    async def sleep(self, seconds: float) -> bool:
        """Sleep up to `seconds`; False as soon as the slot must stop."""
        if self.stopping:
            return False
        try:
            async with asyncio.timeout(max(0.0, seconds)):
                await self._stopped.wait()
        except TimeoutError:
            return not self.stopping
        return False

    async def commit(self, value: Any) -> Any:
        """The slot context's `commit` (a ZooKeeper transaction, blocking) off the loop, so
        the other slots run on while it waits for ZooKeeper."""
        commit = self._ctx.commit
        return await asyncio.to_thread(commit, value)

    def wake(self) -> None:
        """On the loop: the slot must stop; sleeping handlers return False."""
        self._stopped.set()


class _LiveDeadline:
    """A run's run_timeout, read live as for threads: a limit set over the API while a run
    hangs (often why it is set) bounds that run too."""

    def __init__(self, loop: asyncio.AbstractEventLoop, limit_of: Callable[[], Any]) -> None:
        self._loop = loop
        self._limit_of = limit_of
        self._began = loop.time()
        self._handle: asyncio.TimerHandle | None = None
        self.limit: float | None = None

    def follow(self, scope: asyncio.Timeout) -> None:
        if scope.expired():
            return
        self.limit = self._limit_of() or None
        when = self._began + self.limit if self.limit else None
        if when != scope.when():
            scope.reschedule(when)
        self._handle = self._loop.call_later(LIVE_LIMIT_EVERY, self.follow, scope)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()


async def _one_run(handler: Callable[[Any], Any], view: AsyncSlotContext,
                   task: LoopTask) -> Outcome:
    """One call of the coroutine handler, cancelled at its deadline (reported as a timeout)
    or by the slot's stop (an interrupted run, like a thread run that returns on a stop)."""
    deadline = _LiveDeadline(asyncio.get_running_loop(), lambda: task.run_timeout)
    scope = asyncio.timeout(None)
    try:
        async with scope:
            deadline.follow(scope)
            await handler(view)
    except TimeoutError as exc:
        return Overran(deadline.limit or 0.0) if scope.expired() else exc
    except asyncio.CancelledError:
        if view.stopping:
            return None
        raise
    except Exception as exc:  # noqa: BLE001 - handler errors are retried, never fatal
        return exc
    finally:
        deadline.cancel()
    # It swallowed the deadline's cancellation and returned: late all the same.
    return Overran(deadline.limit or 0.0) if scope.expired() else None


async def _pause(view: AsyncSlotContext, seconds: float) -> Outcome:
    await view.sleep(seconds)
    return None


async def slot_loop(handler: Callable[[Any], Any], view: AsyncSlotContext, task: LoopTask,
                    report: Report, *, breaker: Any = None) -> bool:
    """The handler loop of a coroutine slot: the same steps as a thread's (`loop_steps`),
    driven with awaits. True only when a once-slot completed."""
    steps = loop_steps(task, report, lambda: view.stopping, breaker=breaker)
    step = advance(steps, None)
    run = _RUN.get()
    while not isinstance(step, Done):
        outcome = await (_one_run(handler, view, task) if step is RUN else _pause(view, step))
        step = advance(steps, outcome)  # a timeout is reported here, as it happens
        if isinstance(outcome, Overran) and run is not None:
            # Cancelled at its deadline, the run's blocking call runs on: the next run
            # must not start beside it (found in review), as an overdue thread run holds
            # its slot.
            await run.drain("of the run that ran over its run_timeout to end")
    return step.completed


class EventLoopThread:
    """The node's event loop for coroutine slots, on a thread of its own (`xc-asyncio`), with
    a watchdog thread and a small pool for blocking calls; all three named, owned by the
    runtime and joined by `stop()`. Started lazily: a node without coroutine handlers never
    has these threads."""

    def __init__(self, *, name: str = LOOP_THREAD, metrics: Any = None,
                 events: Any = None) -> None:
        self.name = name
        self._metrics = metrics
        self._events = events
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._watchdog: threading.Thread | None = None
        self._io: _SlotPool | None = None
        self._closing = threading.Event()
        # The loop's tasks that run a slot, for naming the culprit of a blocked loop.
        self._slots: dict[asyncio.Task[Any], tuple[str, int]] = {}
        self.blocked = 0  # episodes the watchdog reported, for tests and views

    # -- lifecycle (any thread) -------------------------------------------------------------
    def loop(self) -> asyncio.AbstractEventLoop:
        """The running loop, started on first use."""
        with self._lock:
            if self._loop is None:
                self._start()
            assert self._loop is not None
            return self._loop

    @property
    def alive(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def _start(self) -> None:
        loop = asyncio.new_event_loop()
        self._io = _SlotPool(IO_THREADS, thread_name_prefix=f"{self.name}-io")
        loop.set_default_executor(self._io)
        ready = threading.Event()

        def main() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()

        self._closing = threading.Event()
        self._thread = threading.Thread(target=main, name=self.name, daemon=True)
        self._watchdog = threading.Thread(target=self._watch, args=(loop, self._closing),
                                          name=f"{self.name}-watchdog", daemon=True)
        self._thread.start()
        if not ready.wait(START_TIMEOUT):
            raise RuntimeError(f"event loop thread {self.name} did not start")
        self._watchdog.start()
        self._loop = loop
        logger.info("event loop {} started for coroutine handlers", self.name)

    def stop(self, timeout: float) -> bool:
        """Cancel whatever still runs on the loop, stop it and join its threads, all within
        `timeout`. False when the loop thread is still busy at the end (a coroutine blocks
        it): it is a daemon thread, left to end with the process."""
        with self._lock:
            loop, thread, watchdog, io = self._loop, self._thread, self._watchdog, self._io
            self._loop = None
        if loop is None or thread is None:
            return True
        deadline = time.monotonic() + max(0.0, timeout)
        self._closing.set()

        async def wind_down() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks, timeout=max(0.0, deadline - time.monotonic()))
            loop.stop()

        with contextlib.suppress(RuntimeError):  # already closed
            loop.call_soon_threadsafe(lambda: loop.create_task(wind_down()))
        for t in (thread, watchdog):
            if t is not None and t.ident is not None:
                t.join(timeout=max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            logger.error("event loop {} did not stop in time: a coroutine blocks it", self.name)
            return False
        left = asyncio.all_tasks(loop)
        if left:
            logger.error("{} coroutine(s) ignored cancellation; they stop with the loop",
                         len(left))
        else:
            loop.close()
        if io is not None:
            io.shutdown(wait=False, cancel_futures=True)
            for t in list(getattr(io, "_threads", ())):
                t.join(timeout=max(0.0, deadline - time.monotonic()))
        logger.info("event loop {} stopped", self.name)
        return True

    # -- a slot (its own thread) ------------------------------------------------------------
    def run_slot(self, runner: Any, ctx: Any, handler: Any, report: Report) -> bool:
        """Run the slot's loop on the event loop and wait for it; see the module docstring
        for how a stop becomes a cancellation. Returns only once the coroutine has ended
        (or the loop itself has, which ends every coroutine on it)."""
        loop = self.loop()
        thread = self._thread
        view = AsyncSlotContext(ctx)
        slot = (runner.slot.task, runner.slot.index)
        finished = threading.Event()
        box: dict[str, asyncio.Task[bool]] = {}

        run = _Run(self._io, runner.log, runner.task.stop_timeout)  # apart from a later run's
        context = contextvars.copy_context()
        context.run(_RUN.set, run)

        def begin() -> None:
            coro = slot_loop(handler, view, _LiveTask(runner), report, breaker=runner.breaker)
            task = loop.create_task(coro, name=f"xc-slot-{slot[0]}-{slot[1]}",
                                    context=context)
            self._slots[task] = slot
            box["task"] = task

            def done(t: asyncio.Task[bool]) -> None:
                self._slots.pop(t, None)
                finished.set()

            task.add_done_callback(done)

        def stop() -> None:
            view.wake()
            task = box.get("task")
            if task is not None and not task.done():
                loop.call_later(CANCEL_GRACE, task.cancel)

        loop.call_soon_threadsafe(begin)
        stop_sent = False
        while not finished.wait(POLL):
            if thread is None or not thread.is_alive():
                runner.log.warning("event loop ended under a running coroutine slot")
                break
            if not stop_sent and ctx.stopping:
                stop_sent = True
                try:
                    loop.call_soon_threadsafe(stop)
                except RuntimeError:
                    break  # the loop is closed: only the slot's blocking calls may remain
        self._await_calls(runner, run)
        task = box.get("task")
        if task is None or not task.done():
            return False
        if task.cancelled():
            return False
        error = task.exception()
        if error is not None:
            raise error
        return bool(task.result())

    def _await_calls(self, runner: Any, run: _Run) -> None:
        """Wait for the blocking calls the run left behind (see _SlotPool), in slices, and
        close it: past stop_timeout the runtime reports the slot stuck, and the wait goes on."""
        pool = run.pool
        if pool is None:
            return
        for future in pool.pending(run):
            future.cancel()  # one still queued never runs: dropped (a running one runs on)
        pending = pool.pending(run, close=True)
        if pending:
            runner.log.info("waiting for {} asyncio.to_thread call(s) of the slot to end "
                            "before it lets go of the slot", len(pending))
        while pending:
            wait_futures(pending, timeout=POLL * 4)
            pending = pool.pending(run, close=True)

    # -- watchdog ---------------------------------------------------------------------------
    def _watch(self, loop: asyncio.AbstractEventLoop, closing: threading.Event) -> None:
        while not closing.wait(PING_EVERY):
            answered = threading.Event()
            sent = time.monotonic()
            try:
                loop.call_soon_threadsafe(answered.set)
            except RuntimeError:
                return  # the loop is closed
            if answered.wait(BLOCKED_AFTER) or closing.is_set():
                continue
            culprit = self._culprit(loop)
            self._report_blocked(culprit, time.monotonic() - sent)
            while not answered.wait(PING_EVERY):
                if closing.is_set():
                    return
            task, index = culprit
            logger.bind(task=task, slot=index).warning(
                "event loop {} free again after {:.1f}s", self.name, time.monotonic() - sent)

    def _culprit(self, loop: asyncio.AbstractEventLoop) -> tuple[str, int | None]:
        """The slot whose coroutine runs on the loop now: the one that blocks it. A task a
        handler started itself is not known by slot; its own name is the best clue."""
        current = asyncio.current_task(loop)
        if current is None:
            return ("?", None)
        known = self._slots.get(current)
        if known is not None:
            return known
        return (f"?({current.get_name()})", None)

    def _report_blocked(self, culprit: tuple[str, int | None], lag: float) -> None:
        task, index = culprit
        self.blocked += 1
        where = f"{task}/{index}" if index is not None else task
        message = (f"{where} blocks the event loop {self.name} ({lag:.1f}s and counting): a "
                   "blocking call inside `async def` (use await, or asyncio.to_thread); "
                   "every coroutine slot of this node waits, stops included")
        logger.bind(task=task, slot=index).error("{}", message)
        if self._events is not None:
            self._events.add("loop_blocked", message, task=task, slot=index)
        counter = getattr(self._metrics, "loop_blocked", None)
        if counter is not None:
            counter.labels(task).inc()


class CoroutineExecutor:
    """The `asyncio` kind (`executor_for` picks it for an `async def` handler in a thread
    task). The runtime hands each runner the node's loop (`runner.event_loop`); a runner
    made without a runtime gets a loop of its own for the slot's lifetime."""

    kind = "asyncio"

    def run(self, runner: Any, ctx: Any, handler: Any, report: Report) -> bool:
        host = getattr(runner, "event_loop", None)
        if host is not None:
            return bool(host.run_slot(runner, ctx, handler, report))
        own = EventLoopThread(name=f"{LOOP_THREAD}-{runner.slot.task}-{runner.slot.index}")
        try:
            return own.run_slot(runner, ctx, handler, report)
        finally:
            own.stop(timeout=runner.task.stop_timeout)

