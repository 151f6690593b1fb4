"""One worker process of the members benchmark: several real `xconsumer.node.Node` objects.

    python -m bench.member_worker --config app.toml --works bench/works --names a,b,c

Each member is the product's own `Node` (its own kazoo client, ZooKeeper session, controller,
lease and slot threads), several per process so that 1,000 members fit on a small machine.
The parent drives the process over stdin/stdout, one JSON object per line:

    {"cmd": "start", "names": [...]}   start more members (a join); replies when registered
    {"cmd": "stop", "name": "..."}     graceful leave (`Node.stop`); replies when it returned
    {"cmd": "counters"}                this process's ZooKeeper traffic counters (cumulative)
    {"cmd": "status"}                  members, their state and session events

The traffic counters come from wrapping each member's kazoo connection (this process only,
the product is not changed): every request is counted with the bytes written for it and the
bytes of its reply, under a tag "<source>|<op> <znode kind>". The source says why it was
sent: `event pass` (the controller reacting to a watch or a kick), `periodic pass` (the
controller's reconcile timer), `lease` (the lease thread's sync + exists), `slot` (slot threads:
owner znodes), `join`/`leave` (`Node.start`/`Node.stop` in the calling thread), `ping`, and
`watch event` for notifications the server pushes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import queue
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kazoo.protocol.serialization import Watch
from kazoo.protocol.states import KazooState

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from xconsumer.config import load_config  # noqa: E402
from xconsumer.logs import setup_logging  # noqa: E402
from xconsumer.node import Node, validate_works  # noqa: E402
from xconsumer.works import discover  # noqa: E402

PING_XID = -2
_local = threading.local()  # role of a calling thread; pass kind of a controller thread


# -- traffic counters ------------------------------------------------------------------------
class Traffic:
    """tag -> [requests, request bytes, replies, reply bytes], for one process."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: dict[str, list[int]] = {}

    def add(self, tag: str, i: int, n: int) -> None:
        with self.lock:
            row = self.counts.get(tag)
            if row is None:
                row = self.counts[tag] = [0, 0, 0, 0]
            row[i] += 1
            row[i + 1] += n

    def snapshot(self) -> dict[str, list[int]]:
        with self.lock:
            return {k: list(v) for k, v in self.counts.items()}


def znode_kind(path: str | None, base: str) -> str:
    """`nodes` (the children list), `nodes/*` (a member), `assignment`, `owners/*`..."""
    if not path:
        return "-"
    if not path.startswith(base + "/"):
        return "other" if path != base else "cluster root"
    parts = path[len(base) + 1:].split("/")
    return parts[0] + "/*" * (len(parts) - 1)


def _source() -> str:
    name = threading.current_thread().name
    if name == "xc-controller":
        return getattr(_local, "pass_kind", "event pass")
    if name == "xc-lease":
        return "lease"
    if name.startswith("xc-slot"):
        return "slot"
    return getattr(_local, "role", "other")


