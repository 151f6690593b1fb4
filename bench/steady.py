"""Scenario 6: what an idle cluster costs. 5 nodes whose 100 slots just sleep.

Over a fixed window: CPU (utime + stime from /proc/PID/stat) of every node and of the
ZooKeeper JVM, ZooKeeper requests per second (`zk_packets_received` from `mntr`, minus what
the `mntr` calls themselves add), and ZooKeeper writes per second (the `Zxid` from `srvr`
advances once per write; `zk_znode_count` tells whether znodes came or went). The benchmark's
own ZooKeeper client is closed before the window so only the nodes are counted.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench.cluster import XCluster
from bench.common import cpu_seconds, mntr, progress, rss_mb, table, wait_for, zxid
from xconsumer.zkserver import ZooKeeperServer


def _snapshot(server: ZooKeeperServer, pids: dict[str, int]) -> dict[str, Any]:
    m = mntr(server)
    return {"t": time.monotonic(), "cpu": {n: cpu_seconds(p) for n, p in pids.items()},
            "zk_cpu": cpu_seconds(server.pid or 0), "packets": int(m["zk_packets_received"]),
            "sent": int(m["zk_packets_sent"]), "znodes": int(m["zk_znode_count"]),
            "zxid": zxid(server)}


def run_steady(server: ZooKeeperServer, tmp: Path, *, window: float, nodes: int = 5,
               slots: int = 100, reconcile_interval: float = 5.0,
               strategy: str = "round_robin") -> dict[str, Any]:
    tasks = [{"name": "bench", "workName": "bench", "workerNum": slots, "stop_timeout": 5}]
    cl = XCluster(hosts=server.hosts, tmp=tmp, root=f"/bench-steady-{reconcile_interval:g}",
                  tasks=tasks, strategy=strategy, reconcile_interval=reconcile_interval)
    names = {f"s{i}" for i in range(nodes)}
    try:
        for name in sorted(names):
            cl.start_node(name)
            wait_for(lambda n=name: cl.member(n), 30, 0.05, what=f"{name} joined")
        wait_for(lambda: cl.converged(names), 60, 0.2, what="steady convergence")
        cl.detach()
        # Let start-up traffic die down: wait for the zxid to stay put for 2 s (bounded).
        deadline = time.monotonic() + 20
        last = zxid(server)
        stable_since = time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - stable_since < 2.0:
            time.sleep(0.25)
            z = zxid(server)
            if z != last:
                last, stable_since = z, time.monotonic()
        # What one mntr + srvr pair adds to the counters (subtracted below).
        a = _snapshot(server, {})
        b = _snapshot(server, {})
        probe = b["packets"] - a["packets"]
        pids = {n: p.pid for n, p in cl.nodes.items()}
        progress(f"steady state (reconcile_interval {reconcile_interval:g}s): {window:g}s window")
        before = _snapshot(server, pids)
        time.sleep(window)
        after = _snapshot(server, pids)
        dt = after["t"] - before["t"]
        per_node = {n: ((after["cpu"][n] or 0) - (before["cpu"][n] or 0)) / dt for n in pids}
        rss = {n: rss_mb(p) for n, p in pids.items()}
        packets = after["packets"] - before["packets"] - probe
        return {
            "nodes": nodes, "slots": slots, "window": dt,
            "reconcile_interval": reconcile_interval,
            "cpu_per_node": per_node,
            "cpu_node_mean": sum(per_node.values()) / len(per_node),
            "cpu_node_max": max(per_node.values()),
            "zk_cpu": ((after["zk_cpu"] or 0) - (before["zk_cpu"] or 0)) / dt,
            "rss_mb_mean": sum(v or 0 for v in rss.values()) / len(rss),
            "zk_requests_per_s": packets / dt,
            "zk_requests_per_s_per_node": packets / dt / nodes,
            "zk_writes_per_s": (after["zxid"] - before["zxid"]) / dt,
            "zxid_delta": after["zxid"] - before["zxid"],
            "znode_delta": after["znodes"] - before["znodes"],
            "probe_packets": probe,
        }
    finally:
        cl.close()


def print_steady(results: list[dict[str, Any]]) -> str:
    rows = []
    for r in results:
        rows.append([f"{r['reconcile_interval']:g}s", f"{r['window']:.1f}",
                     f"{r['cpu_node_mean'] * 100:.2f}%", f"{r['cpu_node_max'] * 100:.2f}%",
                     f"{r['rss_mb_mean']:.0f}", f"{r['zk_cpu'] * 100:.2f}%",
                     f"{r['zk_requests_per_s']:.1f}", f"{r['zk_requests_per_s_per_node']:.1f}",
                     f"{r['zk_writes_per_s']:.2f}", r["znode_delta"]])
    return table(
        f"Steady state: {results[0]['nodes']} idle nodes, {results[0]['slots']} sleeping slots",
        ["reconcile_interval", "window s", "CPU/node mean", "CPU/node max", "RSS MB/node",
         "ZooKeeper CPU", "ZK requests/s", "requests/s/node", "ZK writes/s", "znode delta"],
        rows, "CPU as a share of one core (utime+stime over the window).")
