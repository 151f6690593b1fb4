"""The leader's one job: compute the plan and publish it, fenced on its own membership.

The publish is a transaction that also checks the leader's own `nodes/n-<seq>` znode still
exists. A leader whose session expired (its znode is gone) can therefore never overwrite the
assignment its successor published, however late its write arrives. The set is also
conditional on the assignment version we read, so two writers cannot interleave silently.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from itertools import groupby
from operator import itemgetter
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError
from kazoo.protocol.states import ZnodeStat
from loguru import logger

from .assignment import Plan, Slot
from .codecs import (
    MAX_GENERATION,
    Corrupt,
    decode_assignment,
    doc_plan,
    doc_tasks,
    doc_unassigned,
    lenient_task,
    plan_slots,
)
from .config import TaskConfig
from .gcpause import without_gc
from .membership import MemberRecord
from .overrides import EffectiveTask, with_paused
from .paths import Paths
from .plans import TX_BUDGET, PlanBook, PlanWrites, commit_fenced
from .strategies.guard import FALLBACK, StrategyRunner, run_strategy
from .zk import AHEAD_TIMEOUT, encode

__all__ = ["DocMemo", "Published", "build_doc", "doc_plan", "doc_tasks", "doc_unassigned",
           "lenient_task", "next_generation", "plan_slots", "publish", "read_assignment",
           "valid_doc"]


class DocMemo:
    """The last assignment document this node read or wrote, known by its mzxid.

    The leader reads the document on every pass (to publish against its version), and
    most passes find the one it wrote itself: a stat with the same mzxid (a write names
    one creation and one change, so equal mzxids are equal bytes) stands for the read,
    which at 100,000 slots saves the transfer, the decoding and the Slot objects of the
    previous plan. Whoever else writes the znode changes its mzxid: then it is read.

    The controller and the API thread both read through it: what it holds is one tuple,
    replaced whole under a lock, so a reader never pairs one document's mzxid with another's
    data, and an answer that comes late (an older mzxid: zxids only grow) never replaces a
    newer entry.

    Within one pass of the controller (`expire()` starts one), a document read, confirmed
    or written in that pass stands for itself without a stat (`current()`): the publish
    that follows the pass's read writes against its version, so a change meanwhile (a hand
    edit; no other leader can write past the fence) is refused, not overwritten, and read
    at the next pass. Only a read that sets a watch still asks, since the watch is why."""

    def __init__(self) -> None:
        # (mzxid, decoded document or Corrupt, the Plan it was built from when we wrote it,
        #  the znode's version)
        self._entry: tuple[int | None, dict[str, Any] | Corrupt | None, Plan | None,
                           int | None] = (None, None, None, None)
        self._plan: tuple[Any, dict[str, list[Slot]]] | None = None  # (document, its plan)
        self._this_pass = False  # the entry was read, confirmed or written this pass
        self._lock = threading.Lock()
        self._floor = -1  # mzxid of the last entry forgotten: an answer that old is stale
        self.forgets = 0  # how many times an entry was forgotten
        # mzxid of the document the leader's last publish left as it wants it: its own
        # write (its plans partly refused or not), or one it found nothing to change in;
        # None after any other end (the document's write refused, a create, which names no
        # mzxid, a failure). Set by publish() alone, which only the controller calls, and
        # cleared by a pass cut short: unlike the entry, no read of the API's moves it (see
        # Node._document_is_ours).
        self.settled: int | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)  # a copy (the benchmark's) gets a lock of its own
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @property
    def mzxid(self) -> int | None:
        return self._entry[0]

    def remember(self, mzxid: int, doc: dict[str, Any] | Corrupt,
                 source: Plan | None = None, version: int | None = None) -> None:
        with self._lock:
            known = self._entry[0]
            if (known is not None and mzxid < known) or mzxid <= self._floor:
                return  # a read answered after a newer write was remembered, or forgotten
            self._entry = (mzxid, doc, source, version)
            self._this_pass = version is not None

    def lookup(self, mzxid: int) -> tuple[bool, dict[str, Any] | Corrupt | None]:
        """(True, the document) if the one remembered has this mzxid."""
        known, doc, _, _ = self._entry
        return known == mzxid, doc

    def confirmed(self, mzxid: int, version: int) -> None:
        """A stat found the remembered document unchanged (this mzxid), at `version`; a
        no-op if another entry was remembered since the lookup."""
        with self._lock:
            known, doc, source, _ = self._entry
            if known == mzxid:
                self._entry = (mzxid, doc, source, version)
                self._this_pass = True

    def current(self) -> tuple[dict[str, Any] | Corrupt | None, int, int] | None:
        """(document, version, mzxid), one entry's, if it was read, confirmed or written in
        this pass; else None."""
        with self._lock:
            mzxid, doc, _, version = self._entry
            if self._this_pass and version is not None and mzxid is not None:
                return doc, version, mzxid
            return None

    def expire(self) -> None:
        """A new pass: what was read before it is asked for again (one stat)."""
        self._this_pass = False

    def forget(self) -> None:
        """The entry is not the document (a publish against its version was refused, or
        the znode is gone): the next read reads it whole."""
        with self._lock:
            if self._entry[0] is not None:
                self._floor = max(self._floor, self._entry[0])
            self._entry, self._this_pass = (None, None, None, None), False
            self.forgets += 1

    def vouch(self) -> None:
        """The document's watch, set by the read or write that left this entry, has not
        fired: the entry stands for this pass too (the publish is versioned all the same)."""
        with self._lock:
            self._this_pass = self._entry[3] is not None

    def plan_of(self, doc: dict[str, Any] | None) -> dict[str, list[Slot]]:
        """`doc_plan(doc)`, built once for the remembered document (from the Slot objects
        of the plan it was built from, when this node wrote it). Callers must not change
        it: the strategy guard gives user code copies."""
        _, remembered, source, _ = self._entry
        if doc is None or doc is not remembered:
            return doc_plan(doc)
        cached = self._plan
        if cached is not None and cached[0] is doc:
            return cached[1]
        plan = doc_plan(doc) if source is None else _grouped_plan(source)
        self._plan = (doc, plan)
        return plan


@without_gc
def read_assignment(client: KazooClient, paths: Paths, watch: Any = None,
                    memo: DocMemo | None = None, ahead: Any = None
                    ) -> tuple[dict[str, Any] | Corrupt | None, int]:
    """The published assignment (decoded, or Corrupt) and its znode version (-1: none yet).

    With `memo`, a stat first: an unchanged document is not read again (see DocMemo); with
    nothing remembered yet (a new leader, a new session) it is read at once. `ahead`: a get
    of the document already sent (with `watch`), whose answer stands for the read."""
    doc, version, _ = read_assignment_stat(client, paths, watch, memo, ahead)
    return doc, version


def read_assignment_stat(client: KazooClient, paths: Paths, watch: Any = None,
                         memo: DocMemo | None = None, ahead: Any = None
                         ) -> tuple[dict[str, Any] | Corrupt | None, int, int | None]:
    """read_assignment, and the mzxid of what it answers (None: no document): the
    publish settles on it (DocMemo.settled)."""
    if memo is not None and watch is None and (current := memo.current()) is not None:
        return current  # read or written in this very pass (see DocMemo)
    if memo is not None and memo.mzxid is not None and ahead is None:
        stat = client.exists(paths.assignment, watch=watch)
        if stat is None:
            memo.forget()  # deleted (by hand): nothing remembered stands for it
            return None, -1, None
        hit, doc = memo.lookup(stat.mzxid)
        if hit:
            memo.confirmed(stat.mzxid, stat.version)
            return doc, stat.version, stat.mzxid
    try:
        raw, stat = (ahead.get(timeout=AHEAD_TIMEOUT) if ahead is not None
                     else client.get(paths.assignment, watch=watch))
    except NoNodeError:
        if memo is not None:
            memo.forget()
        if watch is not None:
            client.exists(paths.assignment, watch=watch)
        return None, -1, None
    doc = decode_assignment(raw, paths.assignment)
    if memo is not None:
        memo.remember(stat.mzxid, doc, version=stat.version)
    return doc, stat.version, stat.mzxid


def _grouped_plan(plan: Plan) -> dict[str, list[Slot]]:
    """`doc_plan` of the document built from `plan` as ZooKeeper stores it, from the plan's
    own Slot objects: nodes in name order, a node's slots grouped by task in name order
    (the encoding sorts keys), each task's in the order dealt. The strategies deal a
    node's slots already so; the check runs in C."""
    out: dict[str, list[Slot]] = {}
    task = itemgetter(0)
    for node in sorted(plan.nodes):
        slots = plan.nodes[node]
        runs = [(name, list(run)) for name, run in groupby(slots, task)]
        if all(a[0] < b[0] for a, b in zip(runs, runs[1:], strict=False)):
            out[node] = list(slots)
            continue
        groups: dict[str, list[Slot]] = {}
        for name, run in runs:
            groups.setdefault(name, []).extend(run)
        out[node] = [s for name in sorted(groups) for s in groups[name]]
    return out


