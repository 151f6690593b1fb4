"""A node: one process that joins the cluster, runs its slots and serves the admin API.

Composition only; each ZooKeeper concern lives in its own module. All cluster reactions run
on one controller thread fed by a queue: kazoo watch and listener callbacks share kazoo's
event thread and must never block, so they only enqueue a reason and return.
"""

from __future__ import annotations

import contextlib
import enum
import os
import queue
import random
import socket
import threading
import time
from collections.abc import Collection
from typing import Any

from kazoo.exceptions import KazooException, NoNodeError, NotEmptyError
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.protocol.states import EventType, KazooState
from loguru import logger

from . import __version__
from .assignment import Slot
from .checkpoint import purge_checkpoints
from .codecs import Corrupt, plan_desired
from .config import Config, TaskConfig
from .corruption import CorruptionReport
from .errors import ConfigError
from .events import EventLog
from .formation import FormationWindow
from .keys import KeysTracker
from .leader import (
    DocMemo,
    PublishFailed,
    clamp_slots,
    doc_tasks,
    moved_between,
    plan_slots,
    publish,
    read_assignment,
    sync_plans,
)
from .lease import Lease
from .logs import set_node
from .membership import (
    CLAIM_TIMEOUT,
    Listing,
    dedupe_by_name,
    ensure_claim,
    read_members,
    register,
    release_claim,
)
from .metrics import Metrics
from .overrides import (
    OverrideStore,
    drained_names,
    effective_tasks,
    keys_refresh,
    overrides_from_assignment,
    with_paused,
)
from .paths import Paths
from .plans import PlanBook, plan_mzxid, read_plan
from .runtime import Runtime
from .slotthreads import PrestartBudget
from .stability import Damper
from .strategies import is_container_task
from .strategies.user import runner_for
from .view import read_cluster, seed_from_doc
from .works import WorksRegistry
from .zk import AHEAD_TIMEOUT, dumps, exists_after_sync, make_client, start_client, stop_client

_ZK_ERRORS = (KazooException, KazooTimeoutError)
# A follower re-lists the members (and checks the election) at least this often even when
# only its plan or its slots woke it; a wake-up that concerns neither goes the full way.
FULL_PASS_EVERY = 30.0
# Wake-ups a follower running from its plan answers without listing the members: they
# change what it may run (its lease, its slots' state), not who is in the cluster.
LIGHT_REASONS = frozenset({"slot", "periodic", "lease ended", "lease renewed"})
# A follower told of a change it need not answer at once (its leader's end, which the new
# leader's plan will tell it of; a join, to the next in line) looks within about this long,
# +-50 %, instead of with everyone else at the very moment the handover needs ZooKeeper.
LOOK_LATER = 1.0
LOOK_LATER_KICK = "look later"
# stop() waits at most this long (and half its deadline) for a membership call in flight.
MEMBER_LOCK_WAIT = 11.0
# stop() waits at most this long for the leave's answer before it tells the slots to stop.
LEAVE_FIRST_WAIT = 0.05
# Threads started ahead of joins by every node of this process (see _prestart_slot_threads).
PRESTART_BUDGET = PrestartBudget()


_twins_warned: set[str] = set()


def _warn_twin(name: str, claim: str) -> None:
    """Once per name: another live session took our claim while it was gone."""
    if name not in _twins_warned:
        _twins_warned.add(name)
        logger.error("another live process joined under our name {} (it holds {}): only the "
                     "older of the two gets slots; stop one of them", name, claim)


class RunState(enum.Enum):
    NEW = "new"
    STARTING = "starting"
    STARTED = "started"
    STOPPING = "stopping"
    STOPPED = "stopped"


def validate_works(config: Config, registry: WorksRegistry) -> None:
    """Every task in app.toml must have a handler before the node joins (a container task
    runs an image instead: its workName only names its kind), and a keyed task its keys
    provider (any node may become the leader, which calls it)."""
    for i, task in enumerate(config.tasks):
        if not is_container_task(task) and not registry.has(task.work_name):
            try:
                registry.resolve(task.work_name)
            except Exception as exc:  # noqa: BLE001 - re-raised as a config error
                raise ConfigError(
                    f"{config.source}: task[{i}] (name {task.name!r}) workName "
                    f"{task.work_name!r}: {exc}") from None
        if (getattr(task, "isolation", "thread") == "process" and registry.has(task.work_name)
                and registry.resolve(task.work_name).is_coroutine):
            raise ConfigError(
                f"{config.source}: task[{i}] (name {task.name!r}): an async def handler runs "
                "on the node's event loop and cannot run with isolation = \"process\"")
        if task.keys and registry.hook("Keys", task.keys) is None:
            found = ", ".join(n for n in registry.hook_names() if n.startswith("Keys"))
            raise ConfigError(
                f"{config.source}: task[{i}] (name {task.name!r}) keys {task.keys!r}: no "
                f"function Keys{task.keys[0].upper()}{task.keys[1:]}() in "
                f"{registry.path.name}/ (found: {found or 'none'})")


