"""Self-fencing lease on the monotonic clock.

kazoo notices a dead connection only when its own timers run. A process frozen by SIGSTOP,
swap or a long pause can wake up after its session expired on the server while kazoo still
reports CONNECTED, and its handlers would run on while another node already took their slots.
The lease closes that hole: it is renewed only by a reply from the server, and it ends a safe
margin before the session could expire counted from when the request was *sent* (the server
heard from us no earlier than that). Handlers read it through `ctx.stopping`, so they stop on
time even when nobody else noticed yet.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


def lease_clock() -> float:
    """Seconds on a clock that keeps counting while the machine (or VM) is suspended.

    CLOCK_MONOTONIC stops during a suspend, so a lease measured with it would outlive the
    session; CLOCK_BOOTTIME does not stop. It is system-wide, so a child process compares
    against the same clock."""
    return time.clock_gettime(_CLOCK)


_CLOCK = getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC)

# The lease ends at this fraction of the session timeout after the last proven contact.
# kazoo itself declares a connection dead after 2/3 of the session without data, so a
# healthy client renews long before this; the remaining third is the budget handlers have
# to notice `ctx.stopping` before the server may hand their slot to someone else.
LEASE_FRACTION = 2.0 / 3.0


class Lease:
    """Valid until a deadline that only server replies push forward."""

    def __init__(self, session_timeout: Callable[[], float], *,
                 clock: Callable[[], float] = lease_clock,
                 fraction: float = LEASE_FRACTION) -> None:
        self._session_timeout = session_timeout
        self._clock = clock
        self._fraction = fraction
        self._lock = threading.Lock()
        self._deadline = float("-inf")
        # The member znode that proves our membership (None while not joined): a checkpoint
        # commit checks it exists in the same transaction, so a commit sent after our
        # session expired (a frozen node that woke up) cannot land. Set by the node.
        self.member: str | None = None

    def renew(self, sent_at: float) -> None:
        """Record a server reply to a request sent at `sent_at` (monotonic seconds)."""
        deadline = sent_at + self._session_timeout() * self._fraction
        with self._lock:
            self._deadline = max(self._deadline, deadline)

    def invalidate(self) -> None:
        with self._lock:
            self._deadline = float("-inf")

    def remaining(self) -> float:
        """Seconds left; zero or negative once expired."""
        with self._lock:
            return self._deadline - self._clock()

    def valid(self) -> bool:
        return self.remaining() > 0

    @property
    def session_timeout(self) -> float:
        return self._session_timeout()

    def now(self) -> float:
        return self._clock()