def valid_doc(doc: dict[str, Any] | Corrupt | None) -> dict[str, Any] | None:
    return None if isinstance(doc, Corrupt) else doc


def _grouped(slots: Sequence[Slot]) -> dict[str, list[int]]:
    """`{task: [indices]}`: the task name once per node instead of once per slot keeps the
    document small (it is also compressed past a size; see zk.encode)."""
    out: dict[str, list[int]] = {}
    for s in slots:
        out.setdefault(s.task, []).append(s.index)
    return out


def build_doc(*, plan: Plan, tasks: Sequence[EffectiveTask], leader: str, strategy: str,
              members: Sequence[MemberRecord], generation: int,
              drained: Sequence[str] = (), keys: Mapping[str, list[str]] | None = None
              ) -> dict[str, Any]:
    doc = {
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
    if keys:
        doc["keys"] = {name: list(k) for name, k in keys.items()}
    return doc


_COMPARED = ("leader", "strategy", "members", "tasks", "paused", "drained", "nodes",
             "unassigned", "seed", "over_limit", "keys")


def clamp_slots(tasks: Sequence[TaskConfig], max_slots: int | None
                ) -> tuple[list[TaskConfig], int]:
    """The tasks cut (in table order) to at most `max_slots` slots, and how many were cut.

    The API and app.toml refuse a table over the limit; a table that still gets there (a
    hand-edited overrides znode, nodes with different limits) is scheduled up to the limit
    rather than not at all: refusing to publish would also stop moving a crashed node's
    slots. The cut is reported by the caller."""
    if max_slots is None:
        return list(tasks), 0
    out, room, over = [], max_slots, 0
    for task in tasks:
        keep = min(task.worker_num, room)
        over += task.worker_num - keep
        room -= keep
        out.append(task if keep == task.worker_num else replace(task, worker_num=keep))
    return out, over


def with_keys(tasks: Sequence[EffectiveTask], keys: Mapping[str, list[str]]
              ) -> tuple[list[EffectiveTask], dict[str, list[str]]]:
    """Keyed tasks sized to their keys (none yet: no slots), and the keys of those tasks."""
    out, used = [], {}
    for eff in tasks:
        if eff.task.keys:
            used[eff.task.name] = list(keys.get(eff.task.name, ()))
            eff = replace(eff, task=replace(eff.task, worker_num=len(used[eff.task.name])))
        out.append(eff)
    return out, used


def moved_between(before: Mapping[str, Mapping[str, list[int]]],
                  after: Mapping[str, Mapping[str, list[int]]]) -> int:
    """`moved_slots` of two published plans in their grouped form ({node: {task: [i]}}):
    slots whose node differs, placed or dropped ones included. Counted with sets of ints,
    a few ms for 100,000 slots, since the leader logs it on every publish."""
    placed = kept = 0
    after_all: dict[str, set[int]] = {}
    for node, groups in after.items():
        prev = before.get(node, {})
        for task, indices in groups.items():
            placed += len(indices)
            after_all.setdefault(task, set()).update(indices)
            if task in prev:
                kept += len(set(indices).intersection(prev[task]))
    dropped = 0
    for groups in before.values():
        for task, indices in groups.items():
            dropped += len(set(indices).difference(after_all.get(task, ())))
    return placed - kept + dropped


def _same(a: dict[str, Any] | None, b: dict[str, Any]) -> bool:
    return a is not None and all(a.get(k) == b.get(k) for k in _COMPARED)


@dataclass(frozen=True)
class Published:
    doc: dict[str, Any]
    moved: int
    seconds: float


class PublishFailed(Exception):
    """The leader computed a plan it could not write (too large, refused by ZooKeeper)."""


@without_gc
def sync_plans(client: KazooClient, paths: Paths, *, my_child: str, doc: dict[str, Any],
               plans: PlanBook) -> bool:
    """Bring `plans/` in line with the published `doc` when it is not (a new leader, a
    refused or partial write): only the plans that differ are written, fenced like a
    publish. True when they all landed."""
    if plans.synced == doc.get("generation") and plans.leader_child == my_child:
        return True
    try:
        changes = plans.changes(client, paths, doc, my_child)
    except ValueError as exc:
        logger.error("plans not written: {}", exc)
        return False
    refused = plans.commit(client, paths, paths.node(my_child), changes)
    if refused is not None:
        logger.warning("plans of generation {} refused ({}); will re-read", doc.get(
            "generation"), ", ".join(type(f).__name__ for f in refused[1]))
        return False
    if changes.writes:
        logger.info("wrote {} plan(s) of generation {}", len(changes.writes),
                    changes.generation)
    return True


def next_generation(current: dict[str, Any] | Corrupt | None, version: int,
                    seen: int = 0) -> int:
    """A generation above any ever published, even when the current document is corrupt.

    Every publish writes the znode once and raises the generation by one, starting at 1 with
    version 0, so a published generation is never below its znode's version + 1. Taking the
    znode version into account makes the repair of a corrupt document (whose generation is
    unreadable) still go up, for a leader that never saw the last good one too.
    """
    valid = valid_doc(current)
    generation = int(valid["generation"]) if valid is not None else 0
    # Capped where the decoder stops accepting it: a generation written by hand at the cap
    # must not make the leader publish what it then reads back as corrupt, in a loop.
    return min(max(generation, version + 1, seen) + 1, MAX_GENERATION)


@without_gc
def publish(client: KazooClient, paths: Paths, *, my_child: str, leader: str,
            members: Sequence[MemberRecord], tasks: Sequence[EffectiveTask], strategy: str,
            leader_works: bool, drained: Collection[str] = (),
            fresh: bool = False, seed: Sequence[TaskConfig] = (),
            last_valid: dict[str, Any] | None = None, seen_generation: int = 0,
            max_slots: int | None = None, runner: StrategyRunner | None = None,
            keys: Mapping[str, list[str]] | None = None,
            plans: PlanBook | None = None, memo: DocMemo | None = None) -> Published | None:
    """Recompute and, if anything changed, publish. Returns None if unchanged or if the fenced
    write was refused (we are no longer the leader, or lost a race); raises PublishFailed
    when the plan cannot be written at all.

    `fresh` ignores the previous plan (an operator asked for a full rebalance). When the
    published document is corrupt, `last_valid` (the last one this node decoded) stands in
    for it as the previous plan, so the repair moves nothing that did not have to move.
    `runner` knows this node's strategies (user ones guarded; see strategies.guard); a
    failed user strategy's slots are planned by round robin, named in the document.
    `keys` are the keyed tasks' keys in slot order (see keys.py): one slot per key.
    `plans` is the leader's record of the per-node plans (plans.py): the plans that change
    are written in the same fenced transaction as the document. `memo` is the document
    this node last read or wrote: unchanged, it is not read again (see DocMemo).
    """
    started = time.monotonic()
    tasks, keys = with_keys(tasks, keys or {})
    if memo is not None:
        memo.settled = None  # until this publish ends as it wants
    current, version, seen = read_assignment_stat(client, paths, memo=memo)
    if isinstance(current, Corrupt):
        logger.error("{}; repairing it", current)
    previous = valid_doc(current) or last_valid
    people = [replace(m.to_member(), draining=True) if m.name in drained else m.to_member()
              for m in members]
    scheduled, over = clamp_slots(with_paused(tasks), max_slots)
    plan, failure = run_strategy(strategy, scheduled, people, leader=leader,
                                 leader_works=leader_works, runner=runner,
                                 previous=None if fresh else (
                                     doc_plan(previous) if memo is None
                                     else memo.plan_of(previous)))
    strategy = strategy if failure is None else FALLBACK
    generation = next_generation(current, version, seen_generation)
    doc = build_doc(plan=plan, tasks=tasks, leader=leader, strategy=strategy, members=members,
                    generation=generation, drained=[d for d in drained
                                                    if d in {m.name for m in members}],
                    keys=keys)
    doc["seed"] = [t.to_dict() for t in seed]
    if over:
        doc["over_limit"] = over
    if _same(valid_doc(current), doc):
        if memo is not None:
            memo.settled = seen
        return None
    try:
        data = encode(doc)
        changes = plans.changes(client, paths, doc, my_child) if plans is not None else None
    except ValueError as exc:
        raise PublishFailed(f"assignment not published: {exc}") from None

    def write_doc(tx: Any) -> None:
        if version < 0:
            tx.create(paths.assignment, data)
        else:
            tx.set_data(paths.assignment, data, version=version)

    room = TX_BUDGET - len(data)
    writes = changes if changes is not None else PlanWrites(generation)
    refused = (plans.commit(client, paths, paths.node(my_child), writes, write_doc, room)
               if plans is not None else
               commit_fenced(client, paths.node(my_child), write_doc, paths, writes, room))
    if memo is not None and isinstance(writes.first, ZnodeStat):
        # A set names our write (and its version); a create not.
        memo.remember(writes.first.mzxid, doc, plan, writes.first.version)
    if refused is not None and refused[0] == 0:
        if memo is not None:
            memo.forget()  # someone wrote it meanwhile: what we hold is stale
        logger.warning("assignment publish refused ({}); will re-read",
                       ", ".join(type(f).__name__ for f in refused[1]))
        return None
    if memo is not None and isinstance(writes.first, ZnodeStat):
        memo.settled = writes.first.mzxid
    if refused is not None:
        logger.warning("plans of generation {} partly written ({}); written again next pass",
                       generation, ", ".join(type(f).__name__ for f in refused[1]))
    moved = moved_between((previous or {}).get("nodes", {}), doc["nodes"])
    seconds = time.monotonic() - started
    logger.info("published assignment generation {}: {} slots on {} nodes, {} moved, "
                "{} unassigned ({:.1f} ms)", generation, sum(len(s) for s in plan.nodes.values()),
                len(plan.nodes), moved, len(plan.unassigned), seconds * 1e3)
    if plan.unassigned:
        logger.warning("no eligible node for {} slot(s): {}", len(plan.unassigned),
                       ", ".join(s.key for s in plan.unassigned[:10]))
    return Published(doc, moved, seconds)
