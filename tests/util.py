"""Helpers shared by all tests: polling, and what to do when a test's tool is missing.

Distributed behaviour (sessions expiring, rebalances, watches firing) happens "soon", never at a
known instant. Fixed sleeps make tests either slow or flaky, so every wait goes through
`wait_until`, which returns as soon as the condition holds and explains itself when it does not.
This is deliberately the only place in the test suite that sleeps.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import NoReturn, TypeVar

import pytest
from kazoo.client import KazooClient

T = TypeVar("T")

# Where the chaos suite appends one JSON line per fault (tests/chaos), read back by the root
# conftest for the table at the end of the run.
CHAOS_RESULTS_ENV = "XCONSUMER_CHAOS_RESULTS"
CHAOS_RESULTS_NAME = "chaos-results.jsonl"


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


def observe_until(
    done: Callable[[], object],
    timeout: float,
    check: Callable[[], str | None] | None = None,
    interval: float = 0.05,
    message: str | Callable[[], str] = "",
) -> list[str]:
    """Poll `check` until `done()` holds, and return every problem it reported meanwhile.

    For a steady state that must *last*: rather than sleeping a fixed time, the test names
    what proves it lasted long enough (heartbeats recorded, leases renewed, reconcile passes
    made) and checks the state all along the way.
    """
    __tracebackhide__ = True
    problems: list[str] = []

    def step() -> object:
        if check is not None:
            problem = check()
            if problem:
                problems.append(problem)
        return done()

    wait_until(step, timeout, interval=interval, message=message)
    return problems


def in_ci() -> bool:
    """Whether this run is CI's (CI=true, as CI services set it)."""
    return os.environ.get("CI", "").strip().lower() == "true"


def missing_tool(reason: str) -> NoReturn:
    """A test cannot run because a tool it needs is not installed: skip it on a developer's
    machine, fail it in CI, where bin/setup --tests must have installed the tool and a skip
    would hide that the test never ran."""
    __tracebackhide__ = True
    if in_ci():
        pytest.fail(f"{reason} (CI=true: a missing test tool fails the run instead of "
                    f"skipping the test)", pytrace=False)
    pytest.skip(reason)


def first_args(monkeypatch: pytest.MonkeyPatch, owner: object, name: str) -> list:
    """Replace `owner.name` with a wrapper that records each call's first argument (the
    client, the path...) and calls through; returns the list it fills."""
    calls: list = []
    real = getattr(owner, name)

    def recording(first, *args, **kwargs):
        calls.append(first)
        return real(first, *args, **kwargs)
    monkeypatch.setattr(owner, name, recording)
    return calls


def expire_session(client: KazooClient, hosts: str, attempts: int = 5) -> None:
    """Expire `client`'s session the way ZooKeeper does it: another connection takes the
    session over and closes it; returns once `client` has its next session. The client's
    own reconnect can take the session back before the close is sent (it then lives on),
    so that is tried again, a bounded number of times."""
    __tracebackhide__ = True
    old = client.client_id
    assert old is not None, "the client has no session"

    def renewed() -> bool:
        now = client.client_id
        return client.connected and now is not None and now[0] != old[0]

    for attempt in range(attempts):
        twin = KazooClient(hosts=hosts, client_id=old, timeout=10)
        twin.start(timeout=10)
        twin.stop()
        twin.close()
        try:
            wait_until(renewed, 10)
            return
        except AssertionError:
            if attempt == attempts - 1:
                raise
