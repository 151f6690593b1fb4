"""`sticky`: the same fair shares as round robin, keeping every slot where `previous` had
it unless balance requires otherwise, so a join or a leave moves only the slots it has to.
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_right
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from itertools import chain
from typing import Any

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
    slots_of,
)

# How many hand-overs the sticky repair inspects looking for a chain that keeps every slot in
# place before settling for one that moves a slot (see `_Extras._chain`).
CHAIN_BUDGET = 20_000



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
    # Equal fractions: `fractional` is the list of the task's eligible nodes, one object
    # shared by every task of the same workName (see _Extras.choose).
    uniform: bool = False


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
        nodes = able[_able_key(task)]
        size = max(0, task.worker_num)
        cap = _limit(task)
        if equal:
            quota, part = _equal_share(task.name, size, nodes, cap)
            if part:  # all nodes of this workName get the same fraction: add it up once
                key = _able_key(task)
                per_work[key] = per_work.get(key, Fraction(0)) + part
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
    return (_Quota(name, size, shares, nodes, [extra / k] * k, extra, base * k, True),
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
    where = {t.name: (t.worker_num, allowed[_able_key(t)], out[i].slots, out[i].indices)
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


class _Shared:
    """`choose`'s running tallies per node: how far behind its fair share it is (the sum of
    its fractions over the tasks so far) and how many extras it may still get.

    Kept per node, that is one update per eligible node per task: 2,000,000 for 1,000
    tasks on 1,000 nodes. But with equal weights every task of a workName gives the same
    fraction to the same list of nodes, so a node eligible for that workName alone (the
    usual case) is tracked by its group's tally: one update per task. Its sum is the same
    float, added in the same order, as its own tally would be. Nodes in several groups,
    or with weighted fractions, keep their own tallies, updated per task as before.
    """

    def __init__(self, quotas: Sequence[_Quota], n: int) -> None:
        self.quotas = quotas
        self.group_of_task: list[int] = []
        lists: dict[int, int] = {}  # id(fractional list) -> group
        members: list[list[int]] = []
        tasks_in: list[int] = []  # group -> its tasks
        seen = [0] * n  # groups and weighted tasks each node takes part in
        own = [0] * n  # a node's own chances (weighted tasks, and its groups' if eager)
        for q in quotas:
            g = -1
            if q.uniform and q.fractional:
                g = lists.setdefault(id(q.fractional), len(members))
                if g == len(members):
                    members.append(q.fractional)
                    tasks_in.append(0)
                    for p in q.fractional:
                        seen[p] += 1
                tasks_in[g] += 1
            else:
                for p in q.fractional:
                    seen[p] += 1
                    own[p] += 1
            self.group_of_task.append(g)
        self.off = [0.0] * len(members)  # a group's running sum of fractions
        self.left = tasks_in  # a group's tasks not yet passed
        self.group = [-1] * n  # p -> the group that tracks it, -1: its own tallies
        self.eager: list[list[int]] = []  # per group: its nodes with their own tallies
        for g, nodes in enumerate(members):
            eager = []
            for p in nodes:
                if seen[p] == 1:
                    self.group[p] = g
                else:
                    eager.append(p)
                    own[p] += tasks_in[g]
            self.eager.append(eager)
        self.own_behind = [0.0] * n
        self.own_chances = own
        self.behind = _Tally(self.own_behind, self.group, self.off)
        self.chances = _Tally(self.own_chances, self.group, self.left)

    def reach(self, t: int) -> None:
        """Task t's fractions are added (before its extras are chosen)."""
        q, g = self.quotas[t], self.group_of_task[t]
        behind = self.own_behind
        if g < 0:
            for p, f in zip(q.fractional, q.fraction, strict=True):
                behind[p] += f
            return
        f = q.fraction[0]
        self.off[g] += f
        for p in self.eager[g]:
            behind[p] += f

    def passed(self, t: int) -> None:
        """Task t's chance is used up (after its extras are chosen)."""
        q, g = self.quotas[t], self.group_of_task[t]
        chances = self.own_chances
        if g < 0:
            for p in q.fractional:
                chances[p] -= 1
            return
        self.left[g] -= 1
        for p in self.eager[g]:
            chances[p] -= 1


