"""Runtime changes to the task table and to nodes, kept in one versioned znode.

Precedence, in one rule: `app.toml` (of the current leader) seeds the tasks; an HTTP or CLI
change stored here overrides it field by field until it is reset. Tasks added over HTTP live
only here. The znode is persistent, so changes survive restarts and leader changes, and every
write is conditional on the version read, so concurrent edits never overwrite each other.

Layout of `<cluster>/overrides` (JSON):
    {"tasks": {"<name>": {"workerNum": 6, "paused": true} |
                         {"removed": true} |
                         {"added": true, "name": ..., "workName": ..., ...}},
     "drained": ["node-a", ...],
     "rebalance": 3}
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import BadVersionError, NodeExistsError, NoNodeError
from loguru import logger

from .codecs import (
    MAX_GENERATION,
    MUTABLE_FIELDS,
    Corrupt,
    decode_overrides,
    empty_overrides,
    lenient_task,
)
from .config import TaskConfig
from .errors import ConfigError, XConsumerError
from .strategies import is_container_task
from .zk import AHEAD_TIMEOUT, dumps

__all__ = ["MUTABLE_FIELDS", "EffectiveTask", "OverrideError", "OverrideStore",
           "VersionConflict", "effective_tasks", "from_assignment"]


MAX_PURGE = 1000  # removed tasks whose checkpoints the leader deletes after the publish


class OverrideError(XConsumerError):
    """A request the cluster cannot apply; `status` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class VersionConflict(OverrideError):
    def __init__(self, expected: int, actual: int) -> None:
        super().__init__(f"stale version: you sent {expected}, the current version is "
                         f"{actual}; re-read and retry", status=409)
        self.actual = actual


@dataclass(frozen=True)
class EffectiveTask:
    """A task as the leader will schedule it, with where its definition came from."""

    task: TaskConfig
    paused: bool
    source: str  # "app.toml" or "api"
    overridden: tuple[str, ...]

    @property
    def desired(self) -> int:
        return 0 if self.paused else self.task.worker_num

    def to_dict(self) -> dict[str, Any]:
        return {**self.task.to_dict(), "paused": self.paused, "source": self.source,
                "overridden": list(self.overridden), "desired": self.desired}


empty = empty_overrides


def normalize(doc: Any) -> dict[str, Any]:
    """A defensive copy of a decoded document: parts of an unexpected shape become empty.
    (Decoding already refused such documents; this keeps the pure edits total.)"""
    out = empty()
    if isinstance(doc, dict):
        if isinstance(doc.get("tasks"), dict):
            out["tasks"] = {str(k): v for k, v in doc["tasks"].items() if isinstance(v, dict)}
        if isinstance(doc.get("drained"), list):
            out["drained"] = sorted({str(n) for n in doc["drained"]})
        if isinstance(doc.get("rebalance"), int):
            out["rebalance"] = doc["rebalance"]
        purge = doc.get("purge")
        if isinstance(purge, list):
            out["purge"] = list(dict.fromkeys(str(n) for n in purge))
        refresh = doc.get("keys_refresh")
        if isinstance(refresh, dict):
            out["keys_refresh"] = {str(k): v for k, v in refresh.items()
                                   if isinstance(v, int) and not isinstance(v, bool)}
    return out


def from_assignment(doc: dict[str, Any] | None) -> list[EffectiveTask]:
    """The task table a published assignment was computed from.

    What a new leader schedules when the overrides znode is corrupt and it never decoded a
    valid version itself: the table in force before the corruption, not app.toml alone
    (which would silently undo every runtime change)."""
    paused = set((doc or {}).get("paused", []))
    out = []
    for raw in (doc or {}).get("tasks", []):
        task = lenient_task(raw)
        if task is not None:
            out.append(EffectiveTask(task, task.name in paused, "assignment", ()))
    return out


