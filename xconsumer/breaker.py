"""A circuit breaker per slot: stop calling a handler that keeps failing, then try once.

A handler whose dependency is down fails on every run; retrying it with backoff still calls
it every `retry_backoff_max` seconds, logging a traceback each time. With `breaker_failures`
set, `breaker_failures` consecutive failures (a timed-out run counts) *open* the breaker:
the slot calls nothing for `breaker_cooldown` seconds. Then it is *half-open*: one trial
run; a success closes it, a failure opens it again for another cooldown.

The state machine is pure (it is given the task and reads one clock), because it runs in
two places that must agree: the slot's own thread, and, for `isolation = "process"`, the
child process, which gates its own calls with a copy started from the parent's snapshot
while the parent keeps the authoritative copy (the one the API shows) from the same
reports. The clock is the lease clock: system-wide, so a deadline taken in the parent means
the same instant in the child.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

from .lease import lease_clock

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


class BreakerTask(Protocol):
    breaker_failures: int | None
    breaker_cooldown: float


class Breaker:
    """One slot's breaker. `gate()` before a run, `started()` when one starts, `record()`
    when it ends; `record` answers the transition ("opened", "closed" or None) so the
    caller can count and report it once."""

    def __init__(self, clock: Callable[[], float] = lease_clock) -> None:
        self._clock = clock
        self.state = CLOSED
        self.consecutive_failures = 0
        self.open_until: float | None = None  # on `clock`
        self.opened_in_a_row = 0  # openings without a success between them

    def gate(self, task: BreakerTask) -> float:
        """Seconds to wait before the handler may be called again (0: call it now). An
        open breaker whose cooldown has passed turns half-open: the next run is its trial.
        A breaker switched off at run time while open lets that trial through at once."""
        if self.state != OPEN:
            return 0.0
        left = (self.open_until or 0.0) - self._clock()
        if left > 0 and task.breaker_failures:
            return left
        self.state = HALF_OPEN
        return 0.0

    def started(self) -> None:
        """A run started. The parent of a child process learns of the child's trial run
        only by its start (its own cooldown ends a moment after the child's): an open
        breaker whose handler runs is half-open, whatever this copy's clock says."""
        if self.state == OPEN:
            self.state = HALF_OPEN

    def record(self, ok: bool, task: BreakerTask) -> str | None:
        if ok:
            self.consecutive_failures = 0
            return self._close()
        self.consecutive_failures += 1
        limit = task.breaker_failures
        if not limit:
            return self._close()  # switched off at run time: nothing keeps it open
        if self.state == HALF_OPEN or (self.state == CLOSED
                                       and self.consecutive_failures >= limit):
            self.state = OPEN
            self.open_until = self._clock() + task.breaker_cooldown
            self.opened_in_a_row += 1
            return "opened"
        return None

    def _close(self) -> str | None:
        if self.state == CLOSED:
            return None
        self.state = CLOSED
        self.open_until = None
        self.opened_in_a_row = 0
        return "closed"

    # -- views -------------------------------------------------------------------------------
    def open_until_wall(self) -> float | None:
        """`open_until` as a Unix time, for people and the API (only while open)."""
        if self.state != OPEN or self.open_until is None:
            return None
        return round(time.time() + (self.open_until - self._clock()), 3)

    def snapshot(self) -> dict[str, Any]:
        """What a child process starts from (picklable; the clock is shared system-wide)."""
        return {"state": self.state, "consecutive_failures": self.consecutive_failures,
                "open_until": self.open_until, "opened_in_a_row": self.opened_in_a_row}

    @classmethod
    def from_snapshot(cls, data: dict[str, Any] | None) -> Breaker:
        breaker = cls()
        if data:
            breaker.state = data["state"]
            breaker.consecutive_failures = data["consecutive_failures"]
            breaker.open_until = data["open_until"]
            breaker.opened_in_a_row = data["opened_in_a_row"]
        return breaker
