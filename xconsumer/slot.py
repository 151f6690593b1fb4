"""One slot on one node: a named thread, cooperative cancellation, and the
owner-znode handshake that keeps a slot from running on two nodes at once.

Python threads cannot be killed, so stopping is a request: the handler sees `ctx.stopping`
and `ctx.sleep()` returning False. A handler that ignores the request past `stop_timeout` is
reported as stuck and *keeps* its owner znode, because releasing it would let another node
start the same slot while this one still runs.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import (
    KazooException,
    NoChildrenForEphemeralsError,
    NodeExistsError,
    NoNodeError,
)
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.protocol.states import EventType
from loguru import logger

from .assignment import Slot
from .breaker import Breaker
from .checkpoint import SlotCheckpoint
from .config import TaskConfig, slot_param
from .errors import CheckpointError, XConsumerError
from .events import EventLog
from .executors import executor_for
from .lease import Lease
from .metrics import Metrics
from .paths import Paths, checkpoint_id
from .slotthreads import SlotThread, SlotThreads
from .works import Handler, WorksError, WorksRegistry
from .zk import dumps, owner_look

_ZK_ERRORS = (KazooException, KazooTimeoutError)
RELEASE_TIMEOUT = 2.0
# How long a slot thread waits at its gate for the runtime's batched claim (each of the
# claim's requests is bounded by CLAIM_TIMEOUT; past this the thread claims by itself).
GATE_TIMEOUT = 30.0
QUIET_WAIT = 1.0  # a wait for a previous owner this long is said (see _await_owner)
ASK_SLICE = 0.05  # how often a claim's request in flight looks for a stop (see _ask)


class _GivenUp(KazooTimeoutError):
    """A claim's request left unanswered because the slot was told to stop meanwhile."""


def restart_needed(old: TaskConfig, new: TaskConfig) -> bool:
    """Only a change of what runs (handler, mode, isolation) restarts a running slot; a
    scale, a new interval, run_timeout or breaker setting must not disturb the slots that
    keep running (they apply from the next run)."""
    def key(t: TaskConfig) -> tuple[Any, ...]:
        # A container task's image, command and env are what runs, too.
        # A keyed slot whose key changed is another slot's work (and checkpoint).
        return (t.work_name, t.mode, getattr(t, "isolation", "thread"),
                getattr(t, "image", None), getattr(t, "command", None), getattr(t, "env", None),
                getattr(t, "slot_key", None))
    return key(old) != key(new)


class SlotContext:
    """What a handler receives: who it is, whether to stop, and a stop-aware sleep."""

    def __init__(self, *, task: TaskConfig, slot: int, node: str, generation: int, fence: int,
                 stop_event: threading.Event, lease: Lease,
                 checkpoint: SlotCheckpoint | None = None,
                 live_task: Callable[[], TaskConfig] | None = None) -> None:
        self.task = task.name
        self.work_name = task.work_name
        self.slot = slot
        self.key = task.slot_key  # a keyed task's key of this slot, else None
        self.node = node
        self.generation = generation
        self.fence = fence
        self.stop_event = stop_event
        self._lease = lease
        self._checkpoint = checkpoint
        self._live_task = live_task or (lambda: task)
        self.logger = logger.bind(task=task.name, slot=slot)

    @property
    def param(self) -> Any:
        """This slot's entry of the task's `params` (None when it has none); read live, so a
        change through the API applies from the handler's next read."""
        return slot_param(self._live_task(), self.slot, self.key)

    @property
    def checkpoint(self) -> Any:
        """The value last committed for this slot, by any owner (None if never)."""
        return self._store().value()

    def commit(self, value: Any) -> None:
        """Store `value` as this slot's checkpoint, only while this node owns the slot;
        OwnershipLost (and the slot stopping) otherwise. See checkpoint.py."""
        self._store().commit(value)

    def _store(self) -> SlotCheckpoint:
        if self._checkpoint is None:
            raise CheckpointError("this slot has no checkpoint store (a container slot)")
        return self._checkpoint

    @property
    def stopping(self) -> bool:
        """True once asked to stop *or* once this node can no longer prove its membership.

        Latched: once the lease has been seen ended, the slot stays stopping even if the
        lease is renewed a moment later, so a handler that returned early because of it is
        never taken for one that finished (the slot restarts cleanly instead)."""
        if not self.stop_event.is_set() and not self._lease.valid():
            self.stop_event.set()
        return self.stop_event.is_set()

    def sleep(self, seconds: float) -> bool:
        """Sleep up to `seconds`; False as soon as the slot must stop (so callers can return)."""
        return self._sleep(seconds, lambda: None)

    def _sleep(self, seconds: float, run_deadline_of: Callable[[], float | None]) -> bool:
        """The stop-aware sleep, also cut short at a run's deadline (monotonic), if any; the
        deadline is read again at each wake-up (at least once per lease renewal), so a
        run_timeout set while a run sleeps applies to it."""
        deadline = time.monotonic() + max(0.0, seconds)
        while True:
            if self.stopping:
                return False
            now = time.monotonic()
            run_deadline = run_deadline_of()
            if run_deadline is not None and now >= run_deadline:
                return False
            if now >= deadline:
                return True
            wait = min(deadline - now, max(self._lease.remaining(), 0.0),
                       run_deadline - now if run_deadline is not None else deadline - now)
            if self.stop_event.wait(wait):
                return False

    def for_run(self, limit: Callable[[], float | None]) -> RunContext:
        """A fresh view for one run, limited to `limit()` seconds (see RunContext)."""
        return RunContext(self, limit)


