"""What every assignment strategy shares: slots, members, plans, and the dealing order.

A strategy is a pure, deterministic function `(tasks, members, *, leader, leader_works,
previous) -> Plan`, with no I/O, so each is unit-tested without ZooKeeper and the leader can
switch between them by name (`[assignment] strategy`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any, NamedTuple, Protocol

from ..config import clamp_weight
from ..works import candidate_names

# A weight ratio above this is dealt as this many turns: it bounds the size of the weighted
# round-robin ring (nodes x turns) whatever weights an operator writes.
MAX_TURNS = 100


class Slot(NamedTuple):
    """One unit of work: `(task, index)` with `index < workerNum`.

    A NamedTuple rather than a frozen dataclass: slots are dict keys by the hundred thousand
    (plans, moved-slot counts), and a tuple hashes and compares in C, several times faster
    than a dataclass's generated methods. Ordering is the same (task, then index)."""

    task: str
    index: int

    @property
    def key(self) -> str:
        return f"{self.task}/{self.index}"


def slots_of(task: str, indices: Iterable[int]) -> list[Slot]:
    """`[Slot(task, i) for i in indices]` built in C (tuple.__new__ skips the NamedTuple's
    Python constructor): a 100,000-slot plan allocates them in ~15 ms instead of ~27."""
    return list(map(tuple.__new__, repeat(Slot), zip(repeat(task), indices)))


@dataclass(frozen=True)
class Member:
    """A live node as the leader sees it.

    `weight` is the node's relative capacity (`[node] weight`): a node of weight 2 is meant to
    take about twice the share of a node of weight 1. It is last, with a default, so members
    built positionally before weights existed stay valid. `docker`: the node found a Docker
    engine at start, so it may run container tasks (default False: an older node cannot).
    """

    name: str
    seq: int
    handlers: frozenset[str] = frozenset()
    works: frozenset[str] | None = None
    draining: bool = False
    weight: float = 1.0
    docker: bool = False

    def can_run(self, work_name: str, *, container: bool = False) -> bool:
        """Only a node that has the handler (and is allowed to run it) may get its slots; a
        container task (`container=True`, see `eligible`) needs a Docker engine instead of a
        handler."""
        if self.draining:
            return False
        if self.works is not None and work_name not in self.works:
            return False
        if container:
            return self.docker
        return any(name in self.handlers for name in candidate_names(work_name))


def is_container_task(task: Any) -> bool:
    """A task whose slots run an image (`image` set) rather than a Python handler."""
    return bool(getattr(task, "image", None))


def eligible(member: Member, task: Any) -> bool:
    """Whether `member` may get slots of `task`: `Member.can_run` for the task's kind. User
    strategies should call this rather than `can_run(task.work_name)`, which cannot tell a
    container task (the plan validator would refuse such a plan)."""
    return member.can_run(task.work_name, container=is_container_task(task))


class TaskLike(Protocol):
    """What a strategy reads from a task. `max_per_node` is optional (read with getattr), so
    a three-field test double is a task too."""

    name: str
    work_name: str
    worker_num: int


@dataclass(frozen=True)
class Plan:
    """Who runs what: node name -> slots, plus slots no eligible node could take."""

    nodes: Mapping[str, tuple[Slot, ...]]
    unassigned: tuple[Slot, ...] = field(default=())

    def owner_of(self) -> dict[Slot, str]:
        return {slot: node for node, slots in self.nodes.items() for slot in slots}


Layout = Plan | Mapping[str, Sequence[Slot]]


class Strategy(Protocol):
    """The one interface of every strategy, built in or provided by users.

    A pure, deterministic function (or an object with this `__call__`): it reads the tasks
    (each with `name`, `work_name`, `worker_num` and optionally `max_per_node` and `image`),
    the live members (`Member`: name, seq, handlers, works, draining, weight, docker; use
    `eligible(member, task)`) and the previous plan, and returns a `Plan`. It must not do
    I/O or keep state between calls: the leader calls it on every pass, and calls it again
    after a failover on another node, where only its inputs are the same.

    A user strategy is a class in the `works/` package that subclasses this protocol and
    has a `name` (the value of `[assignment] strategy`); it is created once, with no
    arguments. Its plans are checked (`validate.validate_plan`) and a failure falls back to
    `round_robin` (see `guard`).
    """

    def __call__(self, tasks: Sequence[TaskLike], members: Sequence[Member], *,
                 leader: str | None, leader_works: bool = True,
                 previous: Layout | None = None) -> Plan: ...


