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

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import (
    AuthFailedError,
    BadArgumentsError,
    InvalidACLError,
    KazooException,
    NoAuthError,
    NodeExistsError,
    NoNodeError,
    NotEmptyError,
    UnimplementedError,
)
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.protocol.states import ZnodeStat
from loguru import logger

from .codecs import Corrupt, decode_plan
from .paths import Paths
from .zk import AHEAD_TIMEOUT, ZNODE_LIMIT, encode, refused_ops

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
    # The leader's name rides along for a follower that takes the plan of its leader's
    # successor without reading the members (see Node._elected_writer).
    return {"leader": leader_child, "leader_name": doc.get("leader"), "node": node,
            "slots": {t: list(i) for t, i in groups.items()},
            "tasks": [by_name[t] for t in sorted(groups) if t in by_name],
            "keys": plan_keys, "key_counts": key_counts}


def task_index(doc: Mapping[str, Any]) -> dict[str, Any]:
    return {t.get("name"): t for t in doc.get("tasks", []) if isinstance(t, dict)}


def read_plan(client: KazooClient, paths: Paths, node: str, watch: Any = None
              ) -> tuple[dict[str, Any] | Corrupt | None, int | None]:
    """This node's plan (decoded, or Corrupt; None when there is none) and the mzxid it was
    read at (None: no plan). With `watch`, set whether it exists or not, so the leader's
    first write wakes us."""
    path = paths.plan(node)
    try:
        raw, stat = client.get(path, watch=watch)
    except NoNodeError:
        if watch is not None and client.exists(path, watch=watch) is not None:
            return read_plan(client, paths, node, watch)  # created between the two calls
        return None, None
    except _UNREADABLE as exc:
        # A plan we may not read (its ACL changed by hand) is as good as a corrupt one: the
        # node runs from the whole document. A lost connection is not: the pass is retried.
        stat = client.exists(path, watch=watch)
        return (Corrupt("plan", path, f"cannot be read ({type(exc).__name__})"),
                stat.mzxid if stat is not None else None)
    return decode_plan(raw, path), stat.mzxid


def plan_mzxid(client: KazooClient, paths: Paths, node: str) -> int | None:
    """The plan's mzxid (None: no plan), by a stat: no data, and no READ permission needed.
    A follower compares it on its periodic pass with the one it read, in case a watch
    never came (one lost, or one ZooKeeper did not deliver)."""
    stat = client.exists(paths.plan(node))
    return stat.mzxid if stat is not None else None


_UNREADABLE = (NoAuthError, AuthFailedError, InvalidACLError, UnimplementedError,
               BadArgumentsError)


@dataclass
class PlanWrites:
    """The plan changes one publish makes: znode writes, and plans of nodes gone."""

    generation: int
    writes: list[tuple[str, bytes, bool]] = field(default_factory=list)  # name, data, exists
    wanted: dict[str, dict[str, Any]] = field(default_factory=dict)
    gone: list[str] = field(default_factory=list)
    landed: dict[str, int] = field(default_factory=dict)  # name -> mzxid of our write
    refused: dict[str, str] = field(default_factory=dict)  # name -> why ZooKeeper said no
    table: tuple[Any, Any] = (None, None)  # the document's tasks and keys
    first: Any = None  # what the first transaction's own op (the document's) returned


