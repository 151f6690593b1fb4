"""What a moved slot's owner znode costs ZooKeeper and the client, request by request.

The CPU target of issue 13 (1 ms per moved slot, nodes and ZooKeeper together) is a budget
for every request a handover sends. This measures what one request costs on this machine,
apart from the handover's threads, logs and plans, so a miss can be set against it:

- `create + delete, one request each`: a slot claimed and given back by its own requests
  (what a slot's thread does when its claim is not batched);
- `stat + delete, one request each`: the old owner's release (the czxid check, then the
  delete), without the create;
- `create + delete, transactions of 5 / 20`: the same znodes in transactions of 5 slots
  (a node's share of 20 slots on 5 nodes) and of 20.

One private ZooKeeper (bench.common.start_zk, stopped by PID), one client made by
`xconsumer.zk.make_client` (the nodes' own handler) in this process. The requests of a case
are sent back to back and then waited for, after one warm-up round of every case. The
server's CPU is read from its process's CPU clock (bench.common.cpu_seconds), the client's
is this process's user + system time (kazoo's connection thread included).

    .venv/bin/python -m bench.slot_cost [--n 2000] [--runs 5]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loguru import logger

from bench.common import cpu_seconds, progress, say, start_zk, table
from xconsumer.zk import make_client, start_client, stop_client

BASE = "/bench-slot-cost"
DATA = b'{"node":"n01","generation":7,"session":"1000a2b3c4d5e6f","started_at":1.0,"slot":1}'


def _client_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _wait(results: list[Any]) -> None:
    for r in results:
        r.get(timeout=30)


Case = tuple[Callable[[], None], Callable[[], None]]  # (not measured, measured)


def cases(client: Any, n: int) -> dict[str, Case]:
    paths = [f"{BASE}/s{i:06d}" for i in range(n)]

    def nothing() -> None:
        pass

    def creates() -> None:
        _wait([client.create_async(p, DATA, ephemeral=True) for p in paths])

    def singles() -> None:
        creates()
        _wait([client.delete_async(p) for p in paths])

    def release() -> None:
        stats = [r.get(timeout=30) for r in [client.exists_async(p) for p in paths]]
        _wait([client.delete_async(p, version=s.version)
               for p, s in zip(paths, stats, strict=True)])

    def batched(k: int) -> Callable[[], None]:
        def work() -> None:
            for op in ("create", "delete"):
                pending = []
                for start in range(0, n, k):
                    tx = client.transaction()
                    for p in paths[start:start + k]:
                        if op == "create":
                            tx.create(p, DATA, ephemeral=True)
                        else:
                            tx.delete(p)
                    pending.append(tx.commit_async())
                _wait(pending)
        return work

    return {"create + delete, one request each": (nothing, singles),
            "stat + delete, one request each": (creates, release),
            "create + delete, transactions of 5": (nothing, batched(5)),
            "create + delete, transactions of 20": (nothing, batched(20))}


def run(n: int, runs: int) -> dict[str, list[dict[str, float]]]:
    results: dict[str, list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="xc-slot-cost-") as tmp:
        server = start_zk(Path(tmp))
        client, _ = make_client(server.hosts, 10.0)
        try:
            start_client(client, server.hosts, 15.0)
            client.ensure_path(BASE)
            work = cases(client, n)
            for prepare, measured in work.values():  # warm-up: JIT, connection, interpreter
                prepare()
                measured()
            for i in range(runs):
                for name, (prepare, measured) in work.items():  # interleaved: drift hits all
                    prepare()
                    zk0, c0 = cpu_seconds(server.pid or 0) or 0.0, _client_cpu()
                    measured()
                    zk1, c1 = cpu_seconds(server.pid or 0) or 0.0, _client_cpu()
                    results.setdefault(name, []).append(
                        {"zk_us": (zk1 - zk0) / n * 1e6, "client_us": (c1 - c0) / n * 1e6})
                progress(f"slot cost: run {i + 1}/{runs} done")
        finally:
            stop_client(client)
            server.close()
    return results


def report(results: dict[str, list[dict[str, float]]], n: int) -> str:
    rows = []
    for name, per_run in results.items():
        zk = statistics.median(r["zk_us"] for r in per_run)
        cl = statistics.median(r["client_us"] for r in per_run)
        rows.append([name, f"{zk:.0f}", f"{cl:.0f}", f"{zk + cl:.0f}"])
    return table(f"CPU per slot, µs (N={n} slots, median of {len(next(iter(results.values())))}"
                 " runs)", ["case", "ZooKeeper", "client", "both"], rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.slot_cost",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=2000, help="slots per case")
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args(argv)
    logger.remove()  # the server's start and stop lines are not the benchmark's output
    logger.add(sys.stderr, level="WARNING", format="{message}")
    say(report(run(args.n, args.runs), args.n))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
