"""Scenarios 1-3 (and the real half of 4): handovers in a live 5-node cluster.

One cluster per strategy. Each cycle, from 5 converged nodes:

    graceful leave of a follower (SIGTERM)  -> 4 nodes, then a join -> 5
    crash of a follower (SIGKILL)           -> 4 nodes, then a join -> 5
    crash of the leader (SIGKILL)           -> 4 nodes, then a join -> 5

Times come from the handlers' own `start` records (`time.time()` when a slot starts running),
the member znode's `ctime` (join), a watch on the departing member znode (when ZooKeeper
deleted it), and the assignment znode's `mtime` (when the leader's write was applied).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from bench.cluster import XCluster
from bench.common import (
    Timeout,
    cpu_seconds,
    cpu_totals,
    fmt_summary_ms,
    ms,
    parse_log,
    progress,
    summary,
    table,
    wait_for,
)
from bench.moves import min_moves
from tests.checker import worst_overlap_in_file
from xconsumer.assignment import moved_slots
from xconsumer.leader import doc_plan

KINDS = ("leave", "crash_follower", "crash_leader", "join")
LABELS = {
    "leave": "graceful leave (SIGTERM follower)",
    "crash_follower": "crash follower (kill -9)",
    "crash_leader": "crash leader (kill -9)",
    "join": "join (new node)",
}


def _pick_follower(doc: dict[str, Any]) -> str:
    members = list(doc["members"])  # sequence order: members[0] leads
    followers = members[1:]
    return followers[len(followers) // 2]


def _publish_log(cl: XCluster, generation: int) -> tuple[float | None, float | None, str | None]:
    """(log time, duration s, node) of the leader's "published assignment generation N" line."""
    needle = f"published assignment generation {generation}:"
    for name, proc in cl.nodes.items():
        for t, _node, rest in parse_log(proc.log()):
            if rest.startswith(needle):
                dur = rest.rsplit("(", 1)[-1].split(" ms)")[0]
                try:
                    return t, float(dur) / 1000.0, name
                except ValueError:
                    return t, None, name
    return None, None, None


