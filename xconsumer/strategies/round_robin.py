"""`round_robin`: deal slots like cards, followers first and the leader last.

Simple to predict, but a membership change can move almost every slot, because the deal
starts over.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

from ..gcpause import without_gc
from .base import (
    MAX_TURNS,
    Layout,
    Member,
    Plan,
    Slot,
    TaskLike,
    _able_key,
    _eligible,
    _limit,
    _weight,
    dealing_order,
    slots_of,
)


def _ring(order: Sequence[Member]) -> list[int]:
    """The round-robin dealing ring: positions in `order`, each repeated by its weight.

    A node gets `round(weight / smallest weight)` turns (at most MAX_TURNS), dealt in rounds:
    weights 2, 1, 1 give the ring A B C A. When all weights are equal every node has one turn
    and the ring is the dealing order itself, exactly as before weights existed.
    """
    weights = [_weight(m) for m in order]
    if len(set(weights)) <= 1:
        return list(range(len(order)))
    low = min(weights)
    turns = [max(1, min(MAX_TURNS, round(w / low))) for w in weights]
    return [p for k in range(max(turns)) for p in range(len(order)) if turns[p] > k]


@without_gc
def round_robin(tasks: Sequence[TaskLike], members: Sequence[Member], *, leader: str | None,
                leader_works: bool = True, previous: Layout | None = None) -> Plan:
    """Deal slots like cards: one pointer over the dealing ring, continuing across tasks.

    A slot goes to the next turn (from the pointer) whose node can run its task and has not
    reached the task's `max_per_node`; the pointer then moves past that turn. With equal
    weights the ring is the dealing order; otherwise a node has `round(weight / smallest
    weight)` turns per round (see `_ring`). Slots that no node can take are unassigned.
    `previous` is ignored: round robin does not try to keep slots in place, which is what makes
    it simple to predict.

    Finding the next turn is a binary search over the task's eligible turns, so the cost is
    O(slots x log nodes) plus one pass over the ring per task, not O(slots x nodes).
    """
    del previous
    order = dealing_order(members, leader, leader_works=leader_works)
    result: dict[str, list[Slot]] = {m.name: [] for m in order}
    unassigned: list[Slot] = []
    ring = _ring(order)
    able = _eligible(order, tasks)
    pointer = 0
    # One turn each (the ring is the dealing order) and one entry per name: a node's slots
    # are then one slice of each task's (see _deal).
    equal = len(ring) == len(order) == len(result)
    for task in tasks:
        ok = set(able[_able_key(task)])
        turns = [i for i, p in enumerate(ring) if p in ok]
        limit = _limit(task)
        if equal and limit is None and turns:
            pointer = _deal(task, turns, pointer, order, result)
            continue
        given = [0] * len(order)
        for index in range(task.worker_num):
            slot = Slot(task.name, index)
            while turns:
                i = bisect_left(turns, pointer)
                if i == len(turns):
                    i = 0
                p = ring[turns[i]]
                if limit is None or given[p] < limit:
                    break
                del turns[i]  # this node is full for this task: never look at it again
            else:
                unassigned.append(slot)
                continue
            result[order[p].name].append(slot)
            given[p] += 1
            pointer = (turns[i] + 1) % len(ring)
    return Plan({k: tuple(v) for k, v in result.items()}, tuple(unassigned))


def _deal(task: TaskLike, turns: list[int], pointer: int, order: Sequence[Member],
          result: dict[str, list[Slot]]) -> int:
    """The deal of one task when every eligible node has one turn and no limit: slot i
    goes to the (first + i)-th eligible turn, so each node's slots are one slice of them
    (taken in C), in index order as the card-by-card deal gives them. Returns the pointer
    after the task's last slot."""
    size = task.worker_num
    if size <= 0:
        return pointer
    k = len(turns)
    first = bisect_left(turns, pointer)
    if first == k:
        first = 0
    slots = slots_of(task.name, range(size))
    for j in range(min(k, size)):
        result[order[turns[(first + j) % k]].name].extend(slots[j::k])
    return (turns[(first + size - 1) % k] + 1) % len(order)
