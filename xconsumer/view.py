"""A read-only picture of the cluster straight from ZooKeeper.

Shared by the admin API and `xconsumer status`, which must work without joining the cluster.
Every znode is decoded through its codec: a corrupt one is named in the view's `corrupt`
list and the rest of the picture is still answered, never a 500 or a traceback.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import islice
from typing import Any, TypeVar

from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError

from .codecs import Corrupt, decode_marker, decode_owner, slot_index
from .config import TaskConfig
from .leader import (
    doc_plan,
    doc_tasks,
    doc_unassigned,
    lenient_task,
    read_assignment,
    valid_doc,
)
from .membership import dedupe_by_name, read_members
from .overrides import OverrideStore, effective_tasks, overrides_from_assignment
from .paths import Paths, checkpoint_slot
from .zk import AHEAD_TIMEOUT

_T = TypeVar("_T")
VIEW_TIMEOUT = AHEAD_TIMEOUT  # each answer of a view's reads (a 503 past it)
# A view's reads in flight at once: enough to hide the round trip, few enough that a
# request the node sends on the same session meanwhile (its lease's renewal, a slot's
# checkpoint commit) waits behind at most this many, and that the pending answers of a
# 100,000-slot view do not fill memory. Found in review: with every read of a view sent at
# once, a lease round trip took 0.4 s (10,000 slots) to 2.7 s (100,000) behind two views.
VIEW_WINDOW = 64


def _windowed(items: Iterable[_T], send: Callable[[_T], Any]) -> Iterator[tuple[_T, Any]]:
    """(item, its pending answer) in order, sent VIEW_WINDOW at a time: the next window
    goes out once the caller has taken every answer of this one."""
    pending = iter(items)
    while chunk := [(item, send(item)) for item in islice(pending, VIEW_WINDOW)]:
        yield from chunk


def _listed(client: KazooClient, parent: str) -> list[tuple[str, str, str]]:
    """(task, child, path) of every child of every task under `parent` (owners/, done/), in
    task order, then children by index; the listings pipelined like the reads."""
    try:
        tasks = client.get_children(parent)
    except NoNodeError:
        return []
    found = []
    for task, listing in _windowed(sorted(tasks), lambda t: client.get_children_async(
            f"{parent}/{t}")):
        try:
            slots = listing.get(timeout=VIEW_TIMEOUT)
        except NoNodeError:
            continue
        found += [(task, slot, f"{parent}/{task}/{slot}")
                  for slot in sorted(slots, key=lambda s: (len(s), s))]
    return found


def read_owners(client: KazooClient, paths: Paths, corrupt: list[Corrupt] | None = None,
                sessions: dict[int, str] | None = None) -> dict[str, dict[str, Any]]:
    """`"task/slot"` -> owner znode data (node, generation, ...) plus its fence (czxid).

    With `sessions` (member session -> node name) the owner is the member whose session
    holds the ephemeral znode, which no hand edit can change; the data only adds detail. An
    owner znode whose data is corrupt is reported in `corrupt` (and its node still found by
    session); one that is persistent (made by hand: it blocks its slot until deleted) is
    listed with `node` None.

    The reads are pipelined (VIEW_WINDOW in flight): the dashboard asks for this every
    second, and a round trip per slot made one view of 10,000 slots take 3.9 s
    (bench.views)."""
    owners: dict[str, dict[str, Any]] = {}
    found = _listed(client, paths.owners)
    for (task, slot, path), read in _windowed(found, lambda f: client.get_async(f[2])):
        try:
            raw, stat = read.get(timeout=VIEW_TIMEOUT)
        except NoNodeError:
            continue
        index = slot_index(slot)
        keyed = index is None and isinstance(checkpoint_slot(slot), str)
        data = decode_owner(raw, path) if index is not None or keyed else Corrupt(
            "owner", path, "not a slot index")
        if keyed and not isinstance(data, Corrupt):
            # A keyed slot's owner znode is named by its key; its index is in its data.
            index = data.get("slot")
            if index is None:
                data = Corrupt("owner", path, "a keyed owner znode without its slot")
        if not isinstance(data, Corrupt) and stat.ephemeralOwner == 0:
            data = Corrupt("owner", path, "persistent (made by hand?): it blocks the slot "
                           "until deleted")
        if isinstance(data, Corrupt):
            if corrupt is not None:
                corrupt.append(data)
            if index is None or keyed:
                continue
            data = {"node": None, "corrupt": data.error}
        if sessions is not None and stat.ephemeralOwner:
            data["node"] = sessions.get(stat.ephemeralOwner)
        data["fence"] = stat.czxid
        owners[f"{task}/{index}"] = data
    return owners


def read_cluster(client: KazooClient, paths: Paths, cluster: str) -> dict[str, Any]:
    corrupt: list[Corrupt] = []
    candidates = read_members(client, paths, corrupt=corrupt)
    members = dedupe_by_name(candidates)
    published, _ = read_assignment(client, paths)
    if isinstance(published, Corrupt):
        corrupt.append(published)
    doc = valid_doc(published)
    leader_rec = candidates[0] if candidates else None
    leader = leader_rec.name if leader_rec is not None else None
    assignment = {n: [{"task": s.task, "slot": s.index} for s in slots]
                  for n, slots in doc_plan(doc).items()}
    owners = read_owners(client, paths, corrupt, {m.session: m.name for m in members})
    drained = set((doc or {}).get("drained", []))
    nodes = []
    for rec in members:
        nodes.append({
            "id": rec.name, "seq": rec.seq, "znode": rec.child, "leader": rec is leader_rec,
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
        "done": read_done(client, paths, corrupt),
        "corrupt": [c.to_dict() for c in corrupt],
    }


def read_done(client: KazooClient, paths: Paths, corrupt: list[Corrupt] | None = None
              ) -> list[str]:
    """`"task/slot"` of every once-mode slot that has completed; with `corrupt`, each
    marker's data is read (pipelined, as in read_owners) to report what is corrupt."""
    found = []
    for task, slot, path in _listed(client, paths.done):
        if slot_index(slot) is not None:
            found.append((task, slot, path))
        elif corrupt is not None:
            corrupt.append(Corrupt("done", path, "not a slot index"))
    if corrupt is None:
        return [f"{task}/{slot_index(slot)}" for task, slot, _ in found]
    done = []
    for (task, slot, path), read in _windowed(found, lambda f: client.get_async(f[2])):
        try:
            data = decode_marker("done", read.get(timeout=VIEW_TIMEOUT)[0], path)
        except NoNodeError:
            continue
        if isinstance(data, Corrupt):
            corrupt.append(data)
        done.append(f"{task}/{slot_index(slot)}")
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
    for name, task in doc_tasks(doc).items():
        out.append({**task.to_dict(), "paused": name in paused,
                    "desired": 0 if name in paused else task.worker_num,
                    "assigned": assigned.get(name, 0), "running": running.get(name, 0),
                    **_keyed_fields(doc, task, name in paused)})
    return out


