"""ZooKeeper's floor on this machine: what no coordination layer on top of it can beat.

- create + delete of a znode, one client, sequentially (two write round trips);
- a read round trip (get);
- watch latency: client B holds a data watch, client A sets the znode; from just before A's
  `set()` call to B's watch callback (both clients in this process, one monotonic clock).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from bench.common import close_client, ms, summary, table, zk_client


def run_floor(hosts: str, samples: int = 200, warmup: int = 20) -> dict[str, Any]:
    a = zk_client(hosts)
    b = zk_client(hosts)
    base = "/bench-floor"
    try:
        a.ensure_path(base)
        a.create(f"{base}/w", b"0")
        create_delete: list[float] = []
        get_rt: list[float] = []
        set_rt: list[float] = []
        watch: list[float] = []
        for i in range(warmup + samples):
            t = time.perf_counter()
            a.create(f"{base}/x", b"")
            a.delete(f"{base}/x")
            d = time.perf_counter() - t
            t = time.perf_counter()
            a.get(f"{base}/w")
            g = time.perf_counter() - t
            fired = threading.Event()
            seen: dict[str, float] = {}

            def on_change(_event: Any, seen: dict[str, float] = seen,
                          fired: threading.Event = fired) -> None:
                seen["t"] = time.perf_counter()
                fired.set()

            b.get(f"{base}/w", watch=on_change)
            t = time.perf_counter()
            a.set(f"{base}/w", str(i).encode())
            s = time.perf_counter() - t
            if not fired.wait(5.0):
                continue
            if i >= warmup:
                create_delete.append(d)
                get_rt.append(g)
                set_rt.append(s)
                watch.append(seen["t"] - t)
        a.delete(base, recursive=True)
    finally:
        close_client(a)
        close_client(b)
    return {"samples": samples, "create_delete": summary(create_delete),
            "get": summary(get_rt), "set": summary(set_rt), "watch": summary(watch)}


def print_floor(r: dict[str, Any]) -> str:
    rows = [[label, r[key]["n"], ms(r[key]["median"]), ms(r[key]["p95"])]
            for key, label in (("create_delete", "create + delete round trip"),
                               ("get", "get round trip"), ("set", "set round trip"),
                               ("watch", "watch latency (set -> watch fires in another client)"))]
    return table("ZooKeeper floor on this machine (ms)", ["operation", "n", "p50", "p95"], rows)
