"""Polling helper shared by all tests.

Distributed behaviour (sessions expiring, rebalances, watches firing) happens "soon", never at a
known instant. Fixed sleeps make tests either slow or flaky, so every wait goes through
`wait_until`, which returns as soon as the condition holds and explains itself when it does not.
This is deliberately the only place in the test suite that sleeps.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T],
    timeout: float,
    interval: float = 0.02,
    message: str | Callable[[], str] = "",
) -> T:
    """Poll `predicate` until it returns something truthy, and return that value.

    A predicate that raises counts as "not yet" (the cluster may be mid-failover), but the
    last exception is kept: on timeout it is usually the real explanation. `message` may be a
    callable so that it can describe the state at the moment of failure, not at call time.
    """
    __tracebackhide__ = True  # failures point at the test's call, not at this helper
    deadline = time.monotonic() + timeout
    last_value: object = None
    last_error: BaseException | None = None
    attempts = 0
    while True:
        attempts += 1
        try:
            value = predicate()
        except Exception as e:  # any failure just means "not yet"
            last_error = e
        else:
            if value:
                return value
            last_value, last_error = value, None
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        time.sleep(min(interval, remaining))
    try:
        text = message() if callable(message) else message
    except Exception as e:  # a broken message must not hide the timeout itself
        text = f"(message failed: {type(e).__name__}: {e})"
    name = getattr(predicate, "__qualname__", repr(predicate))
    detail = (
        f"last exception: {type(last_error).__name__}: {last_error}"
        if last_error is not None
        else f"last value: {last_value!r}"
    )
    prefix = f"{text}: " if text else ""
    raise AssertionError(
        f"{prefix}condition {name} not met within {timeout:g}s ({attempts} attempts; {detail})"
    ) from last_error