def overrides_from_assignment(doc: dict[str, Any] | None, seed: Sequence[TaskConfig]
                              ) -> dict[str, Any] | None:
    """The overrides that turn `seed` into the table `doc` (a published assignment) holds.

    What stands in for a corrupt overrides znode in a process that never decoded a valid
    version (a restarted leader, the CLI, another node's API): reads and writes then keep
    every runtime change in force (paused, scaled, added, removed tasks, drained nodes)
    instead of silently reverting to app.toml. None when there is no published table."""
    if not doc:
        return None
    table = {e.task.name: e for e in from_assignment(doc)}
    tasks: dict[str, dict[str, Any]] = {}
    seeded = {t.name: t for t in seed}
    for name, base in seeded.items():
        eff = table.get(name)
        if eff is None:
            tasks[name] = {"removed": True}
            continue
        now, before = eff.task.to_dict(), base.to_dict()
        entry = {k: now.get(k) for k in MUTABLE_FIELDS if now.get(k) != before.get(k)}
        if eff.paused:
            entry["paused"] = True
        if entry:
            tasks[name] = entry
    for name, eff in table.items():
        if name not in seeded:
            tasks[name] = {"added": True, **eff.task.to_dict(),
                           **({"paused": True} if eff.paused else {})}
    return {"tasks": tasks, "drained": sorted(doc.get("drained", [])), "rebalance": 0}


def effective_tasks(seed: Sequence[TaskConfig], doc: dict[str, Any]) -> list[EffectiveTask]:
    """app.toml tasks patched by overrides, then API-added tasks in name order.

    An override that no longer validates (hand-edited znode) is skipped rather than allowed
    to stop the leader; the API refuses to write such overrides in the first place.
    """
    overrides = normalize(doc)["tasks"]
    out: list[EffectiveTask] = []
    seeded = set()
    for task in seed:
        seeded.add(task.name)
        o = overrides.get(task.name, {})
        if o.get("removed"):
            continue
        changes = {k: o[k] for k in MUTABLE_FIELDS if k in o}
        try:
            patched = TaskConfig.from_dict({**task.to_dict(), **changes},
                                           where=f"override of task {task.name!r}")
        except ConfigError:
            patched, changes = task, {}
        out.append(EffectiveTask(patched, bool(o.get("paused")), "app.toml",
                                 tuple(sorted(changes) + (["paused"] if "paused" in o else []))))
    for name in sorted(overrides):
        o = overrides[name]
        if name in seeded or not o.get("added") or o.get("removed"):
            continue
        fields = {k: v for k, v in o.items() if k not in ("added", "paused", "removed")}
        try:
            task = TaskConfig.from_dict(fields, where=f"added task {name!r}")
        except ConfigError:
            continue
        out.append(EffectiveTask(task, bool(o.get("paused")), "api", ()))
    return out


# -- mutations: pure functions doc -> doc, raising OverrideError for bad requests ------------

def _find(doc: dict[str, Any], seed: Sequence[TaskConfig], name: str) -> EffectiveTask:
    for eff in effective_tasks(seed, doc):
        if eff.task.name == name:
            return eff
    raise OverrideError(f"unknown task {name!r}", status=404)


def _validated(eff: EffectiveTask, changes: dict[str, Any]) -> None:
    try:
        TaskConfig.from_dict({**eff.task.to_dict(), **changes}, where=f"task {eff.task.name!r}")
    except ConfigError as exc:
        raise OverrideError(str(exc)) from None


def check_total(doc: dict[str, Any], seed: Sequence[TaskConfig], max_slots: int | None
                ) -> dict[str, Any]:
    """Refuse an edit that would take the cluster over `max_slots` slots in all (paused
    tasks count: resuming them must not break the limit later)."""
    if max_slots is not None:
        total = sum(e.task.worker_num for e in effective_tasks(seed, doc))
        if total > max_slots:
            raise OverrideError(f"this would make {total} slots in all, over the cluster's "
                                f"limit of {max_slots} ([assignment] max_slots)")
    return doc


def update_task(doc: dict[str, Any], seed: Sequence[TaskConfig], name: str,
                changes: dict[str, Any], *, max_slots: int | None = None) -> dict[str, Any]:
    """Change fields (workerNum, paused, mode, ...) of an existing task."""
    eff = _find(doc, seed, name)
    unknown = sorted(set(changes) - set(MUTABLE_FIELDS) - {"paused"})
    if unknown:
        raise OverrideError(f"cannot change {', '.join(unknown)} of task {name!r} (changeable: "
                            f"{', '.join((*MUTABLE_FIELDS, 'paused'))})")
    if "paused" in changes and not isinstance(changes["paused"], bool):
        raise OverrideError(f"paused must be true or false, got {changes['paused']!r}")
    fields = {k: v for k, v in changes.items() if k != "paused"}
    _validated(eff, fields)
    doc = copy.deepcopy(normalize(doc))
    entry = doc["tasks"].setdefault(name, {})
    entry.update(changes)
    return check_total(doc, seed, max_slots)


