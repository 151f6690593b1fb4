"""A read-only picture of the cluster straight from ZooKeeper.

Shared by the admin API and `xconsumer status`, which must work without joining the cluster.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError

from .config import TaskConfig
from .leader import doc_plan, doc_unassigned, lenient_task, read_assignment
from .membership import dedupe_by_name, read_members
from .overrides import OverrideStore, effective_tasks
from .paths import Paths
from .zk import loads


def read_owners(client: KazooClient, paths: Paths) -> dict[str, dict[str, Any]]:
    """`"task/slot"` -> owner znode data (node, generation, ...) plus its fence (czxid)."""
    owners: dict[str, dict[str, Any]] = {}
    try:
        tasks = client.get_children(paths.owners)
    except NoNodeError:
        return owners
    for task in sorted(tasks):
        try:
            slots = client.get_children(paths.owner_task(task))
        except NoNodeError:
            continue
        for slot in sorted(slots, key=lambda s: (len(s), s)):
            try:
                raw, stat = client.get(paths.owner(task, int(slot)))
                data = loads(raw, where=paths.owner(task, int(slot))) or {}
            except (NoNodeError, ValueError):
                continue
            data["fence"] = stat.czxid
            owners[f"{task}/{slot}"] = data
    return owners


def read_cluster(client: KazooClient, paths: Paths, cluster: str) -> dict[str, Any]:
    members = dedupe_by_name(read_members(client, paths))
    doc, _ = read_assignment(client, paths)
    leader = members[0].name if members else None
    assignment = {n: [{"task": s.task, "slot": s.index} for s in slots]
                  for n, slots in doc_plan(doc).items()}
    owners = read_owners(client, paths)
    drained = set((doc or {}).get("drained", []))
    nodes = []
    for rec in members:
        nodes.append({
            "id": rec.name, "seq": rec.seq, "znode": rec.child, "leader": rec.name == leader,
            "state": "draining" if rec.name in drained else rec.state,
            "admin_url": rec.data.get("admin_url"),
            "host": rec.data.get("host"), "pid": rec.data.get("pid"),
            "started_at": rec.data.get("started_at"), "handlers": rec.data.get("handlers"),
            "slots": len(assignment.get(rec.name, [])),
        })
    return {
        "cluster": cluster,
        "leader": leader,
        "generation": (doc or {}).get("generation"),
        "strategy": (doc or {}).get("strategy"),
        "nodes": nodes,
        "tasks": task_counts(doc, owners),
        "assignment": assignment,
        "unassigned": [{"task": s.task, "slot": s.index} for s in doc_unassigned(doc)],
        "owners": {k: v.get("node") for k, v in owners.items()},
        "fences": {k: v.get("fence") for k, v in owners.items()},
        "done": read_done(client, paths),
    }


def read_done(client: KazooClient, paths: Paths) -> list[str]:
    """`"task/slot"` of every once-mode slot that has completed."""
    done = []
    try:
        tasks = client.get_children(paths.done)
    except NoNodeError:
        return done
    for task in sorted(tasks):
        try:
            slots = client.get_children(f"{paths.done}/{task}")
        except NoNodeError:
            continue
        done += [f"{task}/{s}" for s in sorted(slots, key=lambda s: (len(s), s))]
    return done


def task_counts(doc: dict[str, Any] | None, owners: dict[str, Any]) -> list[dict[str, Any]]:
    """Each published task with desired (0 when paused), assigned and running slot counts."""
    doc = doc or {}
    paused = set(doc.get("paused", []))
    assigned: dict[str, int] = {}
    for slots in doc_plan(doc).values():
        for slot in slots:
            assigned[slot.task] = assigned.get(slot.task, 0) + 1
    running: dict[str, int] = {}
    for key in owners:
        task = key.rsplit("/", 1)[0]
        running[task] = running.get(task, 0) + 1
    out = []
    for task in doc.get("tasks", []):
        name = task["name"]
        out.append({**task, "paused": name in paused,
                    "desired": 0 if name in paused else task.get("workerNum", 0),
                    "assigned": assigned.get(name, 0), "running": running.get(name, 0)})
    return out


def seed_from_doc(doc: dict[str, Any] | None, fallback: Sequence[TaskConfig]) -> list[TaskConfig]:
    """The leader's app.toml tasks as published with the assignment, else `fallback`, so a
    node or CLI with an outdated app.toml still edits the table the cluster really runs."""
    seed = (doc or {}).get("seed")
    if isinstance(seed, list):
        tasks = [lenient_task(t) for t in seed]
        if all(t is not None for t in tasks):
            return [t for t in tasks if t is not None]
    return list(fallback)


def tasks_table(client: KazooClient, paths: Paths, published: dict[str, Any] | None,
                seed: Sequence[TaskConfig]) -> dict[str, Any]:
    """Effective tasks (app.toml + overrides) with assigned and running counts, and the
    overrides version a conditional edit must quote."""
    doc, version = OverrideStore(client, paths.overrides).read()
    running: dict[str, int] = {}
    for key in read_owners(client, paths):
        task = key.rsplit("/", 1)[0]
        running[task] = running.get(task, 0) + 1
    assigned: dict[str, int] = {}
    for slots in doc_plan(published).values():
        for slot in slots:
            assigned[slot.task] = assigned.get(slot.task, 0) + 1
    tasks = []
    for eff in effective_tasks(seed, doc):
        item = eff.to_dict()
        item["assigned"] = assigned.get(eff.task.name, 0)
        item["running"] = running.get(eff.task.name, 0)
        tasks.append(item)
    return {"version": version, "tasks": tasks}
