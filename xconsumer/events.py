"""A bounded, in-memory log of what this node saw happen in the cluster.

Bounded so a flapping cluster cannot grow a node's memory; sequence numbers let a poller ask
for "everything after N" without duplicates.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

from loguru import logger


class EventLog:
    def __init__(self, size: int = 200) -> None:
        self._events: deque[dict[str, Any]] = deque(maxlen=max(1, size))
        self._lock = threading.Lock()
        self._seq = 0

    def add(self, kind: str, message: str, **fields: Any) -> dict[str, Any]:
        with self._lock:
            self._seq += 1
            event = {"seq": self._seq, "time": time.time(), "kind": kind, "message": message,
                     **fields}
            self._events.append(event)
        logger.debug("event {}: {}", kind, message)
        return event

    def since(self, after: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        with self._lock:
            items = [e for e in self._events if e["seq"] > after]
        return items[-limit:] if limit > 0 else []

    @property
    def last_seq(self) -> int:
        with self._lock:
            return self._seq