def add_task(doc: dict[str, Any], seed: Sequence[TaskConfig], fields: dict[str, Any],
             handler_available: Callable[[str], bool], *, max_slots: int | None = None
             ) -> dict[str, Any]:
    try:
        task = TaskConfig.from_dict(fields, where="new task")
    except ConfigError as exc:
        raise OverrideError(str(exc)) from None
    if any(e.task.name == task.name for e in effective_tasks(seed, doc)):
        raise OverrideError(f"task {task.name!r} already exists", status=409)
    # A container task needs no handler (the leader deals it to nodes with an engine).
    if not is_container_task(task) and not handler_available(task.work_name):
        raise OverrideError(f"no live node has a handler for workName {task.work_name!r}")
    doc = copy.deepcopy(normalize(doc))
    if task.name in doc.get("purge", []):  # back before its checkpoints were purged: keep them
        doc["purge"] = [n for n in doc["purge"] if n != task.name]
    if any(t.name == task.name for t in seed):
        doc["tasks"][task.name] = {k: v for k, v in task.to_dict().items()
                                   if k in MUTABLE_FIELDS}  # re-adding a removed seed task
    else:
        doc["tasks"][task.name] = {"added": True, **task.to_dict()}
    return check_total(doc, seed, max_slots)


def remove_task(doc: dict[str, Any], seed: Sequence[TaskConfig], name: str) -> dict[str, Any]:
    """Removed on purpose, so its checkpoints go too: the leader deletes them once it has
    published a table without the task (`purge`), not before, while slots may still run."""
    _find(doc, seed, name)
    doc = copy.deepcopy(normalize(doc))
    # The most recent removals only: the list is never emptied by the leader (see
    # Node._purge_checkpoints), and a name re-added is taken off it.
    doc["purge"] = [n for n in doc.get("purge", []) if n != name][-(MAX_PURGE - 1):] + [name]
    if any(t.name == name for t in seed):
        doc["tasks"][name] = {"removed": True}
    else:
        doc["tasks"].pop(name, None)
    return doc


def reset_task(doc: dict[str, Any], seed: Sequence[TaskConfig], name: str) -> dict[str, Any]:
    """Back to app.toml: drop every override of a seeded task (a removed one comes back)."""
    if not any(t.name == name for t in seed):
        if name not in normalize(doc)["tasks"]:
            raise OverrideError(f"unknown task {name!r}", status=404)
        raise OverrideError(f"task {name!r} was added at runtime, not in app.toml: there is "
                            "nothing to reset it to; remove it instead", status=409)
    doc = copy.deepcopy(normalize(doc))
    doc["tasks"].pop(name, None)
    return doc


def set_drained(doc: dict[str, Any], node: str, drained: bool) -> dict[str, Any]:
    doc = copy.deepcopy(normalize(doc))
    names = set(doc["drained"])
    (names.add if drained else names.discard)(node)
    doc["drained"] = sorted(names)
    return doc


def _bumped(counter: Any) -> int:
    """A request counter's next value: the leader acts on a change, not on a size, so it
    wraps to 1 at the largest value the decoder accepts (a hand edit may have put it there;
    one more would have made the overrides corrupt)."""
    value = int(counter or 0)
    return value + 1 if value < MAX_GENERATION else 1


def request_rebalance(doc: dict[str, Any]) -> dict[str, Any]:
    doc = copy.deepcopy(normalize(doc))
    doc["rebalance"] = _bumped(doc.get("rebalance", 0))
    return doc


def request_keys_refresh(doc: dict[str, Any], seed: Sequence[TaskConfig], name: str
                         ) -> dict[str, Any]:
    """Ask the leader to call a keyed task's provider now (a counter per task, like
    `rebalance`: the leader acts on each change it sees)."""
    eff = _find(doc, seed, name)
    if not eff.task.keys:
        raise OverrideError(f"task {name!r} is not keyed (it has workerNum, not keys)",
                            status=409)
    doc = copy.deepcopy(normalize(doc))
    refresh = doc.setdefault("keys_refresh", {})
    refresh[name] = _bumped(refresh.get(name, 0))
    return doc


def keys_refresh(doc: dict[str, Any]) -> dict[str, int]:
    return dict(normalize(doc).get("keys_refresh", {}))


# -- storage --------------------------------------------------------------------------------