class RunContext:
    """The context one run gets: the slot's context, except that `stopping` turns true
    (and `sleep` returns False) once the run is past its `run_timeout`.

    Per run, not per slot: the slot's `stop_event` is not set (the slot is not stopping,
    and the next run gets a fresh view with a fresh deadline). A handler that blocks in
    `ctx.stop_event.wait()` is therefore not woken by the deadline; `ctx.sleep` is. The
    limit is read live, so a run_timeout changed over the API applies to the run in
    progress too (a hanging run is often why it is set)."""

    def __init__(self, slot_ctx: SlotContext, limit: Callable[[], float | None]) -> None:
        self._slot_ctx = slot_ctx
        self._limit = limit
        self.began = time.monotonic()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._slot_ctx, name)  # task, slot, node, fence, logger, stop_event

    @property
    def limit(self) -> float | None:
        return self._limit()

    def deadline(self) -> float | None:
        limit = self._limit()
        return self.began + limit if limit else None

    @property
    def timed_out(self) -> bool:
        deadline = self.deadline()
        return deadline is not None and time.monotonic() >= deadline

    @property
    def stopping(self) -> bool:
        return self._slot_ctx.stopping or self.timed_out

    def sleep(self, seconds: float) -> bool:
        return self._slot_ctx._sleep(seconds, self.deadline)


