"""Keyed tasks: slots taken from a user function `Keys<Name>()` instead of `workerNum`.

The leader calls each keyed task's provider at start, every `keys_interval` seconds and on
request (`POST /api/tasks/{name}/keys/refresh`, `xconsumer refresh-keys`), and publishes
the keys beside the task table (`keys` in the assignment document). A key keeps its slot
index for as long as it is listed (`stable_order`), so:

- adding keys never moves or restarts another key's slot: new keys fill the indices freed
  by removed keys first, then take new indices at the end;
- removing keys moves as few others as possible: an index left free at the end of the
  list is simply dropped; one left free in the middle takes the last key (that one slot
  restarts, on the same node if the strategy keeps it there).

A provider runs in a thread of its own, so one that hangs delays nothing but itself: past
`KEYS_TIMEOUT` it is reported (log, `keys_failed` event, metric) and the last good list
stays in force, as it does when the provider raises or returns something that is not a
list of valid keys.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from loguru import logger

from .config import MAX_WORKER_NUM
from .errors import XConsumerError

KEY_RE = re.compile(r"[A-Za-z0-9_.:@=+-]{1,200}")
KEYS_TIMEOUT = 10.0  # seconds a provider may take before the last good list is kept


class KeysError(XConsumerError):
    """A keys provider failed or returned something that is not a list of keys."""


def check_keys(value: Any, where: str) -> list[str]:
    """The provider's result as a list of keys, or KeysError saying exactly what is wrong."""
    if isinstance(value, str | bytes) or not isinstance(value, Sequence | set | frozenset):
        raise KeysError(f"{where} must return a list of string keys, got "
                        f"{type(value).__name__}")
    keys = list(value)
    if len(keys) > MAX_WORKER_NUM:
        raise KeysError(f"{where} returned {len(keys)} keys, over the limit of "
                        f"{MAX_WORKER_NUM}")
    seen: set[str] = set()
    for i, key in enumerate(keys):
        if not isinstance(key, str):
            raise KeysError(f"{where} returned a {type(key).__name__} at position {i} "
                            f"({key!r:.40}); keys are strings")
        if not KEY_RE.fullmatch(key):
            raise KeysError(f"{where} returned key {key!r:.60} at position {i}: a key is 1-200 "
                            "of A-Z a-z 0-9 _ . : @ = + -")
        if key in seen:
            raise KeysError(f"{where} returned key {key!r} twice")
        seen.add(key)
    return keys


def stable_order(previous: Sequence[str], fresh: Sequence[str]) -> list[str]:
    """`fresh`'s keys in slot order, keeping every key of `previous` that is still listed at
    its index (see the module docstring for where new keys go and what removal moves)."""
    wanted = set(fresh)
    out: list[str | None] = [k if k in wanted else None for k in previous]
    known = set(previous)
    new = [k for k in fresh if k not in known]
    holes = [i for i, k in enumerate(out) if k is None]
    for i, key in zip(holes, new, strict=False):
        out[i] = key
    out.extend(new[len(holes):])
    holes = holes[len(new):]
    # Drop what is free at the end, then fill free indices inside from the end.
    for i in holes:
        while out and out[-1] is None:
            out.pop()
        if i >= len(out):
            break
        out[i] = out.pop()
    while out and out[-1] is None:
        out.pop()
    return [k for k in out if k is not None]


@dataclass
class _State:
    keys: list[str] | None = None  # last good list (None: none yet)
    error: str | None = None
    due: float = 0.0  # monotonic time of the next scheduled call
    refresh_seen: int | None = None
    thread: threading.Thread | None = None
    started: float = 0.0
    reported_hang: bool = False


