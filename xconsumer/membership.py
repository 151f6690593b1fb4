"""Group membership and election: ephemeral-sequential znodes under `nodes/`.

The live node with the smallest sequence is the leader. Each node watches only its
predecessor for the election (no herd effect when the leader dies); the children list is
read with a watch too, because the leader must react to joins and every node serves the
cluster view, but only the leader acts on it.
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
from .errors import NodeNameInUse
from .paths import Paths, node_seq
from .zk import dumps, loads


@dataclass(frozen=True)
class MemberRecord:
    """A `nodes/n-<seq>` child and what its node wrote into it."""

    child: str
    seq: int
    data: dict[str, Any] = field(default_factory=dict)
    session: int = 0

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
        )


def read_members(client: KazooClient, paths: Paths,
                 watch: Callable[[Any], None] | None = None,
                 cache: dict[str, MemberRecord | None] | None = None) -> list[MemberRecord]:
    """All live members in sequence order; a member that vanished mid-read is skipped.

    A member znode's data is written once, at creation, and never changes, so with a
    `cache` (child name -> record, None for a foreign znode) only new children are read:
    one read per join instead of one per member on every pass.
    """
    try:
        children = client.get_children(paths.nodes, watch=watch)
    except NoNodeError:
        return []
    records = []
    for child in sorted(children, key=node_seq):
        if cache is not None and child in cache:
            rec = cache[child]
        else:
            rec = _read_member(client, paths, child)
            if rec is False:
                continue  # vanished between the listing and the read
            if cache is not None:
                cache[child] = rec
        if rec is not None and rec is not False:
            records.append(rec)
    if cache is not None:
        for gone in set(cache) - set(children):
            del cache[gone]
    return records


def _read_member(client: KazooClient, paths: Paths, child: str) -> MemberRecord | None | bool:
    """The record, None for a znode that is not a member record, False if it is gone."""
    try:
        raw, stat = client.get(paths.node(child))
    except NoNodeError:
        return False
    try:
        data = loads(raw, where=paths.node(child))
    except ValueError as exc:
        data = exc
    if not isinstance(data, dict) or not isinstance(data.get("id"), str):
        # Not written by an xconsumer node (every node writes its JSON atomically on
        # create): it must neither win the election nor receive slots.
        _warn_once(child, f"ignoring {paths.node(child)}: not a member record ({data!r:.80})")
        return None
    return MemberRecord(child, node_seq(child), data, stat.ephemeralOwner)


_warned: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        logger.warning(message)


def dedupe_by_name(records: list[MemberRecord]) -> list[MemberRecord]:
    """One record per node name, the oldest sequence winning (a stale twin is ignored)."""
    seen: set[str] = set()
    out = []
    for rec in records:
        if rec.name not in seen:
            seen.add(rec.name)
            out.append(rec)
    return out


def register(client: KazooClient, paths: Paths, data: dict[str, Any], *,
             wait_for_name: float) -> tuple[str, int]:
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
    while True:
        twins = [r for r in read_members(client, paths)
                 if r.name == name and r.session != session]
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
    for rec in read_members(client, paths):
        if rec.name == name and rec.session == session and rec.child != child:
            with contextlib.suppress(NoNodeError):
                client.delete(paths.node(rec.child))
    return child, session
