"""Markdown tables from a results.json, for docs/BENCHMARKS.md.

    python -m bench.report [bench/results/results.json]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from bench.commits import print_commits
from bench.common import REPO, md_table, ms
from bench.handover import KINDS, LABELS, _cores
from bench.members import print_members
from bench.run import headline, targets


def _m(d: dict[str, Any] | None, key: str = "median") -> str:
    return ms((d or {}).get(key))


def render(r: dict[str, Any]) -> str:
    out: list[str] = []
    meta = r["meta"]
    mach = meta.get("machine", {})
    out.append("### Machine and run\n")
    bg = meta.get("background_cores", {})
    out.append(md_table(["item", "value"], [
        ["cores / memory", f"{mach.get('cores')} / {mach.get('memory_gib')} GiB"],
        ["CPU", mach.get("cpu_model")],
        ["OS", mach.get("os")],
        ["Python / kazoo / xconsumer", f"{mach.get('python')} / {mach.get('kazoo')} / "
                                       f"{mach.get('xconsumer')} ({mach.get('git')})"],
        ["ZooKeeper / Java", f"{mach.get('zookeeper')} / {mach.get('java')}"],
        ["mode, total time", f"{meta['mode']}, {meta.get('seconds', 0):.0f} s"],
        ["seconds per section", ", ".join(f"{k} {v:g}" for k, v in
                                          meta.get("section_seconds", {}).items())],
        ["other load on the machine (cores busy outside the benchmark)",
         ", ".join(f"{k} {v:g}" for k, v in bg.items())],
    ]))
    if "handover" in r or "peer" in r:
        h, rows = headline(r)
        out.append("\n### Headline\n")
        out.append(md_table(h, rows))
    tr = targets(r)  # recomputed: the verdict rules may be newer than the run
    if tr:
        out.append("\n### Targets\n")
        out.append(md_table(["target", "measured", "verdict"], tr))
    if "floor" in r:
        f = r["floor"]
        out.append("\n### ZooKeeper floor\n")
        out.append(md_table(["operation", "n", "p50 ms", "p95 ms"], [
            [label, f[k]["n"], _m(f[k]), _m(f[k], "p95")]
            for k, label in (("create_delete", "create + delete round trip"),
                             ("get", "get round trip"), ("set", "set round trip"),
                             ("watch", "watch latency (set -> watch fires in another client)"))]))
    for strategy, res in (r.get("handover") or {}).items():
        s = res["summary"]
        out.append(f"\n### Handover, {strategy}\n")
        rows = []
        for kind in KINDS:
            if kind not in s:
                continue
            k = s[kind]
            main = k["join"] if kind == "join" else k["all_moved_running"]
            rows.append([LABELS[kind], main["n"], _m(main), _m(main, "p95"),
                         _m(k.get("registered" if kind == "join" else "member_gone")),
                         _m(k.get("publish_after_ref")), _m(k.get("publish_compute")),
                         _m(k.get("claim_after_publish_max")),
                         _m(k.get("start_after_claim_median")),
                         f"{k['moved']['median']:.0f}", _cores(k),
                         "none" if k["overlap"]["max"] <= 0 else f"{k['overlap']['max']:.3f} s"])
        out.append(md_table(["event", "n", "p50 ms", "p95 ms", "trigger", "publish",
                             "leader compute", "last claim", "start after claim", "moved",
                             "cores busy (cluster / machine)", "double runs"], rows))
        cpu_rows = []
        for kind in KINDS:
            k = s.get(kind, {})
            if "cluster_cpu_s" in k:
                cpu_rows.append([LABELS[kind], f"{k['cluster_cpu_s']['median'] * 1000:.0f}",
                                 f"{k['zk_cpu_s']['median'] * 1000:.0f}" if "zk_cpu_s" in k
                                 else "-", f"{k['cpu_ms_per_moved_slot']['median']:.1f}",
                                 f"{k['cluster_cores']['median']:.2f}",
                                 f"{k['machine_cores']['median']:.2f}"])
        if cpu_rows:
            out.append("")
            out.append(md_table(["event", "nodes + ZooKeeper CPU ms", "of which ZooKeeper",
                                 "CPU ms per moved slot", "cores busy (cluster)",
                                 "cores busy (whole machine)"], cpu_rows))
        crash = []
        for kind in ("crash_follower", "crash_leader"):
            if kind in s:
                k = s[kind]
                crash.append([LABELS[kind], _m(k["all_moved_running"]),
                              _m(k["all_moved_running"], "p95"), _m(k["minus_timeout"]),
                              _m(k["minus_timeout"], "p95"), _m(k["after_expiry"]),
                              _m(k["after_expiry"], "p95"), _m(k["member_gone"]),
                              _m(k["member_gone"], "p95")])
        if crash:
            out.append("")
            out.append(md_table(["crash", "raw p50", "raw p95", "minus timeout p50",
                                 "minus timeout p95", "after expiry p50", "after expiry p95",
                                 "expiry seen p50", "expiry seen p95"], crash))
    mv = r.get("moves")
    if mv:
        out.append("\n### Slots moved (pure computation)\n")
        rows = []
        for strategy, x in mv["strategies"].items():
            for ev in x["single"] + x["small"]:
                rows.append([strategy, f"{ev['nodes']} / {ev['slots']:,}", ev["event"],
                             ev["moved"], ev["minimum"], ev["balance_after"]])
            c = x["churn"]
            rows.append([strategy, f"{mv['nodes']} / {mv['slots']:,}",
                         f"{c['events']} random joins and leaves", c["moved"], c["minimum"],
                         "-"])
        for strategy in mv.get("missing", []):
            rows.append([strategy, "-", "not available yet", "-", "-", "-"])
        out.append(md_table(["strategy", "nodes / slots", "event", "moved", "minimum",
                             "max-min load after"], rows))
    real = r.get("moves_real")
    if real:
        out.append("\n### Slots moved, observed in ZooKeeper (5 nodes / 100 slots)\n")
        rows = []
        for strategy, kinds in real.items():
            for kind, x in kinds.items():
                moved = sorted({m for m, _ in x["all_events"]})
                mins = sorted({mn for _, mn in x["all_events"]})
                rows.append([strategy, LABELS.get(kind, kind), x["n"],
                             ", ".join(map(str, moved)), ", ".join(map(str, mins)),
                             x["starts"]])
        out.append(md_table(["strategy", "event", "events", "moved (assignment diff)",
                             "minimum", "slot starts recorded (median event)"], rows))
    if r.get("assignment"):
        out.append("\n### Assignment computation and size\n")
        rows = []
        for a in r["assignment"]:
            flags = []
            if a["over_jute_maxbuffer_raw"]:
                flags.append("JSON over 1 MiB")
            if a["over_znode_limit"]:
                flags.append("**refused: over the znode limit**")
            elif a["compressed"]:
                flags.append("zlib")
            rows.append([a["strategy"], f"{a['nodes']:,}", f"{a['slots']:,}",
                         f"{a['tasks']:,}", _m(a["compute"]), _m(a["compute"], "p95"),
                         _m(a["leader_pass"]), _m(a["leader_pass"], "p95"),
                         _m(a["node_pass"]), f"{a['json_bytes']:,}",
                         f"{a['published_bytes']:,}", ", ".join(flags)])
        out.append(md_table(["strategy", "nodes", "slots", "tasks", "strategy p50 ms",
                             "p95", "leader pass p50 ms", "p95", "follower pass p50 ms",
                             "JSON bytes", "published bytes", "flags"], rows))
    for b in r.get("breakdown") or []:
        out.append(f"\n#### Where the CPU goes, {b['nodes']:,} nodes / {b['slots']:,} slots "
                   f"({b['strategy']})\n")
        out.append(md_table(["step", "p50 ms", "p95 ms"],
                            [[k, _m(v), _m(v, "p95")] for k, v in b["steps"].items()]))
    if r.get("members"):
        out.append("\n### Membership read (one get per member znode, real server)\n")
        out.append(md_table(["members", "p50 ms", "p95 ms"],
                            [[m["members"], _m(m["read_members"]),
                              _m(m["read_members"], "p95")] for m in r["members"]]))
    for c in r.get("convergence") or []:
        s = c["summary"]
        out.append(f"\n### Convergence, {c['nodes']} processes, {c['slots']:,} slots "
                   f"({c['strategy']}, {len(c['runs'])} runs)\n")
        names = {"total": "first spawn -> every slot running, all nodes present (s)",
                 "spawn_span": "time to spawn all processes (s)",
                 "all_joined": "first spawn -> last member znode created (s)",
                 "after_last_join": "last member znode -> converged (s)",
                 "generations": "assignment generations published",
                 "slot_starts": "slot starts recorded"}
        out.append(md_table(["metric", "p50", "p95"],
                            [[names.get(k, k), f"{v['median']:.2f}", f"{v['p95']:.2f}"]
                             for k, v in s.items()]))
    if r.get("steady"):
        out.append("\n### Steady state\n")
        out.append(md_table(
            ["reconcile_interval", "window s", "CPU per node (mean)", "CPU per node (max)",
             "RSS per node", "ZooKeeper CPU", "ZK requests/s", "per node", "ZK writes/s",
             "znode delta"],
            [[f"{x['reconcile_interval']:g} s", f"{x['window']:.1f}",
              f"{x['cpu_node_mean'] * 100:.2f}% of a core",
              f"{x['cpu_node_max'] * 100:.2f}%", f"{x['rss_mb_mean']:.0f} MB",
              f"{x['zk_cpu'] * 100:.2f}%", f"{x['zk_requests_per_s']:.1f}",
              f"{x['zk_requests_per_s_per_node']:.1f}", f"{x['zk_writes_per_s']:.2f}",
              x["znode_delta"]] for x in r["steady"]]))
    for key in ("tuned", "default"):
        p = (r.get("peer") or {}).get(key)
        if not p:
            continue
        out.append(f"\n### SetPartitioner, time_boundary {p['time_boundary']:g} s"
                   f"{' (the default)' if key == 'default' else ''}\n")
        rows = []
        for kind in ("leave", "crash", "join"):
            s = p["summary"].get(kind)
            if not s:
                continue
            main = s["join"] if kind == "join" else s["all_running"]
            rows.append([kind, main["n"], _m(main), _m(main, "p95"),
                         f"{s['restarted']['median']:.0f}",
                         f"{s['downtime_slot_s']['median']:.1f}"])
        out.append(md_table(["event", "n", "p50 ms", "p95 ms", "partitions restarted",
                             "downtime (slot-seconds)"], rows))
    if r.get("commits"):
        out.append("\n### Checkpoint commits\n\n```text\n" + print_commits(r["commits"]).strip()
                   + "\n```")
    if r.get("members_scale"):
        out.append("\n### Members at scale\n\n```text\n"
                   + print_members(r["members_scale"]).strip() + "\n```")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    path = Path(args[0]) if args else REPO / "bench" / "results" / "results.json"
    sys.stdout.write(render(json.loads(path.read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