@dataclass
class SlotStatus:
    task: str
    slot: int
    state: str
    fence: int | None
    generation: int
    runs: int
    failures: int
    last_error: str | None
    started_at: float | None
    timeouts: int = 0
    breaker: str = "closed"
    consecutive_failures: int = 0
    open_until: float | None = None  # Unix time the open breaker allows its trial run

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class SlotRunner:
    """Owns one slot on this node: acquire the owner znode, run the handler, release."""

    def __init__(self, *, slot: Slot, task: TaskConfig, generation: int, node: str,
                 client: KazooClient, paths: Paths, lease: Lease, registry: WorksRegistry,
                 session_id: Callable[[], int | None], on_exit: Callable[[SlotRunner], None],
                 retry_wait: float = 1.0, call_timeout: float = 10.0,
                 metrics: Metrics | None = None,
                 events: EventLog | None = None,
                 session_closes: Callable[[], bool] = lambda: False,
                 gated: bool = False, threads: SlotThreads | None = None) -> None:
        self.slot = slot
        # True once the node leaves and will close its session after every slot has ended:
        # the close deletes our owner znode then (see Runtime.leave_owners_to_session).
        self._session_closes = session_closes
        self._metrics = metrics
        self._events = events
        self.task = task
        self.generation = generation
        self.node = node
        self._client = client
        self._paths = paths
        self._lease = lease
        self._registry = registry
        self._session_id = session_id
        self._on_exit = on_exit
        self._retry_wait = retry_wait
        self.stop_event = threading.Event()
        self._wake = threading.Event()
        # Opened by the runtime once its batched claim is done (see Runtime.apply), or by a
        # stop request: the thread starts while the claim is out, and acquires only after
        # it; one told to stop before it ends never acquires (the claim's znode, if it made
        # one, goes to the orphan sweep).
        self._gate = threading.Event()
        self._claim_over = not gated
        if not gated:
            self._gate.set()
        self.acquired = False  # the thread created or adopted its owner znode
        self.state = "starting"
        self.fence: int | None = None
        self.owner_version: int | None = None  # data version of our owner znode
        self.runs = 0
        self.failures = 0
        self.timeouts = 0
        self.breaker = Breaker()
        # The task the breaker's calls are gated by: the live one in a thread; for a child
        # process the copy it was started with (it gates its own calls), see run_isolated.
        self.breaker_task: TaskConfig | None = None
        self.run_began: float | None = None  # monotonic start of the run in progress
        self.overdue_reported: float | None = None  # run_began of the run reported stuck
        self.last_error: str | None = None
        self.started_at: float | None = None
        self.stop_requested_at: float | None = None
        self.stuck_reported = False
        self.child_pid: int | None = None
        self.may_hold_owner = False
        self.exited = False
        self.blocked_by: str | None = None  # a persistent owner znode no node can release
        self.checkpoint: SlotCheckpoint | None = None
        self.held_fence: int | None = None  # fence of the znode a failed release left
        self.claimed_fence: int | None = None  # fence the runtime claimed for us, if it did
        # Session of the previous owner whose znode the runtime found in its batched claim,
        # with our watch set on it then: the thread waits for it instead of asking again.
        self.held_by: int | None = None
        # Our watch saw the owner znode deleted: a hint (the runtime's follow-up claim
        # tries a create, which ZooKeeper refuses if another znode is there by then).
        self.owner_gone = False
        # One watcher for the owner znode, registered again and again: kazoo keeps watchers
        # in a set, so the same callable never piles up while we wait (a fresh lambda per
        # wait would leak one per retry until the znode changes).
        self._owner_watch = self._on_owner_event
        self._call_timeout = call_timeout
        self.log = logger.bind(task=slot.task, slot=slot.index)
        # Run by one of the node's slot threads (see slotthreads.py); a runner made alone
        # (tests) gets a thread of its own.
        self._threads = threads
        self.thread = SlotThread(f"xc-slot-{slot.task}-{slot.index}", self._main)

    # -- control (any thread) -------------------------------------------------------------
    def start(self) -> None:
        (self._threads or SlotThreads(idle_timeout=0.0)).start(self.thread)

    @property
    def owner_watch(self) -> Callable[[Any], None]:
        """The watcher that wakes this runner when its owner znode changes."""
        return self._owner_watch

    def _on_owner_event(self, event: Any) -> None:
        if getattr(event, "type", None) == EventType.DELETED:
            self.owner_gone = True
        self._wake.set()

    def wait_for_owner(self, session: int) -> None:
        """Our owner znode is held by `session` and `owner_watch` is set on it (the runtime's
        batched claim asked for every held slot at once): the thread starts by waiting for
        it to go, instead of a create and a stat of its own. Before `open_gate()` only."""
        self.held_by = session

    def claimed(self, fence: int) -> None:
        """Our owner znode was created for us (the runtime claims a generation's free slots
        in one transaction, see Runtime._claim): the thread starts as its owner. Before
        `open_gate()`, but for a gate that timed out (a claim slower than GATE_TIMEOUT):
        the thread claims for itself then, and finding the claim's znode of our session
        adopts it, the same czxid."""
        self.may_hold_owner = True
        self.claimed_fence = fence  # a created znode is at version 0

    def open_gate(self) -> None:
        """The runtime's batched claim is done (whatever it found): acquire now."""
        self._claim_over = True
        self._gate.set()

    def request_stop(self, reason: str) -> None:
        if self.signal_stop():
            self.log.info("stopping slot ({})", reason)

    def signal_stop(self) -> bool:
        """`request_stop` without its log line; True if this asked for the stop. For
        stopping many slots at once: a log line written between two signals hands the GIL
        to the slot threads already told, and the next signal waits behind them."""
        if self.stop_event.is_set():
            return False
        self.stop_requested_at = time.monotonic()
        self.stop_event.set()
        self._wake.set()
        self._gate.set()  # a thread still at its gate ends without acquiring
        if self.state not in ("done", "stopped", "failed"):
            self.state = "stopping"
        return True

    @property
    def alive(self) -> bool:
        """False from the moment the slot thread reports its exit (it only returns after)."""
        return self.thread.is_alive() and not self.exited

    def status(self) -> SlotStatus:
        breaker = self.breaker
        return SlotStatus(self.slot.task, self.slot.index, self.state, self.fence,
                          self.generation, self.runs, self.failures, self.last_error,
                          self.started_at, self.timeouts, breaker.state,
                          breaker.consecutive_failures, breaker.open_until_wall())

    # -- slot thread ----------------------------------------------------------------------
    def _main(self) -> None:
        try:
            # A container task runs an image: its workName names no Python handler.
            handler = (None if getattr(self.task, "image", None)
                       else self._registry.resolve(self.task.work_name))
        except WorksError as exc:
            self.state = "failed"
            self.last_error = str(exc)
            self.log.error("cannot run slot: {}", exc)
            self.exited = True
            self._on_exit(self)
            return
        try:
            self._gate.wait(GATE_TIMEOUT)  # the batched claim first (see Runtime.apply)
            if (self._claim_over or not self.stop_event.is_set()) and self._acquire():
                self.acquired = True
                self._run(handler)
        except Exception as exc:  # noqa: BLE001 - the slot thread must report, never vanish
            self.last_error = f"{type(exc).__name__}: {exc}"
            self.log.exception("slot thread failed")
        finally:
            self._release()
            if self.state not in ("done", "failed"):
                self.state = "stopped"
            self.exited = True
            self._on_exit(self)

    @property
    def owner_path(self) -> str:
        return self._paths.slot_owner(self.slot.task, self.slot.index, self.task.slot_key)

    def owner_data(self) -> bytes:
        data = {"node": self.node, "generation": self.generation,
                "session": f"{self._session_id() or 0:x}", "started_at": time.time(),
                "slot": self.slot.index}
        if self.task.slot_key is not None:
            data["key"] = self.task.slot_key
        return dumps(data)

    def _call(self, result: Any) -> Any:
        """Every ZooKeeper call from a slot thread is bounded: a request queued behind a
        dead connection must not hold the slot (or a shutdown) hostage."""
        return result.get(timeout=self._call_timeout)

    def _ask(self, result: Any) -> Any:
        """`_call` for a request whose answer a stop makes moot (the claim's, the done
        marker's read): given up as soon as the slot is told to stop. Found by the suite: a
        slot still claiming when ZooKeeper went away waited out the whole call timeout (a
        request waits for the connection to come back) past the node's stop deadline, so
        the node, taking it for a stuck handler, kept its session and never stopped its
        client. A create given up may still land: `may_hold_owner` (set before the first
        one) leaves its znode to the orphan sweep, or to the session's close."""
        deadline = time.monotonic() + self._call_timeout
        while not result.wait(ASK_SLICE):
            if self.stop_event.is_set():
                raise _GivenUp("stopped while waiting for ZooKeeper")
            if time.monotonic() >= deadline:
                break  # get() raises the timeout
        return result.get(block=False)

    def _acquire(self) -> bool:
        """Create the owner znode, waiting (on a watch) while a previous owner still holds it."""
        path = self.owner_path
        self.state = "waiting"
        waited_for: str | None = None
        parent_made = False  # by this thread, since its last create (see _make_parent)
        self.may_hold_owner = True  # from the first create attempt on, see Runtime.orphans
        if self.claimed_fence is not None:
            self.fence, self.owner_version = self.claimed_fence, 0
            if self.stop_event.is_set():
                return False  # revoked before it ran: _release deletes the znode
            if self._lease.valid():
                return True
            # The lease ended since the claim: wait for it as any claim does below (the
            # znode, if our session still holds it, is adopted then).
            self.fence = self.owner_version = None
        if self.held_by is not None and not self.stop_event.is_set():
            waited_for = self._await_owner(self.held_by, waited_for)
        while not self.stop_event.is_set():
            if not self._lease.valid():
                self._wake.wait(0.05)
                self._wake.clear()
                continue
            try:
                _, stat = self._ask(self._client.create_async(
                    path, self.owner_data(), ephemeral=True, include_data=True))
                self.fence = stat.czxid
                self.owner_version = stat.version
                self.blocked_by = None
                return True
            except NodeExistsError:
                pass
            except NoNodeError:
                if parent_made:  # gone again since: deleted by hand, or by a cleanup
                    self.stop_event.wait(self._retry_wait)
                parent_made = self._make_parent()
                continue
            except NoChildrenForEphemeralsError:
                # owners/<task> itself was made ephemeral by hand: no owner znode can be
                # created under it until its session ends.
                self._report_blocked(self._paths.owner_task(self.slot.task))
                self.stop_event.wait(self._retry_wait * 5)
                continue
            except _ZK_ERRORS as exc:
                if self.stop_event.is_set():
                    break
                self.log.warning("cannot claim owner znode yet: {}", type(exc).__name__)
                self.stop_event.wait(self._retry_wait)
                continue
            try:
                stat = self._ask(self._client.exists_async(path, watch=self._owner_watch))
            except _ZK_ERRORS:
                self.stop_event.wait(self._retry_wait)
                continue
            if stat is None:
                continue
            session = self._session_id()
            if session is not None and stat.ephemeralOwner == session:
                # Left by an earlier runner of this slot on this very session (it ended
                # while the connection was suspended), or by one of our own creates that
                # timed out: it is ours, adopt it. Rewriting it bumps its version, so a
                # delete left queued with the old version can no longer remove it under us.
                try:
                    adopted = self._ask(self._client.set_async(path, self.owner_data(),
                                                               version=stat.version))
                except _ZK_ERRORS:
                    continue
                self.fence = stat.czxid
                self.owner_version = adopted.version
                return True
            if stat.ephemeralOwner == 0:
                self._report_blocked(path)
                self._wake.wait(self._retry_wait * 5)
                self._wake.clear()
            else:
                waited_for = self._await_owner(stat.ephemeralOwner, waited_for)
        return False

    def _make_parent(self) -> bool:
        """owners/<task> is not there (a task's first claim, or deleted by hand): made from
        this thread, which looks for a stop before it asks again. Not kazoo's `makepath`:
        that sends the create again from its own callback once the parent is made, after
        whatever was sent meanwhile, so a create given up at a stop could land after the
        orphan sweep had found no znode, and stay, held by our session, with no runner and
        no sweep to delete it. Found by a CI failure. True once the parent is there."""
        parent = self._paths.owner_task(self.slot.task)
        try:
            self._ask(self._client.ensure_path_async(parent))
            return True
        except NoChildrenForEphemeralsError:
            # An ancestor of owners/<task> was made ephemeral by hand (see _acquire).
            self._report_blocked(self._paths.owners)
            self.stop_event.wait(self._retry_wait * 5)
        except _ZK_ERRORS as exc:
            if not self.stop_event.is_set():
                self.log.warning("cannot make {} yet: {}", parent, type(exc).__name__)
                self.stop_event.wait(self._retry_wait)
        return False

    def _await_owner(self, session: int, said: str | None) -> str | None:
        """Wait, on the owner znode's watch (bounded all the same), for the previous owner
        to let go; answer the session the log line named, if one did. A handover's wait
        lasts milliseconds, so it is said only once it has lasted QUIET_WAIT: a line per
        moved slot on every rebalance told nothing, and cost the joining node's CPU at the
        very moment its slots start."""
        patience = self._retry_wait * 5
        if said is None:
            quiet = min(QUIET_WAIT, patience)
            if self._wake.wait(quiet):
                self._wake.clear()
                return None
            said = f"{session:x}"
            self.log.info("waiting for the previous owner (session {}) to release", said)
            patience -= quiet
        self._wake.wait(patience)
        self._wake.clear()
        return said

    def _report_blocked(self, path: str) -> None:
        """A persistent owner znode (made by hand: every node creates ephemeral ones) would
        block the slot forever without a word: report it once, loudly, with what to do."""
        if self.blocked_by == path:
            return
        self.blocked_by = path
        self.state = "blocked"
        message = (f"slot {self.slot.key} is blocked by {path}, made by hand (no node "
                   "created it, so none will release it): delete it if nothing runs this "
                   "slot")
        self.last_error = message
        self.log.error(message)
        if self._events is not None:
            self._events.add("slot_blocked", message, task=self.slot.task, slot=self.slot.index)

    def _done_marker_exists(self) -> bool | None:
        """Whether a once-slot already completed; None when the slot is told to stop before
        that could be read. An unreadable answer is retried, because guessing "no" would run
        a completed job again, and guessing "yes" would report it done without its marker."""
        path = self._paths.done_marker(self.slot.task, self.slot.index)
        while not self.stop_event.is_set():
            try:
                return self._ask(self._client.exists_async(path)) is not None
            except _ZK_ERRORS:
                self.stop_event.wait(self._retry_wait)
        return None

    def _run(self, handler: Handler) -> None:
        ctx = SlotContext(task=self.task, slot=self.slot.index, node=self.node,
                          generation=self.generation, fence=self.fence or 0,
                          stop_event=self.stop_event, lease=self._lease,
                          checkpoint=self._checkpoint_store(), live_task=lambda: self.task)
        once = self.task.mode == "once"
        if once:
            done = self._done_marker_exists()
            if done is None:
                return  # stopping: neither run nor "done" (the marker was never read)
            if done:
                self.state = "done"
                self.log.info("once slot already completed; nothing to run")
                return
        self.started_at = time.time()
        self.log.info("slot started (fence {}, generation {}{})", ctx.fence, self.generation,
                      ", in a child process" if self._isolated else "")
        if getattr(handler, "is_coroutine", False) and self.checkpoint is not None:
            # Read here, in the slot's thread: a coroutine reading it lazily would block
            # the node's event loop (every coroutine slot) for a ZooKeeper round trip.
            with contextlib.suppress(XConsumerError):
                self.checkpoint.preload()  # a failure is raised again where it is read
        completed = executor_for(self.task, handler).run(self, ctx, handler, self._report)
        if once:
            if completed:
                self._mark_done()
                self.state = "done"
                self.log.info("once slot completed")
            elif self.runs:
                self.log.info("once handler interrupted by a stop; not marked done")

    def _checkpoint_store(self) -> SlotCheckpoint | None:
        if getattr(self.task, "image", None):
            return None  # a container cannot reach ZooKeeper through us
        slot_id = checkpoint_id(self.slot.index, self.task.slot_key)
        self.checkpoint = SlotCheckpoint(
            client=self._client, path=self._paths.checkpoint(self.slot.task, slot_id),
            member=self._lease.member, owner=self.owner_path,
            owner_version=lambda: self.owner_version, fence=self.fence or 0, node=self.node,
            lost=lambda why: self.request_stop(f"ownership lost: {why}"),
            call_timeout=self._call_timeout, counted=self._count_commit)
        return self.checkpoint

    def _count_commit(self, landed: bool) -> None:
        if self._metrics is not None:
            (self._metrics.commits if landed else self._metrics.commits_refused).labels(
                self.slot.task).inc()

    @property
    def _isolated(self) -> bool:
        return getattr(self.task, "isolation", "thread") == "process"

    def _report(self, kind: str, seconds: float, error: BaseException | str | None,
                backoff: float) -> None:
        """Bookkeeping for one handler run, from the thread or from the child process.

        kind: "running" (a run starts), "ok", "failed" (it raised) or "timeout" (it ran
        past run_timeout: a failure too, with its own counter and event)."""
        if kind == "running":
            self.state = "running"
            self.runs += 1
            self.run_began = time.monotonic()
            self.breaker.started()
            return
        self.run_began = None
        if self._metrics is not None:
            self._metrics.runs.labels(self.slot.task).inc()
            self._metrics.duration.labels(self.slot.task).observe(seconds)
        if kind == "ok":
            self._breaker_record(True)
            return
        if self._metrics is not None:
            self._metrics.failures.labels(self.slot.task).inc()
        self.failures += 1
        self.last_error = (error if isinstance(error, str)
                           else f"{type(error).__name__}: {error}")
        timeout = kind == "timeout"
        if timeout:
            self.timeouts += 1
            if self._metrics is not None:
                self._metrics.timeouts.labels(self.slot.task).inc()
        self._event("handler_timeout" if timeout else "handler_failed",
                    f"{self.slot.key}: {self.last_error}")
        if timeout:
            self.log.warning("{}; retrying in {:.2f}s", self.last_error, backoff)
        else:
            log = (self.log.opt(exception=error) if isinstance(error, BaseException)
                   else self.log)
            log.error("handler raised {}; retrying in {:.2f}s", self.last_error, backoff)
        self.state = "backoff"
        self._breaker_record(False)

    def _event(self, kind: str, message: str) -> None:
        if self._events is not None:
            self._events.add(kind, message, task=self.slot.task, slot=self.slot.index)

    def _breaker_record(self, ok: bool) -> None:
        """Feed the breaker one run's outcome; count and report what that changed."""
        task = self.breaker_task or self.task
        change = self.breaker.record(ok, task)
        if change == "opened":
            if self._metrics is not None:
                self._metrics.breaker_opened.labels(self.slot.task).inc()
            self._event("breaker_opened", f"{self.slot.key}: breaker opened after "
                        f"{self.breaker.consecutive_failures} consecutive failures; no run "
                        f"for {task.breaker_cooldown:g}s")
            self.log.error("breaker opened after {} consecutive failures: no run for {:g}s, "
                           "then one trial run", self.breaker.consecutive_failures,
                           task.breaker_cooldown)
        elif change == "closed":
            self._event("breaker_closed", f"{self.slot.key}: breaker closed")
            self.log.info("breaker closed{}", "" if ok else " (breaker switched off)")

    def _mark_done(self) -> None:
        path = self._paths.done_marker(self.slot.task, self.slot.index)
        data = dumps({"node": self.node, "fence": self.fence, "finished_at": time.time()})
        for _ in range(10):
            try:
                self._call(self._client.create_async(path, data, makepath=True))
                return
            except NodeExistsError:
                return
            except _ZK_ERRORS as exc:
                self.log.warning("cannot write done marker yet: {}", type(exc).__name__)
                if self.stop_event.wait(self._retry_wait):
                    break
        self.log.error("done marker not written; the slot may run again after a handover")

    def _release(self) -> None:
        """Delete our owner znode: the one whose czxid is our fence (a czxid names a single
        creation, so this never deletes another owner's znode). When that cannot be done now
        (connection suspended), `may_hold_owner` stays set and the runtime retries."""
        if not self.may_hold_owner:
            return
        self.held_fence = self.fence  # for the runtime's retry: delete only that znode
        if self._session_closes():
            return  # it goes with our session, with every other slot's, in one request
        if not self._client.connected:
            self.fence = None
            self.owner_version = None
            return  # nothing can be deleted now; the runtime retries once connected
        path = self.owner_path
        try:
            # Short: a frozen server must not keep this thread (and the node's view of the
            # slot) alive; the runtime's retry does the rest.
            stat = owner_look(self._client, path, self.fence).get(timeout=RELEASE_TIMEOUT)
            if stat is not None and (stat.czxid == self.fence or (
                    self.fence is None and stat.ephemeralOwner == self._session_id())):
                self._client.delete_async(path, version=stat.version).get(
                    timeout=RELEASE_TIMEOUT)
            self.may_hold_owner = False
        except NoNodeError:
            self.may_hold_owner = False
        except _ZK_ERRORS as exc:
            self.log.warning("could not delete owner znode now ({}); will retry",
                             type(exc).__name__)
        self.fence = None
        self.owner_version = None