def instrument(client: Any, traffic: Traffic, base: str) -> None:
    """Count every request of this kazoo client and its reply, with their exact sizes on
    the wire (4-byte length prefix included)."""
    conn = client._connection
    tags: dict[int, str] = {}
    state = threading.local()  # the connection thread's request being written / read
    orig_call, orig_submit, orig_write = client._call, conn._submit, conn._write
    orig_header, orig_response = conn._read_header, conn._read_response
    orig_watch = conn._read_watch_event

    def _call(request: Any, async_object: Any) -> Any:
        op = type(request).__name__
        tags[id(request)] = f"{_source()}|{op} {znode_kind(getattr(request, 'path', None), base)}"
        return orig_call(request, async_object)

    def _submit(request: Any, timeout: Any, xid: Any = None) -> Any:
        state.tag = tags.get(id(request)) or (
            "ping|Ping" if xid == PING_XID else f"other|{type(request).__name__}")
        try:
            return orig_submit(request, timeout, xid)
        finally:
            state.tag = None

    def _write(msg: Any, timeout: Any) -> Any:
        traffic.add(getattr(state, "tag", None) or "connect|Connect", 0, len(msg))
        return orig_write(msg, timeout)

    def _read_header(timeout: Any) -> Any:
        header, buf, offset = orig_header(timeout)
        state.length = len(buf) + 4
        if header.xid == PING_XID:
            traffic.add("ping|Ping", 2, state.length)
        return header, buf, offset

    def _read_response(header: Any, buffer: Any, offset: Any) -> Any:
        request = client._pending[0][0] if client._pending else None
        tag = tags.pop(id(request), None) or f"other|{type(request).__name__}"
        traffic.add(tag, 2, getattr(state, "length", len(buffer) + 4))
        return orig_response(header, buffer, offset)

    def _read_watch_event(buffer: Any, offset: Any) -> Any:
        with_path = Watch.deserialize(buffer, offset)[0].path
        traffic.add(f"watch event|{znode_kind(with_path, base)}", 2,
                    getattr(state, "length", len(buffer) + 4))
        return orig_watch(buffer, offset)

    client._call = _call
    conn._submit, conn._write = _submit, _write
    conn._read_header, conn._read_response = _read_header, _read_response
    conn._read_watch_event = _read_watch_event


def _reason(reason: str, base: str) -> str:
    """A controller wake-up reason without the member's own names (`watch:plans/*`)."""
    if reason.startswith("watch:"):
        return "watch:" + znode_kind(reason[6:], base)
    return reason


class PassQueue(queue.Queue):  # type: ignore[type-arg]
    """The controller's queue: a blocking get that times out starts a periodic pass, one
    that returns a reason starts an event pass (read by `_source` on that thread)."""

    def __init__(self, counts: Callable[[str], None]) -> None:
        super().__init__()
        self._count = counts

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        if not block:
            return super().get(block, timeout)
        try:
            item = super().get(block, timeout)
        except queue.Empty:
            _local.pass_kind = "periodic pass"
            self._count("periodic")
            raise
        _local.pass_kind = "event pass"
        self._count("event")
        return item


