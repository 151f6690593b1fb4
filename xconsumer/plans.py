"""Per-node plans: each node's share of the assignment, in a znode of its own.

The assignment document (`assignment`) holds the whole table: every node's slots, the tasks,
the members. With it alone, every publish makes every node read all of it, so a membership
change costs nodes x document size (about 4.4 MB at 300 members; see docs/BENCHMARKS.md).
The leader therefore also writes `plans/<node>`: that node's slots, the definitions of the
tasks they belong to, and their keys. A follower watches and reads only its own plan, and a
publish writes (and wakes) only the nodes whose plan changed: a join that moves one slot
rewrites two plans, not a thousand.

Writes. The plans that changed go into the same fenced transaction as the document (the
leader's member znode is checked first), so the two never disagree; when they do not fit in
one transaction (ZooKeeper refuses a request past jute.maxbuffer) the rest follow in further
transactions, each fenced the same way. A plan carries the generation of the document in
which it last changed, and the member znode of the leader that wrote it: a follower only
trusts a plan written by the leader it elected, so a plan left by an earlier leader (or
by an older xconsumer that writes none) is never applied in its place; the follower then
reads the whole document, as before. A new leader rewrites every plan at once.

Safety does not rest on plans: every slot still runs under its owner znode (at most one
runner), and a plan that is corrupt, missing or foreign only makes its node fall back to
the document.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError

from .codecs import Corrupt, decode_plan
from .paths import Paths
from .zk import ZNODE_LIMIT, encode

# What one transaction may carry (the document included); jute.maxbuffer is 1 MiB - 1 by
# default and the request adds a few bytes per op.
TX_BUDGET = ZNODE_LIMIT
OP_OVERHEAD = 200  # path and header bytes of one op in a multi, generously


def node_plan(doc: Mapping[str, Any], node: str, leader_child: str,
              tasks: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The plan of `node` cut from an assignment document, without its generation (so two
    documents that give the node the same work give equal plans). `tasks` (name -> task
    object of the document) saves building the index once per node."""
    groups = doc.get("nodes", {}).get(node, {})
    by_name = tasks if tasks is not None else task_index(doc)
    keys = doc.get("keys", {})
    plan_keys, key_counts = {}, {}
    for task, indices in groups.items():
        listed = keys.get(task)
        if listed is not None:
            plan_keys[task] = {str(i): listed[i] for i in indices if i < len(listed)}
            key_counts[task] = len(listed)  # a keyed task's workerNum, as doc_tasks gives it
    return {"leader": leader_child, "node": node,
            "slots": {t: list(i) for t, i in groups.items()},
            "tasks": [by_name[t] for t in sorted(groups) if t in by_name],
            "keys": plan_keys, "key_counts": key_counts}


def task_index(doc: Mapping[str, Any]) -> dict[str, Any]:
    return {t.get("name"): t for t in doc.get("tasks", []) if isinstance(t, dict)}


def read_plan(client: KazooClient, paths: Paths, node: str, watch: Any = None
              ) -> dict[str, Any] | Corrupt | None:
    """This node's plan (decoded, or Corrupt), None when there is none; with `watch`, set
    whether it exists or not, so the leader's first write wakes us."""
    path = paths.plan(node)
    try:
        raw, _ = client.get(path, watch=watch)
    except NoNodeError:
        if watch is not None and client.exists(path, watch=watch) is not None:
            return read_plan(client, paths, node, watch)  # created between the two calls
        return None
    return decode_plan(raw, path)


@dataclass
class PlanWrites:
    """The plan changes one publish makes: znode writes, and plans of nodes gone."""

    generation: int
    writes: list[tuple[str, bytes, bool]] = field(default_factory=list)  # name, data, exists
    wanted: dict[str, dict[str, Any]] = field(default_factory=dict)
    gone: list[str] = field(default_factory=list)
    versions: dict[str, int] = field(default_factory=dict)  # data version each write made

    @property
    def size(self) -> int:
        return sum(len(data) for _, data, _ in self.writes)


