"""The leader's one job: compute the plan and publish it, fenced on its own membership.

The publish is a transaction that also checks the leader's own `nodes/n-<seq>` znode still
exists. A leader whose session expired (its znode is gone) can therefore never overwrite the
assignment its successor published, however late its write arrives. The set is also
conditional on the assignment version we read, so two writers cannot interleave silently.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError
from loguru import logger

from .assignment import Plan, Slot, get_strategy, moved_slots
from .config import TaskConfig
from .errors import ConfigError
from .membership import MemberRecord
from .overrides import EffectiveTask, with_paused
from .paths import Paths
from .zk import encode, loads


def read_assignment(client: KazooClient, paths: Paths,
                    watch: Any = None) -> tuple[dict[str, Any] | None, int]:
    """The published assignment and its znode version (-1 when there is none yet)."""
    try:
        raw, stat = client.get(paths.assignment, watch=watch)
    except NoNodeError:
        if watch is not None:
            client.exists(paths.assignment, watch=watch)
        return None, -1
    try:
        doc = loads(raw, where=paths.assignment)
    except ValueError as exc:
        logger.error("{}; the leader will overwrite it", exc)
        return None, stat.version
    return (doc if isinstance(doc, dict) else None), stat.version


def _pairs(group: Any) -> list[tuple[str, int]]:
    """Slots of one node in the published form `{task: [index, ...]}`."""
    if not isinstance(group, dict):
        return []
    return [(str(t), int(i)) for t, idx in group.items() if isinstance(idx, list) for i in idx]


def doc_plan(doc: dict[str, Any] | None) -> dict[str, list[Slot]]:
    """node -> slots from a published assignment."""
    if not doc:
        return {}
    return {n: [Slot(t, i) for t, i in _pairs(group)]
            for n, group in doc.get("nodes", {}).items()}


def doc_unassigned(doc: dict[str, Any] | None) -> list[Slot]:
    return [Slot(t, i) for t, i in _pairs((doc or {}).get("unassigned", {}))]


def plan_slots(doc: dict[str, Any] | None, node: str) -> dict[Slot, TaskConfig]:
    """What `doc` asks `node` to run, with each slot's task definition."""
    if not doc:
        return {}
    tasks = {}
    for raw in doc.get("tasks", []):
        task = lenient_task(raw)
        if task is not None:
            tasks[task.name] = task
    return {slot: tasks[slot.task] for slot in doc_plan(doc).get(node, [])
            if slot.task in tasks}


_KNOWN_TASK_KEYS = frozenset(TaskConfig(name="x", work_name="x", worker_num=0).to_dict())


def lenient_task(raw: Any) -> TaskConfig | None:
    """A task from a published document, tolerating keys a newer leader may add (rolling
    upgrade); a task that still does not parse is skipped, never allowed to stop a node
    from applying the rest of the assignment (revocations above all)."""
    if not isinstance(raw, dict):
        return None
    for candidate in (raw, {k: v for k, v in raw.items() if k in _KNOWN_TASK_KEYS}):
        try:
            return TaskConfig.from_dict(candidate, where="assignment znode")
        except ConfigError as exc:
            error = exc
    logger.warning("skipping a task of the published assignment: {}", error)
    return None


def _grouped(slots: Sequence[Slot]) -> dict[str, list[int]]:
    """`{task: [indices]}`: the task name once per node instead of once per slot keeps the
    document small (it is also compressed past a size; see zk.encode)."""
    out: dict[str, list[int]] = {}
    for s in slots:
        out.setdefault(s.task, []).append(s.index)
    return out


def build_doc(*, plan: Plan, tasks: Sequence[EffectiveTask], leader: str, strategy: str,
              members: Sequence[MemberRecord], generation: int,
              drained: Sequence[str] = ()) -> dict[str, Any]:
    return {
        "generation": generation,
        "leader": leader,
        "strategy": strategy,
        "members": [m.name for m in members],
        "tasks": [t.task.to_dict() for t in tasks],
        "paused": [t.task.name for t in tasks if t.paused],
        "drained": sorted(drained),
        "nodes": {n: _grouped(slots) for n, slots in plan.nodes.items()},
        "unassigned": _grouped(plan.unassigned),
        "published_at": time.time(),
    }


_COMPARED = ("leader", "strategy", "members", "tasks", "paused", "drained", "nodes",
             "unassigned", "seed")


def _same(a: dict[str, Any] | None, b: dict[str, Any]) -> bool:
    return a is not None and all(a.get(k) == b.get(k) for k in _COMPARED)


@dataclass(frozen=True)
class Published:
    doc: dict[str, Any]
    moved: int
    seconds: float


def publish(client: KazooClient, paths: Paths, *, my_child: str, leader: str,
            members: Sequence[MemberRecord], tasks: Sequence[EffectiveTask], strategy: str,
            leader_works: bool, drained: Collection[str] = (),
            fresh: bool = False, seed: Sequence[TaskConfig] = ()) -> Published | None:
    """Recompute and, if anything changed, publish. Returns None if unchanged or if the fenced
    write was refused (we are no longer the leader, or lost a race).

    `fresh` ignores the previous plan (an operator asked for a full rebalance).
    """
    started = time.monotonic()
    current, version = read_assignment(client, paths)
    people = [replace(m.to_member(), draining=True) if m.name in drained else m.to_member()
              for m in members]
    plan = get_strategy(strategy)(
        with_paused(tasks), people, leader=leader, leader_works=leader_works,
        previous=None if fresh else doc_plan(current))
    generation = int((current or {}).get("generation", 0)) + 1
    doc = build_doc(plan=plan, tasks=tasks, leader=leader, strategy=strategy, members=members,
                    generation=generation, drained=[d for d in drained
                                                    if d in {m.name for m in members}])
    doc["seed"] = [t.to_dict() for t in seed]
    if _same(current, doc):
        return None
    try:
        data = encode(doc)
    except ValueError as exc:
        logger.error("assignment not published: {}", exc)
        return None
    tx = client.transaction()
    tx.check(paths.node(my_child), -1)
    if version < 0:
        tx.create(paths.assignment, data)
    else:
        tx.set_data(paths.assignment, data, version=version)
    results = tx.commit()
    failures = [r for r in results if isinstance(r, Exception)]
    if failures:
        logger.warning("assignment publish refused ({}); will re-read",
                       ", ".join(type(f).__name__ for f in failures))
        return None
    moved = moved_slots(doc_plan(current), plan)
    seconds = time.monotonic() - started
    logger.info("published assignment generation {}: {} slots on {} nodes, {} moved, "
                "{} unassigned ({:.1f} ms)", generation, sum(len(s) for s in plan.nodes.values()),
                len(plan.nodes), moved, len(plan.unassigned), seconds * 1e3)
    if plan.unassigned:
        logger.warning("no eligible node for {} slot(s): {}", len(plan.unassigned),
                       ", ".join(s.key for s in plan.unassigned[:10]))
    return Published(doc, moved, seconds)
