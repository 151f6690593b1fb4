"""Scenario 4: slots moved per join/leave, per strategy, against the theoretical minimum.

Pure computation with `xconsumer.assignment`; the real counts observed in ZooKeeper come from
the handover scenarios (assignment before/after each event).
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping, Sequence
from typing import Any

from bench.common import table
from xconsumer.assignment import STRATEGIES, Member, Plan, Slot, get_strategy, moved_slots
from xconsumer.config import TaskConfig

COMPARED = ("round_robin", "sticky", "balanced")


def available_strategies() -> list[str]:
    return [s for s in COMPARED if s in STRATEGIES]


def min_moves(before: Mapping[str, Sequence[Slot]], after_members: Sequence[str],
              total: int) -> int:
    """Fewest slots that must change owner to reach a plan balanced within one slot.

    Slots of departed nodes must move; every remaining node keeps at most its target (the
    `total % n` largest holders may keep one more than `total // n`); everything above that
    moves, and nothing else has to.
    """
    n = len(after_members)
    if n == 0:
        return 0
    lo, extra = divmod(total, n)
    keep = set(after_members)
    orphans = sum(len(v) for k, v in before.items() if k not in keep)
    placed = sum(len(v) for v in before.values())
    counts = sorted((len(before.get(m, ())) for m in after_members), reverse=True)
    excess = sum(max(0, c - (lo + 1 if i < extra else lo)) for i, c in enumerate(counts))
    return orphans + excess + max(0, total - placed)


def members(names: Sequence[tuple[str, int]]) -> list[Member]:
    return [Member(name, seq, frozenset({"RunBench"})) for name, seq in names]


def _plan(strategy: str, tasks: Sequence[TaskConfig], ms: list[Member],
          previous: Mapping[str, Sequence[Slot]] | None) -> Plan:
    leader = min(ms, key=lambda m: m.seq).name
    return get_strategy(strategy)(tasks, ms, leader=leader, leader_works=True,
                                  previous=previous)


def _balance(plan: Plan) -> int:
    counts = [len(v) for v in plan.nodes.values()]
    return max(counts) - min(counts) if counts else 0


def single_events(strategy: str, nodes: int, slots: int) -> list[dict[str, Any]]:
    tasks = [TaskConfig(name="bench", work_name="bench", worker_num=slots)]
    base = [(f"node-{i:03d}", i) for i in range(nodes)]
    before = _plan(strategy, tasks, members(base), None)
    cases = {
        "join": base + [(f"node-{nodes:03d}", nodes)],
        "leave (follower)": [m for m in base if m[1] != nodes // 2],
        "leave (leader)": base[1:],
    }
    out = []
    for label, after_names in cases.items():
        after = _plan(strategy, tasks, members(after_names), before.nodes)
        out.append({"event": label, "nodes": nodes, "slots": slots,
                    "moved": moved_slots(before, after),
                    "minimum": min_moves(before.nodes, [n for n, _ in after_names], slots),
                    "balance_after": _balance(after)})
    return out


def churn(strategy: str, nodes: int, slots: int, events: int = 40, seed: int = 7
          ) -> dict[str, Any]:
    """A seeded random walk of joins and leaves (8..12 nodes around 10)."""
    rng = random.Random(seed)
    tasks = [TaskConfig(name="bench", work_name="bench", worker_num=slots)]
    live = [(f"node-{i:03d}", i) for i in range(nodes)]
    seq = nodes
    plan = _plan(strategy, tasks, members(live), None)
    moved = minimum = 0
    for _ in range(events):
        if len(live) <= nodes - 2 or (len(live) < nodes + 2 and rng.random() < 0.5):
            live = live + [(f"node-{seq:03d}", seq)]
            seq += 1
        else:
            live = [m for m in live if m != rng.choice(live)]
        after = _plan(strategy, tasks, members(live), plan.nodes)
        moved += moved_slots(plan, after)
        minimum += min_moves(plan.nodes, [n for n, _ in live], slots)
        plan = after
    return {"events": events, "moved": moved, "minimum": minimum,
            "ratio": moved / minimum if minimum else None}


def run_moves(nodes: int = 10, slots: int = 1000) -> dict[str, Any]:
    out: dict[str, Any] = {"nodes": nodes, "slots": slots, "strategies": {},
                           "available": available_strategies(),
                           "missing": [s for s in COMPARED if s not in STRATEGIES],
                           "large": []}
    for strategy in out["available"]:
        out["strategies"][strategy] = {
            "single": single_events(strategy, nodes, slots),
            "small": single_events(strategy, 5, 100),
            "churn": churn(strategy, nodes, slots),
        }
        for ntasks, per in LARGE:
            out["large"].extend(event_times(strategy, 1000, ntasks, per))
    return out


# Tasks x slots per task on 1,000 nodes: the 1,000 tasks x 1,000 nodes (one and ten
# slots a task), the same 100,000 slots as 1,000 tasks of 100, and as 10 tasks.
LARGE = ((1000, 1), (1000, 10), (1000, 100), (10, 10_000))


def event_times(strategy: str, nodes: int, ntasks: int, per: int,
                reps: int = 3) -> list[dict[str, Any]]:
    """The strategy's own time (best of `reps`) for a join, a follower's leave and the
    leader's leave from the plan it made for `nodes` members, and the slots each moved."""
    tasks = [TaskConfig(name=f"t{i:04d}", work_name="bench", worker_num=per)
             for i in range(ntasks)]
    base = [(f"node-{i:04d}", i) for i in range(nodes)]
    before = _plan(strategy, tasks, members(base), None)
    cases = {"join": base + [(f"node-{nodes:04d}", nodes)],
             "leave (follower)": [m for m in base if m[1] != nodes // 2],
             "leave (leader)": base[1:]}
    out = []
    for label, names in cases.items():
        best, after = float("inf"), before
        for _ in range(reps):
            started = time.perf_counter()
            after = _plan(strategy, tasks, members(names), before.nodes)
            best = min(best, time.perf_counter() - started)
        out.append({"strategy": strategy, "event": label, "nodes": nodes, "tasks": ntasks,
                    "slots": ntasks * per, "seconds": best,
                    "moved": moved_slots(before, after)})
    return out


def print_moves(result: dict[str, Any], real: dict[str, dict[str, Any]] | None = None) -> str:
    rows = []
    for strategy, r in result["strategies"].items():
        for ev in r["single"] + r["small"]:
            rows.append([strategy, f"{ev['nodes']} nodes / {ev['slots']:,} slots", ev["event"],
                         ev["moved"], ev["minimum"], ev["balance_after"]])
        c = r["churn"]
        rows.append([strategy, f"{result['nodes']} nodes / {result['slots']:,} slots",
                     f"churn: {c['events']} random joins/leaves", c["moved"], c["minimum"], "-"])
    for strategy in result["missing"]:
        rows.append([strategy, "-", "not available yet in xconsumer.assignment", "-", "-", "-"])
    text = table("Slots moved per membership change (pure computation)",
                 ["strategy", "cluster", "event", "moved", "theoretical min", "max-min load"],
                 rows, "minimum = slots of departed nodes + slots above the balanced target "
                       "(total // n, +1 for total % n nodes).")
    if result.get("large"):
        text += "\n" + table(
            "Strategy time per membership change on 1,000 nodes (pure computation, best of 3)",
            ["strategy", "tasks x slots", "event", "ms", "moved"],
            [[r["strategy"], f"{r['tasks']:,} x {r['slots'] // r['tasks']:,}", r["event"],
              f"{r['seconds'] * 1e3:.0f}", r["moved"]] for r in result["large"]],
            "target (issue 13): a join or a leave at 1,000 tasks x 1,000 nodes in < 500 ms.")
    if real:
        rrows = []
        for strategy, kinds in real.items():
            for kind, s in kinds.items():
                rrows.append([strategy, kind, s["n"], f"{s['moved']:.0f}",
                              f"{s['minimum']:.0f}", f"{s['starts']:.0f}"])
        text += "\n" + table(
            "Slots moved, observed in ZooKeeper (5 nodes / 100 slots, median over events)",
            ["strategy", "event", "n", "moved (assignment diff)", "theoretical min",
             "slot starts recorded"], rrows)
    return text
