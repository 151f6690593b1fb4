"""Handlers for the benchmarks.

`RunBench` writes the same JSON lines as the end-to-end tests' `RunRecord` (tests/e2e/
record_works): a `start` record with `time.time()` the moment the slot starts running on a
node and a `stop` record when it ends, to the file named by `XCONSUMER_TEST_RECORD`. Unlike
`RunRecord` it writes no 50 ms heartbeat: 100 slots would add 2,000 file appends per second to
a 2-core machine and blur the handover figures. Between the two records the slot just sleeps.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from typing import Any


def _record(ctx: Any, event: str, run: str) -> None:
    path = os.environ.get("XCONSUMER_TEST_RECORD")
    if not path:
        return
    line = json.dumps({"t": time.time(), "e": event, "node": ctx.node, "task": ctx.task,
                       "slot": ctx.slot, "fence": ctx.fence, "pid": os.getpid(),
                       "thread": threading.current_thread().name, "run": run}) + "\n"
    # One O_APPEND write per line: lines from concurrent processes never interleave.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def RunBench(ctx: Any) -> None:
    """Record the start, sleep until told to stop, record the stop."""
    run = uuid.uuid4().hex  # the run id the overlap checker (tests/checker.py) keys runs by
    _record(ctx, "start", run)
    try:
        while ctx.sleep(3600.0):
            pass
    finally:
        _record(ctx, "stop", run)
