"""`balanced` (the default): round robin's deal for a new cluster, then only the moves that
a join, a leave or a crash requires, without ever leaving the leader the most loaded.

Round robin keeps its promises (an even deal that starts from the followers, so the leader,
which also coordinates, is not the most loaded) by starting over on every change, which
moves most slots. `sticky` moves only what it must, but forgets the leader: after a join it
may keep the leader at the higher of two counts. `balanced` is sticky's machinery with the
leader's promise added as a constraint, and round robin's deal whenever there is nothing to
stay sticky to.

The rules, with "share" meaning a node's exact fair share as in `sticky` (proportional to
its weight among the nodes that may run the task, water-filled under `max_per_node`), and a
node's "floor" and "ceiling" the rounded-down and rounded-up sum of its shares over tasks:

1. No usable previous plan (none, or none of its slots may stay where it is: a fresh cluster,
   an operator's rebalance, which the leader passes as `previous=None`): round robin's plan,
   exactly. A previous plan that is round robin's deal for the same inputs is kept as is.
2. The leader is never more loaded than a follower of its weight:
   - per task: the leader holds one slot of a task more than a follower of its weight that
     may run the task only when handing that slot over would take one of the two out of
     its fair range in total (the leader is at its floor, or the follower at its ceiling);
   - in total, as a consequence: the leader holds no more slots than any follower of its
     weight that may run exactly the tasks the leader may run.
3. Otherwise each node's count of each task is its share rounded down or up, its total its
   floor or ceiling (as in `sticky`), and a join, a leave or a crash moves as few slots as
   that and rule 2 allow: the slots that cannot stay (departed or ineligible nodes, counts
   above a ceiling) and the few that the bounds on totals or the leader rule force.

How exact rule 3 is: the fewest moves among plans keeping rules 2 and 3, checked against an
exhaustive oracle, whenever every node may run every task with equal weights. With mixed
eligibility or weights the leader rule is not a flow constraint, and in about 1 of 3,000
random join/leave sequences the plan moves one slot more than the minimum. On a large
cluster the search for cycles that keep more slots stops after CHAIN_BUDGET looks.
"""

from __future__ import annotations

import copy
from collections import deque
from collections.abc import Iterator, Mapping, Sequence

from ..gcpause import without_gc
from .base import (
    Layout,
    Member,
    Plan,
    Slot,
    TaskLike,
    _eligible,
    _layout,
    _weight,
    dealing_order,
)
from .round_robin import round_robin
from .sticky import CHAIN_BUDGET, _Extras, _held, _place, _shares

# Rounds of raising the floors of followers that outrank the leader before giving up on
# keeping the leader's extra (each round can only empty followers the last one filled).
LIFTS = 3


