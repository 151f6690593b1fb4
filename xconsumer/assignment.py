"""Assignment strategies: pure, deterministic functions from (tasks, members) to a plan.

No I/O here, so every strategy is unit-tested without ZooKeeper and the leader can be swapped
between strategies by name (`[assignment] strategy`).

Two strategies:

- `round_robin` deals slots like cards. Simple to predict, but a membership change can move
  almost every slot, because the deal starts over.
- `sticky` computes the same kind of fair shares, then keeps every slot where `previous` had
  it unless balance requires otherwise, so a join or a leave moves only the slots it has to.
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from itertools import chain
from typing import Any, NamedTuple, Protocol

from .works import candidate_names

# A weight ratio above this is dealt as this many turns: it bounds the size of the weighted
# round-robin ring (nodes x turns) whatever weights an operator writes.
MAX_TURNS = 100
# How many hand-overs the sticky repair inspects looking for a chain that keeps every slot in
# place before settling for one that moves a slot (see `_Extras._chain`).
CHAIN_BUDGET = 20_000


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


@dataclass(frozen=True)
class Member:
    """A live node as the leader sees it.

    `weight` is the node's relative capacity (`[node] weight`): a node of weight 2 is meant to
    take about twice the share of a node of weight 1. It is last, with a default, so members
    built positionally before weights existed stay valid.
    """

    name: str
    seq: int
    handlers: frozenset[str] = frozenset()
    works: frozenset[str] | None = None
    draining: bool = False
    weight: float = 1.0

    def can_run(self, work_name: str) -> bool:
        """Only a node that has the handler (and is allowed to run it) may get its slots."""
        if self.draining:
            return False
        if self.works is not None and work_name not in self.works:
            return False
        return any(name in self.handlers for name in candidate_names(work_name))


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


Strategy = Callable[..., Plan]
Layout = Plan | Mapping[str, Sequence[Slot]]


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
    positive finite number counts as 1 rather than breaking the leader's arithmetic."""
    w = member.weight
    ok = isinstance(w, int | float) and not isinstance(w, bool) and math.isfinite(w) and w > 0
    return float(w) if ok else 1.0


def _eligible(order: Sequence[Member], tasks: Sequence[TaskLike]) -> dict[str, list[int]]:
    """workName -> positions (in `order`) of the nodes that may run it.

    Eligibility depends only on the workName, so it is computed once per workName instead of
    once per task: a thousand tasks of one handler cost one scan of the nodes, not a thousand.
    """
    able: dict[str, list[int]] = {}
    for task in tasks:
        if task.work_name not in able:
            able[task.work_name] = [p for p, m in enumerate(order) if m.can_run(task.work_name)]
    return able


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
    for task in tasks:
        ok = set(able[task.work_name])
        turns = [i for i, p in enumerate(ring) if p in ok]
        limit = _limit(task)
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


# --- sticky -------------------------------------------------------------------------------


@dataclass(slots=True)
class _Quota:
    """One task's fair shares over its eligible nodes (positions in the dealing order).

    Every eligible node gets `base[p]` slots (the whole part of its exact share); `extra` more
    slots go one each to `extra` of the nodes in `fractional`, those whose exact share has a
    fractional part (`fraction`, same order). Whatever of `size` is left is unassigned.
    """

    name: str
    size: int
    base: dict[int, int]
    fractional: list[int]
    fraction: list[float]
    extra: int
    whole: int = 0  # sum of base: 0 when no node gets a whole slot


