"""Checkpoint commits: what `ctx.commit(value)` costs, alone and with many slots at once.

Each commit is one ZooKeeper transaction (two checks and a set_data), so its latency is about
one write round trip; `floor` gives that round trip on the same machine. Measured with the
product's own `SlotCheckpoint` against a real server, each slot holding a member znode and an
owner znode as a running node does.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from bench.common import close_client, ms, summary, table, zk_client
from xconsumer.checkpoint import SlotCheckpoint
from xconsumer.paths import Paths


def _stores(client: Any, paths: Paths, count: int) -> list[SlotCheckpoint]:
    member = client.create(paths.node_prefix, b"{}", ephemeral=True, sequence=True,
                           makepath=True)
    stores = []
    for i in range(count):
        client.create(paths.owner("bench", i), b"{}", ephemeral=True, makepath=True)
        stores.append(SlotCheckpoint(
            client=client, path=paths.checkpoint("bench", str(i)), member=member,
            owner=paths.owner("bench", i), owner_version=lambda: 0, fence=1, node="bench",
            lost=lambda why: None))
    return stores


def _commit_loop(store: SlotCheckpoint, done: list[int], i: int,
                 stop: threading.Event) -> None:
    while not stop.is_set():
        store.commit(done[i])
        done[i] += 1


def run_commits(hosts: str, samples: int = 500, slots: tuple[int, ...] = (1, 10, 100),
                window: float = 3.0) -> dict[str, Any]:
    client = zk_client(hosts)
    paths = Paths("/bench-commits", "c")
    try:
        (store,) = _stores(client, paths, 1)
        store.value()  # the first read (and bump) is not a commit
        latency = []
        for i in range(samples + 20):
            t = time.perf_counter()
            store.commit({"offset": i, "partition": "p-0"})
            if i >= 20:
                latency.append(time.perf_counter() - t)
        client.delete(paths.base, recursive=True)
        load = []
        for count in slots:
            stores = _stores(client, paths, count)
            for s in stores:
                s.value()
            done = [0] * count
            stop = threading.Event()

            threads = [threading.Thread(target=_commit_loop, args=(s, done, i, stop),
                                        name=f"bench-commit-{i}")
                       for i, s in enumerate(stores)]
            for th in threads:
                th.start()
            stop.wait(window)
            stop.set()
            for th in threads:
                th.join(10)
            total = sum(done)
            load.append({"slots": count, "commits_per_s": total / window,
                         "per_slot_per_s": total / window / count})
            client.delete(paths.base, recursive=True)
    finally:
        close_client(client)
    return {"latency": summary(latency), "load": load}


def print_commits(r: dict[str, Any]) -> str:
    lat = r["latency"]
    rows = [["one slot, sequential", lat["n"], ms(lat["median"]), ms(lat["p95"]), "-", "-"]]
    rows += [[f"{x['slots']} slots at once, {x['slots']} threads", "-", "-", "-",
              f"{x['commits_per_s']:,.0f}", f"{x['per_slot_per_s']:,.1f}"] for x in r["load"]]
    return table("Checkpoint commits (ctx.commit: one transaction with two checks)",
                 ["case", "n", "p50 ms", "p95 ms", "commits/s", "per slot/s"], rows)
