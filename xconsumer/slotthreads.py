"""The threads slots run in, kept for the next slot once one ends.

A handover starts the threads of every slot a node gains at the moment ZooKeeper and every
node are busiest. `threading.Thread.start()` waits until the new thread has run (two
switches of the GIL, each waiting for a core on a loaded machine): at a join of 20 slots
on 2 busy cores the controller started them one after another (15 ms in a traced join)
before any of them could claim its slot. A thread that waits here for its next
slot is handed one without that wait. A node keeps the threads of the slots it gave up
(the next handover reuses them); a thread left idle for IDLE_TIMEOUT ends. A node about
to join starts about its share of threads before it registers (`prestart`), so its join
hands them slots at once, but only into a settled cluster (its assignment written after
its members last changed), and within a budget per process (`PrestartBudget`). While
members join one after another each would guess a share from the members there so far,
which adds up to several times the slots (about 7,500 threads for 1,000 slots on 1,000
members, measured while a cluster formed), and the 1,000-member benchmark's processes,
starting them, lost their sessions and never converged.

As in any thread pool, a handler's thread-local state may outlive its slot on a reused
thread; each slot runs in a fresh `contextvars` context all the same, as in a new thread.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections import deque
from collections.abc import Callable

from loguru import logger

IDLE_TIMEOUT = 30.0  # an idle thread ends after this long without a slot
IDLE_NAME = "xc-slot-idle"
PRESTART_LIMIT = 64  # threads started ahead of joins, per process, in any IDLE_TIMEOUT


class SlotThread:
    """A slot's thread as its runner sees it: the pool's thread running it, named after the
    slot while it runs, with the start / is_alive / join of a `threading.Thread`."""

    def __init__(self, name: str, target: Callable[[], None]) -> None:
        self.name = name
        self._target = target
        self._done = threading.Event()
        self.ident: int | None = None  # set once handed to a thread (None: never started)

    def is_alive(self) -> bool:
        return self.ident is not None and not self._done.is_set()

    def join(self, timeout: float | None = None) -> None:
        if self.ident is None:
            raise RuntimeError("cannot join thread before it is started")
        self._done.wait(timeout)

    def _run(self) -> None:
        self.ident = threading.get_ident()
        current = threading.current_thread()
        current.name = self.name
        try:
            contextvars.Context().run(self._target)
        except BaseException:  # noqa: BLE001 - the thread must go back to the pool
            logger.exception("slot thread {} failed", self.name)
        finally:
            current.name = IDLE_NAME
            self._done.set()


class _Worker:
    """A pool thread, started with its first slot (taken in `SlotThreads._take`), or idle
    (`SlotThreads.prestart`)."""

    def __init__(self, pool: SlotThreads, first: SlotThread | None) -> None:
        self._pool = pool
        self.job: SlotThread | None = first
        self.running: SlotThread | None = None
        self.wake = threading.Event()
        self.thread = threading.Thread(target=self._main, daemon=True,
                                       name=first.name if first is not None else IDLE_NAME)

    def _main(self) -> None:
        while True:
            job = self._pool._take(self)
            if job is None:
                return
            self.running = job
            try:
                job._run()
            finally:
                self.running = None


class SlotThreads:
    """The node's slot threads: owned by its runtime, ended by `close()`, joined by `join()`."""

    def __init__(self, idle_timeout: float = IDLE_TIMEOUT) -> None:
        self._idle_timeout = idle_timeout
        self._lock = threading.Lock()
        self._idle: list[_Worker] = []
        self._workers: set[_Worker] = set()
        self._closed = False

    def start(self, slot_thread: SlotThread) -> None:
        """Run `slot_thread` on an idle thread, or a new one. RuntimeError once closed (or
        when no thread can be started)."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the node's slot threads are closed")
            worker = self._idle.pop() if self._idle else None
            if worker is not None:
                worker.job = slot_thread
                slot_thread.ident = worker.thread.ident
                worker.wake.set()
                return
            worker = _Worker(self, slot_thread)
            self._workers.add(worker)
        try:
            worker.thread.start()
        except BaseException:
            with self._lock:
                self._workers.discard(worker)
            raise
        slot_thread.ident = worker.thread.ident

    def prestart(self, count: int) -> None:
        """Start threads until about `count` are idle (a node about to join a settled
        cluster: see the module). A new thread lists itself idle once it runs (in `_take`),
        so no slot is handed to a thread that has not started (review: listed before it
        started, a slot handed to it in that gap had no thread if its start then failed)."""
        with self._lock:
            missing = 0 if self._closed else count - len(self._idle)
        for _ in range(missing):
            with self._lock:
                if self._closed:
                    return
                worker = _Worker(self, None)
                self._workers.add(worker)
            try:
                worker.thread.start()
            except BaseException as exc:
                with self._lock:
                    self._workers.discard(worker)
                if not isinstance(exc, RuntimeError):
                    raise
                # no thread: slots start theirs when they come
                logger.warning("cannot start an idle slot thread: {}", exc)
                return

    def idle(self) -> int:
        with self._lock:
            return len(self._idle)

    def _take(self, worker: _Worker) -> SlotThread | None:
        """A worker's next slot, waited for while idle; None: end the thread. A worker is on
        the idle list only while it has no slot, given or running: `start()` takes it off
        as it gives it one, and the worker takes the slot here, under the same lock (found
        by review: a worker listed idle before its thread first ran, and handed a slot
        then, put itself back on the list and was given a second slot while it ran the
        first). A new worker's first slot is taken here too, without a wait."""
        with self._lock:
            if worker.job is not None:
                job, worker.job = worker.job, None
                return job
            if self._closed:
                self._workers.discard(worker)
                return None
            if worker not in self._idle:
                self._idle.append(worker)
        while True:
            woken = worker.wake.wait(self._idle_timeout)
            with self._lock:
                worker.wake.clear()
                if worker.job is not None:  # taken off the idle list by start()
                    job, worker.job = worker.job, None
                    return job
                if self._closed or not woken:
                    if worker in self._idle:
                        self._idle.remove(worker)
                    self._workers.discard(worker)
                    return None

    def close(self) -> None:
        """No slot starts from now on, and idle threads end (`join` waits for them): quick,
        so a leaving node closes its session (what hands its slots over) without waiting
        for threads to end."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.wake.set()

    def join(self, timeout: float) -> None:
        """After `close`: join every thread not running a slot, within `timeout`. A thread
        still running one (a stuck slot) is left to it, as a slot's own thread was."""
        deadline = time.monotonic() + timeout
        with self._lock:
            workers = [w for w in self._workers if w.job is None and (
                w.running is None or w.running._done.is_set())]
        for worker in workers:
            if worker.thread.ident is not None:
                worker.thread.join(timeout=max(0.0, deadline - time.monotonic()))


