"""Scenario 7: the same handovers with kazoo's `SetPartitioner` recipe as the peer.

Each measurement uses its own party ("group") of separate member processes
(bench/peer_partitioner.py) on the same ZooKeeper with the same session timeout, 5 members and
100 partitions: a leave (SIGTERM) or crash (SIGKILL) from 5 members, or a join from 4.

A SetPartitioner handover waits for the party to be stable for `time_boundary` seconds (30 by
default), which is idle waiting, so with the default boundary the groups' events are
staggered a few seconds apart and their waits overlap; with a tuned boundary the events run
one after another.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import (
    Abort,
    Proc,
    RecordLog,
    close_client,
    ms,
    progress,
    spawn,
    stop_all,
    summary,
    table,
    wait_for,
    zk_client,
)

PEER_KINDS = ("leave", "crash", "join")


@dataclass
class Group:
    path: str
    hosts: str
    tmp: Path
    kind: str
    partitions: int
    time_boundary: float
    session_timeout: float
    members: dict[str, Proc] = field(default_factory=dict)
    records: RecordLog = field(init=False)
    counter: int = 0
    t0: float | None = None
    victim: str | None = None
    newname: str | None = None

    def __post_init__(self) -> None:
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.records = RecordLog(self.tmp / "record.jsonl")

    def spawn_member(self, formation: float | None = None) -> Proc:
        self.counter += 1
        name = f"m{self.counter}"
        cmd = [sys.executable, "-m", "bench.peer_partitioner", "--zk", self.hosts,
               "--path", self.path, "--partitions", str(self.partitions), "--name", name,
               "--record", str(self.records.path), "--time-boundary", str(self.time_boundary),
               "--session-timeout", str(self.session_timeout),
               "--max-seconds", str(max(600.0, self.time_boundary * 20))]
        if formation is not None:
            cmd += ["--formation-boundary", str(formation)]
        proc = spawn(name, cmd, self.tmp / f"{name}.log")
        self.members[name] = proc
        return proc

    def check_alive(self) -> None:
        for name, proc in self.members.items():
            if not proc.alive() and proc.termed_at is None and proc.killed_at is None:
                raise Abort(f"SetPartitioner member {self.path} {name} exited "
                            f"({proc.proc.returncode}):\n{proc.log()[-1500:]}")

    def live(self) -> set[str]:
        return {n for n, p in self.members.items() if p.alive() and n not in self.records.dead}

    def settled(self, since: float = 0.0) -> bool:
        """Every partition runs on exactly one live member, every live member runs some, and
        each run started at or after `since`."""
        self.check_alive()
        self.records.refresh()
        live = self.live()
        owners = self.records.owners()
        holders: set[str] = set()
        for p in range(self.partitions):
            nodes = owners.get(f"part/{p}", set())
            if len(nodes) != 1:
                return False
            (node,) = nodes
            if node not in live or self.records.running[f"part/{p}"][node] < since:
                return False
            holders.add(node)
        return holders == live


def _join_ctime(client: Any, path: str, name: str) -> float | None:
    party = f"{path}/party"
    for child in client.get_children(party):
        if child.endswith(f"-{name}"):
            stat = client.exists(f"{party}/{child}")
            if stat is not None:
                return stat.ctime / 1000.0
    return None


def _measure(g: Group, client: Any) -> dict[str, Any]:
    assert g.t0 is not None
    t0 = g.t0
    recs = g.records
    final: dict[str, tuple[str, float]] = {}
    for key, nodes in recs.owners().items():
        for node in nodes:
            final[key] = (node, recs.running[key][node])
    starts = [t for _, t in final.values()]
    last = max(starts)
    out: dict[str, Any] = {"kind": g.kind, "t0": t0, "time_boundary": g.time_boundary,
                           "all_running": last - t0,
                           "restarted": sum(1 for t in starts if t >= t0)}
    # Downtime: for every partition, from its previous run's end (stop record, or the kill
    # instant for a crashed member's partitions) to its start on the final owner.
    down = []
    for key, (_node, t_start) in final.items():
        stops = [r.t for r in recs.records if r.e == "stop" and r.key == key and r.t <= t_start
                 and r.t >= t0 - 1]
        if stops:
            down.append(t_start - max(stops))
        elif g.kind == "crash":
            down.append(t_start - t0)
    out["downtime_slot_s"] = sum(down)
    out["downtime_max"] = max(down) if down else 0.0
    if g.kind == "join":
        ctime = _join_ctime(client, g.path, g.newname or "")
        mine = [t for node, t in final.values() if node == g.newname]
        out["registered"] = (ctime - t0) if ctime else None
        out["join"] = (max(mine) - ctime) if ctime and mine else None
        out["join_all"] = (last - ctime) if ctime else None
    else:
        victim_keys = {r.key for r in recs.records if r.node == g.victim and r.e == "start"}
        vs = [final[k][1] for k in victim_keys if k in final]
        out["victim_moved_running"] = max(vs) - t0 if vs else None
        if g.kind == "crash":
            out["minus_timeout"] = out["all_running"] - g.session_timeout
    return out


def run_peer(*, hosts: str, tmp: Path, reps: int, time_boundary: float, overlap: bool,
             members: int = 5, partitions: int = 100, session_timeout: float = 2.0,
             spacing: float = 3.0) -> dict[str, Any]:
    tag = f"tb{time_boundary:g}".replace(".", "_")
    groups: list[Group] = []
    for r in range(reps):
        for kind in PEER_KINDS:
            g = Group(path=f"/peer-{tag}/{kind}-{r}", hosts=hosts, tmp=tmp / tag / f"{kind}-{r}",
                      kind=kind, partitions=partitions, time_boundary=time_boundary,
                      session_timeout=session_timeout)
            groups.append(g)
    client = zk_client(hosts)
    events: list[dict[str, Any]] = []
    try:
        for g in groups:
            for _ in range(members - 1 if g.kind == "join" else members):
                g.spawn_member(formation=min(1.0, time_boundary))
        progress(f"SetPartitioner time_boundary={time_boundary:g}s: {len(groups)} groups of "
                 f"{members} members starting")
        wait_for(lambda: all(g.settled() for g in groups), 120, 0.2,
                 what="SetPartitioner groups settled")
        # Formed: switch every member to the measured boundary, and check they all did.
        for g in groups:
            for proc in g.members.values():
                os.kill(proc.pid, signal.SIGUSR1)
        wait_for(lambda: all("time_boundary now" in p.log() for g in groups
                             for p in g.members.values()), 10, 0.05,
                 what="members switched to the measured time_boundary")
        time.sleep(0.5)
        pending: list[Group] = []
        for g in groups:
            if g.kind == "join":
                g.newname = f"m{g.counter + 1}"
                g.t0 = time.time()
                proc = g.spawn_member()
                g.t0 = proc.started_at
            else:
                names = sorted(g.members)
                g.victim = names[len(names) // 2]
                proc = g.members[g.victim]
                if g.kind == "leave":
                    g.t0 = proc.term()
                else:
                    g.t0 = proc.kill()
                    g.records.mark_dead(g.victim)
            pending.append(g)
            if overlap:
                time.sleep(spacing)
            else:
                wait_for(lambda g=g: g.settled(g.t0 or 0.0), time_boundary * 3 + 60, 0.05,
                         what=f"SetPartitioner {g.kind} settled")
                ev = _measure(g, client)
                events.append(ev)
                progress(f"SetPartitioner tb={time_boundary:g}s {g.kind}: "
                         f"{ms(ev['all_running'])} ms")
                stop_all(g.members.values(), graceful=False)
                time.sleep(0.3)
        if overlap:
            for g in pending:
                wait_for(lambda g=g: g.settled(g.t0 or 0.0), time_boundary * 3 + 60, 0.2,
                         what=f"SetPartitioner {g.kind} settled")
                ev = _measure(g, client)
                events.append(ev)
                progress(f"SetPartitioner tb={time_boundary:g}s {g.kind}: "
                         f"{ms(ev['all_running'])} ms")
    finally:
        for g in groups:
            stop_all(g.members.values(), graceful=False)
        close_client(client)
    out: dict[str, Any] = {"time_boundary": time_boundary, "members": members,
                           "partitions": partitions, "session_timeout": session_timeout,
                           "overlapped": overlap, "events": events, "summary": {}}
    for kind in PEER_KINDS:
        evs = [e for e in events if e["kind"] == kind]
        out["summary"][kind] = {m: summary(e.get(m) for e in evs)
                                for m in ("all_running", "join", "join_all", "registered",
                                          "victim_moved_running", "minus_timeout",
                                          "restarted", "downtime_slot_s", "downtime_max")
                                if any(e.get(m) is not None for e in evs)}
    return out


def print_peer(result: dict[str, Any]) -> str:
    rows = []
    for kind in PEER_KINDS:
        s = result["summary"].get(kind)
        if not s:
            continue
        main = s["join"] if kind == "join" else s["all_running"]
        rows.append([kind, main["n"], ms(main["median"]), ms(main["p95"]),
                     f"{s['restarted']['median']:.0f}",
                     f"{s['downtime_slot_s']['median']:.1f}"])
    return table(
        f"SetPartitioner, {result['members']} members / {result['partitions']} partitions, "
        f"time_boundary {result['time_boundary']:g}s (ms)",
        ["event", "n", "p50", "p95", "partitions restarted", "downtime slot-s"], rows,
        "leave/crash: event -> every partition running again; join: party znode ctime -> last "
        "start on the new member.")