class _LeaderLast(_Extras):
    """Sticky's choice of extras and repair, with the leader rule (2) as a constraint."""

    def fork(self) -> _LeaderLast:
        """A copy whose choices can change independently (the shares are shared)."""
        self.open_to  # noqa: B018 - built once here, shared by the copies (read-only)
        twin = copy.copy(self)
        twin.count = list(self.count)
        twin.high = list(self.high)
        twin.chosen = [set(c) for c in self.chosen]
        twin.loose = [set(c) for c in self.loose]
        twin.tasks_of = [set(c) for c in self.tasks_of]
        return twin

    def kept(self) -> int:
        """Extras that keep a slot in place: the only part of the kept slots that differs
        between two balanced choices (each node keeps min(held, count) of a task)."""
        return sum(len(c & g) for c, g in zip(self.chosen, self.gainers, strict=True))

    def settle(self, leader: int | None, weights: Sequence[float]) -> _LeaderLast:
        """The balanced choice that keeps the most slots in place and keeps rule 2.

        First the best balanced plan: sticky's repair, then cycles of hand-overs cancelled
        (`improve`). If it leaves the leader at its floor, rule 2 holds and nothing can keep
        more. Otherwise two more candidates from it: the leader's ceiling lowered to its
        floor (rule 2 then holds whatever the followers have), and the leader keeping its
        extra while the followers that outrank it fill up to their ceilings; the one that
        keeps more slots wins, the leader's floor on a tie. With no follower of the
        leader's weight rule 2 asks nothing.
        """
        self.repair()
        self.improve()
        if (leader is None or self.count[leader] <= self.low[leader]
                or all(w != weights[leader] for p, w in enumerate(weights) if p != leader)):
            return self
        lowered, filled = self.fork(), self.fork()
        candidates = [lowered._at_floor(leader), self._lifted(leader, weights, filled)]
        best = max((c for c in candidates if c is not None), key=_LeaderLast.kept,
                   default=self)  # max keeps the first of equals: the leader's floor first
        if best.count[leader] > best.low[leader] and best._outranked(leader, weights):
            best._shed(leader)  # only when neither plan of the leader's kind exists
        return best

    def _at_floor(self, leader: int) -> _LeaderLast | None:
        """This choice repaired and improved with the leader at its floor, if it can be."""
        ceiling = self.high[leader]
        self.high[leader] = self.low[leader]
        self.repair()
        if self.count[leader] > self.low[leader]:
            return None  # no balanced plan has the leader at its floor
        self.improve()
        self.high[leader] = ceiling
        return self

    def _lifted(self, leader: int, weights: Sequence[float],
                spare: _LeaderLast) -> _LeaderLast | None:
        """The best balanced plan (this one, repaired and improved) if the leader is not
        outranked in it; otherwise `spare` with the outranking followers' floors raised to
        their ceilings until none is left (the leader keeps its extra, they fill up), if
        the bounds allow it."""
        if not self._outranked(leader, weights):
            return self
        floors = list(spare.low)
        for _ in range(LIFTS):
            for v in spare._outrankers(leader, weights):
                spare.low[v] = spare.high[v]
            if sum(spare.low) > sum(spare.count):
                return None  # more floors raised than there are extras to fill them
            spare.repair()
            if any(not spare.low[p] <= c <= spare.high[p] for p, c in enumerate(spare.count)):
                return None
            spare.improve()
            if not spare._outranked(leader, weights):
                spare.low = floors
                return spare
        return None  # filling one follower keeps emptying another: shed instead

    def improve(self, budget: int = CHAIN_BUDGET) -> None:
        """Cancel cycles of hand-overs that keep more slots in place, while any is found.

        The extras form a flow (task -> node -> total within bounds), and a plan keeps the
        most slots exactly when no cycle of hand-overs gains a kept slot (a negative cycle
        of the residual graph, costs -1, 0 or +1). Such a cycle goes through a task whose
        previous holder lost its extra, so the search starts there; it stops after `budget`
        looks, which only a large cluster reaches, keeping the cost bounded there.
        """
        while (cycle := self._gaining_cycle(budget)) is not None:
            self.move(cycle)

    def _gaining_cycle(self, budget: int) -> list[tuple[int, int, int]] | None:
        """Bellman-Ford (queue-based) from the tasks whose extras miss a previous holder.

        A vertex whose shortest path has more edges than there are vertices lies behind a
        cycle of negative cost: walking back that many parent links lands on it.
        """
        tasks = len(self.quotas)
        sink = tasks + self.n
        starts = []
        for t, (q, gainers) in enumerate(zip(self.quotas, self.gainers, strict=True)):
            missed = gainers - self.chosen[t] if q.extra < len(q.fractional) else ()
            if missed and not missed.isdisjoint(q.fractional):
                starts.append(t)
        dist = dict.fromkeys(starts, 0)
        edges = dict.fromkeys(starts, 0)
        parent: dict[int, int] = {}
        queue = deque(starts)
        queued = set(starts)
        looks = 0
        while queue:
            u = queue.popleft()
            queued.discard(u)
            for v, cost in self._residual(u, tasks, sink):
                looks += 1
                if looks > budget:
                    return None
                if dist[u] + cost >= dist.get(v, 1 << 30):
                    continue
                dist[v], parent[v], edges[v] = dist[u] + cost, u, edges[u] + 1
                if edges[v] > sink:
                    for _ in range(sink + 1):
                        v = parent[v]
                    return self._hand_overs(parent, v, tasks)
                if v not in queued:
                    queue.append(v)
                    queued.add(v)
        return None

    def _residual(self, u: int, tasks: int, sink: int) -> Iterator[tuple[int, int]]:
        """Edges out of a vertex: a task gives its extra to a node without one (-1 where
        that node held it), a node gives up an extra (+1 where it held it), a node below
        its ceiling absorbs one more into its total, the total of a node above its floor
        gives one up."""
        if u < tasks:
            chosen, gainers = self.chosen[u], self.gainers[u]
            for v in self.quotas[u].fractional:
                if v not in chosen:
                    yield tasks + v, -(v in gainers)
        elif u < sink:
            p = u - tasks
            for t in sorted(self.tasks_of[p]):
                yield t, int(p in self.gainers[t])
            if self.count[p] < self.high[p]:
                yield sink, 0
        else:
            for p in range(self.n):
                if self.count[p] > self.low[p]:
                    yield tasks + p, 0

    @staticmethod
    def _hand_overs(parent: Mapping[int, int], start: int,
                    tasks: int) -> list[tuple[int, int, int]]:
        """The cycle through `start` as (task, giver, taker) hand-overs."""
        cycle = [start]
        w = parent[start]
        while w != start:
            cycle.append(w)
            w = parent[w]
        cycle.reverse()  # parent links point backwards
        out = []
        for i, t in enumerate(cycle):
            if t < tasks:
                out.append((t, cycle[i - 1] - tasks, cycle[(i + 1) % len(cycle)] - tasks))
        return out

    def _shed(self, leader: int) -> None:
        """Move one extra away from the leader, cheapest path first (found at least the
        hand-over to the follower that outranks it)."""
        ceiling = self.high[leader]
        self.high[leader] = self.low[leader]
        try:
            path = self._path(leader, push=True)
        finally:
            self.high[leader] = ceiling
        if path is not None:
            self.move(path)

    def _outranked(self, leader: int, weights: Sequence[float]) -> bool:
        """Whether some follower of the leader's weight could take one of its extras."""
        return next(self._outrankers(leader, weights), None) is not None

    def _outrankers(self, leader: int, weights: Sequence[float]) -> Iterator[int]:
        """Followers of the leader's weight below their ceiling that lack one of its extras."""
        weight = weights[leader]
        for t in sorted(self.tasks_of[leader]):
            chosen = self.chosen[t]
            for v in self.quotas[t].fractional:
                if (v != leader and v not in chosen and weights[v] == weight
                        and self.count[v] < self.high[v]):
                    yield v


