"""One codec per znode kind: bytes from ZooKeeper in, a checked value or a `Corrupt` out.

Every byte read from ZooKeeper is untrusted: an older or newer xconsumer, a hand edit with
`zkCli.sh` or a bug may have written it. Each kind (member, assignment, plan, overrides,
owner, checkpoint, done, left) is decoded here, in one place, by a schema check that either returns
a value whose shape the rest of the package can rely on or a `Corrupt` naming the znode and
what is wrong. No decoder raises on bad data, so no loop (the controller, a slot thread, an
HTTP view) can be stopped by it; what to *do* with a `Corrupt` (repair, keep the last valid state,
report) is the caller's decision, never "treat it as empty".

Unknown keys are tolerated everywhere (a newer version may add some); a known key of the
wrong type is corruption.
"""

from __future__ import annotations

import json
import math
import re
import zlib
from dataclasses import dataclass, replace
from typing import Any

from loguru import logger

from .assignment import Slot
from .config import (
    MAX_JSON_DEPTH,
    MAX_WORKER_NUM,
    TASK_KEYS,
    TaskConfig,
    clamp_weight,
    nested_deeper_than,
)
from .errors import ConfigError
from .paths import slot_index  # noqa: F401 - re-exported: the views import it from here
from .strategies.base import slots_of

# Mirrors config's node-name rule: a member id is a node name.
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
MAX_GENERATION = (1 << 63) - 1  # a Java long: what any ZooKeeper-side tool can read
_MAGIC = b"XCZ1"
MAX_INFLATED = 64 * 1024 * 1024  # a zlib bomb in a znode must not exhaust a node's memory


@dataclass(frozen=True)
class Corrupt:
    """A znode whose data does not have the shape its kind requires."""

    kind: str  # member, assignment, plan, overrides, owner, checkpoint, done, left
    path: str
    error: str

    def __str__(self) -> str:
        return f"{self.kind} znode {self.path} is corrupt: {self.error}"

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "znode": self.path, "error": self.error}


class _Bad(Exception):
    """Internal: raised by the field checks, turned into a `Corrupt` by `_decode`."""


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_json(raw: bytes | None) -> Any:
    """JSON (zlib-compressed behind a magic prefix when large); _Bad when it is not. NaN and
    Infinity are refused (Python's json reads them, a strict reader of ours would not:
    served by the API, they made a response no browser parses)."""
    if not raw:
        raise _Bad("empty")
    try:
        if raw.startswith(_MAGIC):
            inflater = zlib.decompressobj()
            raw = inflater.decompress(raw[len(_MAGIC):], MAX_INFLATED)
            if inflater.unconsumed_tail:
                raise _Bad(f"compressed data inflates past {MAX_INFLATED} bytes")
        return json.loads(raw.decode(), parse_constant=_no_constant)
    # ValueError covers JSONDecodeError and also Python's limit on integer digits (4300),
    # which json.loads raises as a plain ValueError.
    except (ValueError, zlib.error, RecursionError) as exc:
        raise _Bad(f"not valid JSON ({type(exc).__name__}: {str(exc)[:80]})") from None


