"""Coroutine handlers, one per behaviour under test."""

from __future__ import annotations

import asyncio
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
