"""A host application that runs an xconsumer node inside itself.

The application owns the process: it sets up its own logging, installs its own signal
handlers and keeps its main thread for its own work (here, a status line every few
seconds). xconsumer runs beside it: `Consumer.start()` joins the cluster and returns,
slots run in xconsumer's own threads, and Ctrl-C (or SIGTERM) leaves the cluster cleanly
before the application exits.

    bin/zk start                                       # a local ZooKeeper
    python examples/embedded_app.py --name app1        # terminal 1
    python examples/embedded_app.py --name app2        # terminal 2: the slots spread

Exit status: 0 after a clean stop, 1 if a slot did not stop in time, or the exit code of an
xconsumer error (2 config or handlers, 3 ZooKeeper unreachable, 4 name in use).
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Any

from loguru import logger

import xconsumer

HERE = Path(__file__).resolve().parent


def RunGreet(ctx: Any) -> None:
    """The handler for `workName = "greet"`, handed to the Consumer explicitly."""
    while not ctx.stopping:
        ctx.logger.info("hello from slot {} (fence {})", ctx.slot, ctx.fence)
        ctx.sleep(1.0)  # returns early when the slot must stop


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(HERE / "embedded_app.toml"))
    parser.add_argument("--name", help="node name (default: <hostname>-<pid>)")
    parser.add_argument("--zk", help="ZooKeeper hosts, overriding the config's")
    args = parser.parse_args(argv)

    # The application's own logging; xconsumer's lines arrive through the same loguru
    # logger, bound with the node (and task/slot) they come from.
    logger.remove()
    logger.add(sys.stderr, level="INFO",
               format="{time:HH:mm:ss} {level: <7} {extra[node]} {message}")
    logger.configure(extra={"node": "app"})

    consumer = xconsumer.Consumer(args.config, handlers=[RunGreet], name=args.name,
                                  zk=args.zk)

    def on_signal(signum: int, _frame: Any) -> None:
        consumer.request_stop()  # only sets a flag: safe in a signal handler

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    try:
        consumer.start()
    except xconsumer.XConsumerError as exc:
        sys.stderr.write(f"embedded_app: {exc}\n")
        return exc.exit_code
    logger.info("application running as node {}; Ctrl-C to stop", consumer.name)

    # The application's main loop: its own work, until a signal asks it to stop.
    while not consumer.wait_for_stop_request(5.0):
        logger.info("status: leader={} running slots={}", consumer.leader,
                    [f"{s.task}/{s.index}" for s in consumer.running_slots()])

    logger.info("stopping")
    clean = consumer.stop()
    logger.info("stopped {}", "cleanly" if clean else "with stuck slots")
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