class PlanBook:
    """The leader's record of what `plans/` holds, so a publish writes only what changed.

    Valid for one leadership (one member znode of ours): a new leader starts with nothing
    known and lists `plans/` once, then writes every plan (each names its writer, so all
    change). Any refused transaction forgets everything: the next publish lists again, so
    a plan deleted or created by hand cannot make every later publish fail."""

    def __init__(self) -> None:
        self.leader_child: str | None = None
        self.known: dict[str, dict[str, Any]] = {}
        self.versions: dict[str, int] = {}  # data version of each plan as we wrote it
        self.existing: set[str] | None = None
        self.synced: int | None = None  # generation whose plans are all written

    def reset(self) -> None:
        self.known, self.versions, self.existing, self.synced = {}, {}, None, None

    def verify(self, client: KazooClient, paths: Paths, timeout: float = 10.0) -> bool:
        """Whether every plan we wrote still is as we wrote it (one pipelined stat each); a
        plan edited or deleted by hand is forgotten, so the next sync writes it again. The
        leader runs this now and then: it does not watch the plans (its own writes would
        wake it once per node)."""
        pending = {name: client.exists_async(paths.plan(name)) for name in self.versions}
        changed = []
        for name, result in pending.items():
            stat = result.get(timeout=timeout)
            if stat is None or stat.version != self.versions[name]:
                changed.append(name)
        for name in changed:
            self.known.pop(name, None)
            self.versions.pop(name, None)
        if changed:
            self.existing, self.synced = None, None  # list again: some may be gone
        return not changed

    def changes(self, client: KazooClient, paths: Paths, doc: Mapping[str, Any],
                leader_child: str) -> PlanWrites:
        if leader_child != self.leader_child:
            self.reset()
            self.leader_child = leader_child
        if self.existing is None:
            try:
                self.existing = set(client.get_children(paths.plans))
            except NoNodeError:
                client.ensure_path(paths.plans)
                self.existing = set()
        tasks = task_index(doc)
        out = PlanWrites(int(doc["generation"]))
        for name in doc.get("nodes", {}):
            content = node_plan(doc, name, leader_child, tasks)
            out.wanted[name] = content
            if self.known.get(name) != content:
                out.writes.append((name, encode({**content, "generation": out.generation}),
                                   name in self.existing))
        out.gone = sorted(self.existing - out.wanted.keys())
        return out

    def written(self, changes: PlanWrites) -> None:
        """Every write of `changes` landed."""
        assert self.existing is not None
        for name, _, _ in changes.writes:
            self.known[name] = changes.wanted[name]
            self.versions[name] = changes.versions.get(name, -1)
            self.existing.add(name)
        self.synced = changes.generation

    def collect(self, client: KazooClient, paths: Paths, changes: PlanWrites) -> None:
        """Delete the plans of nodes no longer in the document, after the publish and never
        in its transaction: a child put under one by hand must not fail the publish."""
        for name in changes.gone:
            with contextlib.suppress(NoNodeError):
                client.delete(paths.plan(name), recursive=True)
            self.known.pop(name, None)
            self.versions.pop(name, None)
            if self.existing is not None:
                self.existing.discard(name)


def add_plan_ops(tx: Any, paths: Paths, writes: list[tuple[str, bytes, bool]]) -> None:
    for name, data, exists in writes:
        if exists:
            tx.set_data(paths.plan(name), data)
        else:
            tx.create(paths.plan(name), data)


def chunks(writes: list[tuple[str, bytes, bool]], room: int
           ) -> list[list[tuple[str, bytes, bool]]]:
    """`writes` cut into transactions: the first gets `room` bytes (what the document left,
    it may stay empty), each later one TX_BUDGET."""
    out: list[list[tuple[str, bytes, bool]]] = [[]]
    used, budget = 0, room
    for write in writes:
        size = len(write[1]) + OP_OVERHEAD
        if used + size > budget and (out[-1] or budget < TX_BUDGET):
            out.append([])
            used, budget = 0, TX_BUDGET
        out[-1].append(write)
        used += size
    return out


def commit_fenced(client: KazooClient, member_path: str, first: Any, paths: Paths,
                  changes: PlanWrites, room: int) -> tuple[int, list[Exception]] | None:
    """The first transaction (`first(tx)` adds the document's op, if any) with as many plan
    writes as fit in `room`, then the rest, each behind the same member check. None when
    all landed, else the index of the transaction that was refused (nothing after it is
    sent; 0: the document was not written either) and its failures."""
    for i, part in enumerate(chunks(changes.writes, room)):
        tx = client.transaction()
        tx.check(member_path, -1)
        if i == 0 and first is not None:
            first(tx)
        elif not part:
            continue  # nothing beside the document fitted, or nothing to write at all
        add_plan_ops(tx, paths, part)
        results = tx.commit()
        failures = [r for r in results if isinstance(r, Exception)]
        if failures:
            return i, failures
        for (name, _, _), result in zip(part, results[len(results) - len(part):],
                                        strict=True):
            changes.versions[name] = getattr(result, "version", 0)  # a create answers a path
    return None