class PlanBook:
    """The leader's record of what `plans/` holds, so a publish writes only what changed.

    Valid for one leadership (one member znode of ours): a new leader starts with nothing
    known and lists `plans/` once, then writes every plan (each names its writer, so all
    change). Each plan is known with the mzxid of our write (a plan deleted and created
    again by hand has another one, even at the same version). A refused transaction makes
    the next publish list `plans/` again and check every known plan by one stat each (no
    write, no wake-up), so what someone did there cannot make every later publish fail,
    nor make the leader rewrite (and wake) every node."""

    def __init__(self) -> None:
        self.leader_child: str | None = None
        self.known: dict[str, dict[str, Any]] = {}
        self.mzxids: dict[str, int] = {}  # mzxid of each plan as we wrote it
        self.existing: set[str] | None = None
        self.synced: int | None = None  # generation whose plans are all written
        self.check_due = False  # verify before the next write
        self.broken: dict[str, str] = {}  # plans ZooKeeper refuses to take: name -> why
        self._table: tuple[Any, Any] = (None, None)  # tasks and keys of the last plans written
        # A node's leader defers the deletes of departed nodes' plans to its housekeeping
        # (collect_deferred); without it (a script, the benchmark) commit deletes them.
        self.defer_collect = False
        self.gone: set[str] = set()  # departed nodes whose plans wait for collect_deferred
        # A listing of plans/ already sent by a node taking over (its answer stands for the
        # listing `changes` makes); set and cleared by the node, for one pass.
        self.listing: Any = None

    def reset(self) -> None:
        self.gone = set()
        self.known, self.mzxids, self.existing, self.synced = {}, {}, None, None
        self.check_due, self.broken, self._table = False, {}, (None, None)

    def refused(self) -> None:
        """A transaction was refused: look again before the next write."""
        self.existing, self.synced, self.check_due = None, None, True

    def verify(self, client: KazooClient, paths: Paths, timeout: float = 10.0) -> bool:
        """Whether every plan we wrote still is as we wrote it (one pipelined stat each); a
        plan edited, deleted or created again by hand is forgotten, so the next sync writes
        it again. The leader runs this now and then: it does not watch the plans (its own
        writes would wake it once per node). Plans ZooKeeper refused are tried again."""
        self.check_due = False
        pending = {name: client.exists_async(paths.plan(name)) for name in self.mzxids}
        changed = list(self.broken)
        for name, result in pending.items():
            stat = result.get(timeout=timeout)
            if stat is None or stat.mzxid != self.mzxids[name]:
                changed.append(name)
        for name in changed:
            self.known.pop(name, None)
            self.mzxids.pop(name, None)
        self.broken = {}
        # List again and sync: some may be gone, and a departed node's plan that could not
        # be deleted is tried again.
        self.existing, self.synced = None, None
        return not changed

    def changes(self, client: KazooClient, paths: Paths, doc: Mapping[str, Any],
                leader_child: str) -> PlanWrites:
        if leader_child != self.leader_child:
            self.reset()
            self.leader_child = leader_child
        if self.check_due:
            self.verify(client, paths)
        if self.existing is None:
            listing, self.listing = self.listing, None
            try:
                self.existing = set(listing.get(timeout=AHEAD_TIMEOUT) if listing is not None
                                    else client.get_children(paths.plans))
            except NoNodeError:
                client.ensure_path(paths.plans)
                self.existing = set()
        tasks = task_index(doc)
        out = PlanWrites(int(doc["generation"]))
        # With the same task table and keys as the last time, a plan whose slots did not
        # change did not change: a join at 1,000 nodes builds ~100 plans, not 1,000.
        same_table = (doc.get("tasks"), doc.get("keys")) == self._table
        for name, groups in doc.get("nodes", {}).items():
            known = self.known.get(name)
            if same_table and known is not None and known["slots"] == groups:
                out.wanted[name] = known
                continue
            content = node_plan(doc, name, leader_child, tasks)
            out.wanted[name] = content
            if known != content:
                out.writes.append((name, encode({**content, "generation": out.generation}),
                                   name in self.existing))
        out.gone = sorted(self.existing - out.wanted.keys())
        out.table = (doc.get("tasks"), doc.get("keys"))
        return out

    def written(self, client: KazooClient, paths: Paths, changes: PlanWrites) -> None:
        """The transactions landed (each plan ZooKeeper refused left out of them): record
        what we wrote; a refused plan is deleted if it can be, so its node runs from the
        whole document instead of an outdated plan, and is tried again at the next check."""
        assert self.existing is not None
        for name, _, _ in changes.writes:
            if name in changes.landed:
                self.known[name] = changes.wanted[name]
                self.mzxids[name] = changes.landed[name]
                self.existing.add(name)
                self.gone.discard(name)  # back before its deferred delete: keep it
        for name, why in changes.refused.items():
            self.known.pop(name, None)
            self.mzxids.pop(name, None)
            if name not in self.broken:
                logger.error("plan {} refused by ZooKeeper ({}): {}", paths.plan(name), why,
                             "deleted it; that node runs from the whole assignment"
                             if _delete(client, paths.plan(name)) else
                             "it cannot be deleted either: that node may run an outdated "
                             "plan until it is (check the znode's ACL)")
            self.broken[name] = why
        self.synced = changes.generation
        self._table = changes.table

    def commit(self, client: KazooClient, paths: Paths, member_path: str,
               changes: PlanWrites, first: Any = None, room: int = TX_BUDGET
               ) -> tuple[int, list[Exception]] | None:
        """Write `changes` (after `first`, the document's op, if any) with `commit_fenced`
        and record the outcome: what landed, or look again before the next write."""
        refused = commit_fenced(client, member_path, first, paths, changes, room)
        if refused is not None:
            self.refused()
        else:
            self.written(client, paths, changes)
            if self.defer_collect:
                self.gone.update(changes.gone)
            else:
                self.collect(client, paths, changes)
        return refused

    def collect_deferred(self, client: KazooClient, paths: Paths) -> None:
        """`collect` the departed nodes' plans that commits left for later (see
        `defer_collect`): the leader does it with its housekeeping, after applying its own
        slots, so a publish that removes a node keeps no slot waiting for those deletes."""
        if self.gone:
            gone, self.gone = sorted(self.gone), set()
            self.collect(client, paths, PlanWrites(self.synced or 0, gone=gone))

    def collect(self, client: KazooClient, paths: Paths, changes: PlanWrites) -> None:
        """Delete the plans of nodes no longer in the document, after the publish and never
        in its transaction: a child put under one by hand must not fail the publish. One
        that cannot be deleted now stays listed, so the next publish tries again."""
        for name in changes.gone:
            if not _delete(client, paths.plan(name)):
                continue
            self.known.pop(name, None)
            self.mzxids.pop(name, None)
            if self.existing is not None:
                self.existing.discard(name)


