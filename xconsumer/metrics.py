"""Prometheus metrics for one node, in a registry of its own.

A private registry (not the global default) keeps two nodes in one process (tests) apart.
Labels are bounded: per task at most, never per slot, so cardinality follows the task table.
The per-task gauges follow it too: every task of the table has a series (0 when none of its
slots is here), and a task that leaves the table loses its series, so a scrape never shows
a value a task had before it moved away or was removed.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

SESSION_STATES = ("connected", "suspended", "lost")
SLOT_STATES = ("starting", "waiting", "blocked", "running", "backoff", "stopping", "stuck",
               "done", "stopped", "failed")


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.leader = Gauge("xconsumer_leader", "1 if this node is the cluster leader", registry=r)
        self.generation = Gauge("xconsumer_assignment_generation",
                                "generation of the assignment this node applied", registry=r)
        self.nodes = Gauge("xconsumer_cluster_nodes", "live nodes in the cluster", registry=r)
        self.desired = Gauge("xconsumer_task_slots_desired",
                             "slots the task table asks for, cluster-wide", ["task"], registry=r)
        self.assigned = Gauge("xconsumer_task_slots_assigned_here",
                              "slots of the task assigned to this node", ["task"], registry=r)
        self.running = Gauge("xconsumer_task_slots_running_here",
                             "slots of the task running on this node", ["task"], registry=r)
        self.slot_states = Gauge("xconsumer_slots", "slots on this node by state", ["state"],
                                 registry=r)
        self.runs = Counter("xconsumer_handler_runs", "handler invocations", ["task"],
                            registry=r)
        self.failures = Counter("xconsumer_handler_failures",
                                "handler invocations that raised", ["task"], registry=r)
        self.timeouts = Counter("xconsumer_handler_timeouts",
                                "handler runs stopped for exceeding run_timeout (also "
                                "counted as failures)", ["task"], registry=r)
        self.breaker_opened = Counter("xconsumer_breaker_opened",
                                      "times a slot's circuit breaker opened", ["task"],
                                      registry=r)
        self.loop_blocked = Counter("xconsumer_loop_blocked",
                                    "times a coroutine handler blocked the node's event loop "
                                    "(a blocking call in async def; labelled with its task)",
                                    ["task"], registry=r)
        self.breaker_open = Gauge("xconsumer_slots_breaker_open",
                                  "slots whose circuit breaker is open or half-open (on "
                                  "trial)", registry=r)
        self.duration = Histogram("xconsumer_handler_duration_seconds",
                                  "handler invocation time", ["task"], registry=r,
                                  buckets=(0.001, 0.01, 0.1, 0.5, 1, 5, 30, 120, 600))
        self.rebalances = Counter("xconsumer_rebalances",
                                  "assignments published by this node as leader", registry=r)
        self.rebalance_seconds = Histogram("xconsumer_rebalance_duration_seconds",
                                           "time to compute and publish an assignment",
                                           registry=r,
                                           buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5))
        self.moved = Counter("xconsumer_slots_moved", "slots that changed owner in published "
                             "assignments", registry=r)
        self.zk_connected = Gauge("xconsumer_zookeeper_connected",
                                  "1 while connected to ZooKeeper", registry=r)
        self.zk_events = Counter("xconsumer_zookeeper_session_events",
                                 "connection state changes", ["state"], registry=r)
        self.lease = Gauge("xconsumer_lease_remaining_seconds",
                           "time left on the membership lease", registry=r)
        self.stuck = Gauge("xconsumer_slots_stuck", "slots whose handler ignored a stop",
                           registry=r)
        self.corrupt = Gauge("xconsumer_corrupt_znodes",
                             "znodes of the cluster this node currently reads as corrupt",
                             ["kind"], registry=r)
        self.corruptions = Counter("xconsumer_corrupt_znodes_found",
                                   "corrupt znode contents found (each distinct one once)",
                                   ["kind"], registry=r)
        self.publish_failures = Counter("xconsumer_publish_failures",
                                        "assignments this node (as leader) could not publish",
                                        registry=r)
        self.strategy_failures = Counter("xconsumer_strategy_failures",
                                         "plans of a user strategy replaced by round robin's "
                                         "(it raised, timed out or returned an invalid plan)",
                                         registry=r)
        self.keys_failures = Counter("xconsumer_keys_failures",
                                     "calls of a keyed task's provider that raised, hung or "
                                     "returned bad keys (the last good keys stayed)",
                                     ["task"], registry=r)
        self.commits = Counter("xconsumer_checkpoint_commits",
                               "checkpoint commits that landed", ["task"], registry=r)
        self.commits_refused = Counter("xconsumer_checkpoint_commits_refused",
                                       "checkpoint commits refused because this node no longer "
                                       "owned the slot (OwnershipLost)", ["task"], registry=r)
        self.blocked = Gauge("xconsumer_slots_blocked",
                             "slots held by an owner znode no live node can release "
                             "(persistent, made by hand)", registry=r)
        for kind in ("member", "assignment", "overrides", "owner", "done", "left"):
            self.corrupt.labels(kind).set(0)

        # A counter series appears only once incremented; rate() over a series that is
        # missing until the first failure sees no failure at all. Create them at 0.
        for state in SESSION_STATES:
            self.zk_events.labels(state)
        self._lock = threading.Lock()  # the controller and /metrics both refresh them
        self._tasks: set[str] = set()
        self._labelled: dict[Any, set[str]] = {}

    def _set_per_task(self, gauge: Gauge, values: dict[str, float]) -> None:
        """Set one series per task in `values` and drop the series of every other task."""
        before = self._labelled.get(gauge, set())
        for task, value in values.items():
            gauge.labels(task).set(value)
        for task in before - set(values):
            with contextlib.suppress(KeyError):
                gauge.remove(task)
        self._labelled[gauge] = set(values)

    def observe_desired(self, desired: dict[str, int]) -> None:
        """The cluster's task table: slots wanted per task (0 for a paused task)."""
        with self._lock:
            self._tasks = set(desired)
            self._set_per_task(self.desired, dict(desired))

    def observe_slots(self, statuses: list[Any], assigned: dict[str, int]) -> None:
        counts = dict.fromkeys(SLOT_STATES, 0)
        running: dict[str, int] = {}
        for s in statuses:
            counts[s.state] = counts.get(s.state, 0) + 1
            if s.state == "running":
                running[s.task] = running.get(s.task, 0) + 1
        for state, n in counts.items():
            self.slot_states.labels(state).set(n)
        self.stuck.set(counts.get("stuck", 0))
        self.blocked.set(counts.get("blocked", 0))
        self.breaker_open.set(sum(getattr(s, "breaker", "closed") != "closed"
                                  for s in statuses))
        with self._lock:
            tasks = self._tasks | set(assigned) | set(running)
            self._set_per_task(self.assigned, {t: assigned.get(t, 0) for t in tasks})
            self._set_per_task(self.running, {t: running.get(t, 0) for t in tasks})

    def render(self) -> bytes:
        return generate_latest(self.registry)
