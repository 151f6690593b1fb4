"""Logging setup: loguru sinks are added by the application, never at import time.

kazoo and werkzeug log through the standard library; an intercepting handler routes them into
loguru so every line of a node's output has one format.

While a command makes its first connection (`kazoo_connecting()`), kazoo's warnings are
demoted to DEBUG: with ZooKeeper down it warns for every refused attempt, five a second, and
buries the one line that says what is wrong (`cannot reach ZooKeeper at ...`). They are still
there with `--log-level DEBUG`; kazoo's errors, and its warnings once connected, are not
touched.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
from collections.abc import Iterator
from typing import Any

from loguru import logger

_FORMAT_BASE = "{time:YYYY-MM-DD HH:mm:ss.SSS} {level: <7} [{extra[node]}]"


def _format(record: Any) -> str:
    extra = record["extra"]
    extra.setdefault("node", "-")
    where = ""
    if "task" in extra:
        where = " {extra[task]}"
        if "slot" in extra:
            where += "/{extra[slot]}"
    fmt = _FORMAT_BASE + where + " {message}\n"
    if record["exception"] is not None:
        fmt += "{exception}\n"
    return fmt


_connecting = threading.Event()


@contextlib.contextmanager
def kazoo_connecting() -> Iterator[None]:
    """Demote kazoo's connection-retry warnings to DEBUG for the duration (see above)."""
    _connecting.set()
    try:
        yield
    finally:
        _connecting.clear()


class _Intercept(logging.Handler):
    """Forwards stdlib records (kazoo, werkzeug) to loguru with the right level and origin."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        if (_connecting.is_set() and record.name.startswith("kazoo")
                and record.levelno < logging.ERROR):
            level = "DEBUG"
        logger.opt(depth=6, exception=record.exc_info).bind(lib=record.name).log(
            level, record.getMessage()
        )


def setup_logging(level: str = "INFO", *, node: str = "-", stream: Any = None) -> None:
    """Install the one stderr sink and the stdlib bridge; idempotent."""
    logger.remove()
    logger.configure(extra={"node": node})
    logger.add(stream or sys.stderr, level=level.upper(), format=_format, backtrace=False,
               diagnose=False)
    logging.basicConfig(handlers=[_Intercept()], level=logging.WARNING, force=True)
    # kazoo reports every reconnect attempt at WARNING/INFO; our own lines say what matters,
    # unless the user asks for DEBUG.
    kazoo_level = logging.DEBUG if level.upper() in ("DEBUG", "TRACE") else logging.WARNING
    logging.getLogger("kazoo").setLevel(kazoo_level)
    logging.getLogger("kazoo.client").setLevel(kazoo_level)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)


def set_node(node: str) -> None:
    """Bind the node id to every later line once the node's name is known."""
    logger.configure(extra={"node": node})
