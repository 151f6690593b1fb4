"""Group membership and election: ephemeral-sequential znodes under `nodes/`.

The live node with the smallest sequence is the leader. Each node watches only its
predecessor for the election (no herd effect when the leader dies); the children list is
read with a watch too, because the leader must react to joins and every node serves the
cluster view, but only the leader acts on it.

The election follows the znode *names* alone (an `n-<seq>` child that is ephemeral), never
what is written in them: data can be edited by hand, and nodes that cached it at different
times would then disagree on who leads. A member whose data does not decode still counts in
the election (its node is alive and knows itself) but gets no slots, and is reported; a
child that is not ephemeral (made by hand) or not named `n-<seq>` is no member at all.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError
from loguru import logger

from .assignment import Member
from .codecs import Corrupt, decode_member
from .errors import NodeNameInUse
from .paths import Paths, is_member_child, node_seq
from .zk import dumps


@dataclass(frozen=True)
class MemberRecord:
    """A `nodes/n-<seq>` child and what its node wrote into it."""

    child: str
    seq: int
    data: dict[str, Any] = field(default_factory=dict)
    session: int = 0
    corrupt: Corrupt | None = None  # data that does not decode: in the election, no slots

    @property
    def name(self) -> str:
        return str(self.data.get("id") or self.child)

    @property
    def state(self) -> str:
        return str(self.data.get("state") or "active")

    def to_member(self) -> Member:
        works = self.data.get("works")
        weight = self.data.get("weight", 1.0)
        return Member(
            name=self.name, seq=self.seq,
            handlers=frozenset(self.data.get("handlers") or ()),
            works=frozenset(works) if works is not None else None,
            draining=self.state == "draining",
            weight=float(weight) if isinstance(weight, int | float) else 1.0,
            docker=self.data.get("docker") is True,
        )


READ_TIMEOUT = 30.0  # a member's data read, bounded like every call (a dead connection)


def read_members(client: KazooClient, paths: Paths,
                 watch: Callable[[Any], None] | None = None,
                 cache: dict[str, MemberRecord | None] | None = None,
                 corrupt: list[Corrupt] | None = None) -> list[MemberRecord]:
    """Every election candidate in sequence order (corrupt ones flagged); a member that
    vanished mid-read is skipped. Problems found are appended to `corrupt`.

    A member znode's data is written once, at creation (its own node rewrites it if it was
    edited), so with a `cache` (child name -> record, None for a child that is no member)
    only new children are read: one read per join instead of one per member on every pass.
    """
    try:
        children = client.get_children(paths.nodes, watch=watch)
    except NoNodeError:
        return []
    ordered = sorted(children, key=node_seq)
    # Every read goes out before the first answer is awaited: one round trip for a join of
    # many (a registering node reads every member), not one per member.
    pending = {child: client.get_async(paths.node(child)) for child in ordered
               if is_member_child(child) and (cache is None or child not in cache)}
    records = []
    for child in ordered:
        if cache is not None and child in cache:
            rec = cache[child]
        else:
            rec = _read_member(paths, child, pending.get(child))
            if rec is False:
                continue  # vanished between the listing and the read
            if cache is not None and not (rec is not None and rec.corrupt):
                cache[child] = rec  # corrupt data is read again until its node repairs it
        if rec is None:
            if corrupt is not None:
                corrupt.append(Corrupt("member", paths.node(child),
                                       "not an ephemeral n-<sequence> znode (made by hand?): "
                                       "ignored; delete it"))
        elif rec is not False:
            if rec.corrupt is not None and corrupt is not None:
                corrupt.append(rec.corrupt)
            records.append(rec)
    if cache is not None:
        for gone in set(cache) - set(children):
            del cache[gone]
    return records


def _read_member(paths: Paths, child: str, pending: Any) -> MemberRecord | None | bool:
    """The record (flagged when its data is corrupt), None for a child that cannot be a
    member (wrong name, not ephemeral), False if it is gone. `pending` is the child's get
    already sent (None for a child whose name is no member's)."""
    if pending is None or not is_member_child(child):
        return None
    try:
        raw, stat = pending.get(timeout=READ_TIMEOUT)
    except NoNodeError:
        return False
    if stat.ephemeralOwner == 0:
        return None
    data = decode_member(raw, paths.node(child))
    if isinstance(data, Corrupt):
        _warn_once(f"{child}:{data.error}", f"{data}: it counts in the election but gets no "
                   "slots until its node rewrites it")
        return MemberRecord(child, node_seq(child), {}, stat.ephemeralOwner, data)
    return MemberRecord(child, node_seq(child), data, stat.ephemeralOwner)


_warned: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        logger.warning(message)


def dedupe_by_name(records: list[MemberRecord]) -> list[MemberRecord]:
    """The members that may get slots: one record per node name, the oldest sequence winning
    (a stale twin is ignored), corrupt records left out."""
    seen: set[str] = set()
    out = []
    for rec in records:
        if rec.corrupt is None and rec.name not in seen:
            seen.add(rec.name)
            out.append(rec)
    return out


def register(client: KazooClient, paths: Paths, data: dict[str, Any], *,
             wait_for_name: float, cache: dict[str, MemberRecord | None] | None = None
             ) -> tuple[str, int]:
    """Join the group; returns (child name, session id).

    A node restarted under the same name right after a crash finds its old ephemeral still
    there until the old session expires. We wait for it (up to `wait_for_name`) instead of
    joining twice under one name; a genuinely different live process with our name is an
    error the user must fix.
    """
    name = data["id"]
    session = client.client_id[0] if client.client_id else 0
    deadline = time.monotonic() + wait_for_name
    announced = False
    # The second read below only reads new members; with the node's own `cache`, so does
    # its first pass after joining (a joining node reads every member once, not three times).
    seen: dict[str, MemberRecord | None] = {} if cache is None else cache
    while True:
        twins = [r for r in read_members(client, paths, cache=seen)
                 if r.corrupt is None and r.name == name and r.session != session]
        if not twins:
            break
        twin = twins[0]
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise NodeNameInUse(
                f"node name {name!r} is already used by a live node ({paths.node(twin.child)}, "
                f"host {twin.data.get('host')}, pid {twin.data.get('pid')}); "
                "give this node another name with --name or XCONSUMER_NAME")
        if not announced:
            logger.info("node name {} still held by {} (an earlier session?); waiting up to "
                        "{:.1f}s for it to expire", name, twin.child, remaining)
            announced = True
        gone = threading.Event()
        if client.exists(paths.node(twin.child), watch=lambda _e, ev=gone: ev.set()) is not None:
            gone.wait(min(remaining, 1.0))
    path, stat = client.create(paths.node_prefix, dumps(data), ephemeral=True, sequence=True,
                               makepath=True, include_data=True)
    child, session = path.rsplit("/", 1)[1], stat.ephemeralOwner
    # An earlier attempt on this same session may have been applied after its reply was lost
    # (the connection dropped): that twin is ours and must go, or it would shadow this one.
    for rec in read_members(client, paths, cache=seen):
        if rec.session == session and rec.child != child and (rec.corrupt or rec.name == name):
            with contextlib.suppress(NoNodeError):
                client.delete(paths.node(rec.child))
    return child, session
