"""A local cluster to watch: one ZooKeeper and N nodes on this machine (`bin/cluster`).

Nodes run in their own sessions so a Ctrl-C reaches only this supervisor, which then stops
each node by its PID with one SIGTERM (a second signal would make a node exit at once).

Whatever ends the supervisor, its nodes and the ZooKeeper it started are stopped first:
SIGINT, SIGTERM, SIGHUP (terminal closed), SIGPIPE, or a write to a stdout nobody reads any
more (`bin/cluster | tee log`, then Ctrl-C: tee dies with the same Ctrl-C, and the next line
we print fails with BrokenPipeError). Left running, the nodes would hold the admin ports and
keep a ZooKeeper busy with a cluster nobody watches.
"""

from __future__ import annotations

import argparse
import contextlib
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
    _STOP.clear()
    for signum in STOP_SIGNALS:
        signal.signal(signum, lambda *_: _STOP.set())

    server: ZooKeeperServer | None = None
    procs: dict[str, subprocess.Popen] = {}
    hosts = args.zk
    code = 0
    try:
        if hosts is None:
            port = args.zk_port
            if port and port_in_use("127.0.0.1", port):
                sys.stderr.write(f"cluster: error: port {port} is busy; pass --zk HOST:PORT to "
                                 "use that ZooKeeper, or --zk-port 0\n")
                return 2
            server = ZooKeeperServer(port=port)
            server.start()
            hosts = server.hosts
            say(f"ZooKeeper at {hosts} (pid {server.pid})")
        else:
            say(f"ZooKeeper at {hosts}")
        start_nodes(args, config, works, hosts, procs)
        deadline = time.monotonic() + args.duration if args.duration else None
        while not _STOP.wait(0.2):
            if deadline is not None and time.monotonic() >= deadline:
                break
            if all(p.poll() is not None for p in procs.values()):
                say("every node has exited")
                break
    except XConsumerError as exc:
        _err(f"cluster: error: {exc}\n")
        code = exc.exit_code
    finally:
        # Every way out passes here, an unexpected exception too: stop what we started.
        if procs:
            code = max(code, stop_nodes(procs))
        if server is not None:
            server.close()
    return code


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE)
_STOP = threading.Event()  # set by a stop signal or by the loss of stdout
_out = {"lost": False}


def say(line: str) -> None:
    """Print a progress line; once nobody reads stdout, stop the cluster instead."""
    if _out["lost"]:
        return
    try:
        sys.stdout.write(f"cluster: {line}\n")
        sys.stdout.flush()
    except (BrokenPipeError, ValueError, OSError):
        _out["lost"] = True
        _STOP.set()
        # Point fd 1 at /dev/null so the interpreter's own flush at exit cannot fail again.
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)


def _err(text: str) -> None:
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write(text)


def start_nodes(args: argparse.Namespace, config: Path, works: Path, hosts: str,
                procs: dict[str, subprocess.Popen]) -> dict[str, subprocess.Popen]:
    """Start the nodes into `procs` (the caller's, so it can stop the ones already started
    if a stop comes in the middle)."""
    env = dict(os.environ)
    for var in ("XCONSUMER_ZK", "XCONSUMER_NAME", "XCONSUMER_ADMIN_PORT"):
        env.pop(var, None)
    for i in range(1, args.nodes + 1):
        if _STOP.is_set():
            break
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
