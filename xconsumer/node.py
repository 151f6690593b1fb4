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
import socket
import threading
import time
from typing import Any

from kazoo.exceptions import KazooException, NoNodeError
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.protocol.states import KazooState
from loguru import logger

from . import __version__
from .assignment import moved_slots
from .config import Config, TaskConfig
from .errors import ConfigError
from .events import EventLog
from .leader import doc_plan, plan_slots, publish, read_assignment
from .lease import Lease
from .logs import set_node
from .membership import dedupe_by_name, read_members, register
from .metrics import Metrics
from .overrides import OverrideStore, drained_names, effective_tasks
from .paths import Paths
from .runtime import Runtime
from .stability import Damper
from .view import read_cluster, seed_from_doc
from .works import WorksRegistry
from .zk import make_client, start_client, stop_client

_ZK_ERRORS = (KazooException, KazooTimeoutError)


class RunState(enum.Enum):
    NEW = "new"
    STARTING = "starting"
    STARTED = "started"
    STOPPING = "stopping"
    STOPPED = "stopped"


def validate_works(config: Config, registry: WorksRegistry) -> None:
    """Every task in app.toml must have a handler before the node joins."""
    for i, task in enumerate(config.tasks):
        if not registry.has(task.work_name):
            try:
                registry.resolve(task.work_name)
            except Exception as exc:  # noqa: BLE001 - re-raised as a config error
                raise ConfigError(
                    f"{config.source}: task[{i}] (name {task.name!r}) workName "
                    f"{task.work_name!r}: {exc}") from None


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
        self.overrides = OverrideStore(self.client, self.paths.overrides)
        self._events: queue.Queue[str] = queue.Queue()
        self._stop = threading.Event()
        self._lease_wake = threading.Event()
        self.runtime = Runtime(node=self.name, client=self.client, paths=self.paths,
                               lease=self.lease, registry=registry,
                               session_id=self._session_id, on_change=lambda: self._kick("slot"),
                               metrics=self.metrics, events=self.events)
        self._member_child: str | None = None
        self._member_session: int | None = None
        self.is_leader = False
        self.leader: str | None = None
        self.generation: int | None = None
        self.assignment: dict[str, Any] | None = None
        self._member_names: list[str] = []
        self._member_cache: dict[str, Any] = {}
        self._seen_rebalance: int | None = None
        self.damper = Damper(rejoin_grace=config.assignment.rejoin_grace,
                             debounce=config.assignment.debounce)
        self._wake_at: float | None = None
        self.started_at = time.time()
        self._admin_factory = admin_factory
        self.admin: Any = None
        self._threads: list[threading.Thread] = []

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
        child, self._member_child = self._member_child, None
        # The leave goes out first, so the leader starts dealing our slots out while they
        # wind down (their owner znodes keep the new owners waiting until each has ended).
        leaving = self._leave_async(child) if child is not None else None
        self.runtime.revoke_all("node stopping")
        left = child is None or (leaving is not None and self._left(
            leaving, child, max(0.1, min(2.0, deadline - time.monotonic()))))
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        stuck = self.runtime.stop_all(deadline)
        if not stuck and (not left or self.runtime.has_orphans()):
            self._finish_leave(child, left, deadline)
        if self.admin is not None:
            self.admin.stop()
        if stuck:
            # Closing the session would delete the stuck slots' owner znodes while their
            # threads still run. Leave the session to expire with the process instead.
            logger.error("{} slot(s) stuck; leaving the ZooKeeper session to expire so no "
                         "other node starts them while they run", len(stuck))
        else:
            stop_client(self.client)
        self.state = RunState.STOPPED
        logger.info("stopped")
        return not stuck

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
            "admin_url": self.admin.url if self.admin is not None else None,
            "handlers": self.registry.names(),
            "works": list(self.config.node.works) if self.config.node.works is not None else None,
            "leader_works": self.config.node.leader_works,
            "weight": self.config.node.weight,
            "state": "active", "started_at": self.started_at, "version": __version__,
        }

    def _register(self) -> None:
        sent = self.lease.now()
        with contextlib.suppress(NoNodeError):
            self.client.delete(self.paths.left_marker(self.name))
        child, session = register(self.client, self.paths, self.member_data(),
                                  wait_for_name=self.session.timeout + 2.0)
        self._member_child, self._member_session = child, session
        self.lease.renew(sent)
        logger.info("joined cluster {} as {}", self.config.cluster.name, child)

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

    # -- controller ---------------------------------------------------------------------------
    def _controller_loop(self) -> None:
        interval = self.config.node.reconcile_interval
        while not self._stop.is_set():
            timeout = interval
            if self._wake_at is not None:
                timeout = max(0.0, min(interval, self._wake_at - time.monotonic()))
            try:
                reason = self._events.get(timeout=timeout)
            except queue.Empty:
                reason = "periodic"
            while not self._events.empty():  # coalesce a burst into one pass
                self._events.get_nowait()
            if self._stop.is_set():
                break
            try:
                self._sync()
            except _ZK_ERRORS as exc:
                logger.warning("cluster sync deferred ({}: {})", type(exc).__name__, exc)
                self._stop.wait(0.2)
                if self.client.connected:
                    self._kick("retry")
            except Exception:  # noqa: BLE001 - the controller must survive anything
                logger.exception("cluster sync failed after {!r}; retrying", reason)
                self._stop.wait(0.5)
                self._kick("retry")

    def _sync(self) -> None:
        if self._stop.is_set() or not self.client.connected:
            return
        if self._member_child is None or self._member_session != self._session_id():
            self._member_child = None
            self._register()
        members = dedupe_by_name(read_members(self.client, self.paths, watch=self._on_watch,
                                               cache=self._member_cache))
        children = [m.child for m in members]
        if self._member_child not in children:
            if self._stop.is_set():
                return  # we deleted it ourselves: leaving
            logger.warning("our member znode {} is gone; rejoining", self._member_child)
            self.lease.invalidate()
            self.runtime.revoke_all("membership lost")
            self._member_child = None
            self._kick("rejoin")
            return
        self._note_members([m.name for m in members])
        pos = children.index(self._member_child)
        if pos > 0:  # the election: watch only our predecessor
            self.client.exists(self.paths.node(children[pos - 1]), watch=self._on_watch)
        leader = members[0].name
        if leader != self.leader:
            logger.info("leader is now {}{}", leader, " (this node)" if pos == 0 else "")
            self.events.add("leader", f"leader is now {leader}", leader=leader)
        self.leader, self.is_leader = leader, pos == 0
        self.metrics.leader.set(1 if self.is_leader else 0)
        if self.is_leader:
            self._lead(members)
        else:
            self._seen_rebalance, self._wake_at = None, None
            self.damper.reset()
        doc, _ = read_assignment(self.client, self.paths, watch=self._on_watch)
        self._note_assignment(doc)
        desired = plan_slots(doc, self.name) if self.lease.valid() else {}
        self.runtime.apply(desired, int(self.generation or 0))
        self.runtime.check_stuck()
        self._observe(desired)

    def _left_gracefully(self, name: str) -> bool:
        try:
            self.client.delete(self.paths.left_marker(name))
            return True
        except NoNodeError:
            return False

    def _sweep_left_markers(self, live: set[str]) -> None:
        """Drop markers of names we will never ask about (not live, so never departed in
        our view); a marker of a live name is for a leave we have not processed yet."""
        try:
            names = self.client.get_children(self.paths.left)
        except NoNodeError:
            return
        for name in names:
            if name not in live:
                with contextlib.suppress(NoNodeError):
                    self.client.delete(self.paths.left_marker(name))

    def _lead(self, live: list[Any]) -> None:
        members, self._wake_at = self.damper.plan_members(live, self._left_gracefully)
        self._sweep_left_markers({m.name for m in live})
        if members is None:
            return  # debouncing: look again at _wake_at
        overrides, _ = self.overrides.read(watch=self._on_watch)
        rebalance = int(overrides.get("rebalance", 0))
        fresh = self._seen_rebalance is not None and rebalance != self._seen_rebalance
        self._seen_rebalance = rebalance
        result = publish(self.client, self.paths, my_child=self._member_child or "",
                         leader=self.name, members=members,
                         tasks=effective_tasks(self.config.tasks, overrides),
                         strategy=self.config.assignment.strategy,
                         leader_works=self.config.node.leader_works,
                         drained=set(drained_names(overrides)), fresh=fresh,
                         seed=self.config.tasks)
        if result is not None:
            self.metrics.rebalances.inc()
            self.metrics.rebalance_seconds.observe(result.seconds)
            self.metrics.moved.inc(result.moved)

    def _note_members(self, names: list[str]) -> None:
        before = set(self._member_names)
        if self._member_names:
            for name in sorted(set(names) - before):
                self.events.add("node_joined", f"{name} joined", node=name)
            for name in sorted(before - set(names)):
                self.events.add("node_left", f"{name} left", node=name)
        self._member_names = names
        self.metrics.nodes.set(len(names))

    def _note_assignment(self, doc: dict[str, Any] | None) -> None:
        generation = (doc or {}).get("generation")
        if generation is not None and generation != self.generation:
            moved = moved_slots(doc_plan(self.assignment), doc_plan(doc))
            self.events.add("rebalance", f"generation {generation}: {moved} slot(s) moved "
                            f"across {len((doc or {}).get('nodes', {}))} node(s)",
                            generation=generation, moved=moved)
        self.assignment, self.generation = doc, generation
        self.metrics.generation.set(generation or 0)

    def _observe(self, desired: dict[Any, Any]) -> None:
        doc = self.assignment or {}
        paused = set(doc.get("paused", []))
        for task in doc.get("tasks", []):
            want = 0 if task["name"] in paused else task.get("workerNum", 0)
            self.metrics.desired.labels(task["name"]).set(want)
        assigned: dict[str, int] = {}
        for slot in desired:
            assigned[slot.task] = assigned.get(slot.task, 0) + 1
        self.metrics.observe_slots(self.runtime.statuses(), assigned)
        self.metrics.lease.set(max(self.lease.remaining(), 0.0))
        self.metrics.zk_connected.set(1 if self.client.connected else 0)

    def refresh_metrics(self) -> None:
        self._observe(plan_slots(self.assignment, self.name))

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
                sent = self.lease.now()
                try:
                    # sync goes through the ZooKeeper leader: a follower cut off from the
                    # quorum would still answer a plain read while our session expires.
                    self.client.sync_async(self.paths.node(child)).get(timeout=interval * 2)
                    stat = self.client.exists_async(self.paths.node(child)).get(
                        timeout=interval * 2)
                    if stat is not None and stat.ephemeralOwner == session:
                        self.lease.renew(sent)
                    elif child == self._member_child:
                        self.lease.invalidate()
                        self._kick("membership lost")
                except _ZK_ERRORS:
                    pass
            was_valid = self._lease_transition(was_valid)
            self._lease_wake.wait(interval)
            self._lease_wake.clear()

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
            "generation": self.generation, "connected": self.client.connected,
            "lease_remaining": round(max(self.lease.remaining(), 0.0), 3),
            "session_timeout": self.session.timeout,
            "slots": [s.to_dict() for s in self.runtime.statuses()],
        }
