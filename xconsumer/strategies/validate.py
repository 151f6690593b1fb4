"""Is a plan one the leader may publish? Checked for every plan a user strategy returns.

The built-in strategies are proven by their property tests; a user strategy is code the
leader has never seen, and a plan that gives a slot to two nodes, to a node that left or
that lacks the handler would break the guarantees every node relies on (a slot runs at most
once, only where it can run). So its plan is checked in full before it is published, and
refused as a whole (the leader then falls back to `round_robin`, see `guard`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .base import Member, Plan, Slot, TaskLike, _limit, dealing_order, eligible, is_container_task

# Problems listed in full; beyond this only their count (a plan with every slot wrong would
# otherwise make an error message as long as the plan).
MAX_LISTED = 10


def _is_slot(value: Any) -> bool:
    return (isinstance(value, Slot) and isinstance(value.task, str)
            and isinstance(value.index, int) and not isinstance(value.index, bool))


def _slots(value: Any, where: str, problems: list[str]) -> list[Slot]:
    """The well-typed slots of one list; a problem for the list or each bad entry."""
    if isinstance(value, Slot) or not isinstance(value, list | tuple):  # a Slot is a tuple
        problems.append(f"{where} must be a tuple of Slot, got {type(value).__name__}")
        return []
    good = []
    for item in value:
        if _is_slot(item):
            good.append(item)
        else:
            problems.append(f"{where} holds {item!r}, not a Slot(task: str, index: int)")
    return good


def validate_plan(plan: Any, tasks: Sequence[TaskLike], members: Sequence[Member],
                  leader: str | None, leader_works: bool = True) -> list[str]:
    """Every reason `plan` may not be published (empty: it may).

    A valid plan is a `Plan` whose `nodes` maps names of live members that take work (the
    leader only with `leader_works`) to tuples of `Slot`, and whose `unassigned` is a tuple
    of `Slot`, such that: every slot of the task table (`task/0` .. `task/workerNum-1`) is
    listed exactly once, either under a node or as unassigned; no other slot is listed; a
    node only gets slots of tasks it may run (`eligible`: it has the handler, or a Docker
    engine for a container task, its `[node] works` allows it, it is not draining); and no
    node gets more slots of a task than the task's `max_per_node`. A strategy may leave
    slots unassigned (it may have its reasons); the leader logs them as it does for the
    built-ins.
    """
    if not isinstance(plan, Plan):
        return [f"a strategy must return a Plan, got {type(plan).__name__}"]
    problems: list[str] = []
    if not isinstance(plan.nodes, Mapping):
        return [f"Plan.nodes must be a mapping of node name to slots, "
                f"got {type(plan.nodes).__name__}"]
    working = {m.name: m for m in dealing_order(members, leader, leader_works=leader_works)}
    known = {m.name for m in members}
    table = {t.name: t for t in tasks}
    seen: dict[Slot, str] = {}

    def place(slot: Slot, where: str) -> bool:
        task = table.get(slot.task)
        if task is None:
            problems.append(f"{slot.key} ({where}) is not a slot of any task")
            return False
        if not 0 <= slot.index < task.worker_num:
            problems.append(f"{slot.key} ({where}) is beyond workerNum {task.worker_num}")
            return False
        if slot in seen:
            problems.append(f"{slot.key} is listed twice: {seen[slot]} and {where}")
            return False
        seen[slot] = where
        return True

    for name, value in plan.nodes.items():
        if not isinstance(name, str):
            problems.append(f"node name {name!r} is not a string")
            continue
        slots = _slots(value, f"node {name}", problems)
        member = working.get(name)
        if member is None and slots:
            why = ("is the leader, which takes no work ([node] leader_works = false)"
                   if name in known else "is not a live member")
            problems.append(f"node {name} {why} but is given {len(slots)} slot(s)")
            continue
        per_task: dict[str, int] = {}
        for slot in slots:
            if not place(slot, f"node {name}"):
                continue
            task = table[slot.task]
            if member is not None and not eligible(member, task):
                why = ("is draining" if member.draining else "has no Docker engine"
                       if is_container_task(task) and not member.docker else
                       f"may not run workName {task.work_name!r}")
                problems.append(f"{slot.key} is given to {name}, which {why}")
            per_task[slot.task] = per_task.get(slot.task, 0) + 1
        for task_name, count in per_task.items():
            limit = _limit(table[task_name])
            if limit is not None and count > limit:
                problems.append(f"node {name} is given {count} slots of {task_name}, over its "
                                f"max_per_node {limit}")
    for slot in _slots(plan.unassigned, "Plan.unassigned", problems):
        place(slot, "unassigned")
    missing = [Slot(t.name, i) for t in tasks for i in range(t.worker_num)
               if Slot(t.name, i) not in seen]
    if missing:
        shown = ", ".join(s.key for s in missing[:MAX_LISTED])
        more = f" and {len(missing) - MAX_LISTED} more" if len(missing) > MAX_LISTED else ""
        problems.append(f"{len(missing)} slot(s) neither placed nor unassigned: {shown}{more}")
    return problems


def summary(problems: Sequence[str]) -> str:
    """One line for a log or an event: the first problems and how many there are."""
    head = "; ".join(problems[:3])
    return head if len(problems) <= 3 else f"{head} (and {len(problems) - 3} more problems)"