class OverrideStore:
    """Read-modify-write of the overrides znode with ZooKeeper's version as the guard.

    A corrupt znode is never read as "no overrides": `read()` keeps answering with the last
    valid document this store decoded (`corrupt` says why), so the runtime changes stay in
    force until an admin write repairs the znode.
    """

    def __init__(self, client: KazooClient, path: str,
                 fallback: Callable[[], dict[str, Any] | None] | None = None) -> None:
        self._client = client
        self.path = path
        self.last_valid: dict[str, Any] | None = None
        self.corrupt: Corrupt | None = None
        # What stands in for a corrupt znode when no valid version was ever decoded here:
        # the overrides behind the published assignment (see overrides_from_assignment).
        self.fallback = fallback

    def read(self, watch: Any = None, ahead: tuple[Any, Any] | None = None
             ) -> tuple[dict[str, Any], int]:
        """(document in force, version); version -1 when nothing was ever written. `ahead`:
        a get and an exists of the znode already sent with `watch` (the pair this read
        sends), whose answers stand for it."""
        for attempt in range(2):
            try:
                raw, stat = (ahead[0].get(timeout=AHEAD_TIMEOUT) if ahead is not None
                             else self._client.get(self.path, watch=watch))
                break
            except NoNodeError:
                made = (ahead[1].get(timeout=AHEAD_TIMEOUT) if ahead is not None
                        else self._client.exists(self.path, watch=watch)
                        if watch is not None else None)
                ahead = None
                if made is None or attempt:
                    # Its watch is set (the exists): a creation from now on wakes us. One
                    # made between the two requests was found by the exists and read again.
                    self.corrupt, self.last_valid = None, empty()
                    return empty(), -1
        doc = decode_overrides(raw, self.path)
        if isinstance(doc, Corrupt):
            self.corrupt = doc
            base = self.last_valid
            if base is None and self.fallback is not None:
                base = self.fallback()
            return copy.deepcopy(base or empty()), stat.version
        self.corrupt, self.last_valid = None, doc
        return copy.deepcopy(doc), stat.version

    def update(self, change: Callable[[dict[str, Any]], dict[str, Any]], *,
               expected: int | None = None, attempts: int = 10) -> tuple[dict[str, Any], int]:
        """Apply `change` to the current document and write it back conditionally.

        With `expected` (the version the caller based its edit on) a stale caller gets a
        VersionConflict. Without it the change is re-applied to fresh data on a race, which
        is safe because each change is a function of the current document. Over a corrupt
        znode the change applies to the last valid document known here (empty if none),
        which repairs the znode.
        """
        for _ in range(attempts):
            doc, version = self.read()
            if expected is not None and expected != version:
                raise VersionConflict(expected, version)
            repairing = self.corrupt
            new = change(doc)
            try:
                if version < 0:
                    self._client.create(self.path, dumps(new), makepath=True)
                    version = 0
                else:
                    version = self._client.set(self.path, dumps(new), version=version).version
            except (BadVersionError, NodeExistsError):
                if expected is not None:
                    raise VersionConflict(expected, self.read()[1]) from None
                continue
            if repairing is not None:
                logger.warning("{}; repaired by this write (based on {})", repairing,
                               "the last valid version" if self.last_valid else
                               "the published table" if self.fallback else "no overrides")
            self.corrupt, self.last_valid = None, new
            return new, version
        raise OverrideError("too many concurrent edits; retry", status=409)


def drained_names(doc: dict[str, Any]) -> Iterable[str]:
    return normalize(doc)["drained"]


def with_paused(tasks: Sequence[EffectiveTask]) -> list[TaskConfig]:
    """The task list the strategy sees: a paused task is scheduled with zero workers."""
    return [replace(e.task, worker_num=0) if e.paused else e.task for e in tasks]


def drain_node(client: KazooClient, paths: Any, store: OverrideStore, node: str,
               drained: bool, expected: int | None = None) -> dict[str, Any]:
    """Drain (or undrain) a node by name; draining needs a live node, undraining does not
    (a drained node that died must still be removable from the list)."""
    from .membership import read_members

    live = {m.name for m in read_members(client, paths)}
    if drained and node not in live:
        raise OverrideError(f"unknown node {node!r} (live: {', '.join(sorted(live)) or 'none'})",
                            status=404)
    doc, version = store.update(lambda d: set_drained(d, node, drained), expected=expected)
    return {"version": version, "node": node, "drained": drained,
            "drained_nodes": doc["drained"]}
