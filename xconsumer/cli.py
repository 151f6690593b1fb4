"""Command line: `xconsumer run` joins the cluster, `xconsumer status` only looks at it, and
the management commands (`tasks`, `scale`, `pause`, `resume`, `reset`, `drain`, `undrain`,
`rebalance`, `events`, `checkpoints`, `refresh-keys`, `set`) change it.

Management commands reach the cluster one of two ways, with the same `--json` output either
way: straight through ZooKeeper (`--config`/`--zk`, no node needed, the same pure override
functions the API uses), or through any node's admin API (`--url`, for hosts that can reach
a node but not ZooKeeper, and the only way to see events, which live in node memory).

Every expected failure becomes one line on stderr and a named exit code; a traceback means a
bug in xconsumer, never a mistake in the user's input.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import select
import signal
import sys
from collections.abc import Collection
from typing import Any, NoReturn

from loguru import logger

from . import __version__
from .config import Config, load_config
from .errors import XConsumerError
from .logs import kazoo_connecting, setup_logging
from .manage import (
    EXIT_OK,
    EXIT_REQUEST,
    EXIT_UNREACHABLE,
    MANAGE_COMMANDS,
    run_manage,
)

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

    def manage(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text + ". Talks to "
                           "ZooKeeper (--config/--zk) or to a node's admin API (--url).")
        common(p)
        # A one-shot command should print its result or one error line, not kazoo's
        # reconnect warnings; --log-level or XCONSUMER_LOG_LEVEL still turn them back on.
        p.set_defaults(log_level=os.environ.get("XCONSUMER_LOG_LEVEL", "ERROR").upper())
        p.add_argument("--url", help="a node's admin URL, e.g. http://node:8000; use its API "
                                     "instead of ZooKeeper")
        p.add_argument("--token", default=os.environ.get("XCONSUMER_ADMIN_TOKEN"),
                       help="bearer token for --url mutations (default: "
                            "XCONSUMER_ADMIN_TOKEN)")
        p.add_argument("--json", action="store_true", help="machine-readable output")
        p.add_argument("--timeout", type=float, default=None,
                       help="seconds to wait for ZooKeeper or the admin API")
        return p

    manage("tasks", "list tasks with desired, assigned and running slot counts")
    scale = manage("scale", "set a task's number of slots (workerNum)")
    scale.add_argument("task", help="task name (see `xconsumer tasks`)")
    scale.add_argument("workers", metavar="N", help="new workerNum (non-negative integer)")
    for name, text in (("pause", "pause a task: run none of its slots, keep workerNum"),
                       ("resume", "resume a paused task"),
                       ("reset", "drop a task's runtime overrides: back to app.toml")):
        manage(name, text).add_argument("task", help="task name (see `xconsumer tasks`)")
    for name, text in (("drain", "drain a node: move its slots to the other nodes"),
                       ("undrain", "undrain a node: let it run slots again")):
        manage(name, text).add_argument("node", help="node name (see `xconsumer status`)")
    manage("rebalance", "ask the leader for a full rebalance, ignoring stickiness")
    events = manage("events", "recent cluster events, as a node saw them (from its memory: "
                              "via --url, else the leader's admin URL)")
    events.add_argument("--after", type=int, default=0, help="only events after this seq")
    events.add_argument("--limit", type=int, default=100, help="at most this many (newest)")
    checkpoints = manage("checkpoints", "list a task's per-slot checkpoints, or reset them "
                                        "(--reset: all, or one with --slot)")
    checkpoints.add_argument("task", help="task name (see `xconsumer tasks`)")
    checkpoints.add_argument("--reset", action="store_true",
                             help="delete the checkpoints: their slots restart from none")
    checkpoints.add_argument("--slot", help="with --reset: only this slot (an index, or a "
                                            "key for a keyed task)")
    manage("refresh-keys", "ask the leader to call a keyed task's Keys provider now").add_argument(
        "task", help="task name (see `xconsumer tasks`)")
    set_cmd = manage("set", "change fields of a task, like PATCH /api/tasks/<name> "
                            "(params, interval, keys_interval, run_timeout, ...)")
    set_cmd.add_argument("task", help="task name (see `xconsumer tasks`)")
    set_cmd.add_argument("changes", nargs="+", metavar="FIELD=VALUE",
                         help="VALUE is JSON (5, null, '[\"a\", \"b\"]') or a plain string")
    return parser


def _load(args: argparse.Namespace, strategies: Collection[str] | None = None) -> Config:
    """The config; `[assignment] strategy` is only checked when `strategies` are given:
    which names exist depends on the works package, which only `run` loads."""
    return load_config(args.config, overrides={"zookeeper.hosts": args.zk},
                       strategies=strategies)


def _run(args: argparse.Namespace) -> int:
    """`run` is one host of the embedding API; what it adds is the process: signals, the
    exit code, and a main thread that only waits."""
    from .embed import Consumer

    consumer = Consumer(args.config, works=args.works, name=args.name, zk=args.zk,
                        admin_host=args.admin_host, admin_port=args.admin_port)
    signals = {"count": 0}

    def on_signal(signum: int, _frame: Any) -> None:
        signals["count"] += 1
        if signals["count"] > 1:
            # Second signal: the user wants out now. Owner znodes expire with the session.
            os._exit(EXIT_INTERRUPTED)
        consumer.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    # The interpreter writes a byte here the moment a signal arrives, so the main thread
    # wakes at once instead of at its next poll: the leave starts (and the leader deals the
    # slots out) up to a poll interval sooner.
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    previous_fd = signal.set_wakeup_fd(wake_w)
    try:
        consumer.start()
        logger.info("node {} running; SIGTERM or Ctrl-C to leave (twice to exit at once)",
                    consumer.name)
        while not consumer.stop_requested:
            if select.select([wake_r], [], [], 1.0)[0]:
                os.read(wake_r, 512)
    finally:
        signal.set_wakeup_fd(previous_fd)
        os.close(wake_r)
        os.close(wake_w)
    logger.info("signal received; stopping gracefully")
    return EXIT_OK if consumer.stop() else EXIT_STUCK


def _status(args: argparse.Namespace) -> int:
    from .paths import Paths
    from .view import read_cluster
    from .zk import make_client, start_client, stop_client

    config = _load(args)
    client, _ = make_client(config.zookeeper.hosts, config.zookeeper.session_timeout,
                            zk=config.zookeeper)
    with kazoo_connecting():
        start_client(client, config.zookeeper.hosts, args.timeout if args.timeout is not None
                     else config.zookeeper.connect_timeout)
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
    done = set(view.get("done", []))
    for node in view["nodes"]:
        slots = view["assignment"].get(node["id"], [])
        mark = " (leader)" if node["leader"] else ""
        lines.append(f"  {node['id']}{mark} seq={node['seq']} state={node['state']} "
                     f"admin={node['admin_url'] or '-'} slots={len(slots)}")
        for s in slots:
            key = f"{s['task']}/{s['slot']}"
            owner = owners.get(key)
            state = "running" if owner == node["id"] else (
                f"owned by {owner}" if owner else
                "done (once)" if key in done else "not running")
            lines.append(f"    {key:<24} {state}")
    if view["unassigned"]:
        keys = ", ".join(f"{s['task']}/{s['slot']}" for s in view["unassigned"])
        lines.append(f"  unassigned (no eligible node): {keys}")
    for c in view.get("corrupt", []):
        lines.append(f"  CORRUPT {c['kind']} znode {c['znode']}: {c['error']}")
    return "\n".join(lines) + "\n"


def entry(argv: list[str] | None = None) -> NoReturn:
    """The process entry point (`python -m xconsumer`, the `xconsumer` script): `main`, then
    the ordinary exit (atexit hooks, logging and buffers flushed, threads joined) without
    the garbage collector's last walks. At exit the interpreter collects again and again
    while it tears the modules down, visiting every object the process made: 50-80 ms of
    CPU for a node of 20 slots (measured: 72-112 ms from SIGTERM to exit, 24-33 ms with
    the objects frozen), spent just when the remaining nodes start the slots it gave up.
    Nothing of ours needs a finalizer by then: the node has stopped and closed its
    session."""
    code = main(argv)
    gc.disable()
    gc.freeze()  # what exists now is never examined again
    sys.exit(code)


def main(argv: list[str] | None = None) -> int:
    from kazoo.exceptions import KazooException
    from kazoo.handlers.threading import KazooTimeoutError

    from .overrides import OverrideError

    args = _parser().parse_args(argv)
    setup_logging(args.log_level)
    try:
        if args.command == "run":
            return _run(args)
        if args.command in MANAGE_COMMANDS:
            return run_manage(args, _load)
        return _status(args)
    except OverrideError as exc:
        sys.stderr.write(f"xconsumer: error: {exc}\n")
        return EXIT_REQUEST
    except XConsumerError as exc:
        sys.stderr.write(f"xconsumer: error: {exc}\n")
        return exc.exit_code
    except (KazooException, KazooTimeoutError) as exc:
        sys.stderr.write(f"xconsumer: error: ZooKeeper did not answer: "
                         f"{type(exc).__name__} {exc}".rstrip() + "\n")
        return EXIT_UNREACHABLE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
