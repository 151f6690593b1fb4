"""Handlers for the coroutine-handler and batch-callback tests: each appends one JSON line
per event to $XCONSUMER_TEST_RECORD, so a test can see what ran, in which order, and how it
ended (cancelled, slept False, timed out) on real nodes."""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any


def note(event: str, ctx: Any = None, **extra: Any) -> None:
    """One O_APPEND write per line: lines from concurrent slots never interleave."""
    path = os.environ.get("XCONSUMER_TEST_RECORD")
    if not path:
        return
    where = {"node": ctx.node, "task": ctx.task, "slot": ctx.slot} if ctx is not None else {}
    line = json.dumps({"t": time.time(), "e": event, "thread": threading.current_thread().name,
                       **where, **extra}) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