class PrestartBudget:
    """How many threads this process may still start ahead of joins: at most `limit` in
    any `window` seconds, whatever the number of nodes it runs. The cluster-side check (a
    settled cluster) keeps most members of a burst of joins from guessing a share from
    the members there so far, but not all: with no debounce a leader publishes on every
    pass, and a member starting just after a publish finds the cluster settled. Each such
    guess is too high, and its spare threads stay idle for IDLE_TIMEOUT. With one node
    per process that is at most `limit` idle threads for a while; in a process running
    hundreds of members (the 1,000-member benchmark) it could be thousands, as it was
    while a cluster formed, when such a process lost its sessions. The window is the
    idle timeout: by then the spare threads have ended."""

    def __init__(self, limit: int = PRESTART_LIMIT, window: float = IDLE_TIMEOUT,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._limit = limit
        self._window = window
        self._clock = clock
        self._lock = threading.Lock()
        self._spent: deque[tuple[float, int]] = deque()

    def take(self, want: int) -> int:
        """Up to `want` threads, counted against the budget (none past it)."""
        with self._lock:
            now = self._clock()  # read under the lock: the deque stays in time order
            while self._spent and now - self._spent[0][0] >= self._window:
                self._spent.popleft()
            granted = max(0, min(want, self._limit - sum(n for _, n in self._spent)))
            if granted:
                self._spent.append((now, granted))
            return granted
