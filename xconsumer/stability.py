"""Damping for the leader: ride out a flapping node and coalesce bursts of changes.

- `rejoin_grace`: a node that vanished without leaving gracefully (crash, session loss,
  network blip) keeps its place in the plan, as a ghost, for this long. If it rejoins under
  the same name in time, nothing moved (with the sticky strategy it gets exactly its slots
  back). A graceful leave is marked in ZooKeeper and never waits.
- `debounce`: after a membership change the leader waits this long for more changes before
  publishing, so a rolling restart is one rebalance rather than one per node.

Pure bookkeeping on an injectable clock; the leader asks `plan_members()` on every pass.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from .membership import MemberRecord

MAX_DEBOUNCE_FACTOR = 10


class Damper:
    def __init__(self, *, rejoin_grace: float = 0.0, debounce: float = 0.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rejoin_grace = rejoin_grace
        self.debounce = debounce
        self._clock = clock
        self._known: dict[str, MemberRecord] = {}
        self._ghosts: dict[str, tuple[MemberRecord, float]] = {}
        self._names: frozenset[str] | None = None
        self._changed_at = float("-inf")
        self._burst_at = float("-inf")

    def reset(self) -> None:
        """Forget everything (this node stopped leading)."""
        self.__init__(rejoin_grace=self.rejoin_grace, debounce=self.debounce,  # type: ignore[misc]
                      clock=self._clock)

    @property
    def ghosts(self) -> list[str]:
        return sorted(self._ghosts)

    def plan_members(self, live: Sequence[MemberRecord],
                     left_gracefully: Callable[[str], bool]
                     ) -> tuple[list[MemberRecord] | None, float | None]:
        """(members to plan with, or None to wait; monotonic time to look again, or None)."""
        now = self._clock()
        names = frozenset(m.name for m in live)
        if self._names is not None and names != self._names:
            if now - self._changed_at >= self.debounce:
                self._burst_at = now  # a new burst starts
            self._changed_at = now
        self._names = names
        for name in set(self._known) - names:
            if name not in self._ghosts and self.rejoin_grace > 0 and not left_gracefully(name):
                self._ghosts[name] = (self._known[name], now + self.rejoin_grace)
        for name in list(self._ghosts):
            if name in names or self._ghosts[name][1] <= now:
                del self._ghosts[name]
        self._known = {m.name: m for m in live}
        wake = [until for _, until in self._ghosts.values()]
        # Wait for quiet, but never longer than MAX_DEBOUNCE_FACTOR debounces in a row: a
        # node crash-looping must not keep the leader from ever publishing.
        limit = self._burst_at + self.debounce * MAX_DEBOUNCE_FACTOR
        if self.debounce > 0 and now - self._changed_at < self.debounce and now < limit:
            return None, min([self._changed_at + self.debounce, limit, *wake])
        ghosts = [rec for rec, _ in self._ghosts.values()]
        return list(live) + sorted(ghosts, key=lambda r: r.seq), (min(wake) if wake else None)
