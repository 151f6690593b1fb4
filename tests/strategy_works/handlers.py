"""The one handler the strategy tests schedule: runs until its slot is stopped."""

from __future__ import annotations


def RunSpin(ctx) -> None:
    while ctx.sleep(0.05):
        pass