def dealing_order(members: Sequence[Member], leader: str | None, *,
                  leader_works: bool = True) -> list[Member]:
    """Members in sequence order, followers first and the leader last.

    Starting from the first follower keeps the leader, which also does the coordination work,
    from being the most loaded node when slots do not divide evenly.
    """
    ordered = sorted(members, key=lambda m: (m.seq, m.name))
    followers = [m for m in ordered if m.name != leader]
    lead = [m for m in ordered if m.name == leader]
    return followers + (lead if leader_works else [])


def all_slots(tasks: Sequence[TaskLike]) -> list[Slot]:
    return [Slot(t.name, i) for t in tasks for i in range(t.worker_num)]


def _limit(task: TaskLike) -> int | None:
    """The task's `max_per_node`, or None for no limit."""
    value = getattr(task, "max_per_node", None)
    return None if value is None else max(0, int(value))


def _weight(member: Member) -> float:
    """Member data comes from other processes through ZooKeeper: a weight that is not a
    positive finite number counts as 1 rather than breaking the leader's arithmetic, and
    one out of MIN_WEIGHT..MAX_WEIGHT counts as the nearest bound (the decoder clamps
    member data already; a Member built by hand may still carry it)."""
    w = member.weight
    ok = isinstance(w, int | float) and not isinstance(w, bool) and math.isfinite(w) and w > 0
    return clamp_weight(float(w)) if ok else 1.0


def _able_key(task: TaskLike) -> str:
    """What eligibility depends on: the workName, and whether the task is a container task
    ('@' never occurs in a workName, so the two kinds of one workName never collide)."""
    return f"{task.work_name}@container" if is_container_task(task) else task.work_name


def _eligible(order: Sequence[Member], tasks: Sequence[TaskLike]) -> dict[str, list[int]]:
    """`_able_key(task)` -> positions (in `order`) of the nodes that may run such tasks.

    Eligibility depends only on the workName and the task's kind, so it is computed once per
    key instead of once per task: a thousand tasks of one handler cost one scan of the
    nodes, not a thousand.
    """
    able: dict[str, list[int]] = {}
    for task in tasks:
        key = _able_key(task)
        if key not in able:
            able[key] = [p for p, m in enumerate(order) if eligible(m, task)]
    return able



def _layout(plan: Layout) -> Mapping[str, Sequence[Slot]]:
    return plan.nodes if isinstance(plan, Plan) else plan


def moved_slots(before: Layout, after: Layout) -> int:
    """Slots whose owner differs between two plans (newly placed or dropped slots count)."""
    owner_b = {s: n for n, slots in _layout(before).items() for s in slots}
    owner_a = {s: n for n, slots in _layout(after).items() for s in slots}
    return sum(1 for s in set(owner_b) | set(owner_a) if owner_b.get(s) != owner_a.get(s))


def balance_report(plan: Layout) -> dict[str, Any]:
    """How evenly a plan spreads slots: for logs, benchmarks and tests.

    `spread` is max - min of the per-node totals (0 or 1 is perfectly even when every node may
    run everything with equal weights); `per_task` gives (min, max) per task over the nodes
    that have at least one slot of any task, as a quick look at per-task evenness.
    """
    layout = _layout(plan)
    totals = {node: len(slots) for node, slots in layout.items()}
    per_task: dict[str, dict[str, int]] = {}
    for node, slots in layout.items():
        for slot in slots:
            counts = per_task.setdefault(slot.task, {})
            counts[node] = counts.get(node, 0) + 1
    busy = [node for node, count in totals.items() if count]
    unassigned = len(plan.unassigned) if isinstance(plan, Plan) else 0
    values = list(totals.values()) or [0]
    return {
        "nodes": len(totals),
        "slots": sum(values),
        "unassigned": unassigned,
        "min": min(values),
        "max": max(values),
        "spread": max(values) - min(values),
        "per_task": {task: (min(counts.get(n, 0) for n in busy),
                            max(counts.values()))
                     for task, counts in sorted(per_task.items())},
    }
