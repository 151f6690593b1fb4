"""Handlers for end-to-end tests: they record what ran where, so a checker can prove that no
slot ever ran on two nodes at once."""

from __future__ import annotations

import json
import os
import time


def _record(ctx, event: str) -> None:
    path = os.environ.get("XCONSUMER_TEST_RECORD")
    if not path:
        return
    line = json.dumps({"t": time.time(), "e": event, "node": ctx.node, "task": ctx.task,
                       "slot": ctx.slot, "fence": ctx.fence, "pid": os.getpid()}) + "\n"
    # One O_APPEND write per line: lines from concurrent processes never interleave.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def RunRecord(ctx) -> None:
    """Runs until told to stop, with a heartbeat every 50 ms."""
    _record(ctx, "start")
    try:
        while ctx.sleep(0.05):
            _record(ctx, "beat")
    finally:
        _record(ctx, "stop")


def RunOnce(ctx) -> None:
    """A once-mode job: records its single run."""
    _record(ctx, "start")
    ctx.sleep(0.1)
    _record(ctx, "stop")


def RunFlaky(ctx) -> None:
    """Always fails: exercises retry with backoff."""
    _record(ctx, "fail")
    raise RuntimeError("flaky handler failed on purpose")


def RunStubborn(ctx) -> None:
    """Ignores cancellation until a file appears: the stuck-handler case."""
    _record(ctx, "start")
    release = os.environ.get("XCONSUMER_TEST_RELEASE", "")
    while not (release and os.path.exists(release)):
        time.sleep(0.05)
    _record(ctx, "stop")