class Node:
    """Lifecycle: `start()` -> `STARTED` -> `stop()`; also a context manager."""

    def __init__(self, config: Config, registry: WorksRegistry, *,
                 admin_factory: Any = None) -> None:
        self.config = config
        self.registry = registry
        self.name = config.node.name or f"{socket.gethostname()}-{os.getpid()}"
        self.paths = Paths(config.zookeeper.root, config.cluster.name)
        self.state = RunState.NEW
        self.client, self.session = make_client(config.zookeeper.hosts,
                                                config.zookeeper.session_timeout,
                                                zk=config.zookeeper)
        self.lease = Lease(lambda: self.session.timeout)
        self.events = EventLog(config.admin.events)
        self.metrics = Metrics()
        self.overrides = OverrideStore(self.client, self.paths.overrides,
                                       fallback=self._published_overrides)
        self._events: queue.Queue[str] = queue.Queue()
        self._stop = threading.Event()
        self._lease_wake = threading.Event()
        self.keys = KeysTracker(lambda name: self.registry.hook("Keys", name),
                                on_change=lambda: self._kick("keys"),
                                on_error=self._keys_failed)
        self._leading = False
        self.formation = FormationWindow(config.assignment.formation_window)
        self.runtime = Runtime(node=self.name, client=self.client, paths=self.paths,
                               lease=self.lease, registry=registry,
                               session_id=self._session_id, on_change=lambda: self._kick("slot"),
                               metrics=self.metrics, events=self.events)
        self._member_child: str | None = None
        self._member_session: int | None = None
        self._member_version = 0  # data version of our member znode as we last wrote it
        self._member_dirty = threading.Event()  # the lease loop saw that version change
        # Held while our member znode is created or taken for the leave, so a shutdown can
        # never race a rejoin (a fresh znode after the leave would read as a crash).
        self._member_lock = threading.Lock()
        self.corruption = CorruptionReport(self.events, self.metrics)
        self.publish_error: str | None = None
        self.strategy_error: str | None = None  # why the last plan is round robin's, if so
        self.strategies = runner_for(registry, config.assignment.strategy,
                                     timeout=config.assignment.strategy_timeout,
                                     hash_load_factor=config.assignment.hash_load_factor,
                                     source=config.source, on_result=self._strategy_result)
        self._max_generation = 0  # highest generation seen: a repair must go above it
        self.passes = 0  # controller passes, for tests of the controller's pacing
        self._markers_seen: dict[str, float] = {}  # departed names' left markers, first seen
        self._corrupt_since: dict[str, float] = {}  # member znodes first seen corrupt
        self._zk_clock: float | None = None  # ZooKeeper's clock minus our monotonic one, s
        self._candidate_wake: float | None = None  # when a corrupt member turns foreign
        self._look_at: float | None = None  # a full pass put off (see _on_watch_later)
        self.is_leader = False
        self.leader: str | None = None
        self.generation: int | None = None
        # The whole published document as last read: the leader reads it on every pass, a
        # follower only when something asks (see `assignment`). It runs from its plan.
        self._doc: dict[str, Any] | None = None
        self._doc_current = False  # False once a watch says the document changed
        self._doc_changes = 0  # how many times a watch said so
        self.plans = PlanBook()  # what we wrote under plans/ while leading
        self.plans.defer_collect = True  # departed nodes' plans go with the housekeeping
        self._memo = DocMemo()  # the document the leader last read or wrote
        self._prefetched: dict[str, Any] = {}  # read ahead for this pass (see _sync)
        self._assigned: dict[Slot, TaskConfig] = {}  # what the plan or document gives us
        self.plan_source: str | None = None  # "plan" or "document": where _assigned is from
        self._leader_child: str | None = None  # the elected leader's member znode
        # Second in the election at our last full pass (when we are further back), and the
        # last leader's member znode a watch told us was deleted: together they let a plan
        # of our leader's successor be taken without a listing (see _elected_writer).
        self._successor_child: str | None = None
        self._gone_leader: str | None = None
        self._member_foreign: str | None = None  # our child name, seen another session's
        self._lock_abandoned = False  # stop() left without waiting for a rejoin in flight
        self._name_to_give_back = False  # stop() left: our name claim is ours to give back
        self._plan_mzxid: int | None = None  # of our plan when we last read it
        self._doc_mzxid: int | None = None  # of the document a plan-less node last read
        self._last_full = 0.0  # monotonic time of the last full pass
        self._jitter = 1.0
        self._plans_verified = 0.0  # monotonic time the leader last checked plans/
        # The leader's housekeeping of this pass (see _housekeep), done once the pass has
        # applied our own slots: a slot this node gives up is not kept waiting for it.
        self._chores: tuple[list[Any], set[str] | None, Collection[str]] | None = None
        self._planless = False  # a follower whose last full pass found no plan for it
        # The document's mzxid (in a 1-tuple; None inside: no document) when this follower
        # found its plan written by another leader than the one elected (see _keep_plan).
        self._stale_doc: tuple[int | None] | None = None
        self._member_seen: dict[str, str | None] = {}  # member child -> name (None: not read)
        self._departed: list[str] = []  # names gone, told apart (left or lost) after apply
        self._next_in_line = False  # second in the election at the last full pass
        self._member_cache: dict[str, Any] = {}
        # What our last plain follower's listing found (see read_members): a periodic full
        # pass stats nodes/ and lists again only if a member came or went since.
        self._listing = Listing()
        self._seen_rebalance: int | None = None
        self.damper = Damper(rejoin_grace=config.assignment.rejoin_grace,
                             debounce=config.assignment.debounce)
        self._wake_at: float | None = None
        # While the leader waits out a debounce, until when (see _controller_loop).
        self._debouncing_until: float | None = None
        self.started_at = time.time()
        self._admin_factory = admin_factory
        self.admin: Any = None
        self._threads: list[threading.Thread] = []
        self.docker = False  # whether a Docker engine answered at start (container tasks)

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> Node:
        self.state = RunState.STARTING
        set_node(self.name)
        if self._admin_factory is not None and self.config.admin.enabled:
            self.admin = self._admin_factory(self)
            self.admin.start()
            logger.info("admin HTTP listening on {}", self.admin.url)
        try:
            start_client(self.client, self.config.zookeeper.hosts,
                         self.config.zookeeper.connect_timeout)
        except Exception:
            if self.admin is not None:
                self.admin.stop()
            raise
        logger.info("connected to ZooKeeper {} (session timeout {:g}s granted)",
                    self.config.zookeeper.hosts, self.session.timeout)
        for path in self.paths.all_persistent():
            self.client.ensure_path(path)
        self._check_docker()
        self._prestart_slot_threads()
        self._register()
        self.client.add_listener(self._on_state)
        for name, target in (("xc-controller", self._controller_loop),
                             ("xc-lease", self._lease_loop)):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        self.state = RunState.STARTED
        self._kick("start")
        return self

    def _prestart_slot_threads(self) -> None:
        """Start, before we join a settled cluster, about as many slot threads as our share
        of its slots, so the join hands them their slots instead of starting a thread each
        while the old owners release (see slotthreads.py). The share is guessed from the
        members there now (two stats, sent together); a guess off either way costs only
        threads started later, or ended idle. Settled means the assignment was written
        after the member list last changed (its mzxid above the list's pzxid). A cluster
        forming has no assignment yet, and one restarted as a whole under new names only
        its old one, until the formation window ends (the leader waits for it before its
        first plan): members joining one after another there would each guess from
        the members there so far, several times the slots in all (7,500 threads for 1,000
        slots on 1,000 members, measured). In other bursts of joins (a restart under the
        same names, a scale-out) the leader publishes as members come, and a member
        starting just after a publish guesses all the same; the process-wide
        PRESTART_BUDGET bounds what those guesses cost."""
        try:
            members, doc = (self.client.exists_async(self.paths.nodes),
                            self.client.exists_async(self.paths.assignment))
            stat, published = (members.get(timeout=CLAIM_TIMEOUT),
                               doc.get(timeout=CLAIM_TIMEOUT))
        except _ZK_ERRORS:
            return
        if stat is None or published is None or published.mzxid <= stat.pzxid:
            return
        count = stat.numChildren + 1
        share = 0
        for task in self.config.tasks:
            mine = -(-task.worker_num // count)
            share += mine if task.max_per_node is None else min(mine, task.max_per_node)
        self.runtime.threads.prestart(PRESTART_BUDGET.take(share))

    def stop(self, timeout: float = 30.0) -> bool:
        """Graceful leave. True if every slot stopped in time.

        Slots are asked to stop and our member znode is deleted at once, so the leader deals
        our slots out while they wind down; the owner znodes keep the new owners waiting
        until each slot has really ended here.
        """
        if self.state in (RunState.STOPPING, RunState.STOPPED):
            return True
        self.state = RunState.STOPPING
        deadline = time.monotonic() + timeout
        logger.info("leaving the cluster")
        self._stop.set()
        self._kick("stop")
        self._lease_wake.set()
        # Waits for a rejoin in flight, which then leaves with us; bounded (a call under the
        # lock that a connection gone for good never answers), and to half the deadline at
        # most, so the slots still get their share. A rejoin that ends after we gave up
        # leaves at once (see _register).
        locked = self._member_lock.acquire(timeout=max(0.1, min(
            MEMBER_LOCK_WAIT, (deadline - time.monotonic()) / 2)))
        if not locked:
            self._lock_abandoned = True  # before the child is taken (see _register)
        try:
            child, self._member_child = self._member_child, None
        finally:
            if locked:
                self._member_lock.release()
        if not locked:
            logger.warning("a membership call did not return in time (ZooKeeper "
                           "unreachable?): leaving without waiting for it")
        # The leave goes out first, so the leader starts dealing our slots out while they
        # wind down (their owner znodes keep the new owners waiting until each has ended).
        # Its answer is awaited (briefly) before the slots are told: the slot threads all
        # ending at once kept the connection thread from the GIL, and the leave from the
        # wire, for 4-7 ms (measured), all of it added to the handover.
        leaving = self._leave_async(child) if child is not None else None
        if leaving is not None:
            leaving.wait(max(0.0, min(LEAVE_FIRST_WAIT, deadline - time.monotonic())))
        # Our name claim is an ephemeral of our session too: it goes with the close, in the
        # same request. Given back on its own only if the session is kept after all.
        self.runtime.leave_owners_to_session(give_back=lambda: self._give_name_back(deadline))
        self.runtime.revoke_all("node stopping")
        left = child is None or (leaving is not None and self._left(
            leaving, child, max(0.1, min(2.0, deadline - time.monotonic()))))
        self._name_to_give_back = left and child is not None
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        stuck = self.runtime.stop_all(deadline)
        if stuck:
            # Closing the session would delete the stuck slots' owner znodes while their
            # threads still run. Leave the session to expire with the process instead, and
            # give back now the slots that did end.
            self.runtime.keep_session()
            logger.error("{} slot(s) stuck; leaving the ZooKeeper session to expire so no "
                         "other node starts them while they run", len(stuck))
        else:
            if not left or not self.client.connected:
                self._finish_leave(child, left, deadline)
            # Every slot has ended: closing the session deletes their owner znodes (and any
            # left from a disconnection) in one request, before anything slower below.
            stop_client(self.client)
        self.runtime.threads.join(max(1.0, deadline - time.monotonic()))
        self.keys.stop(max(0.0, min(1.0, deadline - time.monotonic())))
        if self.admin is not None:
            self.admin.stop()
        self.state = RunState.STOPPED
        logger.info("stopped")
        return not stuck

    def _give_name_back(self, deadline: float) -> None:
        """The session lives on past our leave (a slot still running): give our name back
        now, so a restart under it joins instead of waiting for the session to end."""
        if not self._name_to_give_back or not self._member_lock.acquire(
                timeout=max(0.1, deadline - time.monotonic())):
            return
        try:
            release_claim(self.client, self.paths, self.name, self._member_session or 0,
                          timeout=max(0.1, min(CLAIM_TIMEOUT, deadline - time.monotonic())))
        finally:
            self._member_lock.release()

    def _leave_async(self, child: str) -> Any:
        """Delete our member znode and mark the leave as graceful, in one transaction."""
        if not self.client.connected:
            return None
        tx = self.client.transaction()
        tx.create(self.paths.left_marker(self.name), b"")
        tx.delete(self.paths.node(child))
        return tx.commit_async()

    def _left(self, pending: Any, child: str, timeout: float) -> bool:
        """Wait for `_leave_async`; True once the member znode is gone."""
        try:
            results = pending.get(timeout=timeout)
            if not any(isinstance(r, Exception) for r in results):
                return True
            # The marker already existed (an earlier leave): delete the member alone.
            self.client.delete_async(self.paths.node(child)).get(timeout=timeout)
            return True
        except NoNodeError:
            return True
        except _ZK_ERRORS:
            return False

    def _leave(self, child: str, timeout: float) -> bool:
        pending = self._leave_async(child)
        return pending is not None and self._left(pending, child, timeout)

    def _finish_leave(self, child: str | None, left: bool, deadline: float) -> None:
        """ZooKeeper was unreachable when we were told to leave. Our slots have stopped;
        wait (within the shutdown deadline, and no longer than the session could live) for
        the connection so our member and owner znodes go now rather than at session expiry,
        which would keep the next owners waiting."""
        until = min(deadline, time.monotonic() + self.session.timeout)
        waiter = threading.Event()
        if not self.client.connected:
            logger.warning("ZooKeeper unreachable while leaving: waiting up to {:.1f}s to "
                           "delete our znodes", max(0.0, until - time.monotonic()))
        while not self.client.connected and time.monotonic() < until:
            waiter.wait(0.05)
        if not self.client.connected:
            logger.warning("could not reach ZooKeeper: our znodes go when the session expires")
            return
        self.runtime.release_orphans()
        if not left and child is not None:
            self._leave(child, max(0.1, until - time.monotonic()))
        logger.info("znodes deleted after the connection came back")

    def __enter__(self) -> Node:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- helpers ---------------------------------------------------------------------------
    def _session_id(self) -> int | None:
        cid = self.client.client_id
        return cid[0] if cid else None

    def _kick(self, reason: str) -> None:
        self._events.put(reason)

    def member_data(self) -> dict[str, Any]:
        return {
            "id": self.name, "host": socket.gethostname(), "pid": os.getpid(),
            "admin_url": (self.config.admin.advertise_url or self.admin.url
                          if self.admin is not None else None),
            "handlers": self.registry.names(),
            "works": list(self.config.node.works) if self.config.node.works is not None else None,
            "leader_works": self.config.node.leader_works,
            "weight": self.config.node.weight, "docker": self.docker,
            "state": "active", "started_at": self.started_at, "version": __version__,
        }

    def _check_docker(self) -> None:
        """Probe the Docker engine once, before joining: the leader deals container tasks
        only to nodes that advertise one. Containers an earlier run of this node left (it
        was killed) are removed first, so they never run beside the slots' next owners."""
        from .executors.container import engine_available, remove_leftovers

        self.docker = engine_available()
        if self.docker:
            removed = remove_leftovers(self.config.cluster.name, self.name)
            if removed:
                self.events.add("containers_removed", f"removed {removed} container(s) left "
                                "by an earlier run of this node", count=removed)
        (logger.info if self.docker else logger.debug)(
            "Docker engine {}available: container tasks {}run here",
            "" if self.docker else "not ", "can " if self.docker else "cannot ")

    def _register(self) -> None:
        with self._member_lock:
            if self.state is not RunState.STARTING and self._stop.is_set():
                return  # leaving: never rejoin behind the leave's back
            sent = self.lease.now()
            with contextlib.suppress(NoNodeError):
                self.client.delete(self.paths.left_marker(self.name))
            child, session = register(self.client, self.paths, self.member_data(),
                                      wait_for_name=self.session.timeout + 2.0)
            # The session first: the lease thread reads the child first, so it never pairs
            # the new znode with the old session (the child is None until now).
            self._member_version = 0
            self._member_session = session
            self._member_child = child
            if self._lock_abandoned:
                # stop() gave up waiting for this rejoin (a slow ZooKeeper) and left without
                # it: what it made leaves now, or the node stays a member while its session
                # lives on (slots stuck past the stop). Set first, checked after: stop()
                # sets the flag, then takes the child, so one of the two always leaves it.
                self._member_child = None
                logger.warning("joined as {} after the stop gave up on it: leaving", child)
                with contextlib.suppress(*_ZK_ERRORS):
                    self.client.delete_async(self.paths.node(child)).get(
                        timeout=CLAIM_TIMEOUT)
                release_claim(self.client, self.paths, self.name, session)
                return
            # Members are read afresh: if nodes/ was deleted and made again (our znode went
            # with it), its children's names start again from n-0000000000, and a cached
            # record would give a new member an old one's name and data.
            self._member_cache.clear()
            self._listing = Listing()
            self.lease.member = self.paths.node(child)
            self._read_zk_clock(child)
        self.lease.renew(sent)
        logger.info("joined cluster {} as {}", self.config.cluster.name, child)

    def _read_zk_clock(self, child: str) -> None:
        """Estimate ZooKeeper's clock (the offset from ours) by a write: a znode made now
        and its ctime, between the local times the request was sent and answered. Our
        member znode was just made, but maybe after a wait for its name: writing its data
        again dates it exactly (what it says does not change)."""
        before = time.monotonic()
        try:
            stat = self.client.set(self.paths.node(child), dumps(self.member_data()))
        except _ZK_ERRORS:
            return  # no estimate (corrupt members are timed from when we first read them)
        after = time.monotonic()
        self._member_version = stat.version
        # Against the monotonic clock: a step of the wall clock must not age anything.
        self._zk_clock = stat.mtime / 1000.0 - (before + after) / 2.0

    def _repair_member(self) -> None:
        """Our member znode's data changed (edited by hand?): write ours back. Each node owns
        its member znode; the leader's cached copy then matches it again."""
        child = self._member_child
        if child is None:
            return
        path = self.paths.node(child)
        try:
            _, stat = self.client.get(path)
        except NoNodeError:
            return
        if stat.version == self._member_version:
            return
        if stat.ephemeralOwner != self._member_session:
            self._member_foreign = child  # not ours to repair: join again (see _sync_pass)
            self._kick("membership lost")
            return
        stat = self.client.set(path, dumps(self.member_data()), version=stat.version)
        self._member_version = stat.version
        logger.warning("member znode {} had been changed by someone else: rewrote it", path)
        self.events.add("member_repaired", f"{path} was changed by hand and rewritten",
                        znode=path)

    # -- ZooKeeper callbacks (kazoo's thread: never block) ------------------------------------
    def _on_state(self, state: KazooState) -> None:
        if self._stop.is_set():
            return  # our own close() reports LOST too; nothing to react to
        self.metrics.zk_events.labels(state.lower()).inc()
        self.metrics.zk_connected.set(1 if state == KazooState.CONNECTED else 0)
        self.events.add("zookeeper", f"connection {state.lower()}", state=state.lower())
        if state == KazooState.LOST:
            self.lease.invalidate()
            self.runtime.revoke_all("ZooKeeper session lost")
            logger.warning("ZooKeeper session lost: all slots stopped; will rejoin")
        elif state == KazooState.SUSPENDED:
            logger.warning("ZooKeeper connection suspended: slots run on until the lease ends "
                           "in {:.1f}s unless it comes back", max(self.lease.remaining(), 0.0))
        else:
            logger.info("ZooKeeper connection {}", state.lower())
            self._lease_wake.set()  # prove membership now, before the lease runs out
        self._kick(f"state:{state}")

    def _on_watch(self, event: Any) -> None:
        self._kick(f"watch:{getattr(event, 'path', '')}")

    def _on_leader_watch(self, event: Any) -> None:
        """Our leader's znode changed, seen from two places back or further. Its deletion
        is kept, until the next full pass lists the members again, for the successor's
        first plan (see _elected_writer); the full pass is put off all the same."""
        if getattr(event, "type", None) == EventType.DELETED:
            self._gone_leader = str(getattr(event, "path", "")).rsplit("/", 1)[-1]
        self._on_watch_later(event)

    def _on_watch_later(self, _event: Any) -> None:
        """A full pass within about LOOK_LATER, not at once: for what a follower must learn
        but not race for. Its leader's end: the next in line takes over at once (its own
        watch), and its first publish rewrites every plan, which wakes each follower anyway;
        a full pass of every follower at that moment only slowed the takeover (at 1,000
        members, ~4 requests from each of 998 nodes). A join or leave, to the next in line:
        it keeps every member's data read, for a takeover that reads none. Its predecessor's
        end, to a follower third in line or further back (see _sync_pass)."""
        if self._look_at is None:
            self._look_at = time.monotonic() + LOOK_LATER * random.uniform(0.5, 1.5)
            self._kick(LOOK_LATER_KICK)  # the controller takes the deadline

    # -- controller ---------------------------------------------------------------------------
    def _controller_loop(self) -> None:
        interval = self.config.node.reconcile_interval
        while not self._stop.is_set():
            timeout = interval
            keys_due = self.keys.next_due() if self.is_leader else None
            if keys_due is not None and self._debouncing_until is not None:
                # The provider is called by the pass after the debounce: a call falling due
                # meanwhile waits for it. Found in review: its wake-up stayed in the past, so
                # the controller ran pass after pass, with no wait, through the window.
                keys_due = max(keys_due, self._debouncing_until)
            wakes = [w for w in (self._wake_at, self._candidate_wake, keys_due,
                                 self._look_at) if w is not None]
            if wakes and self.client.connected:
                # A wake-up that passes while disconnected waits for the connection (a state
                # change kicks us) instead of spinning on a deadline already gone.
                timeout = max(0.0, min(interval, min(wakes) - time.monotonic()))
            try:
                reasons = {self._events.get(timeout=timeout)}
            except queue.Empty:
                # "wake" only for a deadline that is due: a wait that the interval ended is the
                # timer's, whatever deadline lies further ahead (a keyed task always has one).
                # Found in review: a leader with a deadline never had a pass of the timer, and
                # what waits for one (the plans check) came in a pass a change woke.
                due = bool(wakes) and min(wakes) <= time.monotonic()
                reasons = {"wake" if due else "periodic"}
            while not self._events.empty():  # coalesce a burst into one pass
                reasons.add(self._events.get_nowait())
            if wakes and min(wakes) <= time.monotonic():
                reasons.add("wake")  # due: a stream of light events must not put it off
            reason = ",".join(sorted(reasons))
            if self._stop.is_set():
                break
            self.passes += 1
            try:
                self._sync(reasons)
            except _ZK_ERRORS as exc:
                logger.warning("cluster sync deferred ({}: {})", type(exc).__name__, exc)
                self._stop.wait(0.2)
                if self.client.connected:
                    self._kick("retry")
            except Exception:  # noqa: BLE001 - the controller must survive anything
                logger.exception("cluster sync failed after {!r}; retrying", reason)
                self._stop.wait(0.5)
                self._kick("retry")

    def _sync(self, reasons: Collection[str] = ()) -> None:
        try:
            self._sync_pass(reasons)
        except BaseException:
            # A pass cut short after its publish settled (see DocMemo.settled) never read
            # back its share: no light pass trusts that publish.
            self._memo.settled = None
            raise
        finally:
            # Read ahead for this pass only (see _prefetch_takeover): never a later one's.
            self._prefetched = {}
            self.plans.listing = None

    def _sync_pass(self, reasons: Collection[str]) -> None:
        if self._stop.is_set() or not self.client.connected:
            return
        reasons = set(reasons) - {LOOK_LATER_KICK}
        if not reasons:
            return  # only to take a put-off pass's deadline (see _on_watch_later)
        self._memo.expire()  # what an earlier pass read is asked for again (see DocMemo)
        if self._light_pass(reasons):
            return
        timer = reasons == {"periodic"}  # nothing but the reconcile timer woke this pass
        self._look_at = None  # this is the pass that was put off
        self._last_full = time.monotonic()
        self._jitter = random.uniform(0.8, 1.2)  # nodes' full passes do not fall together
        self._chores = None  # only this pass's own, by a leader (an earlier pass may have failed)
        if self._member_foreign is not None and self._member_foreign == self._member_child:
            # The lease thread found our member znode's name held by another session
            # (nodes/ deleted and made again, and the name given to someone else): the
            # listing would still show it as ours. Join again under a new name.
            logger.warning("our member znode {} belongs to another session; rejoining",
                           self._member_child)
            self._member_child = None
        if self._member_child is None or self._member_session != self._session_id():
            self._member_child = None
            self._memo = DocMemo()  # a new session: whatever we remembered is read again
            self._register()
            if self._member_child is None:
                return  # leaving
        # Only the leader watches the member list and reads every member's data: a follower
        # hears of its predecessor (election) and of the assignment, so a join or leave
        # wakes the leader and one follower instead of every node twice, and it reads only
        # the data the election needs (see read_members). A follower that finds itself
        # first reads again as the leader: it deals from every member's data, and every
        # join and leave must wake it from now on (the watch comes with that listing).
        # The next in line reads every member's data too (one node, one read per join), so
        # that taking over costs no read of every member at once.
        own = self._member_child
        # The next in line woken by its leader's end is about to lead: its first listing
        # sets the watch a leader needs, so taking over costs one listing, not two.
        takeover = self._next_in_line and self._leader_child is not None and (
            f"watch:{self.paths.node(self._leader_child)}" in reasons)
        if takeover:
            self._prefetch_takeover()
        # A follower that finds itself first reads again as the leader, and one that finds
        # itself next in line reads every member's data (with the put-off watch) at once,
        # not at some later pass: a takeover soon after would read them then. Each flag only
        # turns on, so at most three listings.
        full, in_line = self.is_leader, self._next_in_line
        # A leader's end is a fact about the listing it was seen after (a member znode's
        # name comes back if nodes/ is made again): forgotten before this pass lists, so
        # one told meanwhile is kept (ZooKeeper tells it before any listing without it).
        self._gone_leader = None
        while True:
            corrupt: list[Corrupt] = []
            watch = (self._on_watch if full or takeover
                     else self._on_watch_later if in_line else None)
            candidates = self._candidates(read_members(
                self.client, self.paths, watch=watch,
                cache=self._member_cache, corrupt=corrupt,
                focus=None if full or in_line else own, listing=self._listing,
                recheck=timer))
            children = [m.child for m in candidates]
            if own not in children or takeover:
                break  # (a takeover's listing was already the full, watched one)
            at = children.index(own)
            if at == 0 and not full:
                full = True
            elif at == 1 and not (full or in_line):
                in_line = True
            else:
                break
        self.corruption.update(("member",), corrupt)
        members = dedupe_by_name(candidates)
        if own not in children:
            if self._stop.is_set():
                return  # we deleted it ourselves: leaving
            logger.warning("our member znode {} is gone; rejoining", own)
            self.lease.invalidate()
            self.runtime.revoke_all("membership lost")
            self._member_child = None
            self._kick("rejoin")
            return
        self._note_members(members)
        pos = children.index(own)
        self._next_in_line = pos == 1
        if pos > 0:  # the election: watch only our predecessor
            # Its end is news at once only to the next in line (it takes over) and to the
            # one after (now next in line, it reads every member's data for a takeover).
            # Further back it changes nothing we run: a full pass then (a listing, a plan
            # read, our watches set again) came in the middle of the handover the leave or
            # crash had just started, on the node that was usually one of the gainers.
            # Put off, like a leader's end to a follower (see _on_watch_later).
            self.client.exists(self.paths.node(children[pos - 1]),
                               watch=self._on_watch if pos <= 2 else self._on_watch_later)
        if pos > 1:
            # And the leader, whose plans we trust: when it goes, a full pass learns who
            # leads now even if the new leader writes no plan (an older xconsumer); put
            # off, since the new leader's plan wakes us at once (see _on_watch_later).
            self.client.exists(self.paths.node(children[0]), watch=self._on_leader_watch)
        if candidates[pos].corrupt is not None or self._member_dirty.is_set():
            self._member_dirty.clear()
            self._repair_member()
        leader = candidates[0].name
        self._leader_child = candidates[0].child
        # The successor only if its data was read and decodes: one corrupt for long is
        # skipped by the others' elections (see _candidates), and a member that leads only
        # in its own eyes must not be followed.
        second = candidates[1] if pos > 1 else None
        self._successor_child = (second.child if second is not None and second.known
                                 and second.corrupt is None else None)
        if leader != self.leader:
            logger.info("leader is now {}{}", leader, " (this node)" if pos == 0 else "")
            self.events.add("leader", f"leader is now {leader}", leader=leader)
        self.leader, self.is_leader = leader, pos == 0
        self.metrics.leader.set(1 if self.is_leader else 0)
        if self.is_leader:
            if not self._leading:
                self.keys.reset()
                self._doc_current = False  # read it afresh: we ran from our plan so far
                self._leading = True
                # A new leader writes every plan anyway (PlanBook starts empty): checking
                # them first would only delay its first publish.
                self._plans_verified = time.monotonic()
            self._lead([m for m in members if m.child in children], own)
        else:
            self._leading = False
            self._prefetched, self.plans.listing = {}, None  # read ahead for a lead not taken
            self._seen_rebalance, self._wake_at = None, None
            self.damper.reset()
            self.publish_error = self.strategy_error = None
        plan, mzxid = (None, None) if self.is_leader else read_plan(
            self.client, self.paths, self.name, watch=self._on_watch)
        self._planless = not self.is_leader and plan is None
        if self.is_leader or not (self._take_plan(plan, mzxid) or self._keep_plan(plan)):
            self._stale_doc = None
            self.plan_source = "document"
            if self.is_leader or plan is not None:
                self._read_document()
            else:
                self._peek_document()
        self._apply()
        if self._chores is not None:
            chores, self._chores = self._chores, None
            self._housekeep(*chores, timer=timer)
        self._check_claim()
        self._report_departures()

    def _check_claim(self) -> None:
        """Our name claim is still ours (made again if it is gone): after the pass has
        applied our slots, so a leader publishes and a node claims without waiting for it."""
        with self._member_lock:  # stop() gives the name back under it: never made again
            twin = (self._member_child is not None and not self._stop.is_set()
                    and not ensure_claim(self.client, self.paths, self.member_data(),
                                         self._member_session or 0))
        if twin:
            _warn_twin(self.name, self.paths.name_claim(self.name))

    def _read_document(self) -> None:
        """Run from the whole document: the leader, and a follower without a plan it can
        trust (none yet, corrupt, or written by another leader than the one elected)."""
        self._doc_current = True  # before the read: a change meanwhile marks it stale again
        current = self._memo.current() if self.is_leader else None
        if current is not None:
            # The leader's document of this very pass (read or written, see DocMemo): its
            # watch is set without waiting for the answer, so the leader applies its own
            # share a round trip sooner; a change that came first is told by the answer.
            doc, _, mzxid = current
            self.client.exists_async(self.paths.assignment, watch=self._on_doc_watch).rawlink(
                lambda result: self._doc_watch_set(result, mzxid))
            self._take_document(doc)
            return
        self._take_document(read_assignment(self.client, self.paths,
                                            watch=self._on_doc_watch, memo=self._leader_memo)[0])

    def _doc_watch_set(self, result: Any, mzxid: int) -> None:
        """The answer to the stat that set the leader's document watch (kazoo's callback
        thread: nothing here may block). Not the document we hold, or no answer at all: a
        pass reads it again."""
        try:
            stat = result.get_nowait()
        except Exception:  # noqa: BLE001 - any failure means: look again
            stat = None
        if stat is None or stat.mzxid != mzxid:
            self._on_doc_watch(None)

    def _take_document(self, published: dict[str, Any] | Corrupt | None) -> bool:
        """Run from a document just read; False (and reported) if it is corrupt: a corrupt
        document is not "no assignment", the last valid plan runs on until the leader
        repairs it (it republishes at once; see publish())."""
        self.corruption.update(("assignment",), [published]
                               if isinstance(published, Corrupt) else [])
        if isinstance(published, Corrupt):
            return False
        self._note_assignment(published)
        return True

    def _peek_document(self) -> None:
        """A follower with no plan at all: one that just joined, not dealt in yet. The
        leader writes its plan in the publish that first names it, and the watch set on the
        plan wakes it then; watching the document meanwhile made every joining node of a
        forming cluster read the whole document on every publish (the herd that kept 1,000
        members from forming). It reads the document only when its mzxid changed (one stat
        per pass), and watches it only if it names this node: a leader of an older
        xconsumer, which writes no plans."""
        stat = self.client.exists(self.paths.assignment)
        if stat is None or stat.mzxid == self._doc_mzxid:
            return
        published, _ = read_assignment(self.client, self.paths)
        self._doc_mzxid = stat.mzxid
        self._doc_current = False  # no watch tells us it changed: the API reads it afresh
        if not self._take_document(published):
            return
        if published is not None and self.name in published.get("nodes", {}):
            self.client.exists(self.paths.assignment, watch=self._on_doc_watch)
            self._doc_mzxid = None  # and read it on every pass from now on

    def _take_plan(self, plan: dict[str, Any] | Corrupt | None, mzxid: int | None) -> bool:
        """Run from our plan if it is one the elected leader wrote for us; False: read the
        document instead (a corrupt plan is reported; the leader's check rewrites it)."""
        self._plan_mzxid = mzxid
        self.corruption.update(("plan",), [plan] if isinstance(plan, Corrupt) else [])
        if (plan is None or isinstance(plan, Corrupt) or plan["node"] != self.name
                or not self._elected_writer(plan)):
            return False
        assigned = plan_desired(plan)
        generation = plan["generation"]
        if generation != self.generation or assigned != self._assigned:
            moved = len(assigned.keys() ^ self._assigned.keys())
            if generation != self.generation:
                self.events.add("rebalance", f"generation {generation}: {moved} slot(s) of "
                                "this node moved", generation=generation, moved=moved)
            self.generation = generation
            self._max_generation = max(self._max_generation, generation)
            self.metrics.generation.set(generation)
        self._assigned = assigned
        self.plan_source = "plan"
        self._stale_doc = None
        return True

    def _elected_writer(self, plan: dict[str, Any]) -> bool:
        """Whether `plan` comes from the leader we elected, or from the member second in
        our last listing once a watch told us our leader's znode is deleted. The election
        goes by sequence and a member joining later gets a higher one, so with the first
        gone the second leads (or has gone too, and a plan of its is still one its
        leadership wrote). Taking that plan at once spares every follower a listing in the
        moment of a takeover: before, each one's plan named the old leader, and only a full
        pass (listing, data, watches) made the new leader's plan one to trust."""
        if plan["leader"] == self._leader_child:
            return True
        name = plan.get("leader_name")  # (a node name, or absent: see codecs._plan)
        if (self._successor_child is None or plan["leader"] != self._successor_child
                or self._gone_leader is None or self._gone_leader != self._leader_child
                or name is None):
            return False  # (no name: an older leader's plan, taken after a full pass)
        self._leader_child, self._successor_child = self._successor_child, None
        if name != self.leader:
            logger.info("leader is now {} (its first plan, after {}'s end)", name, self.leader)
            self.events.add("leader", f"leader is now {name}", leader=name)
            self.leader = name
        return True

    def _keep_plan(self, plan: dict[str, Any] | Corrupt | None) -> bool:
        """Our plan names another leader than the one elected: the leader changed and its
        successor has not published yet (a new leader rewrites every plan in its first
        publish), or the plan was written by hand. It is not applied either way, and what
        this node runs came from the last plan it trusted, which stays current while the
        document does not change: one stat (with a watch) instead of every follower reading
        the whole document at each leader change (a herd of N times the document, 30 MB at
        1,000 members). Once the document changes and our plan still names another leader,
        that leader writes no plans (an older xconsumer): False, read the document."""
        if (self.plan_source != "plan" or not isinstance(plan, dict)
                or plan["node"] != self.name or plan["generation"] > (self.generation or 0)):
            return False  # (a newer plan than ours, which we never took: the document)
        stat = self.client.exists(self.paths.assignment, watch=self._on_doc_watch)
        now = (stat.mzxid if stat is not None else None,)
        if self._stale_doc is None:
            self._stale_doc = now
        return self._stale_doc == now

    def _light_pass(self, reasons: set[str]) -> bool:
        """A follower woken only by its plan, its slots, its lease or the clock does not
        re-list the members: it reads its plan (if that is what changed) and applies it.
        That is what keeps a publish from costing every node a member listing (no herd at
        1,000 nodes). A leader woken only by its slots ending applies its share the same
        way. False: do the full pass (anything else woke us, or the plan is not one to
        trust)."""
        plan_wake = f"watch:{self.paths.plan(self.name)}"
        # A node still without a plan (it just joined, or its cluster is still forming)
        # waits for its first one the same way: the full pass that registered it found the
        # leader it trusts, and its plan's watch wakes it. Listing the members on each of
        # its periodic passes instead made a forming cluster of N nodes list N members N
        # times every few seconds.
        planless = self._planless and self.plan_source != "plan"
        # A leader woken only by its own slots ending (it gives slots up in every join):
        # who is in the cluster, the document and its share are what its last full pass
        # found, so it applies that share again without listing and reading it all (five
        # slots given up were five full passes, ~15 requests, in the middle of the join).
        # What it must react to comes with a reason of its own (a watch, a deadline's
        # "wake", "retry" after a failed pass), so the set is then more than {"slot"}; a
        # failed publish, which has none, takes the full pass, as (conservatively) does a
        # debounce or chores left by an unfinished pass.
        # Its own publish wakes it too (the watch its read of the document set fires on the
        # write that follows), in the same pass as the slots it gave up: one stat tells
        # that the document is still the one its last publish settled on (wrote, or found
        # nothing to change in), and sets the watch again; anyone else's write changed its
        # mzxid, and the full pass reads it. Not "the one it last read": a publish refused
        # by a write that came meanwhile is followed by a read of that write, and a read by
        # the API moves the memo too; neither is a document the leader has checked.
        doc_wake = f"watch:{self.paths.assignment}"
        leader_slots = (self.is_leader and self._leading and "slot" in reasons
                        and reasons <= {"slot", doc_wake} and self._memo.settled is not None
                        and self._chores is None and self._debouncing_until is None
                        and self.publish_error is None and self.strategy_error is None)
        if ((self.is_leader and not leader_slots)
                or (self.plan_source != "plan" and not planless and not leader_slots)
                or not reasons or not (leader_slots or reasons <= {plan_wake, *LIGHT_REASONS})
                or self._member_child is None or self._member_session != self._session_id()
                or time.monotonic() - self._last_full > FULL_PASS_EVERY * self._jitter):
            return False
        if leader_slots and doc_wake in reasons and not self._document_is_ours():
            return False
        if planless and plan_wake not in reasons and self._doc_moved():
            return False  # a leader of an older xconsumer (no plans) may have dealt us in
        if plan_wake not in reasons and "periodic" in reasons and plan_mzxid(
                self.client, self.paths, self.name) != self._plan_mzxid:
            reasons.add(plan_wake)  # changed, and no watch told us
        if plan_wake in reasons:
            if not self._take_plan(*read_plan(self.client, self.paths, self.name,
                                              watch=self._on_watch)):
                return False
            self._planless = False
        self._apply()
        return True

    def _document_is_ours(self) -> bool:
        """The document is still the one this leader's last publish settled on (one stat,
        which sets its watch again): the share it applies came from it."""
        stat = self.client.exists(self.paths.assignment, watch=self._on_doc_watch)
        return stat is not None and stat.mzxid == self._memo.settled

    def _doc_moved(self) -> bool:
        """Whether the document changed since a plan-less node last peeked at it (see
        _peek_document): one stat."""
        stat = self.client.exists(self.paths.assignment)
        return stat is not None and stat.mzxid != self._doc_mzxid

    def _apply(self) -> None:
        desired = self._assigned if self.lease.valid() else {}
        self.runtime.apply(desired, int(self.generation or 0))
        self.runtime.check_stuck()
        self._observe(desired)

    @property
    def assignment(self) -> dict[str, Any] | None:
        """The whole published document. The leader reads it on every pass; a follower runs
        from its plan and reads it only when asked (the API, the views), at most once per
        change: a watch marks its copy stale. A read that fails answers the last copy."""
        return self._document()

    def _document(self, ahead: Any = None) -> dict[str, Any] | None:
        """`assignment`, or from `ahead`: a get of the document sent ahead by a takeover
        (see _prefetch_takeover), taken by the controller's leader pass only, and only if
        no change of the document was told since it was sent (its answer may predate it,
        and the watch that told it is spent)."""
        if not self._doc_current and self.client.connected:
            self._doc_current = True  # before the read: a change meanwhile marks it again
            if ahead is not None and ahead[1] != self._doc_changes:
                ahead = None  # a change was told since it was sent (after the line above)
            try:
                doc, _ = read_assignment(self.client, self.paths, watch=self._doc_changed,
                                         memo=self._leader_memo,
                                         ahead=None if ahead is None else ahead[0])
            except _ZK_ERRORS:
                self._doc_current = False
                return self._doc
            if not isinstance(doc, Corrupt):
                self._doc = doc
        return self._doc

    @property
    def _leader_memo(self) -> DocMemo | None:
        """The leader reads the document on every pass, mostly the one it wrote: a stat
        stands for the read then. A follower reads it rarely, and in one request."""
        return self._memo if self.is_leader else None

    def _doc_changed(self, _event: Any) -> None:
        self._doc_changes += 1
        self._doc_current = False

    def _on_doc_watch(self, event: Any) -> None:
        self._doc_changed(event)
        self._on_watch(event)

    def _candidates(self, records: list[Any]) -> list[Any]:
        """The election's candidates: members in sequence order, by znode name alone.

        A member whose data does not decode still counts (every xconsumer node rewrites its
        own member data when it finds it changed, so for a real node this lasts a moment,
        and every node, whatever it cached, keeps the same leader meanwhile). Only one that
        stays corrupt past two session timeouts is taken as foreign (no xconsumer node owns
        it) and skipped, so a stray znode cannot hold the leadership for ever.

        How long it has been corrupt counts from when its data was written (its mtime, on
        ZooKeeper's clock), not from when this node first read it: a follower reads a member
        only once it comes to the front (see read_members), and every node then agrees."""
        now = time.monotonic()
        foreign_after = 2 * self.session.timeout
        self._candidate_wake = None
        seen = {r.child for r in records if r.corrupt is not None}
        self._corrupt_since = {c: t for c, t in self._corrupt_since.items() if c in seen}
        out = []
        for rec in records:
            if rec.corrupt is not None and rec.child != self._member_child:
                since = self._corrupt_since.setdefault(rec.child, now - self._age(rec.mtime))
                if now - since > foreign_after:
                    continue
                wake = since + foreign_after + 0.01
                self._candidate_wake = wake if self._candidate_wake is None else min(
                    self._candidate_wake, wake)
            out.append(rec)
        return out

    def _age(self, mtime_ms: int) -> float:
        """Seconds since ZooKeeper's clock read `mtime_ms`, by our estimate of that clock
        (see _register); 0 while we have none, or for a time ahead of it."""
        if self._zk_clock is None or not mtime_ms:
            return 0.0
        return max(0.0, time.monotonic() + self._zk_clock - mtime_ms / 1000.0)

    def _left_gracefully(self, name: str) -> bool:
        ahead = self._prefetched.pop(f"left:{name}", None)
        try:
            stat = (ahead.get(timeout=AHEAD_TIMEOUT) if ahead is not None
                    else self.client.exists(self.paths.left_marker(name)))
        except NoNodeError:
            return False
        return stat is not None

    def _prefetch_takeover(self) -> None:
        """The next in line, woken by its leader's end, is about to lead: ask at once for
        what its first publish reads (the overrides, the document, the plans' listing, the
        old leader's left marker), each answered while the member listing is, instead of
        one round trip after another. Each is taken by the read it stands for in this pass
        only, with the same watch that read sets; a pass that does not lead leaves them."""
        client, paths = self.client, self.paths
        ahead: dict[str, Any] = {
            "overrides": (client.get_async(paths.overrides, watch=self._on_watch),
                          client.exists_async(paths.overrides, watch=self._on_watch)),
            "document": (client.get_async(paths.assignment, watch=self._doc_changed),
                         self._doc_changes),
        }
        if self.leader:
            ahead[f"left:{self.leader}"] = client.exists_async(paths.left_marker(self.leader))
        self.plans.listing = client.get_children_async(paths.plans)
        self._prefetched = ahead

    def _sweep_left_markers(self, live: set[str]) -> None:
        """Drop markers of departed names once every node had time to read them (so each
        can tell a graceful leave from a crash in its event log); a marker of a live name
        is for a leave we have not processed yet."""
        try:
            names = set(self.client.get_children(self.paths.left))
        except NoNodeError:
            self.client.ensure_path(self.paths.left)  # deleted by hand: leaves need it
            return
        now = time.monotonic()
        keep = max(10.0, 2 * self.session.timeout)
        for name in names - live:
            first = self._markers_seen.setdefault(name, now)
            if now - first >= keep:
                with contextlib.suppress(NoNodeError):
                    # Recursive: a child put under a marker by hand must not make the
                    # delete fail on every pass.
                    self.client.delete(self.paths.left_marker(name), recursive=True)
                self._markers_seen.pop(name, None)
        for name in set(self._markers_seen) - (names - live):
            del self._markers_seen[name]
        if self._markers_seen:
            wake = min(self._markers_seen.values()) + keep
            self._wake_at = wake if self._wake_at is None else min(self._wake_at, wake)

    def _lead(self, live: list[Any], own: str) -> None:
        """Publish as the member znode `own` that this pass's listing put first. Never
        `self._member_child` read here: stop() clears it mid-pass, and an empty child made
        the fence a check of the members' container, which always passes (found when a
        stopping leader's last plans overwrote its successor's)."""
        members, self._wake_at = self.damper.plan_members(live, self._left_gracefully)
        self._debouncing_until = self._wake_at if members is None else None
        if members is None:
            self._chores = (live, None, ())
            return  # debouncing: look again at _wake_at
        overrides, _ = self.overrides.read(watch=self._on_watch,
                                           ahead=self._prefetched.pop("overrides", None))
        self.corruption.update(("overrides",), [self.overrides.corrupt]
                               if self.overrides.corrupt is not None else [])
        tasks = effective_tasks(self.config.tasks, overrides)
        # A leader that has not read the assignment yet (its first pass after a start)
        # reads it here: its keys are the last good ones, never "none yet".
        published = self._document(self._prefetched.pop("document", None))
        if self._doc_current:
            self._memo.vouch()  # its watch has not fired since: no stat in front of publish
        published_keys = (published or {}).get("keys", {})
        self.keys.poll([e.task for e in tasks], published_keys, keys_refresh(overrides))
        keys = {e.task.name: self.keys.keys(e.task.name) or [] for e in tasks if e.task.keys}
        drained = set(drained_names(overrides))
        # A fresh cluster's first plan waits for the nodes started with it (formation.py),
        # before the rebalance counter is read, so a request is not used up meanwhile.
        wait = self.formation.wait(published, [m.name for m in members])
        if wait > 0:
            wake = time.monotonic() + wait
            self._wake_at = wake if self._wake_at is None else min(self._wake_at, wake)
            self._chores = (live, None, ())
            return
        rebalance = int(overrides.get("rebalance", 0))
        fresh = self._seen_rebalance is not None and rebalance != self._seen_rebalance
        self._seen_rebalance = rebalance
        try:
            result = publish(self.client, self.paths, my_child=own,
                             leader=self.name, members=members, tasks=tasks,
                             strategy=self.config.assignment.strategy,
                             leader_works=self.config.node.leader_works,
                             drained=drained, fresh=fresh, seed=self.config.tasks,
                             last_valid=self._doc, seen_generation=self._max_generation,
                             max_slots=self.config.assignment.max_slots,
                             runner=self.strategies, keys=keys, plans=self.plans,
                             memo=self._memo)
        except PublishFailed as exc:
            self._publish_failed(str(exc))
            return
        _, over = clamp_slots(with_paused(tasks), self.config.assignment.max_slots)
        if over:
            self._publish_failed(f"{over} slot(s) over the cluster's limit of "
                                 f"{self.config.assignment.max_slots} ([assignment] "
                                 "max_slots) were left out: scale down")
        else:
            self._publish_ok()
        if result is None and published is not None:
            # Nothing to publish: the plans may still lag the document (a new leader, a
            # refused write). Written now, fenced like a publish.
            sync_plans(self.client, self.paths, my_child=own,
                       doc=published, plans=self.plans)
        if self.plans.synced is None:
            wake = time.monotonic() + 0.5  # refused: list plans/ again and retry soon
            self._wake_at = wake if self._wake_at is None else min(self._wake_at, wake)
        if result is not None:
            self.metrics.rebalances.inc()
            self.metrics.rebalance_seconds.observe(result.seconds)
            self.metrics.moved.inc(result.moved)
        self._chores = (live, {t.task.name for t in tasks} if result is not None else None,
                        overrides.get("purge", ()))

    def _housekeep(self, live: list[Any], tasks: set[str] | None,
                   purge: Collection[str] = (), *, timer: bool = False) -> None:
        """Sweep left markers and, after a publish, collect removed tasks' znodes. After the
        publish, and never allowed to stop it: whatever someone left under these
        containers, housekeeping only reports."""
        try:
            self.plans.collect_deferred(self.client, self.paths)
            self._sweep_left_markers({m.name for m in live} | set(self.damper.ghosts))
            if tasks is not None:
                self._collect_garbage(tasks)
                self._purge_checkpoints(tasks, purge)
        except _ZK_ERRORS as exc:
            logger.warning("housekeeping skipped this pass ({}: {})", type(exc).__name__, exc)
        try:
            # Apart from the chores above (found by review): a left marker that cannot be
            # deleted fails them on every pass, and no plan was checked again.
            self._verify_plans(timer)
        except _ZK_ERRORS as exc:
            logger.warning("plans not checked this pass ({}: {})", type(exc).__name__, exc)

    def _verify_plans(self, timer: bool) -> None:
        """Now and then, check that every plan is as the leader wrote it (a stat each, see
        PlanBook.verify); what differs is written again by the pass this kicks. Here, after
        the publish and our own share's apply, not in front of the publish: at 1,000
        members the check is 1,000 stats, and a join whose pass fell due for it waited
        behind them (1,043 requests and 0.4 s more, one join in three in the benchmark).

        And in a pass of the reconcile timer alone (`timer`: nothing else woke it), not in
        one a change woke: after the publish it still came in the middle of the handover,
        with 999 stats counted against a crash at 1,000 members (the benchmark's crash row,
        1,019 requests against 19-26). A leader that gets no such pass for longer than
        twice the check's period (changes without a pause, or a deadline due at every
        wait) takes it in whatever pass comes then."""
        since = time.monotonic() - self._plans_verified
        if since <= FULL_PASS_EVERY or not (timer or since > 2 * FULL_PASS_EVERY):
            return
        self._plans_verified = time.monotonic()
        if not self.plans.verify(self.client, self.paths):
            logger.warning("a plan under {} was changed by someone else, or refused: "
                           "writing it again", self.paths.plans)
        self._kick("plans")  # the listing and the sync it calls for, in a pass of their own

    def _purge_checkpoints(self, tasks: set[str], purge: Collection[str]) -> None:
        """Delete the checkpoints of tasks removed through the API, now that a table without
        them is published (no slot of theirs runs). The purge list is left as it is (the
        leader writes no overrides of its own: their version counts operators' changes
        only); deleting what is already gone costs one request per name. `purge` comes
        from the overrides this pass already read."""
        for name in purge:
            if name not in tasks and purge_checkpoints(self.client, self.paths, name):
                logger.info("deleted the checkpoints of removed task {}", name)

    def _published_overrides(self) -> dict[str, Any] | None:
        """The overrides behind the published table, for a corrupt overrides znode this
        process never read valid (a restarted leader reads the assignment first here)."""
        return overrides_from_assignment(self.assignment, self.seed_tasks())

    def _keys_failed(self, task: str, message: str) -> None:
        """A keys provider failed (raised, hung, returned bad keys): the last good keys
        stay in force; said once per failed call, in the log and the events."""
        logger.bind(task=task).error(message)
        self.events.add("keys_failed", message, task=task)
        self.metrics.keys_failures.labels(task).inc()

    def _publish_failed(self, message: str) -> None:
        """Loud, once per distinct message: log, event, metric and the node view."""
        if message != self.publish_error:
            logger.error("{}", message)
            self.events.add("publish_failed", message)
            self.metrics.publish_failures.inc()
        self.publish_error = message

    def _strategy_result(self, name: str, error: str | None) -> None:
        """Every plan a failed user strategy did not make counts; the log and the event
        come once per distinct failure, as for publish failures."""
        if error is not None:
            self.metrics.strategy_failures.inc()
            if error != self.strategy_error:
                logger.error("{}", error)
                self.events.add("strategy_failed", error, strategy=name)
        elif self.strategy_error is not None:
            logger.info("strategy {!r} plans again", name)
        self.strategy_error = error

    def _publish_ok(self) -> None:
        if self.publish_error is not None:
            logger.info("assignment published in full again")
        self.publish_error = None

    def _collect_garbage(self, tasks: set[str]) -> None:
        """Drop the done markers and empty owner containers of tasks no longer in the table:
        a once-task removed and added again runs again, and removed tasks leave nothing
        behind. Runs after a publish without those tasks, so no node is starting them."""
        for parent in (self.paths.done, self.paths.owners):
            try:
                names = self.client.get_children(parent)
            except NoNodeError:
                continue
            for name in names:
                if name in tasks:
                    continue
                path = f"{parent}/{name}"
                try:
                    if parent == self.paths.done:
                        self.client.delete(path, recursive=True)
                    else:
                        self.client.delete(path)  # refused while an owner znode remains
                except (NoNodeError, NotEmptyError):
                    continue
                logger.info("removed {} (task {} is no longer in the table)", path, name)

    def _note_members(self, members: list[Any]) -> None:
        """Join and leave events, by member znode: a name is reported when this node knows
        it (the leader reads every member; a follower the leader's and its own, see
        read_members). A member first known later (a follower that took over) is no join."""
        now = {m.child: m.name if m.known else None for m in members}
        before = self._member_seen
        if before:
            names_before = {n for n in before.values() if n}
            names_now = {n for n in now.values() if n}
            for name in sorted({n for c, n in now.items() if c not in before and n}
                               - names_before):
                self.events.add("node_joined", f"{name} joined", node=name)
            # Told apart at the end of the pass (_report_departures): the left marker's
            # read is a round trip the publish and the claims need not wait for.
            self._departed += sorted({n for c, n in before.items() if c not in now and n}
                                     - names_now)
        self._member_seen = now
        self.metrics.nodes.set(len(now))

    def _report_departures(self) -> None:
        """The event of each member gone since: a graceful leave (its left marker) or a
        loss. After the pass has published and applied; one left behind by a pass that
        failed is reported by the next."""
        while self._departed:
            name = self._departed[0]
            if self._left_gracefully(name):
                self.events.add("node_left", f"{name} left gracefully", node=name)
            else:
                self.events.add("node_lost", f"{name} vanished without leaving (crash, "
                                "kill or lost session)", node=name)
            self._departed.pop(0)

    @property
    def _member_names(self) -> list[str]:
        """The members' names this node knows (all of them on the leader)."""
        return [n for n in self._member_seen.values() if n]

    def _note_assignment(self, doc: dict[str, Any] | None) -> None:
        generation = (doc or {}).get("generation")
        if generation is not None and generation != self.generation:
            moved = moved_between((self._doc or {}).get("nodes", {}),
                                  (doc or {}).get("nodes", {}))
            self.events.add("rebalance", f"generation {generation}: {moved} slot(s) moved "
                            f"across {len((doc or {}).get('nodes', {}))} node(s)",
                            generation=generation, moved=moved)
        self._doc, self.generation = doc, generation
        self._assigned = plan_slots(doc, self.name)
        self._max_generation = max(self._max_generation, int(generation or 0))
        self.metrics.generation.set(generation or 0)

    def _observe(self, desired: dict[Any, Any]) -> None:
        if self.plan_source == "plan":
            # A follower knows the tasks it runs, not the whole table (the leader reports
            # that): it does not read the document for a metric.
            self.metrics.observe_desired({t.name: t.worker_num for t in self._assigned.values()})
        else:
            doc = self._doc or {}
            paused = set(doc.get("paused", []))
            self.metrics.observe_desired({name: 0 if name in paused else t.worker_num
                                          for name, t in doc_tasks(doc).items()})
        assigned: dict[str, int] = {}
        for slot in desired:
            assigned[slot.task] = assigned.get(slot.task, 0) + 1
        self.metrics.observe_slots(self.runtime.statuses(), assigned)
        self.metrics.lease.set(max(self.lease.remaining(), 0.0))
        self.metrics.zk_connected.set(1 if self.client.connected else 0)

    def refresh_metrics(self) -> None:
        self._observe(self._assigned)

    def assigned(self) -> dict[Slot, TaskConfig]:
        """What the leader's plan gives this node now (running or not yet)."""
        return dict(self._assigned)

    def seed_tasks(self) -> list[TaskConfig]:
        """The leader's app.toml tasks (published with the assignment), else our own."""
        return seed_from_doc(self.assignment, self.config.tasks)

    # -- lease ------------------------------------------------------------------------------
    def _lease_loop(self) -> None:
        was_valid = self.lease.valid()
        while not self._stop.is_set():
            interval = max(0.05, self.session.timeout / 6.0)
            # Notice an ended lease *before* renewing: a late reply must not hide the gap in
            # which handlers already saw ctx.stopping.
            was_valid = self._lease_transition(was_valid)
            child, session = self._member_child, self._member_session
            if child is not None and self.client.connected:
                try:
                    self._prove_membership(child, session, interval * 2)
                except _ZK_ERRORS:
                    pass  # not renewed: the next round tries again
                except Exception:  # noqa: BLE001 - the lease thread must survive anything
                    logger.exception("lease renewal failed; retrying")
            was_valid = self._lease_transition(was_valid)
            self._lease_wake.wait(interval)
            self._lease_wake.clear()

    def _prove_membership(self, child: str, session: int | None, timeout: float) -> None:
        """One renewal: a `sync` and an `exists` of our member znode, every round.

        The `sync` goes through the ZooKeeper leader: a follower cut off from the quorum
        would still answer a plain read while our session expires. The `exists` proves the
        membership: the znode is there and our session's. A `sync` alone with a watch on
        the znode (half the requests at rest) was built and measured, and taken back: see
        docs/BENCHMARKS.md, "The lease's idle requests"."""
        path = self.paths.node(child)
        sent = self.lease.now()
        # Sent together, answered in order: one round trip, and the exists counts only
        # once the sync's answer says it went through (see exists_after_sync).
        stat = exists_after_sync(self.client, path).get(timeout=timeout)
        if stat is not None and stat.ephemeralOwner == session:
            self.lease.renew(sent)
            if stat.version != self._member_version:
                self._member_dirty.set()
                self._kick("member data changed")
        elif child == self._member_child:
            if stat is not None:
                self._member_foreign = child  # see _sync_pass
            self.lease.invalidate()
            self._kick("membership lost")

    def _lease_transition(self, was_valid: bool) -> bool:
        valid = self.lease.valid()
        if was_valid and not valid:
            logger.warning("membership lease ended: stopping all slots until it is proven again")
            self.runtime.revoke_all("lease ended")
            self._kick("lease ended")
        elif valid and not was_valid:
            self._kick("lease renewed")
        return valid

    # -- views for the admin API --------------------------------------------------------------
    def cluster_view(self) -> dict[str, Any]:
        return read_cluster(self.client, self.paths, self.config.cluster.name)

    def node_view(self) -> dict[str, Any]:
        return {
            "id": self.name, "cluster": self.config.cluster.name, "state": self.state.value,
            "znode": self._member_child, "leader": self.is_leader, "leader_id": self.leader,
            "generation": self.generation, "plan": self.plan_source,
            "connected": self.client.connected,
            "lease_remaining": round(max(self.lease.remaining(), 0.0), 3),
            "session_timeout": self.session.timeout,
            "slots": [s.to_dict() for s in self.runtime.statuses()],
            "publish_error": self.publish_error,
            "strategy_error": self.strategy_error,
            "corrupt": [c.to_dict() for c in self.corruption.active()],
        }
