"""Command line: `xconsumer run` joins the cluster, `xconsumer status` only looks at it.

Every expected failure becomes one line on stderr and a named exit code; a traceback means a
bug in xconsumer, never a mistake in the user's input.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from loguru import logger

from . import __version__
from .config import Config, load_config
from .errors import XConsumerError
from .logs import setup_logging

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_STUCK = 5
EXIT_INTERRUPTED = 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xconsumer", description="Run long-lived workers across a ZooKeeper cluster.")
    parser.add_argument("--version", action="version", version=f"xconsumer {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", "-c", default="app.toml",
                       help="path of app.toml (default: ./app.toml)")
        p.add_argument("--zk", help="ZooKeeper hosts, overrides [zookeeper] hosts and "
                                    "XCONSUMER_ZK")
        p.add_argument("--log-level", default=os.environ.get("XCONSUMER_LOG_LEVEL", "INFO"),
                       choices=["TRACE", "DEBUG", "INFO", "WARNING", "ERROR"],
                       type=str.upper)

    run = sub.add_parser("run", help="join the cluster and run assigned worker slots")
    common(run)
    run.add_argument("--works", help="path of the works/ package (default: works/ beside "
                                     "the config file, else ./works)")
    run.add_argument("--name", help="stable node name (default: <hostname>-<pid>)")
    run.add_argument("--admin-host", help="admin HTTP bind address (default 127.0.0.1)")
    run.add_argument("--admin-port", type=int,
                     help="admin HTTP port; 0 picks a free one (its URL is logged)")

    status = sub.add_parser("status", help="print the cluster as ZooKeeper sees it")
    common(status)
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument("--timeout", type=float, default=None,
                        help="seconds to wait for ZooKeeper")
    return parser


def _load(args: argparse.Namespace) -> Config:
    overrides: dict[str, Any] = {"zookeeper.hosts": args.zk}
    if args.command == "run":
        overrides.update({"node.name": args.name, "admin.host": args.admin_host,
                          "admin.port": args.admin_port})
    return load_config(args.config, overrides=overrides)


def _works_dir(args: argparse.Namespace) -> Path:
    if args.works:
        return Path(args.works)
    beside = Path(args.config).resolve().parent / "works"
    return beside if beside.is_dir() else Path("works")


def _run(args: argparse.Namespace) -> int:
    from .admin import AdminServer, create_app
    from .node import Node, validate_works
    from .works import discover

    config = _load(args)
    registry = discover(_works_dir(args))
    validate_works(config, registry)

    def admin_factory(node: Node) -> AdminServer:
        return AdminServer(create_app(node), host=config.admin.host, port=config.admin.port)

    node = Node(config, registry, admin_factory=admin_factory)
    stop = threading.Event()
    signals = {"count": 0}

    def on_signal(signum: int, _frame: Any) -> None:
        signals["count"] += 1
        if signals["count"] > 1:
            # Second signal: the user wants out now. Owner znodes expire with the session.
            os._exit(EXIT_INTERRUPTED)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    node.start()
    logger.info("node {} running; SIGTERM or Ctrl-C to leave (twice to exit at once)", node.name)
    while not stop.wait(1.0):
        pass
    logger.info("signal received; stopping gracefully")
    clean = node.stop(timeout=max(5.0, max((t.stop_timeout for t in config.tasks),
                                           default=0.0) + 5.0))
    return EXIT_OK if clean else EXIT_STUCK


def _status(args: argparse.Namespace) -> int:
    from .paths import Paths
    from .view import read_cluster
    from .zk import make_client, start_client, stop_client

    config = _load(args)
    client, _ = make_client(config.zookeeper.hosts, config.zookeeper.session_timeout,
                            zk=config.zookeeper)
    start_client(client, config.zookeeper.hosts,
                 args.timeout if args.timeout is not None else config.zookeeper.connect_timeout)
    try:
        view = read_cluster(client, Paths(config.zookeeper.root, config.cluster.name),
                            config.cluster.name)
    finally:
        stop_client(client)
    if args.json:
        sys.stdout.write(json.dumps(view, indent=2) + "\n")
        return EXIT_OK
    sys.stdout.write(format_status(view))
    return EXIT_OK


def format_status(view: dict[str, Any]) -> str:
    """Human table: leader, nodes with their slots, and who owns what right now."""
    lines = [f"cluster {view['cluster']}: {len(view['nodes'])} node(s), leader "
             f"{view['leader'] or '-'}, generation {view['generation'] or '-'}"]
    owners = view["owners"]
    for node in view["nodes"]:
        slots = view["assignment"].get(node["id"], [])
        mark = " (leader)" if node["leader"] else ""
        lines.append(f"  {node['id']}{mark} seq={node['seq']} state={node['state']} "
                     f"admin={node['admin_url'] or '-'} slots={len(slots)}")
        for s in slots:
            key = f"{s['task']}/{s['slot']}"
            owner = owners.get(key)
            state = "running" if owner == node["id"] else (
                f"owned by {owner}" if owner else "not running")
            lines.append(f"    {key:<24} {state}")
    if view["unassigned"]:
        keys = ", ".join(f"{s['task']}/{s['slot']}" for s in view["unassigned"])
        lines.append(f"  unassigned (no eligible node): {keys}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    setup_logging(args.log_level)
    try:
        if args.command == "run":
            return _run(args)
        return _status(args)
    except XConsumerError as exc:
        sys.stderr.write(f"xconsumer: error: {exc}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
