"""The formation window: a new cluster's first plan waits for the nodes started with it.

Nodes started together join a few hundred milliseconds apart. Without a wait, the first to
lead publishes a plan for itself alone, then one per join, and a sticky strategy builds the
cluster's first layout from those incremental moves instead of the round-robin deal from
the followers that the README documents. Kafka's `group.initial.rebalance.delay.ms` solves
the same problem the same way: the first rebalance of an empty group waits a moment.

Only a fresh cluster waits: one whose published assignment is absent or gives nothing to
any live node. After a leader change or a crash the document already assigns slots to live
nodes, and waiting there would only keep slots unowned longer, so the leader publishes at
once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping
from typing import Any


def is_fresh(doc: Mapping[str, Any] | None, live: Collection[str]) -> bool:
    """Whether no live node appears in the published plan: a cluster still forming.

    A node listed with no slots counts as appearing: a leader that once dealt to it is not
    forming a cluster any more.
    """
    nodes = (doc or {}).get("nodes")
    if not isinstance(nodes, Mapping):
        return True
    return not any(name in nodes for name in live)


# How long the window may be stretched by members that keep joining, in windows: a start
# that never settles still gets its first plan (Kafka bounds its delay the same way).
MAX_STRETCH = 30


class FormationWindow:
    """How long the leader still waits before a fresh cluster's first publish.

    The window starts when this leader first sees the cluster fresh, not when the process
    started, and like Kafka's initial rebalance delay it starts again with every join: the
    first plan comes `seconds` after the last member joined, at most MAX_STRETCH windows
    after the first look, so a mass start (hundreds of nodes registering over a minute) is
    one plan instead of one per join. A node that becomes leader of an already-formed
    cluster never waits, and one that waited closes the window for good once it has said
    "publish now" (latched): nodes that join later are joins, dealt by the strategy's usual
    moves.
    """

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = max(0.0, float(seconds))
        self._clock = clock
        self._since: float | None = None
        self._last_join: float | None = None
        self._seen: frozenset[str] = frozenset()
        self._open = self.seconds > 0

    def wait(self, doc: Mapping[str, Any] | None, live: Collection[str]) -> float:
        """Seconds still to wait before publishing (0.0: publish now).

        `doc` is the published assignment as decoded (None when absent or corrupt), `live`
        the names of the live members.
        """
        if not self._open:
            return 0.0
        if not is_fresh(doc, live):
            self._open = False
            return 0.0
        now = self._clock()
        members = frozenset(live)
        if self._since is None:
            self._since = self._last_join = now
        elif not members <= self._seen:
            self._last_join = now  # someone joined: the window starts again
        self._seen = members
        left = min((self._last_join or now) + self.seconds,
                   self._since + self.seconds * MAX_STRETCH) - now
        if left <= 0:
            self._open = False
            return 0.0
        return left
