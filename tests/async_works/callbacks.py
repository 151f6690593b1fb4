"""Handlers with batch callbacks: every call and every run is noted, so a test can check
the order (Assign before a slot's first run, Revoke after its runner stopped) and the
batches."""

from __future__ import annotations

import threading
from typing import Any

from tests.async_works import note


def _batch(event: str, ctx: Any, slots: list[Any]) -> None:
    note(event, None, node=ctx.node, task=ctx.task, generation=ctx.generation,
         slots=[s.index for s in slots], keys=[s.key for s in slots],
         params=[s.param for s in slots])


def RunKafka(ctx: Any) -> None:
    note("run", ctx)
    while ctx.sleep(0.05):
        pass
    note("stopped", ctx)


def AssignKafka(ctx: Any, slots: list[Any]) -> None:
    _batch("assign", ctx, slots)


def RevokeKafka(ctx: Any, slots: list[Any]) -> None:
    _batch("revoke", ctx, slots)


def RunBad(ctx: Any) -> None:
    note("run", ctx)
    while ctx.sleep(0.05):
        pass


def AssignBad(ctx: Any, slots: list[Any]) -> None:
    raise RuntimeError("the client refused the assignment")


async def RunAio(ctx: Any) -> None:
    note("run", ctx)
    while await ctx.sleep(0.05):
        pass


async def AssignAio(ctx: Any, slots: list[Any]) -> None:
    _batch("assign", ctx, slots)
    note("assign_thread", None, task=ctx.task, name=threading.current_thread().name)


async def RevokeAio(ctx: Any, slots: list[Any]) -> None:
    _batch("revoke", ctx, slots)