def measure_event(cl: XCluster, kind: str, *, victim: str | None = None,
                  newname: str | None = None, timeout: float = 40.0,
                  zk_pid: int | None = None) -> dict[str, Any]:
    cl.records.refresh()
    before = cl.doc()
    assert before is not None
    before_plan = doc_plan(before)
    gen_before = int(before["generation"])
    members_before = set(before["members"])
    gone: dict[str, float] = {}
    fired = threading.Event()

    pids = [p.pid for p in cl.nodes.values() if p.alive()] + ([zk_pid] if zk_pid else [])
    cpu_marks: dict[str, tuple[float, dict[int, float | None], float]] = {}

    def mark(label: str) -> None:
        cpu_marks[label] = (time.time(), {pid: cpu_seconds(pid) for pid in pids},
                            cpu_totals()[0])

    def on_gone(_event: Any) -> None:
        gone.setdefault("t", time.time())
        if kind != "leave":
            mark("start")
        fired.set()

    if kind == "join":
        assert newname is not None
        expected = members_before | {newname}
        t0 = time.time()
        proc = cl.start_node(newname)
        t0 = proc.started_at
    else:
        assert victim is not None
        found = cl.member(victim)
        assert found is not None, f"{victim} is not a member"
        child, _ = found
        cl.client.exists(cl.paths.node(child), watch=on_gone)
        expected = members_before - {victim}
        proc = cl.nodes[victim]
        if kind == "leave":
            mark("start")
            t0 = proc.term()
        else:
            t0 = proc.kill()
            cl.records.mark_dead(victim)
    doc = wait_for(lambda: cl.converged(expected), timeout, 0.05, what=f"{kind} convergence")
    t_conv = time.time()
    mark("end")
    exit_code = None
    if kind == "leave":
        exit_code = proc.reap(20)
    elif kind != "join":
        proc.reap(10)
    after_plan = doc_plan(doc)
    final_owner = {s.key: n for n, slots in after_plan.items() for s in slots}
    before_owner = {s.key: n for n, slots in before_plan.items() for s in slots}
    starts = [r for r in cl.records.since(t0) if r.e == "start"]
    stops = [r for r in cl.records.since(t0, "stop")]
    # Start of each slot on its final owner (the last one, if it started there twice).
    final_start: dict[str, float] = {}
    for r in starts:
        if final_owner.get(r.key) == r.node:
            final_start[r.key] = max(final_start.get(r.key, 0.0), r.t)
    moved_keys = sorted(k for k in final_owner if before_owner.get(k) != final_owner[k])
    last_moved = max((final_start[k] for k in moved_keys if k in final_start), default=None)
    first_moved = min((final_start[k] for k in moved_keys if k in final_start), default=None)
    out: dict[str, Any] = {
        "kind": kind, "t0": t0, "victim": victim, "new": newname,
        "generations": int(doc["generation"]) - gen_before,
        "moved": moved_slots(before_plan, after_plan),
        "min_moved": min_moves(before_plan, sorted(expected), len(cl.expected)),
        "slot_starts": len(starts),
        "all_moved_running": (last_moved - t0) if last_moved else None,
        "first_moved_running": (first_moved - t0) if first_moved else None,
        "converged_seen": t_conv - t0,
        "exit_code": exit_code,
    }
    pubs = cl.pubs_after(gen_before)
    if pubs:
        out["publish_mtime"] = pubs[0]["mtime"] - t0
        out["publish_seen"] = pubs[0]["seen"] - t0
    log_t, log_dur, log_node = _publish_log(cl, gen_before + 1)
    out["publish_log"] = (log_t - t0) if log_t else None
    out["publish_compute"] = log_dur
    out["publisher"] = log_node
    if kind == "join":
        found = wait_for(lambda: cl.member(newname or ""), 5, what="joined member")
        ctime = found[1].ctime / 1000.0
        mine = [final_start[s.key] for s in after_plan.get(newname or "", [])
                if s.key in final_start]
        out["registered"] = ctime - t0  # process start -> member znode created
        out["join"] = (max(mine) - ctime) if mine else None  # the headline join figure
        out["join_all_moved"] = (last_moved - ctime) if last_moved else None
        out["own_slots"] = len(after_plan.get(newname or "", []))
        if "publish_mtime" in out:
            out["publish_after_ref"] = out["publish_mtime"] - out["registered"]
    else:
        fired.wait(2.0)
        victim_keys = [s.key for s in before_plan.get(victim or "", [])]
        vs = [final_start[k] for k in victim_keys if k in final_start]
        out["victim_slots"] = len(victim_keys)
        out["victim_moved_running"] = (max(vs) - t0) if len(vs) == len(victim_keys) else None
        out["member_gone"] = (gone["t"] - t0) if "t" in gone else None
        if kind != "leave":
            out["after_expiry"] = (last_moved - gone["t"]) if last_moved and gone else None
            out["minus_timeout"] = ((last_moved - t0) - cl.session_timeout
                                    if last_moved else None)
        if "publish_mtime" in out and "t" in gone:
            out["publish_after_ref"] = out["publish_mtime"] - out["member_gone"]
    if last_moved and "publish_mtime" in out:
        out["pub_to_last_start"] = out["all_moved_running"] - out["publish_mtime"]
    # Slots that moved between two live nodes: old owner's stop record -> new owner's start.
    gaps = []
    first_stop: dict[str, float] = {}
    for r in stops:
        if before_owner.get(r.key) == r.node and r.key not in first_stop:
            first_stop[r.key] = r.t
    for k in moved_keys:
        if k in first_stop and k in final_start:
            gaps.append(final_start[k] - first_stop[k])
    out["stop_to_start"] = summary(gaps) if gaps else None
    # Downtime of each moved slot: its previous run's end (stop record, or the kill instant
    # when its owner was killed) to its start on the new owner.
    down = []
    for k in moved_keys:
        if k not in final_start:
            continue
        if k in first_stop:
            down.append(final_start[k] - first_stop[k])
        elif kind.startswith("crash") and before_owner.get(k) == victim:
            down.append(final_start[k] - t0)
    if "start" in cpu_marks and kind != "join":
        # CPU the surviving nodes and ZooKeeper used from the trigger to convergence, against
        # the machine's busy time: is the handover CPU-bound on this machine?
        (ta, ca, ba), (tb, cb, bb) = cpu_marks["start"], cpu_marks["end"]
        used = sum((cb[p] or 0) - (ca[p] or 0) for p in ca if ca[p] is not None
                   and cb.get(p) is not None)
        window = max(tb - ta, 1e-6)
        out["cluster_cpu_s"] = used
        out["zk_cpu_s"] = ((cb.get(zk_pid) or 0) - (ca.get(zk_pid) or 0)) if zk_pid else None
        out["cpu_ms_per_moved_slot"] = used / max(1, out["moved"]) * 1000
        out["cluster_cores"] = used / window
        out["machine_cores"] = (bb - ba) / window
        out["cpu_window"] = window
        # Where it went: the node that left (its stop, before it exited), the node that
        # published, the other survivors together, and ZooKeeper.
        by_pid = {p.pid: n for n, p in cl.nodes.items()}
        roles = {"leaver": 0.0, "publisher": 0.0, "others": 0.0, "zookeeper": 0.0}
        for pid in ca:
            if ca[pid] is None or cb.get(pid) is None:
                continue
            name = by_pid.get(pid)
            role = ("zookeeper" if pid == zk_pid else "leaver" if name == victim
                    else "publisher" if name == log_node else "others")
            roles[role] += (cb[pid] or 0) - ca[pid]
        out["cpu_roles"] = roles
    out["downtime_slot_s"] = sum(down)
    out["downtime_max"] = max(down) if down else 0.0
    # When each moved slot's owner znode was created (server clock): splits the time after
    # the publish into "the node reacted and claimed the slot" and "the handler started".
    claims = []
    starts_after_claim = []
    for k in moved_keys:
        task, idx = k.rsplit("/", 1)
        stat = cl.client.exists(cl.paths.owner(task, int(idx)))
        if stat is None or k not in final_start:
            continue
        ctime = stat.ctime / 1000.0
        if "publish_mtime" in out:
            claims.append(ctime - (t0 + out["publish_mtime"]))
        starts_after_claim.append(final_start[k] - ctime)
    out["claim_after_publish"] = summary(claims) if claims else None
    out["first_claim_after_publish"] = min(claims) if claims else None
    out["start_after_claim"] = summary(starts_after_claim) if starts_after_claim else None
    killed = {p.pid: p.killed_at for p in cl.nodes.values() if p.killed_at}
    out["overlap"] = worst_overlap_in_file(cl.records.path, killed).seconds
    # Timeline of slot starts for the plot: seconds after t0 of each moved slot's start.
    out["start_offsets"] = sorted(final_start[k] - t0 for k in moved_keys if k in final_start)
    return out