# -- the process -------------------------------------------------------------------------------
class Worker:
    def __init__(self, config_path: Path, works: Path, start_threads: int) -> None:
        self.config = load_config(config_path)
        self.registry = discover(works)
        validate_works(self.config, self.registry)
        self.base = f"{self.config.zookeeper.root.rstrip('/')}/{self.config.cluster.name}"
        # One counter per member: its requests are counted by its own connection thread, so
        # one shared lock would make 250 members' connection threads queue on each other.
        self.traffic: list[Traffic] = []
        self.nodes: dict[str, Node] = {}
        self.sessions: dict[str, dict[str, int]] = {}  # name -> kazoo state -> count
        self.passes = {"event": 0, "periodic": 0}
        self.lock = threading.Lock()
        self.out_lock = threading.Lock()
        self.pool = ThreadPoolExecutor(max_workers=start_threads)

    def _count_pass(self, kind: str) -> None:
        with self.lock:
            self.passes[kind] = self.passes.get(kind, 0) + 1

    def _on_state(self, name: str, node: Node) -> Callable[[KazooState], None]:
        def listener(state: KazooState) -> None:
            if node._stop.is_set():
                return  # our own graceful leave closes the session: not an incident
            with self.lock:
                row = self.sessions.setdefault(name, {})
                row[str(state)] = row.get(str(state), 0) + 1
        return listener

    def _start_one(self, name: str) -> dict[str, Any]:
        _local.role = "join"
        cfg = dataclasses.replace(self.config, node=dataclasses.replace(self.config.node,
                                                                        name=name))
        node = Node(cfg, self.registry)
        node._events = PassQueue(self._count_pass)
        light = node._light_pass

        def counted(reasons: set[str]) -> bool:
            if light(reasons):
                return True
            self._count_pass("full: " + ",".join(sorted({_reason(r, self.base)
                                                          for r in reasons}) or ["periodic"]))
            return False
        node._light_pass = counted  # type: ignore[method-assign]
        traffic = Traffic()
        instrument(node.client, traffic, self.base)
        with self.lock:
            self.traffic.append(traffic)
        node.client.add_listener(self._on_state(name, node))
        t0 = time.time()
        try:
            node.start()
        except Exception as exc:  # noqa: BLE001 - reported to the parent
            return {"name": name, "error": f"{type(exc).__name__}: {exc}"}
        with self.lock:
            self.nodes[name] = node
        return {"name": name, "t0": t0, "t1": time.time(), "child": node._member_child}

    def start(self, names: list[str]) -> dict[str, Any]:
        t0 = time.time()
        results = list(self.pool.map(self._start_one, names))
        return {"started": [r for r in results if "error" not in r],
                "errors": [r for r in results if "error" in r], "t0": t0, "t1": time.time()}

    def stop(self, name: str) -> dict[str, Any]:
        _local.role = "leave"
        node = self.nodes.get(name)
        if node is None:
            return {"error": f"no member {name} here"}
        t0 = time.time()
        clean = node.stop(timeout=30.0)
        with self.lock:
            self.nodes.pop(name, None)
        return {"name": name, "t0": t0, "t1": time.time(), "clean": clean}

    def counters(self) -> dict[str, Any]:
        with self.lock:
            passes = dict(self.passes)
            counters = list(self.traffic)
        total: dict[str, list[int]] = {}
        for traffic in counters:
            for tag, row in traffic.snapshot().items():
                into = total.setdefault(tag, [0, 0, 0, 0])
                for i, v in enumerate(row):
                    into[i] += v
        return {"traffic": total, "passes": passes, "t": time.time()}

    def status(self) -> dict[str, Any]:
        with self.lock:
            nodes = dict(self.nodes)
            sessions = {k: dict(v) for k, v in self.sessions.items()}
        return {"pid": os.getpid(), "threads": threading.active_count(),
                "members": {n: {"state": node.state.value, "connected": node.client.connected,
                                "lease": node.lease.valid(), "leader": node.is_leader,
                                "generation": node.generation}
                            for n, node in nodes.items()},
                "sessions": sessions}

    def reply(self, obj: dict[str, Any]) -> None:
        line = json.dumps(obj) + "\n"
        with self.out_lock:
            sys.stdout.write(line)
            sys.stdout.flush()

    def handle(self, msg: dict[str, Any]) -> None:
        cmd = msg.get("cmd")
        try:
            if cmd == "start":
                out = self.start(list(msg["names"]))
            elif cmd == "stop":
                out = self.stop(str(msg["name"]))
            elif cmd == "counters":
                out = self.counters()
            elif cmd == "status":
                out = self.status()
            else:
                out = {"error": f"unknown command {cmd!r}"}
        except Exception as exc:  # noqa: BLE001 - reported to the parent
            out = {"error": f"{type(exc).__name__}: {exc}"}
        out["id"] = msg.get("id")
        self.reply(out)

    def serve(self) -> None:
        """One thread per command, so a slow start never delays a counters read. Ends at EOF
        on stdin (the parent went away): the process exits without leaving, like a crash."""
        for line in sys.stdin:
            if not line.strip():
                continue
            msg = json.loads(line)
            threading.Thread(target=self.handle, args=(msg,), name="bench-cmd",
                             daemon=True).start()
        os._exit(0)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.member_worker")
    ap.add_argument("--config", type=Path, required=True)
    ap.add_argument("--works", type=Path, required=True)
    ap.add_argument("--names", default="", help="members to start at once, comma-separated")
    ap.add_argument("--start-threads", type=int, default=4)
    ap.add_argument("--log-level", default="WARNING")
    args = ap.parse_args(argv)
    setup_logging(args.log_level, node=f"pid{os.getpid()}")
    worker = Worker(args.config, args.works, args.start_threads)
    names = [n for n in args.names.split(",") if n]
    if names:
        threading.Thread(target=worker.handle, args=({"cmd": "start", "names": names,
                                                      "id": "initial"},),
                         name="bench-cmd", daemon=True).start()
    worker.serve()


if __name__ == "__main__":
    main()
