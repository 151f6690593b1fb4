"""`consistent_hash`: each slot goes where its key lands on a hash ring of node names, with
bounded loads, so a slot's place depends on who is in the cluster and on nothing else.

`round_robin` depends on member sequence numbers, which change whenever a node restarts;
`sticky` depends on the previous plan, which is lost with the assignment znode. A hash of
names depends on neither: restart every node with the same names and every slot comes back
where it was, and a join or a leave moves about 1/n of the slots.

Plain consistent hashing can overload a node (its arcs of the ring may be long). With
bounded loads (Mirrokni, Thorup, Zadimoghaddam, "Consistent Hashing with Bounded Loads",
2018) a node takes at most `ceil(fair share x load_factor)` slots; a slot whose node is
full walks on along the ring to the next node with room.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from hashlib import blake2b

from ..gcpause import without_gc
from .base import (
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
)
from .sticky import _shares

DEFAULT_LOAD_FACTOR = 1.25
# Points on the ring per unit of weight: enough that arcs even out (the spread of a node's
# share shrinks with 1/sqrt(points)), few enough that 1,000 nodes hash in well under 1 s.
VNODES = 64
# A weight above this many units gets no more points: the bound on load enforces the share
# anyway, points only decide which slots a node prefers.
MAX_VNODES = 64 * 16


def _point(key: str) -> int:
    """A stable 64-bit position: the same on every host, in every process and every Python
    (the built-in `hash()` of a str is salted per process)."""
    return int.from_bytes(blake2b(key.encode(), digest_size=8).digest(), "big")


def _vnodes(member: Member) -> int:
    return max(1, min(MAX_VNODES, round(VNODES * _weight(member))))


def _ring(nodes: Sequence[Member]) -> list[tuple[int, int]]:
    """(position, index in `nodes`) for every virtual node, sorted. Ties (two 64-bit hashes
    equal) are broken by node name, so the ring is the same whatever the member order."""
    points = [(_point(f"{m.name}#{v}"), m.name, p)
              for p, m in enumerate(nodes) for v in range(_vnodes(m))]
    points.sort()
    return [(pos, p) for pos, _, p in points]


@dataclass(frozen=True)
class ConsistentHash:
    """The strategy, with its load factor (`[assignment] hash_load_factor`).

    A dataclass instance rather than a function so that the configured factor travels with
    it while the call signature stays the one every strategy has.
    """

    load_factor: float = DEFAULT_LOAD_FACTOR

    @without_gc
    def __call__(self, tasks: Sequence[TaskLike], members: Sequence[Member], *,
                 leader: str | None, leader_works: bool = True,
                 previous: Layout | None = None) -> Plan:
        """Place every slot `task/index` at its point on the ring, bounded by load.

        Nodes: the members that take work (the leader only with `leader_works`), in name
        order; neither sequence numbers, member order nor `previous` play any part, which is
        what keeps a slot in place across restarts. A node has points in proportion to its
        weight. Capacity: a node's fair share is its exact share of every task (in
        proportion to weight among the nodes that may run the task, at most `max_per_node`,
        as for `sticky`) summed over tasks; it takes at most `ceil(share x load_factor)`
        slots. Slots are placed in (task name, index) order; each walks clockwise from its
        point to the first node that may run the task, has not reached the task's
        `max_per_node` and is below its capacity.

        When every node may run every task the total capacity is at least the number of
        slots, so the walk always ends and the bound holds. With mixed eligibility a slot
        can find every eligible node at capacity; it then goes to the first eligible node
        on its walk still under `max_per_node` (the bound gives way rather than leave a
        runnable slot unassigned). A slot no eligible node can take is unassigned.

        Cost: O(points x log points) for the ring, plus per slot a hash, a binary search
        and a walk that is short while most nodes have room.
        """
        del previous
        nodes = sorted(dealing_order(members, leader, leader_works=leader_works),
                       key=lambda m: m.name)
        ordered = sorted(tasks, key=lambda t: t.name)
        able = _eligible(nodes, ordered)
        capacity = self._capacity(ordered, able, nodes)
        ring = _ring(nodes)
        rings: dict[str, tuple[list[int], list[int]]] = {}
        load = [0] * len(nodes)
        placed: list[list[Slot]] = [[] for _ in nodes]
        unassigned: list[Slot] = []
        for task in ordered:
            work = _able_key(task)
            if work not in rings:
                ok = set(able[work])
                mine = [(pos, p) for pos, p in ring if p in ok]
                rings[work] = ([pos for pos, _ in mine], [p for _, p in mine])
            positions, owners = rings[work]
            limit = _limit(task)
            given = [0] * len(nodes)
            for index in range(max(0, task.worker_num)):
                slot = Slot(task.name, index)
                p = _walk(positions, owners, _point(slot.key), given, limit, load, capacity)
                if p is None:
                    unassigned.append(slot)
                    continue
                placed[p].append(slot)
                given[p] += 1
                load[p] += 1
        return Plan({m.name: tuple(placed[p]) for p, m in enumerate(nodes)}, tuple(unassigned))

    def _capacity(self, tasks: Sequence[TaskLike], able: dict[str, list[int]],
                  nodes: Sequence[Member]) -> list[int]:
        """Per node, `ceil(exact fair share x load_factor)`, in exact arithmetic: a float
        share of 3.0000000001 would otherwise round a node's bound up by one."""
        quotas, fractional = _shares(tasks, able, [_weight(m) for m in nodes])
        share = list(fractional)
        for q in quotas:
            for p, whole in q.base.items():
                share[p] += whole
        factor = Fraction(repr(float(self.load_factor)))
        return [math.ceil(s * factor) for s in share]


def _walk(positions: list[int], owners: list[int], point: int, given: list[int],
          limit: int | None, load: list[int], capacity: list[int]) -> int | None:
    """The first node clockwise from `point` with room for the slot (see `__call__`), or
    None when no eligible node is under the task's `max_per_node`."""
    size = len(positions)
    if not size:
        return None
    start = bisect_left(positions, point) % size
    overflow: int | None = None
    seen: set[int] = set()
    for k in range(size):
        p = owners[(start + k) % size]
        if p in seen:
            continue
        seen.add(p)
        if limit is not None and given[p] >= limit:
            continue
        if load[p] < capacity[p]:
            return p
        if overflow is None:
            overflow = p
    return overflow


consistent_hash = ConsistentHash()
