"""A local cluster to watch: one ZooKeeper and N nodes on this machine (`bin/cluster`).

Nodes run in their own sessions so a Ctrl-C reaches only this supervisor, which then stops
each node by its PID with one SIGTERM (a second signal would make a node exit at once).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from .errors import XConsumerError
from .zkserver import ZooKeeperServer, port_in_use


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bin/cluster",
                                description="Run a local xconsumer cluster to watch.")
    p.add_argument("--nodes", type=int, default=3, help="how many nodes (default 3)")
    p.add_argument("--config", default="app.toml", help="config file (default app.toml)")
    p.add_argument("--works", help="works/ package (default: beside the config file)")
    p.add_argument("--zk", help="use this ZooKeeper instead of starting one")
    p.add_argument("--zk-port", type=int, default=2181,
                   help="port for the ZooKeeper started here (default 2181; 0 = any free)")
    p.add_argument("--admin-port-base", type=int, default=8001,
                   help="node i listens on base+i-1 (default 8001; 0 = free ports)")
    p.add_argument("--for", dest="duration", type=float, default=None,
                   help="stop by itself after this many seconds (default: until Ctrl-C)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.nodes < 1:
        sys.stderr.write("cluster: error: --nodes must be at least 1\n")
        return 2
    config = Path(args.config).resolve()
    if not config.is_file():
        sys.stderr.write(f"cluster: error: config file {args.config} not found\n")
        return 2
    works = Path(args.works).resolve() if args.works else config.parent / "works"
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    server: ZooKeeperServer | None = None
    hosts = args.zk
    try:
        if hosts is None:
            port = args.zk_port
            if port and port_in_use("127.0.0.1", port):
                sys.stderr.write(f"cluster: error: port {port} is busy; pass --zk HOST:PORT to "
                                 "use that ZooKeeper, or --zk-port 0\n")
                return 2
            server = ZooKeeperServer(port=port).start()
            hosts = server.hosts
        say(f"ZooKeeper at {hosts}")
        procs = start_nodes(args, config, works, hosts)
        deadline = time.monotonic() + args.duration if args.duration else None
        while not stop.wait(0.2):
            if deadline is not None and time.monotonic() >= deadline:
                break
            if all(p.poll() is not None for p in procs.values()):
                say("every node has exited")
                break
        return stop_nodes(procs)
    except XConsumerError as exc:
        sys.stderr.write(f"cluster: error: {exc}\n")
        return exc.exit_code
    finally:
        if server is not None:
            server.close()


def say(line: str) -> None:
    sys.stdout.write(f"cluster: {line}\n")
    sys.stdout.flush()


def start_nodes(args: argparse.Namespace, config: Path, works: Path,
                hosts: str) -> dict[str, subprocess.Popen]:
    procs: dict[str, subprocess.Popen] = {}
    env = dict(os.environ)
    for var in ("XCONSUMER_ZK", "XCONSUMER_NAME", "XCONSUMER_ADMIN_PORT"):
        env.pop(var, None)
    for i in range(1, args.nodes + 1):
        name = f"node{i}"
        port = args.admin_port_base + i - 1 if args.admin_port_base else 0
        cmd = [sys.executable, "-m", "xconsumer", "run", "--config", str(config), "--works",
               str(works), "--zk", hosts, "--name", name, "--admin-port", str(port)]
        procs[name] = subprocess.Popen(cmd, env=env, start_new_session=True)
        url = f"http://127.0.0.1:{port}" if port else "(free port, see its log line)"
        say(f"started {name} pid {procs[name].pid} admin {url}")
    say(f"watch: bin/xconsumer status --config {args.config} --zk {hosts}")
    say("try: kill -9 <pid of node1> (the leader) and watch node2 take over; Ctrl-C stops all")
    return procs


def stop_nodes(procs: dict[str, subprocess.Popen], timeout: float = 30.0) -> int:
    say("stopping nodes")
    for proc in procs.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    worst = 0
    for name, proc in procs.items():
        try:
            code = proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait(5)
            say(f"{name} did not stop in time; killed")
        if code not in (0, -signal.SIGKILL):
            worst = max(worst, 1)
    return worst


if __name__ == "__main__":
    raise SystemExit(main())
