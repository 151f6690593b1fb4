"""The set of slot runners on one node, reconciled against the slots the leader gave it.

Revoke before assign: slots this node lost are asked to stop first, then the slots it gained
start; a gained slot whose old runner is still ending starts once that runner has exited.

The runtime also owns what its runners share: the node's event loop for coroutine handlers
(started with the first coroutine slot, stopped after the last runner, on every shutdown),
and the batch callbacks (`Assign<WorkName>` before gained slots start, `Revoke<WorkName>`
after lost slots stopped; see callbacks.py).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import KazooException, NodeExistsError, NoNodeError
from kazoo.handlers.threading import KazooTimeoutError
from loguru import logger

from .assignment import Slot
from .callbacks import CALLBACK_TIMEOUT, STOP_MIN, BatchCallbacks
from .config import TaskConfig
from .events import EventLog
from .executors.coroutine import EventLoopThread
from .lease import Lease
from .metrics import Metrics
from .paths import Paths
from .slot import SlotContext, SlotRunner, SlotStatus, restart_needed
from .slotthreads import SlotThreads
from .works import WorksRegistry
from .zk import owner_look, refused_ops

__all__ = ["Runtime", "SlotContext", "SlotRunner", "SlotStatus", "restart_needed"]

LOOP_STOP_MIN = 1.0  # seconds the event loop may take to stop, even past the deadline
# A leaving node's slots that end within this of the stop go with its session's close (one
# request); past it, each slot gives its owner znode back as it ends (see stop_all).
CLOSE_WINDOW = 0.1
CLAIM_BATCH = 500  # owner znodes per claiming transaction (well under jute.maxbuffer)
CLAIM_TIMEOUT = 10.0
# Transactions a claim may add for held slots released while it was out (_claim_released).
FOLLOW_UP_CLAIMS = 3


class Runtime:
    """The set of slot runners on this node, reconciled against the desired slots.

    `apply()` is called only from the node's controller thread; `revoke_all()` may be called
    from any thread (a kazoo listener, a signal path) because it only sets events.
    """

    def __init__(self, *, node: str, client: KazooClient, paths: Paths, lease: Lease,
                 registry: WorksRegistry, session_id: Callable[[], int | None],
                 on_change: Callable[[], None], metrics: Metrics | None = None,
                 events: EventLog | None = None,
                 callback_timeout: float = CALLBACK_TIMEOUT) -> None:
        self._metrics = metrics
        self._events = events
        self._node = node
        self._client = client
        self._paths = paths
        self._lease = lease
        self._registry = registry
        self._session_id = session_id
        self._on_change = on_change
        self._lock = threading.Lock()
        self._runners: dict[Slot, SlotRunner] = {}
        # Owner znodes a runner could not delete when it ended (the connection was down).
        # Left alone, one would live as long as our session and keep the slot's next owner
        # waiting.
        # Kept by owner znode, not by slot: a keyed slot's znode is its key's, and a slot
        # whose key changed runs under another path while its old znode waits here.
        # owner znode path -> the fence it was held with, if known
        self._orphans: dict[str, int | None] = {}
        self.threads = SlotThreads()  # the threads slots run in, kept between slots
        # No thread until a coroutine slot asks for it (see executors/coroutine.py).
        self.event_loop = EventLoopThread(metrics=metrics, events=events)
        self.callbacks = BatchCallbacks(node=node, registry=registry, events=events,
                                        loop=self.event_loop, timeout=callback_timeout)
        self._generation = 0
        self._stopping = False  # stop_all began: nothing starts any more
        self._closing = threading.Event()  # see leave_owners_to_session
        self._give_back: Callable[[], None] | None = None
        # A node's first claim after it joined is of slots live nodes still hold (a join
        # moves slots only from live nodes): it asks before it creates (see _claim_batch).
        self._look_first = True

    def apply(self, desired: dict[Slot, TaskConfig], generation: int) -> None:
        """Revoke before assign: stop what we lost, then start what we gained. The batch
        callbacks are told in between: Revoke for lost slots whose runners have ended,
        Assign for the slots about to start (waited for, bounded, outside the lock)."""
        self.release_orphans()
        with self._lock:
            if self._stopping:
                return
            self._generation = generation
            for slot, runner in list(self._runners.items()):
                spec = desired.get(slot)
                if not runner.alive:
                    # A finished once-slot (or one whose handler is missing) stays on record
                    # while it is still assigned unchanged, so it is not started again.
                    settled = (runner.state in ("done", "failed") and spec is not None
                               and not restart_needed(runner.task, spec))
                    if not settled:
                        self._forget(runner)
                elif spec is None:
                    runner.request_stop("revoked")
                elif restart_needed(runner.task, spec):
                    runner.request_stop("task definition changed")
                else:
                    runner.task = spec  # interval, backoff, stop_timeout apply live
            starting: dict[Slot, SlotRunner] = {}
            # A keyed slot's owner znode is its key's: a key that moved to another index
            # must wait for the runner still finishing it under the old index (on this
            # node it would otherwise adopt that runner's znode as its own).
            held = {r.owner_path for r in self._runners.values() if r.alive}
            for slot, spec in desired.items():
                if slot in self._runners:
                    continue  # running, or still stopping: started again once it ends
                if spec.slot_key is not None and self._paths.slot_owner(
                        slot.task, slot.index, spec.slot_key) in held:
                    continue  # its key still runs under another index: started once it ends
                runner = SlotRunner(slot=slot, task=spec, generation=generation,
                                    node=self._node, client=self._client, paths=self._paths,
                                    lease=self._lease, registry=self._registry,
                                    session_id=self._session_id, on_exit=self._runner_exited,
                                    metrics=self._metrics, events=self._events,
                                    session_closes=self._closing.is_set, gated=True,
                                    threads=self.threads)
                runner.event_loop = self.event_loop  # type: ignore[attr-defined]
                self._runners[slot] = runner
                starting[slot] = runner
            revokes, assigns = self.callbacks.plan(
                desired, self._running, {s: r.task for s, r in starting.items()}, generation)
        self.callbacks.dispatch(revokes, assigns)
        # The threads start while the batched claim's first requests are out, and wait at
        # their gate until it is done: starting them (a fraction of a millisecond each,
        # more on a busy machine) overlaps the claim's round trips instead of following them.
        started: list[SlotRunner] = []

        def start_threads() -> None:
            with self._lock:
                while pending:  # each runner handled once, even after an exception
                    runner = pending.pop(0)
                    if not self._stopping:
                        try:
                            runner.start()
                            started.append(runner)
                            continue
                        except RuntimeError as exc:  # no thread: the next pass tries again
                            runner.log.error("cannot start the slot's thread: {}", exc)
                    # Stopping (its Assign was called: stop_all's final Revoke covers it),
                    # or no thread: never to run, so a znode claimed for it goes to the sweep.
                    runner.exited = True
                    self._forget(runner)

        pending = list(starting.values())
        try:
            self._claim(list(pending), start_threads)
        finally:
            start_threads()
            for runner in started:
                runner.open_gate()

    def _forget(self, runner: SlotRunner) -> None:
        """Drop a runner (the lock held); one that never started but was claimed leaves its
        owner znode to the orphan sweep, or our session would keep it for ever."""
        if self._runners.get(runner.slot) is runner:
            del self._runners[runner.slot]
        if runner.thread.ident is None and runner.claimed_fence is not None:
            self._orphan(runner.owner_path, runner.claimed_fence)

    def _claim(self, runners: list[SlotRunner], meanwhile: Callable[[], None]) -> None:
        """Create the owner znodes of a generation's gained slots in one transaction per
        CLAIM_BATCH, instead of one create per slot thread: a handover of many slots costs
        a few requests, not one per slot. Only free slots are claimed: a slot whose
        previous owner still holds its znode is left out of the transaction (ZooKeeper
        names the op that failed), and its thread waits on a watch as always. Anything
        unexpected (no connection, a lost reply, a refusal of another kind) leaves the
        rest to the threads: a znode of ours they find is adopted (SlotRunner._acquire).
        Held slots released while this was out get one more transaction (_claim_released).
        `meanwhile` is called (once: it must be idempotent) when the first requests are out,
        before their answers are waited for."""
        if len(runners) < 2 or not self._lease.valid() or not self._client.connected:
            return  # one create costs the same from the slot's own thread
        for start in range(0, len(runners), CLAIM_BATCH):
            batch = runners[start:start + CLAIM_BATCH]
            try:
                self._claim_batch(batch, meanwhile)
            except (KazooException, KazooTimeoutError) as exc:
                logger.debug("batched claim left to the slot threads ({})",
                             type(exc).__name__)
                # A transaction whose answer was lost may have made the znodes of runners
                # that will never look for them (never started, or gone): the sweep does.
                # One still ending (told to stop at its gate, its release looked already or
                # not) is marked as maybe holding its znode: its own release, or the orphan
                # record its exit then makes, deletes a znode of our session found there.
                # Found by review: it left the znode for the session's life. Marked before
                # `exited` is read, as the thread sets `exited` before it reads the mark
                # (in _runner_exited): one of the two always sees the other's write.
                with self._lock:
                    for runner in batch:
                        if runner.acquired:
                            continue
                        runner.may_hold_owner = True
                        if runner.exited:
                            self._orphan(runner.owner_path, None)
                return

    def _claim_batch(self, runners: list[SlotRunner], meanwhile: Callable[[], None]) -> None:
        self._claim_free(runners, meanwhile)
        self._claim_released(runners)

    def _claim_free(self, runners: list[SlotRunner], meanwhile: Callable[[], None]) -> None:
        look_first, self._look_first = self._look_first, False
        # A joining node's gained slots are all still held by the nodes they move from: it
        # asks first (one round of stats, each setting the slot's watch) and creates only
        # the free ones, a round trip fewer than a refused transaction and then the stats.
        pending = self._free_of(runners, meanwhile) if look_first else list(runners)
        ensured, looked = False, look_first
        while True:
            pending = [r for r in pending if not r.exited]  # never started, or gone
            if len(pending) < 2:
                return
            committed, probe = self._create_all(pending)
            meanwhile()
            results = committed.get(timeout=CLAIM_TIMEOUT)
            if not any(isinstance(r, Exception) for r in results):
                break
            failed = [results[i] for i in refused_ops(results)]
            if not failed:
                return  # refused without naming why: the threads do the rest
            if not ensured and all(isinstance(r, NoNodeError) for r in failed):
                # owners/<task> does not exist yet (a task's first start, or deleted by
                # hand): a transaction cannot make parents. Made once, then tried again;
                # assumed to exist otherwise, so a claim costs no round trip for it.
                ensured = True
                for parent in {self._paths.owner_task(r.slot.task) for r in pending}:
                    self._client.ensure_path_async(parent).get(timeout=CLAIM_TIMEOUT)
                continue
            if looked or not all(isinstance(r, NodeExistsError) for r in failed):
                return  # a second refusal (or an unexpected one): the threads do the rest
            # ZooKeeper names only the first held slot: ask for them all at once and claim
            # the free ones. A slot another session holds waits on the watch that round set
            # (a create and a stat of its thread saved).
            looked = True
            pending = self._free_of(pending, meanwhile)
        self._take(pending, probe)

    def _claim_released(self, runners: list[SlotRunner]) -> None:
        """Held slots whose previous owner let go while the claim was out (their watch saw
        the znode deleted) are claimed in one more transaction, instead of a create from
        each thread once the gates open: a joining node starts its threads while the old
        owners release, and those releases land then. Only what is gone already is asked,
        nothing is waited for: a slot still held, or one ZooKeeper refuses (another znode
        there by now), is left to its thread and its watch as before."""
        for _ in range(FOLLOW_UP_CLAIMS):
            # Not one told to stop (a znode made for it would wait for the sweep, or for a
            # leaving node's close), nor one whose thread claims for itself already (its
            # gate timed out on a slow server).
            gone = [r for r in runners if r.held_by is not None and r.owner_gone
                    and r.claimed_fence is None and not r.may_hold_owner
                    and not r.stop_event.is_set() and not r.exited]
            if (len(gone) < 2 or self._stopping or not self._lease.valid()
                    or not self._client.connected):
                return  # one create costs the same from the slot's own thread
            committed, probe = self._create_all(gone)
            if any(isinstance(r, Exception) for r in committed.get(timeout=CLAIM_TIMEOUT)):
                return
            if not self._take(gone, probe):
                return

    def _create_all(self, runners: list[SlotRunner]) -> tuple[Any, Any]:
        """Send one transaction creating the runners' owner znodes, and the probe: an
        `exists` sent behind it on the same session, so ZooKeeper answers it after applying
        the transaction (requests of one session are served in order): the czxid of what it
        created, without a round trip of its own."""
        tx = self._client.transaction()
        for runner in runners:
            tx.create(runner.owner_path, runner.owner_data(), ephemeral=True)
        return tx.commit_async(), self._client.exists_async(runners[0].owner_path)

    def _take(self, created: list[SlotRunner], probe: Any) -> bool:
        """One transaction made the owner znodes of `created`; `probe`, sent behind it,
        names their czxid: each runner starts as its owner. False if the probe found what
        we did not make (the threads look for themselves then)."""
        stat = probe.get(timeout=CLAIM_TIMEOUT)
        if stat is None or stat.ephemeralOwner != self._session_id():
            return False  # not what we created: the threads look for themselves
        orphaned = False
        for runner in created:  # one transaction: every znode it made has its czxid
            with self._lock:
                runner.claimed(stat.czxid)
                if runner.exited:
                    # Never started, told to stop at its gate, or gone already (a missing
                    # handler): the sweep deletes the znode.
                    self._orphan(runner.owner_path, stat.czxid)
                    orphaned = True
        if orphaned and self._stopping and not self._closing.is_set():
            self.release_orphans()  # no controller pass will come to sweep them
        return True

    def _free_of(self, runners: list[SlotRunner], meanwhile: Callable[[], None]
                 ) -> list[SlotRunner]:
        """The runners whose owner znode is free, asked in one round of stats, each setting
        that slot's watch; one held by another session waits on it (`wait_for_owner`)."""
        stats = [self._client.exists_async(r.owner_path, watch=r.owner_watch)
                 for r in runners]
        meanwhile()
        session = self._session_id()
        free = []
        for runner, result in zip(runners, stats, strict=True):
            stat = result.get(timeout=CLAIM_TIMEOUT)
            if stat is None:
                free.append(runner)
            elif stat.ephemeralOwner not in (0, session):
                runner.wait_for_owner(stat.ephemeralOwner)
        return free

    def _running(self, slot: Slot) -> bool:
        """A runner of `slot` still runs (the lock held)."""
        runner = self._runners.get(slot)
        return runner is not None and runner.alive

    def leave_owners_to_session(self, give_back: Callable[[], None] | None = None) -> None:
        """The node is leaving and closes its ZooKeeper session once every slot has ended:
        ZooKeeper then deletes all our owner znodes at once, in the one request that closes
        the session, instead of a stat and a delete per slot from the slot threads of a
        process that is shutting down (what kept a graceful leave's new owners waiting
        longest). It deletes only our session's ephemerals, and only once the handlers have
        ended: the node closes the session after stop_all. If a slot is still running
        CLOSE_WINDOW after stop_all began, the session is not counted on (keep_session):
        the slots that ended are given back at once, the others as they end; and
        `give_back` then gives back what else the node left to the close (its name claim)."""
        self._give_back = give_back
        self._closing.set()

    def keep_session(self) -> None:
        """A slot is stuck, so the node keeps its session after all: a slot that ends from
        now on deletes its own owner znode again, and those that ended meanwhile are given
        back now, with what the node left to the close (once)."""
        self._closing.clear()
        self.release_orphans()
        give_back, self._give_back = self._give_back, None
        if give_back is not None:
            give_back()

    def _orphan(self, path: str, fence: int | None) -> None:
        """Record an owner znode our session may still hold (the lock held). Two records of
        one znode that name different fences mean any znode of ours there: only a live
        runner of that path may keep one (see release_orphans)."""
        if path in self._orphans and self._orphans[path] != fence:
            fence = None
        self._orphans[path] = fence

    def has_orphans(self) -> bool:
        return bool(self._orphans)

    def release_orphans(self) -> None:
        """Delete owner znodes our session still holds for slots no runner of ours runs.

        Runs on the controller thread, like `apply()` (or, once the node is stopping and
        starts nothing, on the thread that stops it), so no runner can be started for the
        path between the check and the delete; the version check covers the rest."""
        session = self._session_id()
        for path, fence in sorted(self._orphans.items()):
            with self._lock:
                # A live runner of that znode (the slot's own, or a keyed slot's key under
                # another index) adopts or releases it itself, as a rule; the record stays
                # for when none is left (one stopped at its gate makes no znode, so it would
                # not record ours). Not any runner of the slot: one whose key changed runs
                # under another path (found by review: the record was dropped and the old
                # key's znode stayed for our session's life).
                if any(r.alive and r.owner_path == path for r in self._runners.values()):
                    continue
            try:
                stat = owner_look(self._client, path, fence).get(timeout=5.0)
                if (stat is not None and session is not None and stat.ephemeralOwner == session
                        and (fence is None or stat.czxid == fence)):
                    self._client.delete_async(path, version=stat.version).get(timeout=5.0)
            except NoNodeError:
                pass
            except (KazooException, KazooTimeoutError):
                return  # still no connection: next pass
            with self._lock:
                # A runner that ended meanwhile may have recorded the path again (another
                # znode, so another fence): that record is the next pass's.
                if self._orphans.get(path, fence) == fence:
                    self._orphans.pop(path, None)

    def _runner_exited(self, runner: SlotRunner) -> None:
        # Claimed for it but never acquired (told to stop at its gate, or the claim landed
        # after its thread looked): the claim may have set may_hold_owner after _release
        # looked, so the claim's fence decides too.
        unclaimed = runner.claimed_fence is not None and not runner.acquired
        if runner.may_hold_owner or unclaimed:
            with self._lock:
                self._orphan(runner.owner_path, runner.held_fence or runner.claimed_fence)
            if self._stopping and not self._closing.is_set() and self._client.connected:
                # A stuck slot that ended after the node kept its session (keep_session)
                # but saw the close still coming: no controller pass will retry it.
                self.release_orphans()
        if runner.stuck_reported:
            runner.log.warning("stuck slot finally stopped after {:.1f}s",
                               time.monotonic() - (runner.stop_requested_at or 0.0))
        self._on_change()

    def revoke_all(self, reason: str) -> None:
        with self._lock:
            runners = list(self._runners.values())
        # Every slot is told first, and the lines logged after (see signal_stop).
        told = [runner for runner in runners
                if (runner.alive or runner.thread.ident is None)  # not started: never starts
                and runner.signal_stop()]
        for runner in told:
            runner.log.info("stopping slot ({})", reason)

    def check_stuck(self) -> list[SlotRunner]:
        """Report (once) every slot that ignored a stop request past its stop_timeout."""
        now = time.monotonic()
        stuck = []
        with self._lock:
            runners = list(self._runners.values())
        for runner in runners:
            if self._run_overdue(runner, now):
                stuck.append(runner)
                continue
            since = runner.stop_requested_at
            if since is None or not runner.alive:
                continue
            if now - since > runner.task.stop_timeout:
                runner.state = "stuck"
                stuck.append(runner)
                if not runner.stuck_reported:
                    runner.stuck_reported = True
                    if self._events is not None:
                        self._events.add("slot_stuck", f"{runner.slot.key} ignored stop for "
                                         f"{now - since:.1f}s", task=runner.slot.task,
                                         slot=runner.slot.index)
                    runner.log.error(
                        "slot is stuck: handler ignored stop for {:.1f}s (stop_timeout {}s); "
                        "keeping its owner znode so it cannot run twice",
                        now - since, runner.task.stop_timeout)
        return stuck

    def _run_overdue(self, runner: SlotRunner, now: float) -> bool:
        """A thread run past run_timeout whose handler ignored `ctx.stopping` for another
        stop_timeout: it cannot be killed, so like a slot that ignores a stop it is reported
        stuck (once per run) and keeps the slot. A child process is killed instead."""
        began, limit = runner.run_began, runner.task.run_timeout
        if (began is None or not limit or not runner.alive or runner.child_pid is not None
                or runner.task.isolation == "process"):
            return False
        late = now - began - limit
        if late <= runner.task.stop_timeout:
            return False
        runner.state = "stuck"
        if runner.overdue_reported != began:
            runner.overdue_reported = began
            message = (f"{runner.slot.key} ran past run_timeout ({limit:g}s) and ignored "
                       f"ctx.stopping for {late:.1f}s")
            if self._events is not None:
                self._events.add("slot_stuck", message, task=runner.slot.task,
                                 slot=runner.slot.index)
            runner.log.error("slot is stuck: {}; the run holds the slot until it returns",
                             message)
        return True

    def stop_all(self, deadline: float, reason: str = "node stopping") -> list[SlotRunner]:
        """Stop every slot and join them all against one shared monotonic deadline, then the
        event loop (after the runners: their coroutines are cancelled on it). The loop gets
        a moment even past the deadline, since cancelling what is left is quick. Revoke
        callbacks come between the two, for every slot held whose runner ended."""
        with self._lock:
            self._stopping = True
        self.revoke_all(reason)
        with self._lock:
            runners = list(self._runners.values())
        if self._closing.is_set():
            # Slots that end together go with the session's close. When one takes longer,
            # those that have ended are given back now and the others give back their own
            # as they end: a slow slot must not keep the fast ones taken.
            until = min(deadline, time.monotonic() + CLOSE_WINDOW)
            for runner in runners:
                if runner.thread.ident is not None:
                    runner.thread.join(timeout=max(0.0, until - time.monotonic()))
            if any(r.alive for r in runners):
                self.keep_session()
        for runner in runners:
            if runner.thread.ident is not None:
                runner.thread.join(timeout=max(0.0, deadline - time.monotonic()))
        left = [r for r in runners if r.alive]
        for runner in left:
            runner.log.error("slot did not stop before the shutdown deadline (stuck)")
        with self._lock:
            final = self.callbacks.release_all(self._running, self._generation)
        self.callbacks.dispatch(final, [])
        self.callbacks.stop(timeout=max(STOP_MIN, deadline - time.monotonic()))
        self.event_loop.stop(timeout=max(LOOP_STOP_MIN, deadline - time.monotonic()))
        self.threads.close()  # joined by the node once its session is closed
        return left

    def runners(self) -> list[SlotRunner]:
        with self._lock:
            return sorted(self._runners.values(), key=lambda r: r.slot)

    def statuses(self) -> list[SlotStatus]:
        return [r.status() for r in self.runners()]

    def running_slots(self) -> list[Slot]:
        with self._lock:
            return sorted(s for s, r in self._runners.items() if r.alive)
