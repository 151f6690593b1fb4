"""Scenario 5: assignment cost and size at scale, and convergence of many real processes.

The pure part runs the leader's real `publish()` against an in-memory stand-in for the kazoo
client (so it is exactly the leader's CPU path: read and parse the previous assignment,
run the strategy, build the document, compare, encode, count moves) and a follower's path
(parse, pick its own slots, count moves for its event log), for simulated members.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from kazoo.exceptions import NoNodeError
from kazoo.protocol.states import ZnodeStat
from loguru import logger

from bench.cluster import XCluster
from bench.common import (
    close_client,
    ms,
    progress,
    summary,
    table,
    wait_for,
    zk_client,
)
from bench.moves import available_strategies
from xconsumer.assignment import get_strategy, moved_slots
from xconsumer.config import TaskConfig
from xconsumer.leader import DocMemo, build_doc, doc_plan, plan_slots, publish
from xconsumer.membership import MemberRecord, read_members
from xconsumer.overrides import EffectiveTask, with_paused
from xconsumer.paths import Paths
from xconsumer.plans import PlanBook
from xconsumer.zk import ZNODE_LIMIT, dumps, encode, loads

JUTE_MAXBUFFER = 0xFFFFF  # ZooKeeper's default jute.maxbuffer: 1,048,575 bytes


@dataclass
class _Stat:
    version: int
    mzxid: int = 0


def _written(zk: FakeZK) -> ZnodeStat:
    """The stat a set in a transaction returns (what the leader remembers its write by)."""
    return ZnodeStat(czxid=1, mzxid=zk.zxid, ctime=0, mtime=0, version=zk.version,
                     cversion=0, aversion=0, ephemeralOwner=0, dataLength=len(zk.raw or b""),
                     numChildren=0, pzxid=1)


class _FakeTx:
    def __init__(self, zk: FakeZK) -> None:
        self.zk = zk
        self.data: bytes | None = None
        self.operations: list[str] = []

    def check(self, path: str, version: int) -> None:
        self.operations.append("check")

    def create(self, path: str, data: bytes) -> None:
        self.operations.append("create")
        if "/plans/" in path:
            self.zk.children.add(path.rsplit("/", 1)[1])
        else:
            self.data = data

    def set_data(self, path: str, data: bytes, version: int = -1) -> None:
        self.operations.append("set")
        if "/plans/" not in path:
            self.data = data

    def commit(self) -> list[Any]:
        out: list[Any] = [True] * len(self.operations)
        if self.data is not None:  # a transaction of plans alone leaves the document be
            self.zk.raw, self.zk.version = self.data, self.zk.version + 1
            self.zk.zxid += 1
            if self.operations[1] == "set":  # the fence, then the document
                out[1] = _written(self.zk)
        return out


class FakeZK:
    """Just enough of KazooClient for `publish()`: one znode, transactions always succeed."""

    def __init__(self, raw: bytes | None = None, plans: set[str] | None = None,
                 zxid: int = 1) -> None:
        self.raw = raw
        self.version = 0 if raw is not None else -1
        self.zxid = zxid  # the document's mzxid
        self.children: set[str] = set(plans or ())  # plans/ (per-node plans, plans.py)

    def get_children(self, path: str) -> list[str]:
        return sorted(self.children)

    def ensure_path(self, path: str) -> None:
        pass

    def get(self, path: str, watch: Any = None) -> tuple[bytes, _Stat]:
        if self.raw is None:
            raise NoNodeError(path)
        return self.raw, _Stat(self.version, self.zxid)

    def exists(self, path: str, watch: Any = None) -> Any:
        if "/plans/" in path:
            return SimpleNamespace(mzxid=1, czxid=1, version=0)
        return None if self.raw is None else _Stat(self.version, self.zxid)

    def transaction(self) -> _FakeTx:
        return _FakeTx(self)


def _records(n: int) -> list[MemberRecord]:
    return [MemberRecord(child=f"n-{i:010d}", seq=i,
                         data={"id": f"node-{i:04d}", "handlers": ["RunBench"], "works": None,
                               "leader_works": True, "state": "active"})
            for i in range(n)]


def _tasks(slots: int, ntasks: int = 10) -> list[EffectiveTask]:
    per = slots // ntasks
    return [EffectiveTask(TaskConfig(name=f"task-{j:02d}", work_name="bench", worker_num=per),
                          False, "app.toml", ()) for j in range(ntasks)]


def _publish(zk: FakeZK, records: list[MemberRecord], tasks: list[EffectiveTask],
             strategy: str, plans: PlanBook | None = None, memo: DocMemo | None = None) -> Any:
    return publish(zk, Paths("/bench", "scale"), my_child=records[0].child,  # type: ignore[arg-type]
                   leader=records[0].name, members=records, tasks=tasks, strategy=strategy,
                   leader_works=True, seed=[t.task for t in tasks], plans=plans, memo=memo)


def assignment_cost(nodes: int, slots: int, strategy: str, reps: int,
                    ntasks: int = 10, follower_reps: int = 3) -> dict[str, Any]:
    records = _records(nodes)
    tasks = _tasks(slots, ntasks)
    people = [r.to_member() for r in records]
    fn = get_strategy(strategy)
    scratch = []
    for i in range(reps + 1):  # the first run warms up and is not counted
        t = time.perf_counter()
        fn(with_paused(tasks), people, leader=records[0].name, leader_works=True,
           previous=None)
        if i:
            scratch.append(time.perf_counter() - t)
    # The leader's whole CPU path for a join (the previous plan has one node fewer), the
    # per-node plans included: it knows the plans it wrote for the previous document and
    # writes those that change, and it knows that document (it wrote it: a stat shows it
    # unchanged, see leader.DocMemo).
    zk = FakeZK()
    book = PlanBook()
    memo = DocMemo()
    # The previous document is a join too (a set, after the first publish's create).
    _publish(zk, records[:-2], tasks, strategy, book)
    _publish(zk, records[:-1], tasks, strategy, book, memo)
    prev_raw, prev_plans, prev_zxid = zk.raw, set(zk.children), zk.zxid
    passes = []
    node_passes = []
    size_raw = size_enc = 0
    refused = False
    for _ in range(reps):
        zk = FakeZK(prev_raw, prev_plans, prev_zxid)
        known, mine = copy.deepcopy(book), copy.deepcopy(memo)
        t = time.perf_counter()
        res = _publish(zk, records, tasks, strategy, known, mine)
        passes.append(time.perf_counter() - t)
        if res is None:
            refused = True
            break
        size_raw = len(dumps(res.doc))
        size_enc = len(zk.raw or b"")
        if len(node_passes) < follower_reps:
            # A follower: parse the new document, pick its own slots, count moves for its log.
            t = time.perf_counter()
            new = loads(zk.raw, where="assignment")
            plan_slots(new, records[-1].name)
            moved_slots(doc_plan(loads(prev_raw, where="assignment")), doc_plan(new))
            node_passes.append(time.perf_counter() - t)
    if refused:
        # encode() refused the document: size it without the limit to report it.
        plan = fn(with_paused(tasks), people, leader=records[0].name, leader_works=True,
                  previous=None)
        doc = build_doc(plan=plan, tasks=tasks, leader=records[0].name, strategy=strategy,
                        members=records, generation=2)
        doc["seed"] = [t.task.to_dict() for t in tasks]
        size_raw = len(dumps(doc))
        size_enc = len(encode(doc, limit=1 << 40))
    return {"nodes": nodes, "slots": slots, "tasks": ntasks, "strategy": strategy,
            "compute": summary(scratch), "leader_pass": summary(passes) if passes else None,
            "node_pass": summary(node_passes) if node_passes else None,
            "json_bytes": size_raw, "published_bytes": size_enc,
            "compressed": size_enc != size_raw,
            "over_jute_maxbuffer_raw": size_raw > JUTE_MAXBUFFER,
            "over_znode_limit": size_enc > ZNODE_LIMIT, "publish_refused": refused}


def leader_breakdown(nodes: int, slots: int, strategy: str, reps: int) -> dict[str, Any]:
    """The steps of `publish()` (as of this writing) timed one by one, for a join."""
    from xconsumer.leader import _same  # private, but it is the leader's real comparison

    records = _records(nodes)
    tasks = _tasks(slots)
    people = [r.to_member() for r in records]
    zk = FakeZK()
    _publish(zk, records[:-1], tasks, strategy)
    prev_raw = zk.raw
    steps: dict[str, list[float]] = {}

    def timed(name: str, fn: Any) -> Any:
        t = time.perf_counter()
        value = fn()
        steps.setdefault(name, []).append(time.perf_counter() - t)
        return value

    for _ in range(reps):
        current = timed("parse previous document (zlib + JSON)",
                        lambda: loads(prev_raw, where="assignment"))
        previous = timed("doc_plan(previous): Slot objects for the strategy",
                         lambda current=current: doc_plan(current))
        plan = timed("strategy", lambda previous=previous: get_strategy(strategy)(
            with_paused(tasks), people, leader=records[0].name, leader_works=True,
            previous=previous))

        def build(plan: Any = plan) -> dict[str, Any]:
            doc = build_doc(plan=plan, tasks=tasks, leader=records[0].name, strategy=strategy,
                            members=records, generation=2)
            doc["seed"] = [t.task.to_dict() for t in tasks]
            return doc

        doc = timed("build_doc", build)
        timed("compare with the previous document", lambda doc=doc, c=current: _same(c, doc))
        timed("encode (JSON + zlib)", lambda doc=doc: encode(doc))
        timed("moved_slots for the log line (doc_plan(previous) again)",
              lambda c=current, plan=plan: moved_slots(doc_plan(c), plan))
        new_raw = encode(doc)
        new = timed("follower: parse the new document",
                    lambda new_raw=new_raw: loads(new_raw, where="assignment"))
        timed("follower: plan_slots (its own slots)",
              lambda new=new: plan_slots(new, records[-1].name))
        timed("follower: moved_slots for its event log",
              lambda c=current, new=new: moved_slots(doc_plan(c), doc_plan(new)))
    return {"nodes": nodes, "slots": slots, "strategy": strategy,
            "steps": {k: summary(v) for k, v in steps.items()}}


def run_assignment_scale(reps: int, sizes: tuple[int, ...] = (10, 100, 1000),
                         slot_counts: tuple[int, ...] = (1000, 10000, 100000),
                         stress: bool = True) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    logger.disable("xconsumer")  # publish() logs every publish; not part of the cost here
    out = []
    breakdowns = []
    try:
        for strategy in available_strategies():
            for n in sizes:
                for s in slot_counts:
                    r = assignment_cost(n, s, strategy, reps)
                    out.append(r)
                    progress(f"assignment {strategy} {n} nodes x {s} slots: compute "
                             f"{ms(r['compute']['median'])} ms, {r['published_bytes']:,} B")
            if stress:
                # Many small tasks: the same 100,000 slots as 1,000 tasks of 100 (one run:
                # it is here for the document size, and it is slow).
                r = assignment_cost(max(sizes), max(slot_counts), strategy, 1,
                                    ntasks=max(slot_counts) // 100, follower_reps=1)
                out.append(r)
                progress(f"assignment {strategy} stress layout: compute "
                         f"{ms(r['compute']['median'])} ms, {r['published_bytes']:,} B")
            breakdowns.append(leader_breakdown(max(sizes), max(slot_counts), strategy,
                                               min(reps, 3)))
    finally:
        logger.enable("xconsumer")
    return out, breakdowns


def run_member_reads(hosts: str, reps: int, sizes: tuple[int, ...] = (10, 100, 1000)
                     ) -> list[dict[str, Any]]:
    """The leader re-reads every member znode (one get each) on every pass: time it against
    a real server with simulated member znodes."""
    client = zk_client(hosts)
    out = []
    try:
        for n in sizes:
            paths = Paths("/bench-members", f"m{n}")
            client.ensure_path(paths.nodes)
            for rec in _records(n):
                client.create(paths.node_prefix, dumps({**rec.data, "pid": 0, "host": "bench",
                                                        "admin_url": None}),
                              ephemeral=True, sequence=True)
            times = []
            for _ in range(reps):
                t = time.perf_counter()
                got = read_members(client, paths)
                times.append(time.perf_counter() - t)
            assert len(got) == n
            out.append({"members": n, "read_members": summary(times)})
            client.delete(paths.base, recursive=True)
    finally:
        close_client(client)
    return out


def run_convergence(*, hosts: str, tmp: Path, nodes: int, slots: int, reps: int,
                    strategy: str = "round_robin", timeout: float = 240.0
                    ) -> dict[str, Any]:
    runs = []
    for r in range(reps):
        tasks = [{"name": "bench", "workName": "bench", "workerNum": slots, "stop_timeout": 5}]
        cl = XCluster(hosts=hosts, tmp=tmp / f"conv-{strategy}-{r}", root=f"/bench-conv-{r}",
                      tasks=tasks, strategy=strategy)
        names = {f"c{i:02d}" for i in range(nodes)}
        try:
            for name in sorted(names):
                cl.start_node(name)
            doc = wait_for(lambda cl=cl, names=names: cl.converged(names), timeout, 0.2,
                           what=f"{nodes}-node convergence")
            t_first = min(p.started_at for p in cl.nodes.values())
            t_last_spawn = max(p.started_at for p in cl.nodes.values())
            ctimes = [stat.ctime / 1000.0 for _, _, stat in cl.members()]
            owner = {s.key: n for n, ss in doc_plan(doc).items() for s in ss}
            final = {}
            for rec in cl.records.records:
                if rec.e == "start" and owner.get(rec.key) == rec.node:
                    final[rec.key] = max(final.get(rec.key, 0.0), rec.t)
            last = max(final.values())
            run = {"total": last - t_first, "spawn_span": t_last_spawn - t_first,
                   "all_joined": max(ctimes) - t_first,
                   "after_last_join": last - max(ctimes),
                   "generations": int(doc["generation"]),
                   "slot_starts": sum(1 for x in cl.records.records if x.e == "start")}
            runs.append(run)
            progress(f"convergence {nodes} nodes / {slots} slots ({strategy}) run {r + 1}: "
                     f"{run['total']:.2f}s, {run['generations']} generations")
        finally:
            cl.close()
        time.sleep(1.0)
    return {"nodes": nodes, "slots": slots, "strategy": strategy, "runs": runs,
            "summary": {k: summary(x[k] for x in runs) for k in runs[0]}}


def print_breakdown(breakdowns: list[dict[str, Any]]) -> str:
    text = ""
    for b in breakdowns:
        rows = [[k, ms(v["median"]), ms(v["p95"])] for k, v in b["steps"].items()]
        text += "\n" + table(f"Where the leader's and a follower's CPU goes: {b['nodes']:,} "
                             f"nodes / {b['slots']:,} slots ({b['strategy']}), ms",
                             ["step", "p50", "p95"], rows)
    return text


def print_scale(assign: list[dict[str, Any]], members: list[dict[str, Any]],
                conv: list[dict[str, Any]]) -> str:
    rows = []
    for r in assign:
        flag = []
        if r["over_jute_maxbuffer_raw"]:
            flag.append("JSON > 1 MiB")
        if r["over_znode_limit"]:
            flag.append("REFUSED: > znode limit even compressed")
        elif r["compressed"]:
            flag.append("zlib")
        rows.append([r["strategy"], r["nodes"], f"{r['slots']:,}", f"{r['tasks']:,}",
                     ms(r["compute"]["median"]), ms(r["compute"]["p95"]),
                     ms((r["leader_pass"] or {}).get("median")),
                     ms((r["node_pass"] or {}).get("median")),
                     f"{r['json_bytes']:,}", f"{r['published_bytes']:,}", ", ".join(flag)])
    text = "" if not rows else table(
        "Assignment computation and published size (simulated members; ms, bytes)",
                 ["strategy", "nodes", "slots", "tasks", "compute p50", "compute p95",
                  "leader pass p50", "node pass p50", "JSON bytes", "published bytes",
                  "flags"], rows,
                 "compute = strategy from scratch; leader pass = the real publish() CPU path for "
                 "a join (parse previous, plan, build, compare, encode); node pass = a follower "
                 "parsing it.\nZooKeeper's default jute.maxbuffer is 1,048,575 bytes; "
                 "xconsumer refuses to publish above 1,000,000 bytes after compression.")
    if members:
        text += "\n" + table("Leader's membership read (one get per member znode), ms",
                             ["members", "p50", "p95"],
                             [[m["members"], ms(m["read_members"]["median"]),
                               ms(m["read_members"]["p95"])] for m in members])
    for c in conv:
        s = c["summary"]
        text += "\n" + table(
            f"Convergence: {c['nodes']} real node processes started at once, {c['slots']:,} "
            f"slots ({c['strategy']}), seconds",
            ["metric", "p50", "p95"],
            [[k, f"{s[k]['median']:.2f}", f"{s[k]['p95']:.2f}"] for k in s],
            "total = first process spawned -> last slot start in the final converged state "
            "(every node present);\nafter_last_join = last member znode ctime -> that instant.")
    return text
