"""kazoo's client-side cost per request: CPU and wall time of one `make_client` client.

One private ZooKeeper (bench.common.start_zk, stopped by PID), one client in this process.
Three cases, each over N requests after a warm-up:

- exists:  N sequential `client.exists` calls (one round trip each);
- create:  N `create_async` of ephemeral znodes issued back to back, then every `.get()`;
- delete:  the same N znodes deleted the same way.

CPU is this process's user + system time (`resource.getrusage`), so it counts kazoo's
connection thread and its callback workers as well as the caller; the server is a child
process and is not counted. `--handler` picks the kazoo handler given to make_client:
`default` (whatever make_client uses), `kazoo` (kazoo's SequentialThreadingHandler, whose
select builds an epoll selector per call) or `poll` (xconsumer.zkhandler).

    .venv/bin/python -m bench.kazoo_io [--handler kazoo,poll] [--n 3000] [--runs 3]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import progress, start_zk, table
from xconsumer.zk import make_client, start_client, stop_client

CASES = ("exists", "create", "delete")
BASE = "/bench-kazoo-io"


def _client(hosts: str, handler: str) -> Any:
    kwargs: dict[str, Any] = {}
    if handler == "kazoo":
        from kazoo.handlers.threading import SequentialThreadingHandler
        kwargs["handler"] = SequentialThreadingHandler()
    elif handler == "poll":
        from xconsumer.zkhandler import PollingThreadingHandler
        kwargs["handler"] = PollingThreadingHandler()
    client, _ = make_client(hosts, 10.0, **kwargs)
    start_client(client, hosts, 15.0)
    return client


def _cpu() -> tuple[float, float]:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime, ru.ru_stime


def _timed(n: int, work: Callable[[], None]) -> dict[str, float]:
    cpu0, sys0 = _cpu()
    t0 = time.perf_counter()
    work()
    wall = time.perf_counter() - t0
    cpu1, sys1 = _cpu()
    return {"cpu_us": (cpu1 - cpu0) / n * 1e6, "sys_us": (sys1 - sys0) / n * 1e6,
            "wall_us": wall / n * 1e6, "rps": n / wall}


def _cases(client: Any, n: int) -> dict[str, dict[str, float]]:
    paths = [f"{BASE}/e{i:06d}" for i in range(n)]

    def exists() -> None:
        for _ in range(n):
            client.exists(BASE)

    def create() -> None:
        for r in [client.create_async(p, b"", ephemeral=True) for p in paths]:
            r.get()

    def delete() -> None:
        for r in [client.delete_async(p) for p in paths]:
            r.get()

    return {"exists": _timed(n, exists), "create": _timed(n, create),
            "delete": _timed(n, delete)}


def run(hosts: str, handlers: list[str], n: int, runs: int, warmup: int
        ) -> dict[str, list[dict[str, dict[str, float]]]]:
    results: dict[str, list[dict[str, dict[str, float]]]] = {h: [] for h in handlers}
    for i in range(runs):
        for handler in handlers:  # interleaved, so drift on the machine hits both alike
            client = _client(hosts, handler)
            try:
                client.ensure_path(BASE)
                _cases(client, warmup)
                results[handler].append(_cases(client, n))
            finally:
                stop_client(client)
            r = results[handler][-1]
            progress(f"run {i + 1}/{runs} {handler}: " + ", ".join(
                f"{c} {r[c]['cpu_us']:.0f} us CPU" for c in CASES))
    return results


def report(results: dict[str, list[dict[str, dict[str, float]]]], n: int) -> str:
    rows = []
    for handler, per_run in results.items():
        for case in CASES:
            cpu = [r[case]["cpu_us"] for r in per_run]
            rows.append([handler, case, f"{statistics.median(cpu):.0f}",
                         " / ".join(f"{v:.0f}" for v in cpu),
                         f"{statistics.median(r[case]['sys_us'] for r in per_run):.0f}",
                         f"{statistics.median(r[case]['wall_us'] for r in per_run):.0f}",
                         f"{statistics.median(r[case]['rps'] for r in per_run):,.0f}"])
    return table(f"kazoo client cost per request (N={n}, median of {len(per_run)} runs)",
                 ["handler", "case", "CPU us", "CPU us per run", "of which sys us",
                  "wall us", "requests/s"], rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.kazoo_io",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--handler", default="default",
                    help="comma-separated: default, kazoo, poll (default: default)")
    ap.add_argument("--n", type=int, default=3000, help="requests per case")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=300)
    args = ap.parse_args(argv)
    handlers = [h for h in args.handler.split(",") if h]
    unknown = set(handlers) - {"default", "kazoo", "poll"}
    if unknown:
        ap.error(f"unknown handler(s): {', '.join(sorted(unknown))}")
    with tempfile.TemporaryDirectory(prefix="xc-kazoo-io-") as tmp:
        server = start_zk(Path(tmp))
        try:
            results = run(server.hosts, handlers, args.n, args.runs, args.warmup)
        finally:
            server.close()
    print(report(results, args.n), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
