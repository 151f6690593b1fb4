"""What this node currently reads as corrupt in ZooKeeper, reported once per distinct case.

Every read pass hands in what it found for the kinds it read; a case seen for the first time
is logged (once, not on every pass twice a second), added to the event log and counted; a
case that is gone is logged as repaired. The active set is what `/api/node`, the metrics and
the dashboard show until the znode is repaired.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from loguru import logger

from .codecs import Corrupt
from .events import EventLog
from .metrics import Metrics

_ACTIONS = {
    "assignment": "the leader republishes it",
    "plan": "its node runs from the whole assignment meanwhile; the leader rewrites it",
    "overrides": "the last valid overrides stay in force until an admin write repairs it",
    "member": "its node rewrites it; a znode no node owns is ignored",
    "owner": "delete it if no node runs the slot",
    "done": "delete it to run the slot again",
    "left": "ignored",
}


class CorruptionReport:
    def __init__(self, events: EventLog | None = None, metrics: Metrics | None = None) -> None:
        self._events = events
        self._metrics = metrics
        self._lock = threading.Lock()
        self._active: dict[tuple[str, str], Corrupt] = {}

    def update(self, kinds: Iterable[str], found: Iterable[Corrupt]) -> None:
        """Replace what is known of `kinds` by `found` (all of those kinds were read)."""
        kinds = set(kinds)
        found_now = {(c.path, c.error): c for c in found if c.kind in kinds}
        with self._lock:
            before = {k: c for k, c in self._active.items() if c.kind in kinds}
            for key in set(before) - set(found_now):
                del self._active[key]
            new = [c for k, c in found_now.items() if k not in before]
            self._active.update(found_now)
            counts = {kind: 0 for kind in kinds}
            for c in self._active.values():
                if c.kind in counts:
                    counts[c.kind] += 1
        for key in set(before) - set(found_now):
            if not any(p == key[0] for p, _ in found_now):
                logger.info("{} znode {} is readable again", before[key].kind, key[0])
                if self._events is not None:
                    self._events.add("znode_repaired", f"{key[0]} is readable again",
                                     znode=key[0])
        for c in new:
            logger.error("{} ({})", c, _ACTIONS.get(c.kind, "reported"))
            if self._events is not None:
                self._events.add("znode_corrupt", str(c), znode=c.path, znode_kind=c.kind)
            if self._metrics is not None:
                self._metrics.corruptions.labels(c.kind).inc()
        if self._metrics is not None:
            for kind, n in counts.items():
                self._metrics.corrupt.labels(kind).set(n)

    def active(self) -> list[Corrupt]:
        with self._lock:
            return sorted(self._active.values(), key=lambda c: (c.kind, c.path))
