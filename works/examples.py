"""Example handlers: copy the shape that matches your task's mode."""

from __future__ import annotations

from typing import TYPE_CHECKING

from loguru import logger

if TYPE_CHECKING:  # annotations only: the package stays importable without xconsumer
    from xconsumer.works import SlotContextProtocol


class Work:
    """Methods of `Work` share one instance, so they can share clients or caches set up here."""

    def RunTest01(self, ctx: SlotContextProtocol) -> None:
        # `loop` mode: do one small unit and return; the runtime calls again after `interval`,
        # so stopping never has to interrupt us mid-unit.
        ctx.logger.info("test01 unit of work done (fence {})", ctx.fence)


def RunCountdown(ctx: SlotContextProtocol) -> None:
    # `once` mode: a finite job. ctx.sleep instead of time.sleep so a stop (rebalance,
    # shutdown) cuts the wait short instead of holding the slot hostage.
    for remaining in range(5, 0, -1):
        ctx.logger.info("countdown {}", remaining)
        if not ctx.sleep(0.2):
            ctx.logger.info("countdown interrupted at {}", remaining)
            return
    ctx.logger.info("countdown finished")


def RunPoller(ctx: SlotContextProtocol) -> None:
    # A long-running handler owns its loop; it must check ctx.stopping itself, or the slot
    # cannot be handed over to another node cleanly.
    polls = 0
    while not ctx.stopping:
        polls += 1
        ctx.logger.debug("poll #{} (fence {})", polls, ctx.fence)
        ctx.sleep(1.0)
    ctx.logger.info("poller stopping after {} poll(s)", polls)


def RunHello() -> None:
    # Go-style handler without ctx: fine for short jobs that never need to be interrupted.
    logger.info("hello from works.examples")
