"""Batch callbacks: `Assign<WorkName>(ctx, slots)` and `Revoke<WorkName>(ctx, slots)`.

A handler that drives one client per process (a Kafka consumer's `assign()`, a connection
pool sized by the partitions held) needs to hear about this node's slots of a task as a
set, not one slot at a time. So the runtime calls, per task and per change:

- `Assign` with the slots gained, *before* their runners start;
- `Revoke` with the slots lost, *after* every runner of that batch has ended (a slot
  revoked while its runner still stops is in the batch; a stuck runner holds the batch
  back until it ends, since the user's client must not drop a slot that still runs);
- on node shutdown, `Revoke` for everything still held whose runner ended.

A slot whose runner restarts while the node keeps it (a once-slot's settled runner, a
handler-missing failure, a restart for a changed mode) is not revoked and assigned again;
a slot the node stops holding for a moment (lease ended, session lost) is. A slot whose
workName changes is revoked under the old name and assigned under the new one.

All callbacks run in order on one named thread (`xc-callbacks`), so a slow one never holds
the controller's lock. The controller waits for an Assign at most `timeout` seconds (the
slots must not start before it) and then starts the slots anyway, reporting the overrun;
while a callback is still overrunning, later Assigns are queued behind it and not waited
for, so one hung callback costs one timeout, not one per pass. A callback that raises is
logged with its traceback and reported as a `callback_failed` event; the slots start (or
stay stopped) anyway: the callback is told, it does not decide. An `async def` callback
runs on the node's event loop and is cancelled at the timeout.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from loguru import logger

from .assignment import Slot
from .config import TaskConfig, slot_param
from .events import EventLog
from .works import Handler, WorksRegistry

THREAD_NAME = "xc-callbacks"
CALLBACK_TIMEOUT = 10.0
STOP_MIN = 1.0  # seconds the final Revokes get at shutdown, even past the deadline


@dataclass(frozen=True)
class SlotInfo:
    """One slot as a callback sees it."""

    index: int
    key: str | None  # a keyed task's slot key, else None
    param: Any  # the slot's entry of the task's `params`, else None


@dataclass(frozen=True)
class CallbackContext:
    """Task-level: a batch callback is about a task's slots on this node, not about one."""

    task: str
    work_name: str
    node: str
    generation: int
    logger: Any


@dataclass
class _Call:
    kind: str  # "Assign" or "Revoke"
    hook: Handler
    ctx: CallbackContext
    slots: list[SlotInfo]
    done: threading.Event = field(default_factory=threading.Event)
    began: float | None = None
    reported: bool = False


def _info(slot: Slot, spec: TaskConfig) -> SlotInfo:
    key = getattr(spec, "slot_key", None)
    return SlotInfo(slot.index, key, slot_param(spec, slot.index, key))