def _shares(tasks: Sequence[TaskLike], able: Mapping[str, list[int]],
            weights: Sequence[float]) -> tuple[list[_Quota], list[Fraction]]:
    """Exact fair shares of every task, and each node's exact fractional share in total.

    A node's share of a task is proportional to its weight among the eligible nodes, except
    that it never exceeds `max_per_node`: a capped node is fixed at the cap and the rest is
    shared again among the others (water filling); what even that cannot place is unassigned.
    The totals are exact fractions because their floor and ceiling are the overall balance
    bounds, and a float 0.9999999 would turn a balanced plan into an unbalanced one.
    """
    equal = len(set(weights)) <= 1
    exact_weights = [Fraction(repr(w)) for w in weights] if not equal else []
    total = [Fraction(0)] * len(weights)
    per_work: dict[str, Fraction] = {}
    quotas: list[_Quota] = []
    for task in tasks:
        nodes = able[task.work_name]
        size = max(0, task.worker_num)
        cap = _limit(task)
        if equal:
            quota, part = _equal_share(task.name, size, nodes, cap)
            if part:  # all nodes of this workName get the same fraction: add it up once
                per_work[task.work_name] = per_work.get(task.work_name, Fraction(0)) + part
        else:
            quota, parts = _weighted_share(task.name, size, nodes, cap, exact_weights)
            for p, part in parts.items():
                total[p] += part
        quotas.append(quota)
    for work, part in per_work.items():
        for p in able[work]:
            total[p] += part
    return quotas, total


def _equal_share(name: str, size: int, nodes: list[int],
                 cap: int | None) -> tuple[_Quota, Fraction]:
    """Equal weights: integer arithmetic, and one fraction shared by all eligible nodes."""
    k = len(nodes)
    if k == 0:
        return _Quota(name, size, {}, [], [], 0), Fraction(0)
    if cap is not None and size >= cap * k:
        return _Quota(name, size, dict.fromkeys(nodes, cap), [], [], 0, cap * k), Fraction(0)
    base, extra = divmod(size, k)
    shares = dict.fromkeys(nodes, base)
    if not extra:
        return _Quota(name, size, shares, [], [], 0, base * k), Fraction(0)
    return (_Quota(name, size, shares, nodes, [extra / k] * k, extra, base * k),
            Fraction(extra, k))


def _weighted_share(name: str, size: int, nodes: list[int], cap: int | None,
                    weights: Sequence[Fraction]) -> tuple[_Quota, dict[int, Fraction]]:
    """Weighted shares with exact fractions, capped by water filling."""
    active = list(nodes)
    fixed: dict[int, int] = {}
    left = size
    while active and cap is not None:
        total = sum(weights[p] for p in active)
        over = {p for p in active if left * weights[p] > cap * total}
        if not over:
            break
        fixed.update(dict.fromkeys(over, cap))
        left -= cap * len(over)
        active = [p for p in active if p not in over]
    base: dict[int, int] = {}
    parts: dict[int, Fraction] = {}
    total = sum((weights[p] for p in active), Fraction(0))
    for p in nodes:
        if p in fixed:
            base[p] = fixed[p]
            continue
        share = left * weights[p] / total
        base[p] = share.numerator // share.denominator
        if share.denominator != 1:
            parts[p] = share - base[p]
    fractional = list(parts)
    extra = int(sum(parts.values(), Fraction(0)))  # the parts of one task add up to a whole
    return (_Quota(name, size, base, fractional, [float(parts[p]) for p in fractional], extra,
                   sum(base.values())), parts)


@dataclass(slots=True)
class _Held:
    """What `previous` says about one task: the indices each node may keep (sorted), and
    the Slot objects themselves, reused so that an unchanged plan allocates nothing new."""

    indices: dict[int, list[int]] = field(default_factory=dict)
    slots: dict[int, Slot] = field(default_factory=dict)


