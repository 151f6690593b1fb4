"""The peer for scenario 7: one member process of kazoo's `SetPartitioner` recipe.

    python -m bench.peer_partitioner --zk HOST:PORT --path /p --partitions 100 \
        --name m1 --record FILE [--time-boundary 30] [--session-timeout 2]

It joins the party, waits for the recipe to acquire its share, and records `start` (with
`time.time()`) for each partition the moment it starts "running" it, in the same JSON-lines
format as the xconsumer handlers (task "part", slot = partition). When the recipe asks for a
release (the party changed) it records `stop` for each partition and releases them. SIGTERM
releases everything and leaves the party, then the process exits 0.

`--formation-boundary B` (used only for the members a group starts with, never for a member
whose join is measured) makes the recipe use a B-second boundary until the process receives
SIGUSR1, which switches it to `--time-boundary` for every later re-partition. The benchmark
sends SIGUSR1 once the whole group has formed and acquired. Members of a new group join a
few hundred ms apart, and with a 30 s boundary each join restarts every member's wait, so
forming a group would cost a minute of nothing; the measured handovers are unaffected because
the recipe reads its boundary afresh for every re-partition.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from typing import Any

from kazoo.client import KazooClient

logging.getLogger("kazoo").setLevel(logging.CRITICAL)


class Recorder:
    def __init__(self, path: str, name: str) -> None:
        self.path = path
        self.name = name

    def __call__(self, event: str, partition: int) -> None:
        line = json.dumps({"t": time.time(), "e": event, "node": self.name, "task": "part",
                           "slot": partition, "fence": 0, "pid": os.getpid()}) + "\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="peer_partitioner")
    ap.add_argument("--zk", required=True)
    ap.add_argument("--path", required=True)
    ap.add_argument("--partitions", type=int, default=100)
    ap.add_argument("--name", required=True)
    ap.add_argument("--record", required=True)
    ap.add_argument("--time-boundary", type=float, default=30.0,
                    help="SetPartitioner's time_boundary (its default is 30 s)")
    ap.add_argument("--formation-boundary", type=float, default=None,
                    help="boundary for the first allocation only (see the module docstring)")
    ap.add_argument("--session-timeout", type=float, default=2.0)
    ap.add_argument("--max-seconds", type=float, default=3600.0,
                    help="exit on its own after this long, whatever happens")
    args = ap.parse_args(argv)
    record = Recorder(args.record, args.name)
    stop = threading.Event()
    changed = threading.Event()

    def on_signal(_signum: int, _frame: Any) -> None:
        stop.set()
        changed.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    current: list[Any] = []

    def on_formed(_signum: int, _frame: Any) -> None:
        # Runs in the main thread; the recipe reads the attribute at its next re-partition.
        if current:
            current[0]._time_boundary = args.time_boundary
        print(f"time_boundary now {args.time_boundary:g}", flush=True)

    signal.signal(signal.SIGUSR1, on_formed)
    client = KazooClient(hosts=args.zk, timeout=args.session_timeout,
                         connection_retry={"max_tries": -1, "delay": 0.05, "backoff": 2,
                                           "max_delay": 0.5})
    client.start(timeout=15)
    partitions = list(range(args.partitions))
    deadline = time.monotonic() + args.max_seconds

    def new_partitioner(boundary: float | None) -> Any:
        kwargs: dict[str, Any] = {"identifier": args.name, "state_change_event": changed}
        if boundary is not None and boundary != 30.0:  # else the recipe's own default (30 s)
            kwargs["time_boundary"] = boundary
        return client.SetPartitioner(args.path, set=partitions, **kwargs)

    sp = new_partitioner(args.formation_boundary or args.time_boundary)
    current.append(sp)
    print(f"joined {args.path} as {args.name}", flush=True)
    running: list[int] = []
    while not stop.is_set() and time.monotonic() < deadline:
        changed.clear()
        if sp.failed:
            for p in running:
                record("stop", p)
            running = []
            print("partitioner failed (session lost?); joining again", flush=True)
            sp = new_partitioner(args.time_boundary)
            current[:] = [sp]
            continue
        if sp.release:
            for p in running:
                record("stop", p)
            running = []
            sp.release_set()
            continue
        if sp.acquired:
            mine = list(sp)
            if mine != running:
                for p in running:
                    if p not in mine:
                        record("stop", p)
                for p in mine:
                    if p not in running:
                        record("start", p)
                running = mine
        changed.wait(0.5)
    for p in running:
        record("stop", p)
    sp.finish()
    client.stop()
    client.close()
    print("left", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