def _same_layout(previous: Mapping[str, Sequence[Slot]], plan: Plan) -> bool:
    """Whether `previous` places every slot exactly as `plan` does (slot order aside)."""
    busy = {name for name, slots in previous.items() if slots}
    if not busy <= plan.nodes.keys():
        return False
    return all(set(previous.get(name, ())) == set(slots) for name, slots in plan.nodes.items())


@without_gc
def balanced(tasks: Sequence[TaskLike], members: Sequence[Member], *, leader: str | None,
             leader_works: bool = True, previous: Layout | None = None) -> Plan:
    """Round robin's deal when nothing can stay; else sticky's moves plus the leader rule.

    See the module docstring for the rules. Determinism as in `sticky` (tasks by name,
    nodes in dealing order), and round robin's own when it deals. A plan that already keeps
    the rules for the current members is returned unchanged, and so is round robin's deal
    for them: the deal a cluster formed with stays until its membership or tasks change
    (with mixed eligibility or weights round robin can be less even than rule 3's bounds).

    Cost: sticky's, plus a scan of the leader's extras; round robin is computed again only
    when the previous plan names exactly the current nodes and the rules would change it.
    """
    order = dealing_order(members, leader, leader_works=leader_works)
    ordered = sorted(tasks, key=lambda t: t.name)
    able = _eligible(order, ordered)
    position = {m.name: p for p, m in enumerate(order)}
    held = _held(previous, position, ordered, able)
    if previous is None or not any(h.indices for h in held):
        return round_robin(tasks, members, leader=leader, leader_works=leader_works)
    weights = [_weight(m) for m in order]
    quotas, fractional = _shares(ordered, able, weights)
    extras = _LeaderLast(quotas, held, fractional, len(order))
    extras.choose()
    extras = extras.settle(position.get(leader) if leader is not None else None, weights)
    placed: list[list[Slot]] = [[] for _ in order]
    left = [s for t, q in enumerate(quotas)
            for s in _place(q, extras.chosen[t], held[t], extras.starts[t], placed)]
    plan = Plan({m.name: tuple(placed[p]) for p, m in enumerate(order)}, tuple(left))
    layout = _layout(previous)
    if layout.keys() != position.keys() or _same_layout(layout, plan):
        return plan  # a join or a leave (the published plan names every dealt node)
    deal = round_robin(tasks, members, leader=leader, leader_works=leader_works)
    return deal if _same_layout(layout, deal) else plan