def _delete(client: KazooClient, path: str) -> bool:
    """Delete with whatever is under it; False if ZooKeeper refused (it is still there).
    One request for a plan as the leader writes it; the listing of a recursive delete only
    for one that someone put a child under."""
    try:
        try:
            client.delete(path)
        except NotEmptyError:
            client.delete(path, recursive=True)
    except NoNodeError:
        return True
    except (KazooException, KazooTimeoutError) as exc:
        logger.warning("cannot delete {} now ({})", path, type(exc).__name__)
        return False
    return True


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
    all landed, else the index of the transaction whose fence or document was refused
    (nothing after it is sent; 0: the document was not written either) and its failures.

    A plan op ZooKeeper refuses (a znode made or deleted by hand, a foreign ACL) never
    vetoes the document nor the other plans: the transaction is sent again without it,
    and it is listed in `changes.refused`."""
    if not member_path or member_path.endswith("/"):
        # No member znode named: kazoo normalises ".../nodes/" to the container itself, a
        # check that always passes. A write fenced by nothing is refused, never sent.
        return 0, [NoNodeError(member_path)]
    flipped: set[str] = set()
    for i, part in enumerate(chunks(changes.writes, room)):
        part = list(part)
        while True:
            tx = client.transaction()
            tx.check(member_path, -1)
            if i == 0 and first is not None:
                first(tx)
            elif not part:
                break  # nothing beside the document fitted, or nothing to write at all
            head = len(tx.operations)  # the fence (and the document): then the plans
            add_plan_ops(tx, paths, part)
            results = tx.commit()
            failed = refused_ops(results)
            if not failed and not any(isinstance(r, Exception) for r in results):
                if i == 0 and first is not None:
                    changes.first = results[1]
                _landed(client, paths, changes, part, results)
                break
            if not failed or min(failed) < head:
                return i, [r for r in results if isinstance(r, Exception)]
            for k in sorted(failed, reverse=True):
                name, data, exists = part[k - head]
                error = results[k]
                if name not in flipped and isinstance(error, NoNodeError | NodeExistsError):
                    # Deleted or made by hand since we listed plans/: the other op, once.
                    flipped.add(name)
                    part[k - head] = (name, data, not exists)
                    continue
                part.pop(k - head)
                changes.refused[name] = type(error).__name__
    return None


def _landed(client: KazooClient, paths: Paths, changes: PlanWrites,
            part: list[tuple[str, bytes, bool]], results: list[Any]) -> None:
    """Record the mzxid of each plan written: every op of a transaction has the same one,
    given by any set in it; a transaction of creates alone is asked for it afterwards."""
    zxid = next((r.mzxid for r in results if isinstance(r, ZnodeStat)), None)
    if zxid is None and part:
        stat = client.exists(paths.plan(part[0][0]))
        zxid = stat.mzxid if stat is not None else -1
    for name, _, _ in part:
        changes.landed[name] = zxid if zxid is not None else -1