def _held(previous: Layout | None, position: Mapping[str, int], tasks: Sequence[TaskLike],
          able: Mapping[str, list[int]]) -> list[_Held]:
    """Per task, the slots that `previous` placed and that may stay where they are.

    Whatever cannot stay is dropped here: nodes that left, tasks that are gone, indices beyond
    a scaled-down workerNum, slots on a node that may no longer run the task. A slot listed
    under two nodes (a hand-edited znode) stays with the first in dealing order.
    """
    out = [_Held() for _ in tasks]
    if not previous:
        return out
    layout = previous.nodes if isinstance(previous, Plan) else previous
    allowed = {work: set(nodes) for work, nodes in able.items()}
    where = {t.name: (t.worker_num, allowed[t.work_name], out[i].slots, out[i].indices)
             for i, t in enumerate(tasks)}
    known = sorted(((position[name], slots) for name, slots in layout.items()
                    if name in position), key=lambda item: item[0])
    for p, slots in known:
        for slot in slots:
            entry = where.get(slot.task)
            if entry is None:
                continue
            size, may, reuse, indices = entry
            index = slot.index
            if index in reuse or p not in may or not 0 <= index < size:
                continue
            reuse[index] = slot
            if p in indices:
                indices[p].append(index)
            else:
                indices[p] = [index]
    for h in out:
        for kept in h.indices.values():
            kept.sort()
    return out