def run_cycles(*, hosts: str, tmp: Path, root: str, strategy: str, cycles: int,
               slots: int = 100, nodes: int = 5, session_timeout: float = 2.0,
               reconcile_interval: float = 5.0, zk_pid: int | None = None) -> dict[str, Any]:
    tasks = [{"name": "bench", "workName": "bench", "workerNum": slots, "stop_timeout": 5}]
    cl = XCluster(hosts=hosts, tmp=tmp, root=root, tasks=tasks, strategy=strategy,
                  session_timeout=session_timeout, reconcile_interval=reconcile_interval)
    events: list[dict[str, Any]] = []
    counter = 0

    def fresh() -> str:
        nonlocal counter
        counter += 1
        return f"n{counter:02d}"

    try:
        names = [fresh() for _ in range(nodes)]
        for name in names:
            cl.start_node(name)
            # In order, so sequence numbers (and leadership) follow the names.
            wait_for(lambda n=name: cl.member(n), 30, 0.05, what=f"{name} joined")
        wait_for(lambda: cl.converged(set(names)), 60, 0.1, what="initial convergence")
        for c in range(cycles):
            for kind in ("leave", "crash_follower", "crash_leader"):
                doc = cl.doc()
                assert doc is not None
                victim = doc["members"][0] if kind == "crash_leader" else _pick_follower(doc)
                ev = measure_event(cl, kind, victim=victim, zk_pid=zk_pid)
                ev["cycle"] = c
                events.append(ev)
                progress(f"{strategy} cycle {c + 1}/{cycles} {kind}: "
                         f"{ms(ev['all_moved_running'])} ms, {ev['moved']} moved")
                time.sleep(0.3)
                ev = measure_event(cl, "join", newname=fresh(), zk_pid=zk_pid)
                ev["cycle"] = c
                ev["after"] = kind
                events.append(ev)
                progress(f"{strategy} cycle {c + 1}/{cycles} join: {ms(ev['join'])} ms, "
                         f"{ev['moved']} moved")
                time.sleep(0.3)
    except Timeout as exc:
        progress(f"handover {strategy}: {exc}\n{tail_logs(cl)}")
        raise
    finally:
        cl.close()
    return {"strategy": strategy, "slots": slots, "nodes": nodes,
            "session_timeout": session_timeout, "reconcile_interval": reconcile_interval,
            "events": events, "summary": summarize(events)}