class _Tally:
    """A per-node view of `_Shared`'s tallies: the group's for a node tracked by it."""

    __slots__ = ("own", "group", "of_group")

    def __init__(self, own: list[Any], group: list[int], of_group: list[Any]) -> None:
        self.own, self.group, self.of_group = own, group, of_group

    def __getitem__(self, p: int) -> Any:
        g = self.group[p]
        return self.own[p] if g < 0 else self.of_group[g]


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
        self._gains_of: list[list[int]] | None = None
        self._held_of: dict[int, list[int]] = {}  # see _held_fractional

    @property
    def open_to(self) -> list[list[int]]:
        """p -> the tasks it may get an extra of. Only the repair needs it, and most plans
        need no repair, so it is built on first use."""
        if self._open_to is None:
            # Tasks sharing one list of nodes (equal weights, one workName) are listed once
            # for all those nodes: a node in one such group shares the group's list (read
            # only), instead of 1,000 tasks x 1,000 nodes appends.
            groups: dict[int, tuple[list[int], list[int]]] = {}
            for t, q in enumerate(self.quotas):
                if q.fractional:
                    groups.setdefault(id(q.fractional), (q.fractional, []))[1].append(t)
            per: list[list[list[int]]] = [[] for _ in range(self.n)]
            for nodes, tasks in groups.values():
                for p in nodes:
                    per[p].append(tasks)
            self._open_to = [lists[0] if len(lists) == 1 else sorted(chain(*lists))
                             for lists in per]
        return self._open_to

    @property
    def gains_of(self) -> list[list[int]]:
        """p -> the tasks (ascending) of `open_to[p]` it held an extra of; built on first
        use, like `open_to`."""
        if self._gains_of is None:
            self._gains_of = [[] for _ in range(self.n)]
            for t in range(len(self.quotas)):
                for p in self._held_fractional(t):
                    self._gains_of[p].append(t)
        return self._gains_of

    def choose(self) -> None:
        """Greedy pass in task order. For each task's extras, in order of preference:

        1. a node that held the slot before (a slot kept in place);
        2. a node that needs every remaining chance to reach its floor (it must have it);
        3. a node not yet at its ceiling, and the furthest behind its running fair share;
        4. the dealing order from a pointer that continues across tasks, as round robin's
           does, so without `previous` the result is round robin's deal.
        """
        shared = _Shared(self.quotas, self.n)
        behind, chances = shared.behind, shared.chances
        count, n = self.count, self.n
        pointer = 0
        for t, q in enumerate(self.quotas):
            self.starts.append(pointer)
            start = pointer
            shared.reach(t)
            gainers = self.gainers[t]
            if q.extra >= len(q.fractional):
                pick = list(q.fractional)
            elif gainers and len(gainers) <= q.extra and len(
                    held := self._held_fractional(t)) == len(gainers):
                # The common sticky case, decided without ranking every node: all previous
                # holders (each with a fraction) keep their extra, and only the rest (if
                # any) is ranked.
                pick = list(held)
                if len(pick) < q.extra:
                    pick += self._rank([p for p in q.fractional if p not in gainers],
                                       q.extra - len(pick), behind, chances, start)
            else:
                pick = self._rank(q.fractional, q.extra, behind, chances, start, gainers)
            shared.passed(t)
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
            if best is not None and best[0] == 0:
                # Only a task the taker held an extra of can still do better (-1): look at
                # those alone, not at every later task (a node that joined held none).
                better = self._gain_from(taker, t)
                if better is not None:
                    best = better
                break
            if best is not None and best[0] == -1:
                break
        return None if best is None else (best[0], [(best[1], best[2], taker)])

    def _gain_from(self, taker: int, after: int) -> tuple[int, int, int] | None:
        """The first task after `after` whose extra the taker held and can take back from a
        node that did not hold it (cost -1), with that node; None if there is none."""
        for t in self.gains_of[taker][bisect_right(self.gains_of[taker], after):]:
            if taker in self.chosen[t]:
                continue
            able = [v for v in self.loose[t] if self.count[v] > self.low[v]]
            if able:
                return (-1, t, min(able))
        return None

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
                # Only previous holders qualify then: walk those few, not every eligible
                # node (1,000 tasks on 1,000 nodes spent seconds here), in the same order.
                for v in self._held_fractional(t) if need else self.quotas[t].fractional:
                    if v not in chosen:
                        yield t, v
        else:
            for t in self.open_to[u]:
                chosen, gainers = self.chosen[t], self.gainers[t]
                if u in chosen:
                    continue
                givers = self.loose[t] if free_only and u not in gainers else chosen
                for v in sorted(givers):
                    yield t, v

    def _held_fractional(self, t: int) -> list[int]:
        """Task t's gainers that have a fraction, ascending like `fractional` (which lists
        nodes in dealing order); built once per task. When every eligible node has one
        (equal weights), no set is built: a gainer is an eligible node."""
        cached = self._held_of.get(t)
        if cached is None:
            q = self.quotas[t]
            every = len(q.fractional) == len(q.base)  # gainers are eligible nodes
            fractional = None if every else set(q.fractional)
            cached = sorted(p for p in self.gainers[t] if fractional is None or p in fractional)
            self._held_of[t] = cached
        return cached

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


@without_gc
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
            placed[p].extend(slots_of(name, indices))
    return slots_of(name, free[k:])