class _Extras:
    """Which nodes get the one-more slot of each task, and the repair of node totals.

    `chosen[t]` are the nodes with an extra slot of task `t`; `count[p]` how many extras node
    `p` has. A node's total is balanced when its extras lie between `low[p]` and `high[p]`,
    the floor and ceiling of its exact fractional share summed over tasks. `gainers[t]` are
    the nodes that held more than their base of task t: the extra slot keeps one in place
    there, anywhere else it costs a move. `loose[t]` are the chosen nodes that are not
    gainers, kept up to date because the repair asks for them on every step.
    """

    def __init__(self, quotas: Sequence[_Quota], held: Sequence[_Held],
                 fractional: Sequence[Fraction], n: int) -> None:
        self.quotas = quotas
        self.n = n
        self.low = [math.floor(f) for f in fractional]
        self.high = [math.ceil(f) for f in fractional]
        self.count = [0] * n
        self.chosen: list[set[int]] = []
        self.loose: list[set[int]] = []
        self.starts: list[int] = []
        self.gainers = [{p for p, kept in h.indices.items() if len(kept) > q.base[p]}
                        for q, h in zip(quotas, held, strict=True)]
        self.tasks_of: list[set[int]] = [set() for _ in range(n)]  # p -> tasks with an extra
        self._open_to: list[list[int]] | None = None

    @property
    def open_to(self) -> list[list[int]]:
        """p -> the tasks it may get an extra of. Only the repair needs it, and most plans
        need no repair, so it is built on first use."""
        if self._open_to is None:
            self._open_to = [[] for _ in range(self.n)]
            for t, q in enumerate(self.quotas):
                for p in q.fractional:
                    self._open_to[p].append(t)
        return self._open_to

    def choose(self) -> None:
        """Greedy pass in task order. For each task's extras, in order of preference:

        1. a node that held the slot before (a slot kept in place);
        2. a node that needs every remaining chance to reach its floor (it must have it);
        3. a node not yet at its ceiling, and the furthest behind its running fair share;
        4. the dealing order from a pointer that continues across tasks, as round robin's
           does, so without `previous` the result is round robin's deal.
        """
        behind = [0.0] * self.n
        chances = [0] * self.n  # extras each node may still get, this task's included
        for p, times in Counter(chain.from_iterable(q.fractional for q in self.quotas)).items():
            chances[p] = times
        count, n = self.count, self.n
        pointer = 0
        for t, q in enumerate(self.quotas):
            self.starts.append(pointer)
            start = pointer
            for p, f in zip(q.fractional, q.fraction, strict=True):
                behind[p] += f
            gainers = self.gainers[t]
            if q.extra >= len(q.fractional):
                pick = list(q.fractional)
            elif gainers and len(gainers) <= q.extra and gainers.issubset(q.fractional):
                # The common sticky case, decided without ranking every node: all previous
                # holders keep their extra, and only the rest (if any) is ranked.
                pick = sorted(gainers)
                if len(pick) < q.extra:
                    pick += self._rank([p for p in q.fractional if p not in gainers],
                                       q.extra - len(pick), behind, chances, start)
            else:
                pick = self._rank(q.fractional, q.extra, behind, chances, start, gainers)
            for p in q.fractional:
                chances[p] -= 1
            for p in pick:
                count[p] += 1
                self.tasks_of[p].add(t)
            self.chosen.append(set(pick))
            self.loose.append(self.chosen[t] - gainers)
            if pick:
                pointer = (start + 1 + max((p - start) % n for p in pick)) % n

    def _rank(self, candidates: Sequence[int], k: int, behind: Sequence[float],
              chances: Sequence[int], start: int, gainers: Collection[int] = ()) -> list[int]:
        """The k best candidates for an extra slot, by the preferences of `choose`."""
        count, low, high, n = self.count, self.low, self.high, self.n
        keys = [(p not in gainers, low[p] - count[p] < chances[p], count[p] >= high[p],
                 count[p] - behind[p], (p - start) % n, p) for p in candidates]
        return [key[-1] for key in heapq.nsmallest(k, keys)]

    def move(self, path: Sequence[tuple[int, int, int]]) -> None:
        for t, giver, taker in path:
            self.chosen[t].remove(giver)
            self.chosen[t].add(taker)
            self.loose[t].discard(giver)
            if taker not in self.gainers[t]:
                self.loose[t].add(taker)
            self.tasks_of[giver].remove(t)
            self.tasks_of[taker].add(t)
            self.count[giver] -= 1
            self.count[taker] += 1

    def repair(self) -> None:
        """Bring every node's total within its bounds, moving as few kept slots as possible.

        A node over its ceiling hands an extra to a node below its ceiling; a node under its
        floor takes one from a node above its floor. Cheapest first: a direct hand-over that
        costs no kept slot, then a chain of such hand-overs through other tasks, then the
        cheapest direct one, then any chain (an augmenting path, found breadth first). A chain
        always exists because a plan that rounds every share and every total up or down
        always exists (matrix rounding), so each step fixes one unit and the loop ends.
        """
        for p in range(self.n):
            while self.count[p] > self.high[p]:
                path = self._path(p, push=True)
                if path is None:  # pragma: no cover - impossible, see above
                    break
                self.move(path)
        for p in range(self.n):
            while self.count[p] < self.low[p]:
                path = self._path(p, push=False)
                if path is None:  # pragma: no cover - impossible, see above
                    break
                self.move(path)

    def _path(self, origin: int, *, push: bool) -> list[tuple[int, int, int]] | None:
        direct = self._give(origin) if push else self._take(origin)
        if direct is not None and direct[0] <= 0:
            return direct[1]
        chain = self._chain(origin, push=push, free_only=True)
        if chain is not None:
            return chain
        if direct is not None:
            return direct[1]
        return self._chain(origin, push=push, free_only=False)

    def _cost(self, t: int, giver: int, taker: int) -> int:
        """Kept slots lost by handing task t's extra from giver to taker (-1 is a gain)."""
        gainers = self.gainers[t]
        return (giver in gainers) - (taker in gainers)

    def _give(self, giver: int) -> tuple[int, list[tuple[int, int, int]]] | None:
        """The cheapest single hand-over from an over-full node; ties prefer a taker below
        its floor (two nodes fixed at once), then task and dealing order."""
        best: tuple[int, bool, int, int] | None = None
        for t in sorted(self.tasks_of[giver]):
            chosen, gainers = self.chosen[t], self.gainers[t]
            for v in self.quotas[t].fractional:
                if v not in chosen and self.count[v] < self.high[v]:
                    option = ((giver in gainers) - (v in gainers), self.count[v] >= self.low[v],
                              t, v)
                    if best is None or option < best:
                        best = option
        return None if best is None else (best[0], [(best[2], giver, best[3])])

    def _take(self, taker: int) -> tuple[int, list[tuple[int, int, int]]] | None:
        """The cheapest single hand-over to a node under its floor; ties: task, then node.

        Per task, chosen nodes that did not hold the slot are tried before those that did,
        and a task is skipped when it cannot beat the best so far: with many tasks and nodes
        this stays close to one pass over the tasks.
        """
        best: tuple[int, int, int] | None = None
        for t in self.open_to[taker]:
            chosen = self.chosen[t]
            if taker in chosen:
                continue
            bonus = taker in self.gainers[t]
            for cost, loose in ((-bonus, True), (1 - bonus, False)):
                if best is not None and cost >= best[0]:
                    break
                group = self.loose[t] if loose else chosen - self.loose[t]
                able = [v for v in group if self.count[v] > self.low[v]]
                if able:
                    best = (cost, t, min(able))
                    break
            if best is not None and best[0] == -1:
                break
        return None if best is None else (best[0], [(best[1], best[2], taker)])

    def _chain(self, origin: int, *, push: bool,
               free_only: bool) -> list[tuple[int, int, int]] | None:
        """Breadth-first search for a chain of hand-overs, in dealing order for determinism.

        With `free_only`, only hand-overs that cost no kept slot are followed, and the search
        gives up after CHAIN_BUDGET looks so a large cluster never pays quadratic time for it.
        """
        parent: dict[int, tuple[int, int]] = {origin: (-1, -1)}
        frontier = [origin]
        looks = 0
        while frontier:
            nxt: list[int] = []
            for u in frontier:
                for t, v in self._neighbours(u, push=push, free_only=free_only):
                    looks += 1
                    if free_only and looks > CHAIN_BUDGET:
                        return None
                    if v in parent:
                        continue
                    parent[v] = (u, t)
                    end = self.count[v] < self.high[v] if push else self.count[v] > self.low[v]
                    if end:
                        return self._unwind(parent, v, push=push)
                    nxt.append(v)
            frontier = nxt
        return None

    def _neighbours(self, u: int, *, push: bool,
                    free_only: bool) -> Iterator[tuple[int, int]]:
        """(task, node) pairs u can hand an extra to (push) or take one from (pull).

        With `free_only`, only pairs where the hand-over keeps as many slots in place as it
        moves: the receiving side held the slot before, or the giving side did not.
        """
        if push:
            for t in sorted(self.tasks_of[u]):
                chosen, gainers = self.chosen[t], self.gainers[t]
                need = free_only and u in gainers
                for v in self.quotas[t].fractional:
                    if v not in chosen and (not need or v in gainers):
                        yield t, v
        else:
            for t in self.open_to[u]:
                chosen, gainers = self.chosen[t], self.gainers[t]
                if u in chosen:
                    continue
                givers = self.loose[t] if free_only and u not in gainers else chosen
                for v in sorted(givers):
                    yield t, v

    @staticmethod
    def _unwind(parent: Mapping[int, tuple[int, int]], end: int, *,
                push: bool) -> list[tuple[int, int, int]]:
        path: list[tuple[int, int, int]] = []
        v = end
        while parent[v][0] != -1:
            u, t = parent[v]
            path.append((t, u, v) if push else (t, v, u))
            v = u
        return path