class KeysTracker:
    """The leader's view of every keyed task's keys (only the leader calls providers).

    `poll()` runs on the controller thread and never blocks: it starts the calls that are
    due, each in a named thread that stores its result and kicks the controller."""

    def __init__(self, providers: Callable[[str], Callable[[], Any] | None], *,
                 on_change: Callable[[], None],
                 on_error: Callable[[str, str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 timeout: float = KEYS_TIMEOUT) -> None:
        self._providers = providers
        self._on_change = on_change
        self._on_error = on_error or (lambda task, message: None)
        self._clock = clock
        self._timeout = timeout
        self._lock = threading.Lock()
        self._states: dict[str, _State] = {}
        self._orphans: list[threading.Thread] = []  # calls of forgotten states, for stop()

    def keys(self, task: str) -> list[str] | None:
        with self._lock:
            state = self._states.get(task)
            return list(state.keys) if state is not None and state.keys is not None else None

    def reset(self) -> None:
        """Forget every list: called when this node becomes the leader, so it starts from
        what is published, not from what it knew when it last led."""
        with self._lock:
            self._orphans += [s.thread for s in self._states.values() if s.thread is not None]
            self._states.clear()

    def errors(self) -> dict[str, str]:
        with self._lock:
            return {t: s.error for t, s in self._states.items() if s.error}

    def next_due(self) -> float | None:
        """When `poll` has something to do next (monotonic), for the controller's wait."""
        with self._lock:
            dues = [s.due for s in self._states.values() if s.thread is None]
            hangs = [s.started + self._timeout for s in self._states.values()
                     if s.thread is not None and not s.reported_hang]
        return min(dues + hangs, default=None)

    def poll(self, tasks: Sequence[Any], published: Mapping[str, list[str]],
             refresh: Mapping[str, int]) -> None:
        """Start the provider calls that are due for `tasks` (the keyed ones); `published`
        seeds a task's last good list (a new leader starts from what is published)."""
        now = self._clock()
        keyed = {t.name: t for t in tasks if getattr(t, "keys", None)}
        with self._lock:
            for name in list(self._states):
                if name not in keyed:
                    # A call still running for a task no longer keyed is forgotten, as at
                    # reset(): its answer is dropped. Found in review: its state was kept
                    # while the call ran, and only keyed tasks are checked for a hang, so a
                    # hung call's deadline stayed in next_due, in the past, for good, and
                    # the leader's controller ran pass after pass without waiting.
                    thread = self._states.pop(name).thread
                    if thread is not None:
                        self._orphans = [t for t in self._orphans if t.is_alive()]
                        self._orphans.append(thread)
            for name, task in keyed.items():
                state = self._states.setdefault(name, _State())
                if state.keys is None and name in published:
                    state.keys = list(published[name])
                asked = refresh.get(name, 0)
                if state.refresh_seen is not None and asked != state.refresh_seen:
                    state.due = now  # an operator asked for it
                state.refresh_seen = asked
                if state.thread is not None:
                    self._check_hang(name, state, now)
                    continue
                if now >= state.due:
                    self._start(name, task, state, now)

    def _check_hang(self, name: str, state: _State, now: float) -> None:
        if not state.reported_hang and now - state.started > self._timeout:
            state.reported_hang = True
            state.error = (f"Keys provider of task {name!r} did not return within "
                           f"{self._timeout:g}s; keeping the last good keys")
            self._on_error(name, state.error)

    def _start(self, name: str, task: Any, state: _State, now: float) -> None:
        provider = self._providers(task.keys)
        where = f"Keys provider of task {name!r}"
        state.due = now + task.keys_interval
        if provider is None:
            message = (f"{where}: no function Keys{task.keys[0].upper()}{task.keys[1:]}() "
                       "in works/ on the leader; keeping the last good keys")
            if state.error != message:
                state.error = message
                self._on_error(name, message)
            return
        state.started = now
        state.reported_hang = False
        state.thread = threading.Thread(target=self._call, args=(name, provider, where),
                                        name=f"xc-keys-{name}", daemon=True)
        state.thread.start()

    def _call(self, name: str, provider: Callable[[], Any], where: str) -> None:
        try:
            fresh = check_keys(provider(), where)
            error = None
        except KeysError as exc:
            fresh, error = None, f"{exc}; keeping the last good keys"
        except BaseException as exc:  # noqa: BLE001 - a user function (SystemExit too):
            fresh = None  # report it, never let it end this thread without a word
            error = f"{where} raised {type(exc).__name__}: {exc}; keeping the last good keys"
        changed = False
        with self._lock:
            state = self._states.get(name)
            if state is None or state.thread is not threading.current_thread():
                return  # forgotten meanwhile (see reset): the result is of another time
            state.thread = None
            if fresh is not None:
                ordered = stable_order(state.keys or [], fresh)
                changed = ordered != state.keys
                state.keys = ordered
                if state.error:
                    logger.info("Keys provider of task {} works again", name)
                state.error = None
            else:
                state.error = error
            report = error
        if fresh is None and report is not None:
            self._on_error(name, report)
        if changed:
            self._on_change()

    def stop(self, timeout: float = 2.0) -> None:
        """Join the provider calls still running (a hung one is left, named, and logged)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            threads = [s.thread for s in self._states.values() if s.thread is not None]
            threads += self._orphans
            self._orphans = []
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                logger.warning("{} still running at shutdown (a hung Keys provider)",
                               thread.name)
