"""Assignment strategies: pure, deterministic functions from (tasks, members) to a plan.

No I/O here, so every strategy is unit-tested without ZooKeeper and the leader can be swapped
between strategies by name (`[assignment] strategy`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from .works import candidate_names


@dataclass(frozen=True, order=True)
class Slot:
    """One unit of work: `(task, index)` with `index < workerNum`."""

    task: str
    index: int

    @property
    def key(self) -> str:
        return f"{self.task}/{self.index}"


@dataclass(frozen=True)
class Member:
    """A live node as the leader sees it."""

    name: str
    seq: int
    handlers: frozenset[str] = frozenset()
    works: frozenset[str] | None = None
    draining: bool = False

    def can_run(self, work_name: str) -> bool:
        """Only a node that has the handler (and is allowed to run it) may get its slots."""
        if self.draining:
            return False
        if self.works is not None and work_name not in self.works:
            return False
        return any(name in self.handlers for name in candidate_names(work_name))


class TaskLike(Protocol):
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


Strategy = Callable[..., Plan]


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


def round_robin(tasks: Sequence[TaskLike], members: Sequence[Member], *, leader: str | None,
                leader_works: bool = True,
                previous: Mapping[str, Sequence[Slot]] | None = None) -> Plan:
    """Deal slots like cards: one pointer over the dealing order, continuing across tasks.

    A slot goes to the next node (from the pointer) that can run its task; the pointer then
    moves past that node. `previous` is ignored: round robin does not try to keep slots in
    place, which is what makes it simple to predict.
    """
    del previous
    order = dealing_order(members, leader, leader_works=leader_works)
    result: dict[str, list[Slot]] = {m.name: [] for m in order}
    unassigned: list[Slot] = []
    pointer = 0
    n = len(order)
    for task in tasks:
        eligible = [m.can_run(task.work_name) for m in order]
        for index in range(task.worker_num):
            slot = Slot(task.name, index)
            for step in range(n):
                pos = (pointer + step) % n
                if eligible[pos]:
                    result[order[pos].name].append(slot)
                    pointer = (pos + 1) % n
                    break
            else:
                unassigned.append(slot)
    return Plan({k: tuple(v) for k, v in result.items()}, tuple(unassigned))


STRATEGIES: dict[str, Strategy] = {"round_robin": round_robin}


def get_strategy(name: str) -> Strategy:
    try:
        return STRATEGIES[name]
    except KeyError:
        known = ", ".join(sorted(STRATEGIES))
        raise ValueError(f"unknown assignment strategy {name!r} (known: {known})") from None


def moved_slots(before: Plan | Mapping[str, Sequence[Slot]],
                after: Plan | Mapping[str, Sequence[Slot]]) -> int:
    """Slots whose owner differs between two plans (newly placed or dropped slots count)."""
    b = before.nodes if isinstance(before, Plan) else before
    a = after.nodes if isinstance(after, Plan) else after
    owner_b = {s: n for n, slots in b.items() for s in slots}
    owner_a = {s: n for n, slots in a.items() for s in slots}
    return sum(1 for s in set(owner_b) | set(owner_a) if owner_b.get(s) != owner_a.get(s))
