"""Coroutine handlers, one per behaviour under test."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from tests.async_works import note


async def RunTicker(ctx: Any) -> None:
    """Cooperative: sleeps on ctx until the slot stops, and says what the sleep returned."""
    note("start", ctx)
    while True:
        awake = await ctx.sleep(0.05)
        if not awake:
            note("slept_false", ctx)
            return


async def RunHour(ctx: Any) -> None:
    """Never looks at ctx: only cancellation ends it."""
    note("start", ctx)
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        note("cancelled", ctx)
        raise


async def RunOnceAsync(ctx: Any) -> None:
    note("start", ctx)
    await asyncio.sleep(0.05)
    note("done", ctx)


async def RunFlakyAsync(ctx: Any) -> None:
    note("fail", ctx)
    raise RuntimeError("async handler failed on purpose")


async def RunBlocker(ctx: Any) -> None:
    """Blocks the whole event loop once per run: a blocking call inside `async def`."""
    note("start", ctx)
    time.sleep(1.6)
    note("stop", ctx)
    await ctx.sleep(3600)


async def RunOffload(ctx: Any) -> None:
    """Hands blocking work to asyncio.to_thread; the work runs until the test's release
    file exists (bounded), whatever happens to the coroutine that awaited it."""
    note("start", ctx)

    def work() -> None:
        note("work_start", ctx)
        release = os.environ.get("XCONSUMER_TEST_RELEASE", "")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (release and os.path.exists(release)):
            time.sleep(0.02)
        note("work_end", ctx)

    try:
        await asyncio.to_thread(work)
        await ctx.sleep(3600)
    except asyncio.CancelledError:
        note("cancelled", ctx)
        raise