def _keyed_fields(doc: dict[str, Any] | None, task: TaskConfig,
                  paused: bool = False) -> dict[str, Any]:
    """A keyed task's slot count and keys as last published (its table entry has no
    workerNum of its own: the provider decides it)."""
    if not task.keys:
        return {}
    keys = list((doc or {}).get("keys", {}).get(task.name, []))
    return {"workerNum": len(keys), "desired": 0 if paused else len(keys), "slot_keys": keys}


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
                seed: Sequence[TaskConfig], store: OverrideStore | None = None
                ) -> dict[str, Any]:
    """Effective tasks (app.toml + overrides) with assigned and running counts, and the
    overrides version a conditional edit must quote.

    With corrupt overrides the table in force is shown (the last valid overrides this
    process decoded, else those behind the published table) and `corrupt` names the znode."""
    store = store or OverrideStore(
        client, paths.overrides, fallback=lambda: overrides_from_assignment(published, seed))
    doc, version = store.read()
    corrupt: list[Corrupt] = []
    running: dict[str, int] = {}
    for key in read_owners(client, paths, corrupt):
        task = key.rsplit("/", 1)[0]
        running[task] = running.get(task, 0) + 1
    assigned: dict[str, int] = {}
    for slots in doc_plan(published).values():
        for slot in slots:
            assigned[slot.task] = assigned.get(slot.task, 0) + 1
    if store.corrupt is not None:
        corrupt.insert(0, store.corrupt)
    tasks = []
    for eff in effective_tasks(seed, doc):
        item = eff.to_dict()
        item["assigned"] = assigned.get(eff.task.name, 0)
        item["running"] = running.get(eff.task.name, 0)
        item.update(_keyed_fields(published, eff.task, eff.paused))
        tasks.append(item)
    return {"version": version, "tasks": tasks, "corrupt": [c.to_dict() for c in corrupt]}
