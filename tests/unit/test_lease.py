"""The lease and `ctx.stopping` on a fake clock: exact deadlines, no ZooKeeper, no waiting.

The chaos suite cannot pin these down: a frozen follower overlaps its successor by tens of
milliseconds either way, far under its bound, so a lease that never ends (or ends a whole
session late) passes there. Here every boundary is checked to the tick."""

from __future__ import annotations

import threading

import pytest

from xconsumer.config import TaskConfig
from xconsumer.lease import LEASE_FRACTION, Lease
from xconsumer.slot import SlotContext

SESSION = 3.0


class FakeClock:
    """A clock that moves only when the test says so."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def lease(clock: FakeClock) -> Lease:
    return Lease(lambda: SESSION, clock=clock)


def test_a_new_lease_is_not_valid_until_a_reply_renews_it(lease: Lease) -> None:
    assert not lease.valid()
    assert lease.remaining() <= 0


def test_a_lease_ends_two_thirds_of_the_session_after_the_request_was_sent(
        lease: Lease, clock: FakeClock) -> None:
    sent = clock.now
    clock.now += 0.5  # the reply arrives half a second later: it does not count
    lease.renew(sent)
    end = sent + SESSION * LEASE_FRACTION
    assert LEASE_FRACTION < 1.0  # a lease as long as the session would outlive it
    assert lease.remaining() == pytest.approx(end - clock.now)
    clock.now = end - 1e-6
    assert lease.valid()
    clock.now = end
    assert not lease.valid()
    clock.now = sent + SESSION
    assert not lease.valid()


def test_invalidate_ends_the_lease_at_once(lease: Lease, clock: FakeClock) -> None:
    lease.renew(clock.now)
    assert lease.valid()
    lease.invalidate()
    assert not lease.valid()
    assert lease.remaining() <= 0


def _context(lease: Lease) -> SlotContext:
    task = TaskConfig.from_dict({"name": "t", "workName": "record", "workerNum": 1})
    return SlotContext(task=task, slot=0, node="a", generation=1, fence=7,
                       stop_event=threading.Event(), lease=lease)


def test_a_context_stops_on_an_expired_lease_without_any_revoke(lease: Lease,
                                                               clock: FakeClock) -> None:
    """Nobody sets the stop event here (no lease thread, no controller): the context must
    see the lease end by itself, because a frozen node's threads cannot revoke in time."""
    lease.renew(clock.now)
    ctx = _context(lease)
    assert not ctx.stopping
    assert ctx.sleep(0) is True
    clock.now += SESSION  # past the lease
    assert ctx.stopping
    assert ctx.sleep(60) is False  # returns at once rather than sleeping on
    # Latched: a renewal a moment later does not resume a handler that already stopped.
    lease.renew(clock.now)
    assert lease.valid()
    assert ctx.stopping and ctx.stop_event.is_set()