def sticky(tasks: Sequence[TaskLike], members: Sequence[Member], *, leader: str | None,
           leader_works: bool = True, previous: Layout | None = None) -> Plan:
    """Balanced like round robin, but slots stay where `previous` had them when they can.

    Balance: a node's count of a task is its exact fair share rounded down or up, where the
    share is proportional to its weight among the nodes that may run the task, and never
    above `max_per_node` (slots beyond the eligible nodes' limits are unassigned); a node's
    total is likewise its summed exact share rounded down or up. With equal weights that means
    per task and overall, counts of nodes eligible for the same work differ by at most one.
    Such a rounding always exists; the choice among them is what stickiness is about.

    Stickiness: for each task the nodes that get one slot more than their whole share are
    preferably nodes that already held that many; then each node keeps its previous slots up
    to its count (lowest indices first, so an over-full node gives up its highest ones) and
    only the remaining slots are dealt, in index order, to nodes still below their count.
    So when a node leaves only its slots move, when one joins only the slots it must receive
    move, and a plan that is already balanced for the current members is returned unchanged.
    (With several tasks the bound on totals can force a slot or two to swap between other
    nodes too; the choice of extras keeps as many slots in place as balance allows.)

    Determinism: tasks are taken in name order and nodes in dealing order (followers by
    sequence, leader last), so neither the order of `tasks`, of `members` nor of `previous`
    matters. Without `previous`, with equal weights, no limits and every node eligible, the
    result is exactly `round_robin` over the tasks sorted by name.

    Cost: O(slots + sum over tasks of eligible nodes x log nodes); the repair of node totals
    only runs for the few units the greedy pass leaves out of bounds.
    """
    order = dealing_order(members, leader, leader_works=leader_works)
    n = len(order)
    ordered = sorted(tasks, key=lambda t: t.name)
    able = _eligible(order, ordered)
    quotas, fractional = _shares(ordered, able, [_weight(m) for m in order])
    held = _held(previous, {m.name: p for p, m in enumerate(order)}, ordered, able)
    extras = _Extras(quotas, held, fractional, n)
    extras.choose()
    extras.repair()
    placed: list[list[Slot]] = [[] for _ in range(n)]
    unassigned: list[Slot] = []
    for t, q in enumerate(quotas):
        unassigned.extend(_place(q, extras.chosen[t], held[t], extras.starts[t], placed))
    return Plan({m.name: tuple(placed[p]) for p, m in enumerate(order)}, tuple(unassigned))