class BatchCallbacks:
    """This node's view of which slots it holds, per task, and the thread that tells the
    user's Assign/Revoke hooks about each change. `plan()` runs under the runtime's lock;
    `dispatch()` and `stop()` outside it."""

    def __init__(self, *, node: str, registry: WorksRegistry, events: EventLog | None = None,
                 loop: Any = None, timeout: float = CALLBACK_TIMEOUT) -> None:
        self._node = node
        self._registry = registry
        self._events = events
        self._loop = loop  # the runtime's EventLoopThread, for async callbacks
        self.timeout = timeout
        self._held: dict[Slot, TaskConfig] = {}  # slots the hooks were told are here
        self._leaving: list[dict[Slot, TaskConfig]] = []  # revoked batches, runners ending
        self._queue: queue.Queue[_Call | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._current: _Call | None = None
        self._lock = threading.Lock()

    # -- bookkeeping (the runtime's lock held) ----------------------------------------------
    def plan(self, desired: dict[Slot, TaskConfig], running: Callable[[Slot], bool],
             starting: dict[Slot, TaskConfig], generation: int) -> tuple[list[_Call],
                                                                          list[_Call]]:
        """The Revoke calls due now (batches whose runners have all ended) and the Assign
        calls for the slots about to start; `running(slot)`: a runner of it still runs."""
        lost: dict[Slot, TaskConfig] = {}
        for slot, spec in list(self._held.items()):
            want = desired.get(slot)
            if want is None or want.work_name != spec.work_name:
                lost[slot] = self._held.pop(slot)
            else:
                self._held[slot] = want  # params read at the next call are current
        # One batch per task per change: a slow runner of one task must not hold back the
        # Revoke of another's.
        for task in sorted({slot.task for slot in lost}):
            self._leaving.append({s: spec for s, spec in lost.items() if s.task == task})
        due: dict[Slot, TaskConfig] = {}
        for batch in list(self._leaving):
            # A slot starting again has no runner left: revoke it now, before its Assign.
            ended = {s: spec for s, spec in batch.items() if not running(s)}
            early = {s: spec for s, spec in ended.items() if s in starting}
            take = batch if len(ended) == len(batch) else early
            for slot in take:
                due[slot] = batch[slot]
            remaining = {s: spec for s, spec in batch.items() if s not in take}
            self._leaving.remove(batch)
            if remaining:
                self._leaving.append(remaining)
        gained = {s: spec for s, spec in starting.items() if s not in self._held}
        self._held.update(starting)
        return self._calls("Revoke", due, generation), self._calls("Assign", gained, generation)

    def _calls(self, kind: str, slots: dict[Slot, TaskConfig], generation: int) -> list[_Call]:
        groups: dict[tuple[str, str], list[tuple[Slot, TaskConfig]]] = {}
        for slot, spec in slots.items():
            groups.setdefault((slot.task, spec.work_name), []).append((slot, spec))
        calls = []
        for (task, work), items in sorted(groups.items()):
            hook = self._hook(kind, work)
            if hook is None:
                continue
            items.sort(key=lambda item: item[0].index)
            ctx = CallbackContext(task, work, self._node, generation,
                                  logger.bind(task=task, slot=None))
            calls.append(_Call(kind, hook, ctx, [_info(s, spec) for s, spec in items]))
        return calls

    def _hook(self, kind: str, work_name: str) -> Handler | None:
        find = getattr(self._registry, "hook", None)
        return find(kind, work_name) if find is not None else None

    def release_all(self, running: Callable[[Slot], bool], generation: int) -> list[_Call]:
        """At shutdown: Revoke for every held or leaving slot whose runner has ended, one
        call per task; a slot still running (stuck) is left out and logged."""
        everything: dict[Slot, TaskConfig] = dict(self._held)
        for batch in self._leaving:
            everything.update(batch)
        self._held, self._leaving = {}, []
        still = sorted(s for s in everything if running(s))
        for slot in still:
            logger.bind(task=slot.task, slot=slot.index).error(
                "slot still runs at shutdown: not revoked to its batch callback")
        return self._calls("Revoke", {s: spec for s, spec in everything.items()
                                      if s not in still}, generation)

    # -- calls (controller thread) ----------------------------------------------------------
    def dispatch(self, revokes: list[_Call], assigns: list[_Call]) -> None:
        """Queue the calls (Revokes first), then wait for the Assigns, bounded."""
        if not revokes and not assigns:
            return
        self._ensure_thread()
        for call in revokes + assigns:
            self._queue.put(call)
        deadline = time.monotonic() + self.timeout
        for call in assigns:
            if not self._healthy():
                return
            if not call.done.wait(max(0.0, deadline - time.monotonic())):
                self._overran()
                return

    def _healthy(self) -> bool:
        """False while a callback has run past the timeout (it is reported once)."""
        current = self._current
        if current is None or current.began is None:
            return True
        if time.monotonic() - current.began < self.timeout:
            return True
        self._overran()
        return False

    def _overran(self) -> None:
        current = self._current
        if current is None or current.reported:
            return
        current.reported = True
        message = (f"{current.hook.name} did not return within {self.timeout:g}s; the slots "
                   "start without waiting for it (later callbacks queue behind it)")
        current.ctx.logger.error("{}", message)
        self._event("callback_timeout", current, message)

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._main, name=THREAD_NAME,
                                                daemon=True)
                self._thread.start()

    def _main(self) -> None:
        while True:
            call = self._queue.get()
            if call is None:
                return
            self._current = call
            call.began = time.monotonic()
            try:
                self._call(call)
            finally:
                self._current = None
                call.done.set()

    def _call(self, call: _Call) -> None:
        indices = [s.index for s in call.slots]
        try:
            if call.hook.is_coroutine and self._loop is not None:
                future = asyncio.run_coroutine_threadsafe(call.hook(call.ctx, call.slots),
                                                          self._loop.loop())
                try:
                    future.result(timeout=self.timeout)
                except concurrent.futures.TimeoutError:
                    future.cancel()
                    self._overran()
                    return
            else:
                result = call.hook(call.ctx, call.slots)
                if asyncio.iscoroutine(result):  # no loop to run it on: run it here
                    asyncio.run(result)
        except Exception as exc:  # noqa: BLE001 - a callback's bug must not stop the node
            what = "start" if call.kind == "Assign" else "stay stopped"
            message = (f"{call.hook.name} raised {type(exc).__name__}: {exc} for slots "
                       f"{indices}; the slots {what} anyway")
            call.ctx.logger.opt(exception=exc).error("{}", message)
            self._event("callback_failed", call, message)
            return
        call.ctx.logger.info("{} called for slots {} (generation {})", call.hook.name,
                             indices, call.ctx.generation)

    def _event(self, kind: str, call: _Call, message: str) -> None:
        if self._events is not None:
            self._events.add(kind, message, task=call.ctx.task, hook=call.hook.name,
                             slots=[s.index for s in call.slots])

    def stop(self, timeout: float) -> bool:
        """Let the queued calls finish within `timeout`, then end the thread; False when a
        callback still runs (a daemon thread, left to end with the process)."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is None:
            return True
        self._queue.put(None)
        thread.join(timeout=max(0.0, timeout))
        if thread.is_alive():
            logger.error("batch callbacks still running at shutdown; not waiting for them")
            return False
        return True
