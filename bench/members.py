"""Scenario: clusters of 10 to 1,000 members; convergence and ZooKeeper traffic per change.

    python -m bench.members --sizes 10,100,300,1000 --reps 3

Every member is a real `xconsumer.node.Node` with its own ZooKeeper session, hosted several
per process by `bench.member_worker` (the admin HTTP server off). One task of no-op slots
(`RunBench`, which sleeps until told to stop; no record file), one slot per member, so every
member has work, every change moves real slots, and the assignment document grows with the
cluster as it would with one slot per node. The crash victim runs alone in its own process and
is killed with SIGKILL (a real crash: its session ends only when ZooKeeper expires it).

Per size: (a) the initial start, then `reps` times (b) a join (one more member in a pooled
process), (c) a graceful leave (`Node.stop` of a follower from the middle of the sequence),
(d) a crash of the solo member, after which a fresh solo process joins again (not measured).

Convergence is read from ZooKeeper only: the assignment names exactly the live members and
gives out every slot to them, the live member znodes are exactly those, and every slot's
owner znode exists, is held by the session of the member the assignment gives it to, and
names it. The time is the server's: the later of the assignment's mtime and the newest owner
znode's ctime, minus the client's clock at the action (one machine, one clock).

Traffic: the server's own counters (`mntr`: zk_packets_received, zk_packets_sent,
zk_bytes_received_count, zk_response_bytes) over a window from just before the change until
no member has sent a change-driven request for 1 s, and the members' own client-side counts
(see `bench.member_worker`), which say which requests a change caused and which ones are
background (lease renewals, pings, the periodic reconcile) that fell in the same window.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from kazoo.exceptions import NoNodeError

from bench.common import (
    BENCH_WORKS,
    REPO,
    Abort,
    Proc,
    Timeout,
    close_client,
    cpu_seconds,
    ms,
    progress,
    rss_mb,
    stop_all,
    summary,
    table,
    wait_for,
    zk_client,
)
from bench.member_worker import Traffic, instrument
from xconsumer.leader import doc_plan
from xconsumer.paths import Paths
from xconsumer.zk import loads
from xconsumer.zkserver import four_letter_word

TASK = "noop"
ROOT = "/xcbench-members"
KINDS = ("join", "leave", "crash")
# Sources whose requests a membership change causes; the rest is background.
CHANGE = ("event pass", "slot", "join", "leave", "watch event")
BACKGROUND = ("lease", "ping", "periodic pass")
MNTR = ("zk_packets_received", "zk_packets_sent", "zk_bytes_received_count",
        "zk_response_bytes")


def session_timeout_for(n: int) -> float:
    """10 s up to 300 members; 15 s at 1,000, where the start keeps both cores busy for
    half a minute and a stall of a few seconds must not cost members their sessions."""
    return 10.0 if n <= 300 else 15.0


# Members one pooled process hosts at most. Each member is a real node (about six threads),
# and an interpreter's threads share its GIL. With 250 members per process (1,500 threads)
# the start of 1,000 formed in about a third of the runs: in one that did not, a worker
# spent two thirds of its CPU in the kernel (328,000 context switches a second, its threads
# handing the GIL around) and all 250 of its members lost their sessions. With 50 it formed
# in 4 runs of 4 (37-93 s, 85-190 s of worker CPU, 0-23 sessions lost); with 25 (40
# processes) it did not, in the one run tried: the start is a CPU cliff on two cores either
# way (docs/BENCHMARKS.md). In production each node is a process of its own.
MEMBERS_PER_PROC = 50


def procs_for(n: int) -> int:
    """Pooled worker processes (the crash victim gets one more of its own)."""
    return 1 if n <= 10 else max(4, math.ceil(n / MEMBERS_PER_PROC))


# -- one worker process --------------------------------------------------------------------
class Worker:
    """A `bench.member_worker` process, driven over its stdin/stdout; stopped by PID."""

    def __init__(self, label: str, config: Path, names: list[str], log: Path,
                 start_threads: int = 4, nice: int = 0) -> None:
        cmd = [sys.executable, "-m", "bench.member_worker", "--config", str(config),
               "--works", str(BENCH_WORKS), "--names", ",".join(names),
               "--start-threads", str(start_threads)]
        if nice:
            cmd = ["nice", "-n", str(nice), *cmd]  # nice execs: the PID stays the worker's
        env = {k: v for k, v in os.environ.items() if not k.startswith("XCONSUMER_")}
        env.update(PYTHONUNBUFFERED="1", PYTHONPATH=str(REPO))
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as err:
            popen = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=err, cwd=REPO, env=env)
        self.proc = Proc(label, popen, log, time.time())
        self.names = set(names)
        self._replies: dict[str, dict[str, Any]] = {}
        self._cond = threading.Condition()
        self._next = 0
        self._reader = threading.Thread(target=self._read, name=f"bench-{label}", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.proc.stdout is not None
        for line in self.proc.proc.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            with self._cond:
                self._replies[str(msg.get("id"))] = msg
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def send(self, cmd: dict[str, Any]) -> str:
        with self._cond:
            self._next += 1
            rid = f"r{self._next}"
        assert self.proc.proc.stdin is not None
        self.proc.proc.stdin.write((json.dumps({**cmd, "id": rid}) + "\n").encode())
        self.proc.proc.stdin.flush()
        return rid

    def wait(self, rid: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while rid not in self._replies:
                if not self.proc.alive():
                    raise Abort(f"worker {self.proc.name} exited "
                                f"({self.proc.proc.returncode}):\n{self.proc.log()[-2000:]}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Timeout(f"worker {self.proc.name}: no reply to {rid} in {timeout:g}s")
                self._cond.wait(min(left, 0.5))
            return self._replies.pop(rid)

    def call(self, cmd: dict[str, Any], timeout: float = 60.0) -> dict[str, Any]:
        return self.wait(self.send(cmd), timeout)


# -- traffic snapshots ----------------------------------------------------------------------
def _mntr(hostport: tuple[str, int]) -> dict[str, int]:
    out = four_letter_word(hostport[0], hostport[1], "mntr", timeout=10.0)
    values = {}
    for line in out.splitlines():
        k, _, v = line.partition("\t")
        if k.strip() in MNTR:
            with contextlib.suppress(ValueError):
                values[k.strip()] = int(float(v))
    return values


def _sub(a: dict[str, list[int]], b: dict[str, list[int]]) -> dict[str, list[int]]:
    out = {}
    for tag, row in a.items():
        base = b.get(tag, [0, 0, 0, 0])
        d = [x - y for x, y in zip(row, base, strict=True)]
        if any(d):
            out[tag] = d
    return out


def _add(into: dict[str, list[int]], rows: dict[str, list[int]]) -> None:
    for tag, row in rows.items():
        acc = into.setdefault(tag, [0, 0, 0, 0])
        for i, v in enumerate(row):
            acc[i] += v


def _source(tag: str) -> str:
    return tag.split("|", 1)[0]


def _sum(rows: dict[str, list[int]], pred: Callable[[str], bool]) -> list[int]:
    acc = [0, 0, 0, 0]
    for tag, row in rows.items():
        if pred(tag):
            for i, v in enumerate(row):
                acc[i] += v
    return acc


class Snapshot:
    def __init__(self, mntr: dict[str, int], workers: dict[str, dict[str, Any]],
                 observer: dict[str, list[int]]) -> None:
        self.t = time.time()
        self.mntr, self.workers, self.observer = mntr, workers, observer


def window(a: Snapshot, b: Snapshot) -> dict[str, Any]:
    """Traffic between two snapshots: server counters, and the members' client-side rows
    (only workers alive at both ends: a killed worker's counters are gone with it)."""
    rows: dict[str, list[int]] = {}
    passes = {"event": 0, "periodic": 0}  # and "full: <reasons>": the passes not light
    for wid, end in b.workers.items():
        start = a.workers.get(wid)
        if start is None:
            continue
        _add(rows, _sub(end["traffic"], start["traffic"]))
        for k in set(passes) | set(end["passes"]):
            passes[k] = passes.get(k, 0) + end["passes"].get(k, 0) - start["passes"].get(k, 0)
    obs = _sub(b.observer, a.observer)
    change = _sum(rows, lambda t: _source(t) in CHANGE)
    background = _sum(rows, lambda t: _source(t) in BACKGROUND)
    server = {k: b.mntr.get(k, 0) - a.mntr.get(k, 0) for k in MNTR} if b.mntr else {}
    return {"seconds": b.t - a.t, "server": server, "rows": rows, "passes": passes,
            "change": {"requests": change[0], "bytes_to_server": change[1],
                       "replies": change[2], "bytes_to_clients": change[3]},
            "background": {"requests": background[0], "bytes_to_server": background[1],
                           "bytes_to_clients": background[3]},
            "observer": {"requests": sum(r[0] for r in obs.values()),
                         "bytes_to_server": sum(r[1] for r in obs.values()),
                         "bytes_to_clients": sum(r[3] for r in obs.values())}}


# -- one cluster ------------------------------------------------------------------------------
class MemberCluster:
    def __init__(self, *, hostport: tuple[str, int], n: int, tmp: Path,
                 session_timeout: float, procs: int, start_threads: int = 4,
                 nice: int = 0) -> None:
        self.n, self.tmp = n, tmp
        self.hostport = hostport
        self.hosts = f"{hostport[0]}:{hostport[1]}"
        self.session_timeout = session_timeout
        self.cluster = f"m{n}"
        self.paths = Paths(ROOT, self.cluster)
        self.start_threads = start_threads
        self.nice = nice
        self.config = tmp / f"app-{n}.toml"
        self.config.write_text(
            f'[cluster]\nname = "{self.cluster}"\n\n'
            f'[zookeeper]\nhosts = "{self.hosts}"\nsession_timeout = {session_timeout}\n'
            f'root = "{ROOT}"\nconnect_timeout = 60\n\n'
            '[admin]\nenabled = false\n\n'
            f'[[task]]\nname = "{TASK}"\nworkName = "Bench"\nworkerNum = {n}\n')
        self.procs = procs
        self.workers: dict[str, Worker] = {}
        self.live: set[str] = set()
        self.solo: str | None = None
        self.traffic = Traffic()
        self.client = zk_client(self.hosts, timeout=30.0)
        instrument(self.client, self.traffic, self.paths.base)
        self._members: dict[str, tuple[str, int]] = {}  # child -> (name, session)
        self._wseq = 0

    # -- processes ---------------------------------------------------------------------------
    def spawn(self, names: list[str], solo: bool = False) -> Worker:
        self._wseq += 1
        label = f"{'solo' if solo else 'pool'}-{self._wseq}"
        w = Worker(label, self.config, names, self.tmp / f"n{self.n}-{label}.log",
                   self.start_threads, nice=self.nice)
        self.workers[label] = w
        return w

    def wait_started(self, w: Worker, timeout: float) -> dict[str, Any]:
        reply = w.wait("initial", timeout)
        if reply.get("errors"):
            raise Abort(f"{w.proc.name}: members failed to start: {reply['errors'][:3]}")
        self.live |= {r["name"] for r in reply["started"]}
        return reply

    def pooled(self) -> list[Worker]:
        return [w for k, w in self.workers.items() if k.startswith("pool") and w.proc.alive()]

    def worker_of(self, name: str) -> Worker:
        for w in self.workers.values():
            if name in w.names and w.proc.alive():
                return w
        raise KeyError(name)

    def close(self) -> None:
        stop_all([w.proc for w in self.workers.values()], graceful=False)
        close_client(self.client)

    # -- reading ZooKeeper -------------------------------------------------------------------
    def members(self) -> dict[str, tuple[str, int, int]]:
        """name -> (child, session, ctime ms) of every live member znode."""
        children = self.client.get_children(self.paths.nodes)
        for gone in set(self._members) - set(children):
            del self._members[gone]
        new = [c for c in children if c not in self._members]
        pending = [(c, self.client.get_async(self.paths.node(c))) for c in new]
        ctimes: dict[str, int] = {}
        for child, res in pending:
            try:
                raw, stat = res.get(timeout=30)
            except NoNodeError:
                continue
            data = loads(raw, where=child) or {}
            self._members[child] = (str(data.get("id")), stat.ephemeralOwner, stat.ctime)
        for child, (name, _session, ctime) in self._members.items():
            if child in children:
                ctimes[name] = ctime
        return {name: (child, session, ctimes[name])
                for child, (name, session, _) in self._members.items() if child in children}

    def doc(self) -> tuple[dict[str, Any] | None, Any]:
        try:
            raw, stat = self.client.get(self.paths.assignment)
        except NoNodeError:
            return None, None
        doc = loads(raw, where=self.paths.assignment)
        return (doc if isinstance(doc, dict) else None), stat

    def check(self, expected: set[str]) -> dict[str, Any] | None:
        """The convergence test of the module docstring; None while it does not hold."""
        for w in self.workers.values():
            if w.names & expected and not w.proc.alive():
                raise Abort(f"worker {w.proc.name} exited:\n{w.proc.log()[-2000:]}")
        doc, dstat = self.doc()
        if not doc or set(doc.get("members", [])) != expected:
            return None
        assigned = {s.index: node for node, slots in doc_plan(doc).items()
                    for s in slots if s.task == TASK}
        if set(assigned) != set(range(self.n)) or not set(assigned.values()) <= expected:
            return None
        members = self.members()
        if set(members) != expected:
            return None
        owners = self.client.get_children(self.paths.owner_task(TASK))
        if {int(c) for c in owners if c.isdigit()} != set(assigned) or len(owners) != self.n:
            return None
        pending = [(i, self.client.get_async(self.paths.owner(TASK, i))) for i in assigned]
        newest = dstat.mtime
        for i, res in pending:
            try:
                raw, stat = res.get(timeout=30)
            except NoNodeError:
                return None
            node = assigned[i]
            data = loads(raw, where="owner") or {}
            if stat.ephemeralOwner != members[node][1] or data.get("node") != node:
                return None
            newest = max(newest, stat.ctime)
        return {"t": newest / 1000.0, "seen": time.time(), "generation": doc.get("generation"),
                "strategy": doc.get("strategy"), "doc": doc, "doc_bytes": dstat.dataLength,
                "members": members}

    def converge(self, expected: set[str], t0: float, timeout: float) -> dict[str, Any]:
        interval = 0.05 if self.n <= 100 else 0.1 if self.n <= 300 else 0.25
        res = wait_for(lambda: self.check(expected), timeout, interval,
                       what=f"{len(expected)} members converged")
        res["converge_s"] = max(0.0, res["t"] - t0)
        return res

    # -- traffic -----------------------------------------------------------------------------
    def counters(self) -> dict[str, dict[str, Any]]:
        rids = {k: w.send({"cmd": "counters"}) for k, w in self.workers.items()
                if w.proc.alive()}
        return {k: self.workers[k].wait(rid, 60) for k, rid in rids.items()}

    def snapshot(self) -> Snapshot:
        workers = self.counters()
        try:
            m = _mntr(self.hostport)
        except OSError:
            m = {}
        return Snapshot(m, workers, self.traffic.snapshot())

    def quiet(self, limit: float, still: float = 1.0) -> float:
        """Wait until no member sent a change-driven request for `still` seconds (bounded);
        returns when the last such request was seen."""
        def activity() -> int:
            total = 0
            for c in self.counters().values():
                total += sum(r[0] for t, r in c["traffic"].items() if _source(t) in CHANGE)
            return total

        deadline = time.monotonic() + limit
        last, last_change = activity(), time.time()
        while time.monotonic() < deadline:
            time.sleep(0.25)
            now = activity()
            if now != last:
                last, last_change = now, time.time()
            elif time.time() - last_change >= still:
                break
        return last_change

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"members": 0, "connected": 0, "lease_valid": 0,
                               "session_events": {}, "threads": {}, "leaders": []}
        for k, w in self.workers.items():
            if not w.proc.alive():
                continue
            s = w.call({"cmd": "status"}, 60)
            out["threads"][k] = s["threads"]
            for name, m in s["members"].items():
                out["members"] += 1
                out["connected"] += m["connected"]
                out["lease_valid"] += m["lease"]
                if m["leader"]:
                    out["leaders"].append(name)
            for states in s["sessions"].values():
                for st, c in states.items():
                    out["session_events"][st] = out["session_events"].get(st, 0) + c
        return out

    def cpu(self) -> dict[str, float]:
        return {k: cpu_seconds(w.proc.pid) or 0.0 for k, w in self.workers.items()
                if w.proc.alive()}