def _place(q: _Quota, chosen: set[int], held: _Held, start: int,
           placed: Sequence[list[Slot]]) -> list[Slot]:
    """Append one task's slots to each node's list in `placed`; return those left over.

    Each node keeps its previously held indices up to its count, lowest first; the free
    indices are then dealt in index order, one per node per round, to the nodes with room,
    in dealing order from `start` (the round-robin pointer, which is what makes a plan
    without `previous` identical to round robin's). Slots from `previous` are reused.
    """
    n = len(placed)
    name, reuse = q.name, held.slots
    kept: dict[int, list[int]] = {}
    room: dict[int, int] = {}
    # A task with fewer slots than nodes: only the nodes with an extra get anything, so a
    # thousand small tasks over a thousand nodes do not each walk every node.
    visit = q.base if q.whole else dict.fromkeys(sorted(chosen), 0)
    for p, base in visit.items():
        want = base + (p in chosen)
        keep = held.indices.get(p)
        if keep:
            keep = keep[:want]
            kept[p] = keep
            want -= len(keep)
        if want > 0:
            room[p] = want
    free: Sequence[int] = (sorted(set(range(q.size)).difference(*kept.values())) if kept
                           else range(q.size))
    dealt: dict[int, list[int]] = {}
    turn = sorted(room, key=lambda p: (p - start) % n)
    k = 0
    while turn and k < len(free):
        still: list[int] = []
        for p in turn:
            if k == len(free):
                break
            dealt.setdefault(p, []).append(free[k])
            k += 1
            room[p] -= 1
            if room[p]:
                still.append(p)
        turn = still
    for p, keep in kept.items():
        if p not in dealt:
            placed[p].extend(map(reuse.__getitem__, keep))
    for p, indices in dealt.items():
        if p in kept:
            placed[p].extend([reuse.get(i) or Slot(name, i) for i in sorted(kept[p] + indices)])
        else:  # dealt in ascending order, and none of them was this node's before
            placed[p].extend([Slot(name, i) for i in indices])
    return [Slot(name, i) for i in free[k:]]


STRATEGIES: dict[str, Strategy] = {"round_robin": round_robin, "sticky": sticky}


def get_strategy(name: str) -> Strategy:
    try:
        return STRATEGIES[name]
    except KeyError:
        known = ", ".join(sorted(STRATEGIES))
        raise ValueError(f"unknown assignment strategy {name!r} (known: {known})") from None


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
