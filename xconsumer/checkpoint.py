"""Fenced per-slot checkpoints: `ctx.checkpoint` and `ctx.commit(value)`.

A slot's position lives in `checkpoints/<task>/<slot id>`, a persistent znode holding
`{"value": ..., "fence": ..., "node": ..., "committed_at": ...}`. What makes a commit safe
is the transaction it is written in:

    check(our member znode)            -- our session is the one the cluster knows
    check(owner znode, our version)    -- nobody took the slot's owner znode from us
    set_data(checkpoint, our version)  -- nobody wrote the checkpoint since we read it

A deposed owner fails the first check (its session expired, so its member znode is gone),
even when it wakes from SIGSTOP still believing it is connected. The third check closes the
rest: a new owner, before it hands the position to its handler, rewrites the checkpoint with
the same value and its own fence (the "bump"), so the version any earlier owner holds is
stale from then on; and nobody bumps a checkpoint that carries a larger fence than its own
(fences are owner-znode czxids: a later owner's is always larger), so an earlier owner that
reads the checkpoint for the first time after its successor did is refused too. That also
covers an owner znode deleted by hand under a live node. A reset rewrites the checkpoint
(value null, the fence kept) instead of deleting it: a deleted and recreated znode would
start its versions again at 0, and a stale version could match again.

The checkpoint is read lazily, when the handler first asks for it: a slot that never uses
checkpoints costs no ZooKeeper request at all on a handover.

Every outcome is one of: the commit landed, or `OwnershipLost` (and the slot is stopping).
A commit whose reply was lost (connection loss, timeout) is resolved by reading the
checkpoint back, so "unknown" never reaches the handler as a silent success.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import (
    BadVersionError,
    KazooException,
    NodeExistsError,
    NoNodeError,
    RolledBackError,
)
from kazoo.handlers.threading import KazooTimeoutError

from .codecs import Corrupt, decode_checkpoint
from .config import MAX_VALUE_DEPTH, nested_deeper_than
from .errors import CheckpointError, OwnershipLost
from .paths import Paths, checkpoint_slot
from .zk import dumps

MAX_CHECKPOINT_BYTES = 64 * 1024  # of the encoded value; documented in the README
_ZK_ERRORS = (KazooException, KazooTimeoutError)


def encode_value(value: Any) -> str:
    """The value as compact JSON, or CheckpointError saying why it cannot be stored."""
    if nested_deeper_than(value, MAX_VALUE_DEPTH):
        raise CheckpointError(f"checkpoint value is nested deeper than {MAX_VALUE_DEPTH} "
                              "levels; commit a position, not the data")
    try:
        text = json.dumps(value, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise CheckpointError(f"checkpoint value is not JSON ({type(exc).__name__}: "
                              f"{str(exc)[:80]}); commit str, int, float, bool, None, "
                              "list or dict values") from None
    size = len(text.encode())
    if size > MAX_CHECKPOINT_BYTES:
        raise CheckpointError(f"checkpoint value is {size} bytes as JSON, over the "
                              f"{MAX_CHECKPOINT_BYTES}-byte limit; commit a position, not "
                              "the data")
    return text


class SlotCheckpoint:
    """One slot's checkpoint as seen by its current owner (one per slot runner run).

    Thread-safe: a handler may commit from several threads of its own; commits are
    serialized, because each needs the version the previous one produced."""

    def __init__(self, *, client: KazooClient, path: str, member: str | None, owner: str,
                 owner_version: Callable[[], int | None], fence: int, node: str,
                 lost: Callable[[str], None],
                 call_timeout: float = 10.0, retry_wait: float = 0.2,
                 counted: Callable[[bool], None] | None = None) -> None:
        self.path = path
        self._client = client
        self._member = member
        self._owner = owner
        self._owner_version = owner_version
        self._fence = fence
        self._node = node
        self._lost = lost
        self._counted = counted or (lambda landed: None)
        self._call_timeout = call_timeout
        self._retry_wait = retry_wait
        self._lock = threading.Lock()
        self._loaded = False
        self._value: Any = None
        self._version = -1

    # -- the handler's side ----------------------------------------------------------------
    def value(self) -> Any:
        with self._lock:
            self._ensure_loaded()
            return self._value

    def commit(self, value: Any) -> None:
        text = encode_value(value)
        stored = json.loads(text)  # what a reader gets back (tuples become lists, ...)
        with self._lock:
            self._ensure_loaded()
            raw = self._data(stored)
            try:
                self._write(raw)
            except OwnershipLost:
                self._counted(False)
                raise
            self._value = stored
            self._counted(True)

    def preload(self) -> Any:
        """Load now (a child process gets the value in its spec and cannot load lazily)."""
        return self.value()

    # -- ZooKeeper ------------------------------------------------------------------------------
    def _data(self, value: Any) -> bytes:
        return dumps({"value": value, "fence": self._fence, "node": self._node,
                      "committed_at": time.time()})

    def _call(self, result: Any) -> Any:
        return result.get(timeout=self._call_timeout)

    def _give_up(self, why: str) -> OwnershipLost:
        self._lost(why)
        return OwnershipLost(f"{self.path}: {why}; the slot is stopping")

    def _ensure_loaded(self) -> None:
        """Read the checkpoint and bump its version (see the module docstring), creating it
        on first use. Retried on connection trouble within one call timeout."""
        if self._loaded:
            return
        deadline = time.monotonic() + self._call_timeout
        while True:
            if time.monotonic() > deadline:
                raise self._give_up("cannot read the checkpoint (ZooKeeper unreachable)")
            try:
                raw, stat = self._call(self._client.get_async(self.path))
            except NoNodeError:
                self._create_empty()
                continue
            except _ZK_ERRORS:
                time.sleep(self._retry_wait)
                continue
            doc = decode_checkpoint(raw, self.path)
            if isinstance(doc, Corrupt):
                raise CheckpointError(f"{doc}; reset it (DELETE /api/tasks/<task>/checkpoints"
                                      "/<slot>) or write a valid one, the slot will not "
                                      "guess where to resume")
            if int(doc.get("fence", 0)) > self._fence:
                # Owner znodes are created in zxid order, so a larger fence is a later
                # owner's: it has read the checkpoint already, and we must not touch it.
                raise self._give_up(f"a newer owner (fence {doc['fence']}) holds the "
                                    "checkpoint")
            if not self._still_owner():
                raise self._give_up("ownership lost before the checkpoint was read")
            bumped = dumps({**doc, "fence": self._fence, "node": self._node})
            try:
                stat = self._call(self._client.set_async(self.path, bumped,
                                                         version=stat.version))
            except BadVersionError:
                continue  # written meanwhile (by a deposed owner): read it again
            except NoNodeError:
                continue
            except _ZK_ERRORS:
                time.sleep(self._retry_wait)
                continue
            self._version = stat.version
            self._value = doc["value"]
            self._loaded = True
            return

    def _create_empty(self) -> None:
        try:
            self._call(self._client.create_async(self.path, self._data(None), makepath=True))
        except NodeExistsError:
            pass
        except _ZK_ERRORS:
            time.sleep(self._retry_wait)

    def _still_owner(self) -> bool:
        """Our member and owner znodes as we know them: checked before the bump, so a
        deposed owner never moves the version under its successor."""
        try:
            results = self._call(self._checks().commit_async())
        except _ZK_ERRORS:
            return True  # unknown: the commit's own transaction checks again
        return not any(isinstance(r, Exception) for r in results)

    def _checks(self) -> Any:
        tx = self._client.transaction()
        if self._member is not None:
            tx.check(self._member, -1)
        version = self._owner_version()
        tx.check(self._owner, -2 if version is None else version)  # -2 never matches
        return tx

    def _write(self, raw: bytes) -> None:
        deadline = time.monotonic() + self._call_timeout
        while True:
            tx = self._checks()
            tx.set_data(self.path, raw, version=self._version)
            try:
                results = self._call(tx.commit_async())
            except _ZK_ERRORS:
                if self._landed(raw, deadline):
                    return
                continue
            if not any(isinstance(r, Exception) for r in results):
                self._version = results[-1].version
                return
            ops = (["member"] if self._member is not None else []) + ["owner", "checkpoint"]
            failed = next(i for i, r in enumerate(results)
                          if isinstance(r, Exception) and not isinstance(r, RolledBackError))
            what = {"member": "this node's member znode is gone (its session expired)",
                    "owner": "the slot's owner znode is no longer this node's",
                    "checkpoint": "the checkpoint was written or reset by someone else"}[
                        ops[min(failed, len(ops) - 1)]]
            raise self._give_up(f"commit refused: {what}")

    def _landed(self, raw: bytes, deadline: float) -> bool:
        """After a lost reply: did our transaction apply? Read back until we know or run out
        of time (then the slot stops, and its next owner reads whatever is there)."""
        while time.monotonic() < deadline:
            time.sleep(self._retry_wait)
            try:
                data, stat = self._call(self._client.get_async(self.path))
            except NoNodeError:
                raise self._give_up("commit refused: the checkpoint was reset") from None
            except _ZK_ERRORS:
                continue
            if stat.version == self._version:
                return False  # not applied: the caller sends it again
            if stat.version == self._version + 1 and data == raw:
                self._version = stat.version
                return True
            raise self._give_up("commit refused: the checkpoint was written by someone else")
        raise self._give_up("cannot tell whether the commit landed (ZooKeeper unreachable)")


# -- reading and resetting, for the admin API and the CLI ------------------------------------------
MAX_LISTED = 1000  # checkpoints one listing returns (values may be 64 KiB each)


def read_checkpoints(client: KazooClient, paths: Paths, task: str,
                     timeout: float = 10.0) -> dict[str, Any]:
    """A task's checkpoints, each decoded (a corrupt one listed with its error), sorted by
    slot index or key; at most MAX_LISTED of them (`truncated` says when there were more)."""
    parent = paths.checkpoint_task(task)
    try:
        children = client.get_children(parent)
    except NoNodeError:
        children = []
    slots = sorted(((slot, c) for c in children if (slot := checkpoint_slot(c)) is not None),
                   key=lambda sc: (isinstance(sc[0], str), sc[0]))
    listed = slots[:MAX_LISTED]
    pending = [(slot, f"{parent}/{child}", client.get_async(f"{parent}/{child}"))
               for slot, child in listed]
    out = []
    for slot, path, result in pending:
        try:
            raw, stat = result.get(timeout=timeout)
        except NoNodeError:
            continue
        entry: dict[str, Any] = {"slot": slot if isinstance(slot, int) else None,
                                 "key": slot if isinstance(slot, str) else None,
                                 "version": stat.version}
        doc = decode_checkpoint(raw, path)
        if isinstance(doc, Corrupt):
            entry["corrupt"] = doc.error
        else:
            entry.update(value=doc["value"], fence=doc.get("fence"), node=doc.get("node"),
                         committed_at=doc.get("committed_at"))
        out.append(entry)
    return {"task": task, "checkpoints": out, "truncated": len(slots) > len(listed)}


def reset_checkpoints(client: KazooClient, paths: Paths, task: str,
                      slot_id: str | None = None) -> int:
    """Set one slot's checkpoint (`slot_id` from `checkpoint_id`), or all of a task's, back
    to null; how many were reset. Rewritten, never deleted (see the module docstring): a
    running owner's next commit is refused, so it restarts from None; the fence stays, so
    no earlier owner can take the checkpoint over."""
    if slot_id is not None:
        return int(_reset_one(client, paths.checkpoint(task, slot_id)))
    try:
        children = client.get_children(paths.checkpoint_task(task))
    except NoNodeError:
        return 0
    return sum(_reset_one(client, paths.checkpoint(task, c)) for c in children)


def _reset_one(client: KazooClient, path: str) -> bool:
    for _ in range(10):
        try:
            raw, stat = client.get(path)
        except NoNodeError:
            return False
        doc = decode_checkpoint(raw, path)
        fence = 0 if isinstance(doc, Corrupt) else int(doc.get("fence", 0))
        data = dumps({"value": None, "fence": fence, "node": "", "reset_at": time.time()})
        try:
            client.set(path, data, version=stat.version)
            return True
        except BadVersionError:
            continue  # committed meanwhile: reset what is there now
        except NoNodeError:
            return False
    raise CheckpointError(f"{path}: could not reset it (written continuously); try again")


def purge_checkpoints(client: KazooClient, paths: Paths, task: str) -> bool:
    """Delete a removed task's checkpoints (the leader does this once the table without the
    task is published, so no slot of the task runs any more)."""
    try:
        client.delete(paths.checkpoint_task(task), recursive=True)
    except NoNodeError:
        return False
    return True