# -- events -----------------------------------------------------------------------------------
def _moved(before: dict[str, Any], after: dict[str, Any]) -> int:
    a = {s.index: n for n, ss in doc_plan(before).items() for s in ss}
    b = {s.index: n for n, ss in doc_plan(after).items() for s in ss}
    return sum(1 for i, n in b.items() if a.get(i) != n)


def _top(rows: dict[str, list[int]], k: int = 6) -> list[tuple[str, int, int]]:
    change = [(t, r[0] or r[2], r[3]) for t, r in rows.items() if _source(t) in CHANGE]
    return sorted(change, key=lambda x: -x[2])[:k]


def run_event(cl: MemberCluster, kind: str, rep: int, before: dict[str, Any],
              timeout: float) -> dict[str, Any]:
    snap0 = cl.snapshot()
    expected = set(cl.live)
    extra: dict[str, Any] = {}
    expired = threading.Event()
    expiry: dict[str, float] = {}
    if kind == "join":
        name = f"join-{rep}"
        w = min(cl.pooled(), key=lambda w: len(w.names))
        w.names.add(name)
        expected.add(name)
        t0 = time.time()
        reply = w.call({"cmd": "start", "names": [name]}, timeout)
        if reply.get("errors"):
            raise Abort(f"join failed: {reply['errors']}")
        extra["start_call_s"] = reply["t1"] - t0
        cl.live.add(name)
        victim = name
    elif kind == "leave":
        order = [m for m in before["doc"]["members"] if m in cl.live]
        pooled = {n for w in cl.pooled() for n in w.names}
        followers = [m for m in order[1:] if m in pooled and not m.startswith("join-")]
        victim = followers[len(followers) // 2]
        expected.discard(victim)
        w = cl.worker_of(victim)
        t0 = time.time()
        rid = w.send({"cmd": "stop", "name": victim})
    else:
        victim = cl.solo or ""
        expected.discard(victim)
        child = before["members_zk"][victim][0]

        def gone(event: Any) -> None:
            expiry["t"] = time.time()
            expired.set()

        if cl.client.exists(cl.paths.node(child), watch=gone) is None:
            raise Abort(f"crash victim {victim} has no member znode")
        w = cl.worker_of(victim)
        t0 = time.time()
        os.kill(w.proc.pid, signal.SIGKILL)
        w.proc.killed_at = t0
        w.proc.proc.wait(10)
    res = cl.converge(expected, t0, timeout)
    if kind == "leave":
        reply = w.wait(rid, timeout)
        extra["stop_call_s"] = reply["t1"] - t0
        w.names.discard(victim)
    cl.live = expected
    if kind == "join":
        extra["from_member_znode_s"] = res["t"] - res["members"][victim][2] / 1000.0
    if kind == "crash":
        expired.wait(1.0)
        if "t" in expiry:
            extra["expired_after_s"] = expiry["t"] - t0
            extra["after_expiry_s"] = res["t"] - expiry["t"]
    settled = cl.quiet(limit=30.0 + cl.n * 0.03)
    snap1 = cl.snapshot()
    traffic = window(snap0, snap1)
    traffic["top"] = _top(traffic["rows"])
    return {"kind": kind, "rep": rep, "victim": victim, "converge_s": res["converge_s"],
            "settled_s": settled - t0, "generation": res["generation"],
            "moved": _moved(before["doc"], res["doc"]), "doc_bytes": res["doc_bytes"],
            "traffic": traffic, **extra, "_res": res}


def _spawn_solo(cl: MemberCluster, name: str, timeout: float) -> dict[str, Any]:
    w = cl.spawn([name], solo=True)
    cl.wait_started(w, timeout)
    cl.solo = name
    t0 = w.proc.started_at
    res = cl.converge(set(cl.live), t0, timeout)
    return res


def run_size(hostport: tuple[str, int], n: int, reps: int, tmp: Path,
             procs: int | None = None, session_timeout: float | None = None,
             idle_window: float = 10.0, start_budget: float = 0.3,
             start_threads: int = 4, nice: int = 0) -> dict[str, Any]:
    """One cluster of `n` members; the start may take 60 s + `start_budget` s per member.
    Each pooled process starts `start_threads` members at a time; `nice` lowers the member
    processes' CPU priority below ZooKeeper's."""
    st = session_timeout or session_timeout_for(n)
    k = procs or procs_for(n)
    out: dict[str, Any] = {"members": n, "slots": n, "procs": k, "session_timeout": st,
                           "events": [], "errors": []}
    cl = MemberCluster(hostport=hostport, n=n, tmp=tmp, session_timeout=st, procs=k,
                       start_threads=start_threads, nice=nice)
    cpu0 = cpu_seconds(os.getpid()) or 0.0
    try:
        names = [f"m{i:04d}" for i in range(n - 1)]
        groups = [names[i::k] for i in range(k)]
        t0 = time.time()
        snap0 = cl.snapshot()
        pool = [cl.spawn(g) for g in groups if g]
        start_limit = 60.0 + n * start_budget
        sampling = threading.Event()
        sampler = threading.Thread(target=_sample_start, args=(cl, t0, sampling, out),
                                   name="bench-sampler", daemon=True)
        sampler.start()
        try:
            for w in pool:
                cl.wait_started(w, start_limit)
        finally:
            sampling.set()
            sampler.join(30)
        registered = time.time() - t0
        progress(f"{n} members: {len(cl.live)} registered in {registered:.1f}s")
        _spawn_solo(cl, "crash-0", start_limit)
        res = cl.converge(set(cl.live), t0, start_limit)
        settled = cl.quiet(limit=60.0 + n * 0.05)
        snap1 = cl.snapshot()
        start_traffic = window(snap0, snap1)
        start_traffic["top"] = _top(start_traffic["rows"])
        out["start"] = {"registered_s": registered, "converge_s": res["converge_s"],
                        "settled_s": settled - t0, "strategy": res["strategy"],
                        "doc_bytes": res["doc_bytes"], "traffic": start_traffic}
        progress(f"{n} members: converged in {res['converge_s']:.1f}s "
                 f"(strategy {res['strategy']}, assignment {res['doc_bytes']:,} bytes)")
        # Idle background: what the cluster costs ZooKeeper when nothing changes.
        a = cl.snapshot()
        time.sleep(idle_window)
        b = cl.snapshot()
        out["idle"] = window(a, b)
        before = dict(res)
        before["members_zk"] = res["members"]
        timeout = 2 * st + 60.0 + n * 0.1
        for rep in range(reps):
            for kind in KINDS:
                try:
                    ev = run_event(cl, kind, rep, before, timeout)
                except (Timeout, Abort) as exc:
                    out["errors"].append(f"{kind} rep {rep}: {exc}")
                    progress(f"{n} members: {kind} rep {rep} FAILED: {exc}")
                    raise
                res = ev.pop("_res")
                before = dict(res)
                before["members_zk"] = res["members"]
                out["events"].append(ev)
                tr = ev["traffic"]["change"]
                progress(f"{n} members: {kind} rep {rep}: {ev['converge_s'] * 1000:.0f} ms, "
                         f"{ev['moved']} moved, {tr['requests']:,} requests, "
                         f"{tr['bytes_to_clients']:,} bytes to members")
            # A fresh solo member for the next crash (not measured).
            res = _spawn_solo(cl, f"crash-{rep + 1}", timeout)
            cl.quiet(limit=30.0 + n * 0.03)
            before = dict(res)
            before["members_zk"] = res["members"]
    except (Timeout, Abort) as exc:
        if not out["errors"]:
            out["errors"].append(str(exc))
    finally:
        try:
            out["health"] = cl.status()
        except Exception as exc:  # noqa: BLE001 - a dead worker: report what we can
            out["health"] = {"error": f"{type(exc).__name__}: {exc}"}
        out["cpu_s"] = {**cl.cpu(), "observer": (cpu_seconds(os.getpid()) or 0.0) - cpu0}
        out["rss_mb"] = {k: rss_mb(w.proc.pid) for k, w in cl.workers.items()
                         if w.proc.alive()}
        out["log_problems"] = _log_problems(w.proc for w in cl.workers.values())
        cl.close()
    out["summary"] = _summarize(out)
    return out


def _sample_start(cl: MemberCluster, t0: float, done: threading.Event,
                  out: dict[str, Any], every: float = 10.0) -> None:
    """While members start: how many are registered, the assignment's version, owner
    znodes, and the server's counters, every `every` seconds (the evidence when a start
    does not finish in its budget)."""
    samples = out.setdefault("start_samples", [])
    while not done.wait(every):
        try:
            members = len(cl.client.get_children(cl.paths.nodes))
            owners = len(cl.client.get_children(cl.paths.owner_task(TASK)))
            stat = cl.client.exists(cl.paths.assignment)
            samples.append({"t": round(time.time() - t0, 1), "members": members,
                            "owners": owners, "assignment_version": stat.version
                            if stat else None, "mntr": _mntr(cl.hostport)})
        except Exception as exc:  # noqa: BLE001 - a sample is best effort
            samples.append({"t": round(time.time() - t0, 1), "error": repr(exc)})


def _log_problems(procs: Iterable[Proc], keep: int = 8) -> dict[str, Any]:
    """WARNING/ERROR lines of the workers' logs: counts by message start, and samples."""
    counts: dict[str, int] = {}
    samples: list[str] = []
    for p in procs:
        for line in p.log().splitlines():
            if " WARNING " not in line and " ERROR " not in line:
                continue
            msg = line.split("]", 1)[-1].strip()
            key = " ".join(msg.split()[:6])
            counts[key] = counts.get(key, 0) + 1
            if len(samples) < keep:
                samples.append(line[:300])
    return {"counts": dict(sorted(counts.items(), key=lambda kv: -kv[1])[:12]),
            "samples": samples}


def _summarize(out: dict[str, Any]) -> dict[str, Any]:
    s: dict[str, Any] = {}
    for kind in KINDS:
        evs = [e for e in out["events"] if e["kind"] == kind]
        if not evs:
            continue
        row: dict[str, Any] = {"converge": summary(e["converge_s"] for e in evs),
                               "settled": summary(e["settled_s"] for e in evs),
                               "moved": summary(e["moved"] for e in evs)}
        if kind == "crash":
            row["after_expiry"] = summary(e.get("after_expiry_s") for e in evs)
        if kind == "join":
            row["from_member_znode"] = summary(e.get("from_member_znode_s") for e in evs)
        for key in ("requests", "bytes_to_server", "bytes_to_clients"):
            row[key] = summary(e["traffic"]["change"][key] for e in evs)
        for key in MNTR:
            row[key] = summary(e["traffic"]["server"].get(key) for e in evs)
        row["background_requests"] = summary(e["traffic"]["background"]["requests"]
                                             for e in evs)
        rows: dict[str, list[int]] = {}
        for e in evs:
            _add(rows, e["traffic"]["rows"])
        row["top"] = [(t, c / len(evs), b / len(evs)) for t, c, b in _top(rows)]
        s[kind] = row
    return s


# -- entry points -----------------------------------------------------------------------------
def _hostport(server: Any) -> tuple[str, int]:
    if isinstance(server, str):
        host, _, port = server.split(",")[0].rpartition(":")
        return host, int(port)
    return server.host, int(server.port)


def run_members(hosts_or_server: Any, sizes: Iterable[int] = (10, 100, 300, 1000),
                reps: int = 3, *, tmp: Path | None = None, procs: int | None = None,
                session_timeout: float | None = None, start_budget: float = 0.3,
                start_threads: int = 4, nice: int = 0) -> dict[str, Any]:
    """Every size in turn on one ZooKeeper (a `ZooKeeperServer` or "host:port"; mntr must
    be allowed). Each size uses its own cluster name, and its processes are killed before
    the next size starts."""
    hostport = _hostport(hosts_or_server)
    own_tmp = tmp is None
    tmp = Path(tempfile.mkdtemp(prefix="xc-members-")) if tmp is None else tmp
    tmp.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"settings": {
        "task": f"one task '{TASK}', one no-op slot (RunBench) per member",
        "strategy": "product default", "reconcile_interval": "product default (5 s)",
        "procs": {str(n): (procs or procs_for(n)) for n in sizes},
        "session_timeout": {str(n): (session_timeout or session_timeout_for(n))
                            for n in sizes},
        "reps": reps, "crash": "SIGKILL of a process hosting only the victim",
        "start_threads": start_threads, "member_nice": nice},
        "sizes": {}}
    try:
        for n in sizes:
            t = time.monotonic()
            r = run_size(hostport, n, reps, tmp, procs, session_timeout,
                         start_budget=start_budget, start_threads=start_threads,
                         nice=nice)
            r["wall_s"] = time.monotonic() - t
            result["sizes"][str(n)] = r
            progress(f"{n} members done in {r['wall_s']:.0f}s")
    finally:
        if own_tmp:
            result["logs"] = "(temporary; kept only with --keep)"
    return result


