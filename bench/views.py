"""What one read of the cluster view costs: `GET /api/cluster` and `GET /api/tasks`.

The dashboard asks for both every second, and anyone who can reach the admin port may ask
(reads need no token), so their cost is the admin API's floor. Both read every owner znode
(which node runs each slot, and its fence) and `GET /api/cluster` also every member and
done marker. This fills a private ZooKeeper with `--members` member znodes and one owner
znode per slot (ephemeral, spread over the members' sessions, as a live cluster has them)
and times `view.read_cluster` and `view.tasks_table`, the functions behind the two
endpoints, at each size: wall time (median of `--runs`), ZooKeeper's and the client's CPU,
and what a lease renewal sent on the same session waits while two such calls run. One
private ZooKeeper (bench.common.start_zk, stopped by PID), clients made by
`xconsumer.zk.make_client` (the nodes' own handler) in this process.

    .venv/bin/python -m bench.views [--slots 100 1000 10000] [--members 10] [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from loguru import logger

from bench.common import cpu_seconds, progress, say, start_zk, table
from bench.slot_cost import _client_cpu
from xconsumer.config import TaskConfig
from xconsumer.paths import Paths
from xconsumer.view import read_cluster, tasks_table
from xconsumer.zk import dumps, make_client, start_client, stop_client

ROOT = "/bench-views"
BATCH = 500  # owner znodes per creating transaction


def _fill(clients: list[Any], paths: Paths, slots: int) -> None:
    """Member znodes (one per client) and `slots` owner znodes of one task, dealt round
    robin over the members' sessions."""
    first = clients[0]
    for path in (paths.nodes, paths.owner_task("t")):
        first.ensure_path(path)
    for i, client in enumerate(clients):
        client.create(f"{paths.nodes}/n-", dumps({"id": f"m{i:03d}", "handlers": ["RunT"]}),
                      ephemeral=True, sequence=True)
    for start in range(0, slots, BATCH):
        txs: dict[int, Any] = {}
        for index in range(start, min(slots, start + BATCH)):
            k = index % len(clients)
            tx = txs.setdefault(k, clients[k].transaction())
            tx.create(paths.owner("t", index), dumps(
                {"node": f"m{k:03d}", "generation": 1, "session": "0", "slot": index}),
                ephemeral=True)
        for tx in txs.values():
            tx.commit()


def _lease_during(client: Any, paths: Paths, call: Any) -> dict[str, float]:
    """What a request the node sends on the same session meanwhile waits: its lease's
    renewal (a sync and an exists, as Node._prove_membership sends them), timed back to
    back from another thread while two calls of the view run at once (the dashboard asks
    for both views together)."""
    done = threading.Event()
    rtts: list[float] = []

    def probe() -> None:
        while not done.is_set():
            t0 = time.perf_counter()
            client.sync_async(paths.nodes).get(timeout=30)
            client.exists(paths.nodes)
            rtts.append(time.perf_counter() - t0)

    prober = threading.Thread(target=probe, name="bench-lease-probe")
    views = [threading.Thread(target=call, name=f"bench-view-{i}") for i in range(2)]
    prober.start()
    for v in views:
        v.start()
    for v in views:
        v.join(timeout=600)
    done.set()
    prober.join(timeout=60)
    return {"p50": statistics.median(rtts), "max": max(rtts), "n": len(rtts)}


def measure(hosts: str, zk_pid: int, slots: int, members: int, runs: int
            ) -> dict[str, Any]:
    paths = Paths(ROOT, f"c{slots}")
    clients = []
    try:
        for _ in range(members):
            client, _ = make_client(hosts, 10.0)
            start_client(client, hosts, 15.0)
            clients.append(client)
        _fill(clients, paths, slots)
        reader = clients[0]
        seed = [TaskConfig(name="t", work_name="T", worker_num=slots)]
        calls = {"GET /api/cluster": lambda: read_cluster(reader, paths, "bench"),
                 "GET /api/tasks": lambda: tasks_table(reader, paths, None, seed)}
        out: dict[str, Any] = {"slots": slots, "members": members}
        for name, call in calls.items():
            view = call()  # warm-up, and a check that the view sees every slot
            seen = (len(view["owners"]) if "owners" in view
                    else sum(t["running"] for t in view["tasks"]))
            if seen != slots:
                raise RuntimeError(f"{name} saw {seen} of {slots} owner znodes")
            walls, zk_cpu, client_cpu = [], [], []
            for _ in range(runs):
                zk0, c0, t0 = cpu_seconds(zk_pid) or 0.0, _client_cpu(), time.perf_counter()
                call()
                walls.append(time.perf_counter() - t0)
                zk_cpu.append((cpu_seconds(zk_pid) or 0.0) - zk0)
                client_cpu.append(_client_cpu() - c0)
            out[name] = {"wall": statistics.median(walls), "zk_cpu": statistics.median(zk_cpu),
                         "client_cpu": statistics.median(client_cpu),
                         "lease_rtt": _lease_during(reader, paths, call)}
            progress(f"{slots} slots, {name}: {out[name]['wall'] * 1000:.1f} ms")
        return out
    finally:
        for client in clients:
            stop_client(client)


def print_views(results: list[dict[str, Any]]) -> str:
    rows = []
    for r in results:
        for name in ("GET /api/cluster", "GET /api/tasks"):
            m = r[name]
            rows.append([name, r["slots"], r["members"], f"{m['wall'] * 1000:.1f}",
                         f"{m['zk_cpu'] * 1000:.1f}", f"{m['client_cpu'] * 1000:.1f}",
                         f"{m['lease_rtt']['p50'] * 1000:.1f} / "
                         f"{m['lease_rtt']['max'] * 1000:.1f}"])
    return table("One read of the cluster view (ms, median)",
                 ["endpoint", "slots", "members", "wall", "ZooKeeper CPU", "client CPU",
                  "lease round trip meanwhile (p50 / max)"],
                 rows, "wall: the call's time in this process; CPU: ZooKeeper's process and "
                       "this process (kazoo's threads included) during the call; lease round "
                       "trip: a sync + exists on the same session, back to back, while two "
                       "calls run at once.")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.views", description=__doc__)
    ap.add_argument("--slots", type=int, nargs="+", default=[100, 1000, 10000])
    ap.add_argument("--members", type=int, default=10)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args(argv)
    logger.remove()
    logger.add(sys.stderr, level="WARNING", format="{message}")
    with tempfile.TemporaryDirectory(prefix="xc-views-") as tmp:
        server = start_zk(Path(tmp))
        try:
            results = [measure(server.hosts, server.pid or 0, n, args.members, args.runs)
                       for n in args.slots]
        finally:
            server.close()
    say(print_views(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