def _show(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def _int(value: Any, key: str, *, lo: int = 0, hi: int = MAX_GENERATION) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise _Bad(f"{key} must be an integer {lo}..{hi}, got {_show(value)}")
    return value


def _number(value: Any, key: str) -> float:
    if (not isinstance(value, int | float) or isinstance(value, bool)
            or not math.isfinite(float(value))):
        raise _Bad(f"{key} must be a finite number, got {_show(value)}")
    return float(value)


def _str(value: Any, key: str, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise _Bad(f"{key} must be a string, got {_show(value)}")
    return value


def _strings(value: Any, key: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _Bad(f"{key} must be a list of strings, got {_show(value)}")
    return list(value)


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Bad(f"{what} must be a JSON object, got {_show(value)}")
    return value


def _decode(kind: str, path: str, raw: bytes | None, check: Any,
            checked: frozenset[str] = frozenset()) -> Any:
    """`checked`: top-level keys whose shape `check` verifies to the leaf (the assignment's
    slot lists, the bulk of a large document), left out of the depth walk."""
    try:
        doc = parse_json(raw)
        if nested_deeper_than({k: v for k, v in doc.items() if k not in checked}
                              if checked and isinstance(doc, dict) else doc, MAX_JSON_DEPTH):
            raise _Bad(f"nested deeper than {MAX_JSON_DEPTH} levels")
        return check(doc)
    except _Bad as exc:
        return Corrupt(kind, path, str(exc))
    except RecursionError:
        return Corrupt(kind, path, "nested too deeply")


# -- member: nodes/n-<seq> ---------------------------------------------------------------------
def _member(doc: Any) -> dict[str, Any]:
    doc = _object(doc, "member data")
    name = doc.get("id")
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise _Bad(f"id must be a node name, got {_show(name)}")
    out = dict(doc)
    out["handlers"] = _strings(doc.get("handlers", []), "handlers")
    works = doc.get("works")
    out["works"] = None if works is None else _strings(works, "works")
    out["weight"] = _number(doc.get("weight", 1.0), "weight")
    if out["weight"] <= 0:
        raise _Bad(f"weight must be > 0, got {_show(doc.get('weight'))}")
    # Out of config.MIN_WEIGHT..MAX_WEIGHT counts as the nearest bound (1e-309 against 1
    # overflowed the strategies' arithmetic): clamped, not corrupt, so a node of an older
    # version, whose app.toml could give any weight above 0, still gets slots and leads if
    # it is first.
    out["weight"] = clamp_weight(out["weight"])
    if doc.get("state", "active") not in ("active", "draining"):
        raise _Bad(f"state must be 'active' or 'draining', got {_show(doc.get('state'))}")
    lw = doc.get("leader_works", True)
    if not isinstance(lw, bool):
        raise _Bad(f"leader_works must be true or false, got {_show(lw)}")
    if not isinstance(doc.get("docker", False), bool):  # absent: an older node, no engine
        raise _Bad(f"docker must be true or false, got {_show(doc.get('docker'))}")
    for key in ("host", "admin_url", "version"):
        _str(doc.get(key), key, optional=True)
    if doc.get("pid") is not None:
        _int(doc["pid"], "pid", hi=1 << 32)
    if doc.get("started_at") is not None:
        _number(doc["started_at"], "started_at")
    return out


def decode_member(raw: bytes | None, path: str) -> dict[str, Any] | Corrupt:
    return _decode("member", path, raw, _member)


# -- assignment ----------------------------------------------------------------------------------
def _groups(value: Any, key: str) -> dict[str, list[int]]:
    """`{task: [index, ...]}`, the published form of one node's slots."""
    value = _object(value, key)
    out = {}
    for task, indices in value.items():
        if not isinstance(indices, list):
            raise _Bad(f"{key}.{task} must be a list of slot indices, got {_show(indices)}")
        # The fast path checks 100,000 indices in C; the slow one names the bad element.
        if indices and not (all(type(i) is int for i in indices)
                            and min(indices) >= 0 and max(indices) <= MAX_WORKER_NUM):
            indices = [_int(i, f"{key}.{task}[]", hi=MAX_WORKER_NUM) for i in indices]
        out[task] = list(indices)
    return out


_KNOWN_TASK_KEYS = frozenset(TASK_KEYS)  # every key, optional ones included


def lenient_task(raw: Any, where: str = "assignment znode") -> TaskConfig | None:
    """A task from a published document, tolerating keys a newer leader may add (rolling
    upgrade); a task that still does not parse is skipped, never allowed to stop a node
    from applying the rest of the assignment (revocations above all)."""
    if not isinstance(raw, dict):
        return None
    error: ConfigError | None = None
    for candidate in (raw, {k: v for k, v in raw.items() if k in _KNOWN_TASK_KEYS}):
        try:
            return TaskConfig.from_dict(candidate, where=where)
        except ConfigError as exc:
            error = exc
    logger.warning("skipping a task of the published assignment: {}", error)
    return None


def _keys_list(value: Any, key: str) -> list[str]:
    keys = _strings(value, key)
    if len(set(keys)) != len(keys):
        raise _Bad(f"{key} lists a key twice")
    return keys


def _name_the_double(nodes: dict[str, dict[str, list[int]]], task: str, node: str) -> None:
    """Raise the message for a slot of `task` given twice, the second time on `node`."""
    owner: dict[int, str] = {}
    for name, groups in nodes.items():
        for i in groups.get(task, ()):
            if i in owner:
                raise _Bad(f"slot {task}/{i} is given to both {owner[i]} and {name}")
            owner[i] = name
    raise _Bad(f"a slot of {task} is given twice (on {node})")


def _generational(doc: Any, what: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """An object with a generation (the assignment, a plan): (the input, a copy to fill)."""
    doc = _object(doc, what)
    if "generation" not in doc:
        raise _Bad("generation is missing")
    out = dict(doc)
    out["generation"] = _int(doc["generation"], "generation", lo=1)
    return doc, out


def _assignment(doc: Any) -> dict[str, Any]:
    doc, out = _generational(doc, "the assignment")
    out["nodes"] = {_str(n, "nodes key") or "": _groups(g, f"nodes.{n}")
                    for n, g in _object(doc.get("nodes", {}), "nodes").items()}
    out["unassigned"] = _groups(doc.get("unassigned", {}), "unassigned")
    seen: dict[str, set[int]] = {}  # task -> indices given so far (sets: checked in C)
    for node, groups in out["nodes"].items():
        for task, indices in groups.items():
            given = seen.setdefault(task, set())
            fresh = set(indices)
            if len(fresh) != len(indices) or not given.isdisjoint(fresh):
                _name_the_double(out["nodes"], task, node)
            given |= fresh
    for key in ("tasks", "seed"):
        if key in doc and not isinstance(doc[key], list):
            raise _Bad(f"{key} must be a list of tasks, got {_show(doc[key])}")
        if key in doc and not all(isinstance(t, dict) for t in doc[key]):
            raise _Bad(f"{key} must be a list of task objects")
    out.setdefault("tasks", [])
    for key in ("paused", "drained", "members"):
        out[key] = _strings(doc.get(key, []), key)
    for key in ("leader", "strategy"):
        _str(doc.get(key), key, optional=True)
    if "keys" in doc:  # only when published: a decoded document compares equal to its source
        out["keys"] = {_str(t, "keys key") or "": _keys_list(k, f"keys.{t}")
                       for t, k in _object(doc["keys"], "keys").items()}
    if doc.get("published_at") is not None:
        _number(doc["published_at"], "published_at")
    return out


def decode_assignment(raw: bytes | None, path: str) -> dict[str, Any] | Corrupt:
    """The published assignment with every field of a known shape, or Corrupt."""
    return _decode("assignment", path, raw, _assignment,
                   frozenset(("nodes", "unassigned", "keys")))


def doc_plan(doc: dict[str, Any] | None) -> dict[str, list[Slot]]:
    """node -> slots of a decoded assignment."""
    if not doc:
        return {}
    return {n: [s for t, idx in g.items() for s in slots_of(t, idx)] if len(g) > 1
            else slots_of(*next(iter(g.items()))) if g else []
            for n, g in doc.get("nodes", {}).items()}


def doc_unassigned(doc: dict[str, Any] | None) -> list[Slot]:
    return [Slot(t, i) for t, idx in (doc or {}).get("unassigned", {}).items() for i in idx]


def doc_tasks(doc: dict[str, Any] | None) -> dict[str, TaskConfig]:
    """name -> task definition of a decoded assignment (tasks that do not parse skipped); a
    keyed task's workerNum is the number of its published keys."""
    out = {}
    keys = (doc or {}).get("keys", {})
    for raw in (doc or {}).get("tasks", []):
        task = lenient_task(raw)
        if task is not None:
            if task.keys:
                task = replace(task, worker_num=len(keys.get(task.name, ())))
            out[task.name] = task
    return out


def plan_slots(doc: dict[str, Any] | None, node: str) -> dict[Slot, TaskConfig]:
    """What `doc` asks `node` to run, with each slot's task definition; a keyed slot's
    carries its key (`slot_key`), so a slot whose key changed is restarted."""
    if not doc:
        return {}
    tasks = doc_tasks(doc)
    keys = doc.get("keys", {})
    out = {}
    for slot in doc_plan(doc).get(node, []):
        task = tasks.get(slot.task)
        if task is None:
            continue
        if task.keys:
            listed = keys.get(slot.task, ())
            if slot.index >= len(listed):
                continue  # no key for it: a document in which the two disagree
            task = replace(task, slot_key=listed[slot.index])
        out[slot] = task
    return out


# -- plan: plans/<node> ---------------------------------------------------------------------------
def _plan(doc: Any) -> dict[str, Any]:
    doc, out = _generational(doc, "the plan")
    for key in ("leader", "node"):
        if not isinstance(doc.get(key), str):
            raise _Bad(f"{key} must be a string, got {_show(doc.get(key))}")
    name = doc.get("leader_name")  # absent from an older xconsumer's plans
    if name is not None and not (isinstance(name, str) and _NAME_RE.fullmatch(name)):
        raise _Bad(f"leader_name must be a node name, got {_show(name)}")
    out["leader_name"] = name
    out["slots"] = _groups(doc.get("slots", {}), "slots")
    for task, indices in out["slots"].items():
        if len(set(indices)) != len(indices):
            raise _Bad(f"slots.{task} lists a slot twice")
    tasks = doc.get("tasks", [])
    if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
        raise _Bad(f"tasks must be a list of task objects, got {_show(tasks)}")
    out["tasks"] = list(tasks)
    keys: dict[str, dict[int, str]] = {}
    for task, by_index in _object(doc.get("keys", {}), "keys").items():
        mapped = {}
        for index, key in _object(by_index, f"keys.{task}").items():
            i = slot_index(index)
            if i is None or not isinstance(key, str):
                raise _Bad(f"keys.{task} must map slot indices to keys, got "
                           f"{_show({index: key})}")
            mapped[i] = key
        keys[task] = mapped
    out["keys"] = keys
    out["key_counts"] = {_str(t, "key_counts key") or "": _int(n, f"key_counts.{t}",
                                                               hi=MAX_WORKER_NUM)
                         for t, n in _object(doc.get("key_counts", {}), "key_counts").items()}
    return out


def decode_plan(raw: bytes | None, path: str) -> dict[str, Any] | Corrupt:
    """One node's share of the assignment (see plans.py), or Corrupt."""
    return _decode("plan", path, raw, _plan)


def plan_desired(plan: dict[str, Any]) -> dict[Slot, TaskConfig]:
    """What a decoded plan asks its node to run: the same mapping `plan_slots` gives for
    the assignment the plan was cut from (tasks that do not parse, and keyed slots
    without their key, skipped the same way)."""
    tasks = {}
    for raw in plan["tasks"]:
        task = lenient_task(raw, where="plan znode")
        if task is not None:
            tasks[task.name] = task
    out = {}
    for name, indices in plan["slots"].items():
        task = tasks.get(name)
        if task is None:
            continue
        keys = plan["keys"].get(name, {})
        if task.keys:
            task = replace(task, worker_num=plan["key_counts"].get(name, 0))
        for i in indices:
            if task.keys:
                if i not in keys:
                    continue
                out[Slot(name, i)] = replace(task, slot_key=keys[i])
            else:
                out[Slot(name, i)] = task
    return out


# -- overrides -------------------------------------------------------------------------------------
# Fields an override may change on an app.toml task (the identity fields cannot change).
MUTABLE_FIELDS = ("workerNum", "mode", "interval", "stop_timeout", "retry_backoff",
                  "retry_backoff_max", "max_per_node", "isolation", "run_timeout",
                  "breaker_failures", "breaker_cooldown", "image", "command", "env",
                  "params", "keys_interval")
_FLAGS = ("paused", "removed", "added")


def empty_overrides() -> dict[str, Any]:
    return {"tasks": {}, "drained": [], "rebalance": 0}


def _override_entry(name: str, entry: Any) -> dict[str, Any]:
    entry = _object(entry, f"tasks.{name}")
    for flag in _FLAGS:
        if flag in entry and not isinstance(entry[flag], bool):
            raise _Bad(f"tasks.{name}.{flag} must be true or false, got {_show(entry[flag])}")
    try:
        if entry.get("added"):
            fields = {k: v for k, v in entry.items() if k not in _FLAGS}
            task = TaskConfig.from_dict(fields, where=f"tasks.{name}")
            if task.name != name:
                raise _Bad(f"tasks.{name} holds a task named {task.name!r}")
        else:
            changes = {k: entry[k] for k in MUTABLE_FIELDS if k in entry}
            # Checked on a stand-in task that accepts whatever a real task may be given
            # (the writer checked the change against the real one): a container task if
            # the change has container fields (image, command, env or isolation
            # "container": a keyed task has none), else keyed unless workerNum changes, so
            # params keyed by slot key (a keyed task's) are not refused here. Found in
            # review: a keyed stand-in refused an image given to a task, which the API
            # had accepted and written.
            container = (any(changes.get(k) is not None for k in ("image", "command", "env"))
                         or changes.get("isolation") == "container")
            slots = ({"workerNum": 0, "image": "x"} if container
                     else {"workerNum": 0} if "workerNum" in changes else {"keys": "x"})
            TaskConfig.from_dict({"name": "x", "workName": "x", **slots, **changes},
                                 where=f"tasks.{name}")
    except ConfigError as exc:
        raise _Bad(str(exc)) from None
    return dict(entry)


def _overrides(doc: Any) -> dict[str, Any]:
    doc = _object(doc, "the overrides")
    tasks = _object(doc.get("tasks", {}), "tasks")
    rebalance = _int(doc.get("rebalance", 0), "rebalance")
    out = {"tasks": {name: _override_entry(name, e) for name, e in tasks.items()},
           "drained": sorted(set(_strings(doc.get("drained", []), "drained"))),
           "rebalance": rebalance}
    if "purge" in doc:
        out["purge"] = _strings(doc["purge"], "purge")
    if "keys_refresh" in doc:
        out["keys_refresh"] = {name: _int(n, f"keys_refresh.{name}") for name, n in
                               _object(doc["keys_refresh"], "keys_refresh").items()}
    return out


def decode_overrides(raw: bytes | None, path: str) -> dict[str, Any] | Corrupt:
    """The runtime changes, every entry validated; Corrupt as a whole if any is not."""
    return _decode("overrides", path, raw, _overrides)


# -- owner: owners/<task>/<index> ------------------------------------------------------------------
def _owner(doc: Any) -> dict[str, Any]:
    doc = _object(doc, "owner data")
    _str(doc.get("node"), "node")
    _int(doc.get("generation", 0), "generation", lo=0)
    _str(doc.get("session", ""), "session")
    if doc.get("started_at") is not None:
        _number(doc["started_at"], "started_at")
    if doc.get("slot") is not None:
        _int(doc["slot"], "slot", hi=MAX_WORKER_NUM - 1)
    _str(doc.get("key"), "key", optional=True)
    return dict(doc)


def decode_owner(raw: bytes | None, path: str) -> dict[str, Any] | Corrupt:
    return _decode("owner", path, raw, _owner)


# -- checkpoint: checkpoints/<task>/<slot id> -----------------------------------------------------
def _checkpoint(doc: Any) -> dict[str, Any]:
    doc = _object(doc, "checkpoint data")
    if "value" not in doc:
        raise _Bad("checkpoint data must have a value (null for none)")
    _int(doc.get("fence", 0), "fence", lo=0)
    _str(doc.get("node", ""), "node")
    if doc.get("committed_at") is not None:
        _number(doc["committed_at"], "committed_at")
    return dict(doc)


def decode_checkpoint(raw: bytes | None, path: str) -> dict[str, Any] | Corrupt:
    """A slot's committed position: `value` (any JSON, null when none yet) and who wrote
    it. Corrupt data is never read as "no checkpoint": that would silently start the slot's
    work over from the beginning."""
    return _decode("checkpoint", path, raw, _checkpoint)


# -- markers: done/<task>/<index>, left/<name> ---------------------------------------------------
def decode_marker(kind: str, raw: bytes | None, path: str) -> dict[str, Any] | Corrupt:
    """A marker means what its existence means; its data (if any) is information only, so
    empty data (a marker made by hand) is valid, and anything else must be a JSON object."""
    if not raw:
        return {}
    return _decode(kind, path, raw, lambda d: dict(_object(d, f"{kind} marker data")))