def tail_logs(cl: XCluster, n: int = 1500) -> str:
    return "\n".join(f"--- {name} ---\n{p.log()[-n:]}" for name, p in cl.nodes.items())


METRICS = ("all_moved_running", "victim_moved_running", "first_moved_running", "join",
           "join_all_moved", "registered", "member_gone", "publish_mtime", "publish_after_ref",
           "publish_compute", "pub_to_last_start", "after_expiry", "minus_timeout", "moved",
           "min_moved", "generations", "first_claim_after_publish", "overlap", "downtime_slot_s",
           "downtime_max", "slot_starts", "cluster_cpu_s", "cluster_cores", "machine_cores",
           "cpu_window", "zk_cpu_s", "cpu_ms_per_moved_slot")


def summarize(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for kind in KINDS:
        evs = [e for e in events if e["kind"] == kind]
        if not evs:
            continue
        out[kind] = {m: summary(e.get(m) for e in evs) for m in METRICS
                     if any(e.get(m) is not None for e in evs)}
        for key in ("stop_to_start", "claim_after_publish", "start_after_claim"):
            for stat in ("median", "max"):
                vals = [e[key][stat] for e in evs if e.get(key)]
                if vals:
                    out[kind][f"{key}_{stat}"] = summary(vals)
        for role in ("leaver", "publisher", "others", "zookeeper"):
            vals = [e["cpu_roles"][role] for e in evs if e.get("cpu_roles")]
            if vals:
                out[kind][f"cpu_{role}_s"] = summary(vals)
    return out


def _cores(k: dict[str, Any]) -> str:
    if "cluster_cores" not in k:
        return "-"
    return f"{k['cluster_cores']['median']:.2f} / {k['machine_cores']['median']:.2f}"


def print_tables(result: dict[str, Any]) -> str:
    s = result["summary"]
    st = result["session_timeout"]
    rows = []

    def med(k: dict[str, Any], key: str) -> str:
        return ms(k.get(key, {}).get("median"))

    for kind in KINDS:
        if kind not in s:
            continue
        k = s[kind]
        main = k["join"] if kind == "join" else k["all_moved_running"]
        p50, p95 = fmt_summary_ms(main)
        detect = med(k, "registered" if kind == "join" else "member_gone")
        rows.append([LABELS[kind], main["n"], p50, p95, detect, med(k, "publish_after_ref"),
                     med(k, "publish_compute"), med(k, "claim_after_publish_max"),
                     med(k, "start_after_claim_median"), med(k, "stop_to_start_median"),
                     f"{k['moved']['median']:.0f}", f"{k['generations']['median']:.0f}",
                     _cores(k),
                     "yes" if k["overlap"]["max"] <= 0 else f"{k['overlap']['max']:.3f}s"])
    out = table(
        f"Handover, {result['nodes']} nodes / {result['slots']} slots, strategy "
        f"{result['strategy']} (ms; breakdown columns are medians over events)",
        ["event", "n", "p50", "p95", "trigger", "publish", "leader compute",
         "last claim", "start after claim", "stop->start", "moved", "generations",
         "cores busy", "no overlap"], rows,
        "p50/p95: leave and crash = event instant -> last moved slot's start record; join = "
        "member znode ctime -> last start on the new node.\n"
        "trigger: event -> member znode deleted (watch) / process spawn -> member znode "
        "created (join). publish: that instant -> assignment znode mtime.\n"
        "leader compute: the leader's own publish() timing (log). last claim: publish -> "
        "last moved slot's owner znode ctime. start after claim: owner znode ctime -> "
        "handler's start record (median slot).\nstop->start: old owner's stop record -> new "
        "owner's start record (median slot moved between live nodes).\ncores busy: CPU "
        "used by the surviving nodes + ZooKeeper / machine-wide, from the trigger to "
        "convergence.")
    cpu_rows = []
    for kind in KINDS:
        k = s.get(kind, {})
        if "cluster_cpu_s" not in k:
            continue
        cpu_rows.append([LABELS[kind], f"{k['cluster_cpu_s']['median'] * 1000:.0f}",
                         f"{k['zk_cpu_s']['median'] * 1000:.0f}" if "zk_cpu_s" in k else "-",
                         f"{k['cpu_ms_per_moved_slot']['median']:.1f}",
                         f"{k['cluster_cores']['median']:.2f}",
                         f"{k['machine_cores']['median']:.2f}",
                         " / ".join(f"{k[f'cpu_{r}_s']['median'] * 1000:.0f}"
                                    if f"cpu_{r}_s" in k else "-"
                                    for r in ("leaver", "publisher", "others"))])
    if cpu_rows:
        out += "\n" + table(
            "CPU during the handover (trigger -> convergence seen), medians",
            ["event", "nodes + ZooKeeper CPU ms", "of which ZooKeeper", "CPU ms per moved slot",
             "cores (cluster)", "cores (whole machine)", "leaver / publisher / others ms"],
            cpu_rows,
            "CPU read from each process's CPU clock (ns); the window ends when the benchmark "
            "saw convergence (polled every 50 ms). leaver: the node that left, until it "
            "exited; publisher: the leader that published; others: the other survivors.")
    crash_rows = []
    for kind in ("crash_follower", "crash_leader"):
        if kind not in s:
            continue
        k = s[kind]
        crash_rows.append([LABELS[kind], *fmt_summary_ms(k["all_moved_running"]),
                           *fmt_summary_ms(k["minus_timeout"]),
                           *fmt_summary_ms(k["after_expiry"]),
                           *fmt_summary_ms(k["member_gone"])])
    if crash_rows:
        out += "\n" + table(
            f"Crash detail (session timeout {st:g}s), ms",
            ["event", "raw p50", "raw p95", "-timeout p50", "-timeout p95",
             "after expiry p50", "after expiry p95", "expiry seen p50", "expiry seen p95"],
            crash_rows,
            "raw = kill -> all moved slots running; -timeout = raw minus the session timeout; "
            "after expiry = from the moment a watch saw the member znode deleted.")
    return out