def _kb(b: float | None) -> str:
    if b is None or (isinstance(b, float) and math.isnan(b)):
        return "-"
    return f"{b / 1024:,.1f}" if b < 10 * 1024 * 1024 else f"{b / 1048576:,.1f} Mi"


def _num(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:,.0f}"


def _summaries(sizes: dict[str, Any]) -> Iterable[tuple[str, str, dict[str, Any]]]:
    for n, r in sizes.items():
        for kind in KINDS:
            s = r.get("summary", {}).get(kind)
            if s:
                yield n, kind, s


def print_members(result: dict[str, Any]) -> str:
    sizes = result.get("sizes", {})
    out = []
    rows = []
    for n, r in sizes.items():
        st = r.get("start", {})
        rows.append([n, r["procs"] + 1, f"{r['session_timeout']:g}",
                     f"{st.get('registered_s', math.nan):.1f}" if st else "-",
                     f"{st.get('converge_s', math.nan):.1f}" if st else "-",
                     f"{st.get('settled_s', math.nan):.1f}" if st else "-",
                     f"{st.get('doc_bytes', 0):,}" if st else "-",
                     _num(sum(v for k, v in r.get("cpu_s", {}).items())),
                     "; ".join(e.splitlines()[0] for e in r["errors"])[:80] or "ok"])
    out.append(table("Members: initial start (s)",
                     ["members", "processes", "session s", "all registered", "converged",
                      "herd settled", "assignment bytes", "CPU s (all workers)", "errors"],
                     rows))
    rows = []
    for n, kind, s in _summaries(sizes):
        c = s["converge"]
        extra = "-"
        if kind == "crash":
            extra = f"after expiry p50 {ms(s['after_expiry']['median'])}, " \
                    f"max {ms(s['after_expiry']['max'])}"
        elif kind == "join":
            extra = f"from member znode p50 {ms(s['from_member_znode']['median'])}"
        rows.append([n, kind, c["n"], ms(c["median"]), ms(c["max"]),
                     _num(s["moved"]["median"]), ms(s["settled"]["median"]), extra])
    out.append(table("Members: time to converge after a change (ms, from the action)",
                     ["members", "event", "n", "p50", "max", "slots moved p50",
                      "herd settled p50", "note"], rows,
                     "converged: assignment, member znodes and every owner znode as planned "
                     "(server times); herd settled: last change-driven request + 1 s quiet"))
    rows = []
    for n, kind, s in _summaries(sizes):
        m = int(n)
        req, bin_, bout = (s["requests"]["median"], s["bytes_to_clients"]["median"],
                           s["bytes_to_server"]["median"])
        rows.append([n, kind, _num(req), f"{req / m:.1f}", _kb(bin_), _kb(bin_ / m),
                     _kb(bout), _num(s["zk_packets_received"]["median"]),
                     _kb(s["zk_response_bytes"]["median"]),
                     _num(s["background_requests"]["median"])])
    out.append(table("Members: ZooKeeper traffic per membership change (p50 over reps)",
                     ["members", "event", "requests", "per member", "KiB to members",
                      "KiB per member", "KiB to server", "server pkts recv (window)",
                      "server resp KiB (window)", "background reqs (window)"], rows,
                     "requests/bytes: the members' requests caused by the change (client-"
                     "side, exact wire sizes); server columns: mntr over the whole window, "
                     "background (lease, pings, periodic reconcile, observer) included"))
    rows = []
    for n, kind, s in _summaries(sizes):
        for tag, count, b in s["top"][:4]:
            rows.append([n, kind, tag, _num(count), _kb(b)])
    out.append(table("Members: what a change makes members send (top by reply bytes, "
                     "per change)", ["members", "event", "source|request znode", "requests",
                                     "reply KiB"], rows))
    rows = []
    for n, r in sizes.items():
        idle = r.get("idle")
        if not idle:
            continue
        sec = idle["seconds"]
        by: dict[str, list[int]] = {}
        for tag, row in idle["rows"].items():
            acc = by.setdefault(_source(tag), [0, 0, 0, 0])
            for i, v in enumerate(row):
                acc[i] += v
        srv = idle["server"]
        rows.append([n, f"{sec:.0f}", _num(srv.get("zk_packets_received", 0) / sec),
                     _kb(srv.get("zk_response_bytes", 0) / sec),
                     ", ".join(f"{k} {v[0] / sec:,.0f}/s {_kb(v[3] / sec)} KiB/s"
                               for k, v in sorted(by.items(), key=lambda kv: -kv[1][3]))])
    out.append(table("Members: idle cluster, ZooKeeper load", ["members", "window s",
                     "server pkts recv/s", "server resp KiB/s", "by source (client-side)"],
                     rows))
    rows = []
    for n, r in sizes.items():
        if not r.get("errors"):
            continue
        for smp in r.get("start_samples", [])[::3]:
            m = smp.get("mntr", {})
            rows.append([n, f"{smp['t']:.0f}", smp.get("members", "-"), smp.get("owners", "-"),
                         smp.get("assignment_version", "-"),
                         _num(m.get("zk_packets_received")),
                         _kb(m.get("zk_response_bytes"))])
    if rows:
        out.append(table("Members: start progress of sizes that did not finish",
                         ["members", "s", "registered", "owner znodes", "assignment version",
                          "server pkts recv", "server resp KiB"], rows))
    rows = []
    for n, r in sizes.items():
        h = r.get("health", {})
        lp = r.get("log_problems", {})
        rows.append([n, h.get("members", "-"), h.get("connected", "-"),
                     h.get("lease_valid", "-"),
                     ", ".join(f"{k} {v}" for k, v in h.get("session_events", {}).items()),
                     sum(lp.get("counts", {}).values()),
                     ", ".join(f"{_num(v)}" for v in r.get("rss_mb", {}).values())])
    out.append(table("Members: health at the end", ["members", "alive", "connected",
                     "lease valid", "session events", "warning/error lines",
                     "worker RSS MB"], rows))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    from bench.common import start_zk

    ap = argparse.ArgumentParser(prog="python -m bench.members", description=__doc__.split(
        "\n")[0])
    ap.add_argument("--sizes", default="10,100,300,1000")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--procs", type=int, default=None, help="pooled worker processes")
    ap.add_argument("--session-timeout", type=float, default=None)
    ap.add_argument("--start-budget", type=float, default=0.3,
                    help="seconds per member allowed for the start, on top of 60 s")
    ap.add_argument("--start-threads", type=int, default=4,
                    help="members each pooled process starts at a time")
    ap.add_argument("--nice", type=int, default=0,
                    help="run the member processes at this nice value (ZooKeeper at 0)")
    ap.add_argument("--json", type=Path, default=None, help="write the result here")
    ap.add_argument("--keep", type=Path, default=None, help="keep logs in this directory")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    tmp = args.keep or Path(tempfile.mkdtemp(prefix="xc-members-"))
    tmp.mkdir(parents=True, exist_ok=True)
    server = start_zk(tmp)
    try:
        result = run_members(server, sizes, args.reps, tmp=tmp, procs=args.procs,
                             session_timeout=args.session_timeout,
                             start_budget=args.start_budget,
                             start_threads=args.start_threads, nice=args.nice)
    finally:
        server.stop()
    print(print_members(result), flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main()
