"""`RunCounter`: resume from the checkpoint, commit each step, record what it did.

Each line of $XCONSUMER_TEST_RECORD is one event as JSON: `start` (with the checkpoint it
resumed from), `commit` (the value stored), `lost` (OwnershipLost, with the value refused)."""

from __future__ import annotations

import json
import os
import threading

from xconsumer import OwnershipLost

_lock = threading.Lock()


def _record(**event: object) -> None:
    with _lock, open(os.environ["XCONSUMER_TEST_RECORD"], "a") as f:
        f.write(json.dumps(event) + "\n")


def RunCounter(ctx):  # noqa: N802 - the handler naming convention
    count = ctx.checkpoint or 0
    _record(event="start", task=ctx.task, slot=ctx.slot, node=ctx.node, fence=ctx.fence,
            value=count, param=ctx.param, key=ctx.key)
    step = float(os.environ.get("XCONSUMER_TEST_STEP", "0.01"))
    # Stubborn: go on committing for a while after being told to stop, as a handler that
    # checks ctx.stopping too rarely would; only the fence can refuse it then.
    extra = int(os.environ.get("XCONSUMER_TEST_STUBBORN", "0"))
    if os.environ.get("XCONSUMER_TEST_STUBBORN_KEY", ctx.key) != ctx.key:
        extra = 0  # only that key's slot is stubborn
    while not ctx.stopping or extra > 0:
        if ctx.stopping:
            extra -= 1
        count += 1
        try:
            ctx.commit(count)
        except OwnershipLost as exc:
            _record(event="lost", task=ctx.task, slot=ctx.slot, node=ctx.node, value=count,
                    fence=ctx.fence, error=str(exc))
            return
        _record(event="commit", task=ctx.task, slot=ctx.slot, node=ctx.node, value=count,
                fence=ctx.fence, key=ctx.key, param=ctx.param)
        ctx.sleep(step)
    _record(event="end", task=ctx.task, slot=ctx.slot, node=ctx.node, key=ctx.key)


def KeysShards():  # noqa: N802 - the provider naming convention
    """Keys from the file $XCONSUMER_TEST_KEYS, one per line; `!raise`, `!hang` (up to 60 s)
    and `!bad` on the first line make the provider fail in those ways."""
    import time
    from pathlib import Path

    lines = Path(os.environ["XCONSUMER_TEST_KEYS"]).read_text().split()
    if lines[:1] == ["!raise"]:
        raise RuntimeError("shard registry unavailable")
    if lines[:1] == ["!hang"]:
        time.sleep(60)
    if lines[:1] == ["!bad"]:
        return ["ok", 7]
    return lines
