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
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import (
    BadVersionError,
    KazooException,
    NodeExistsError,
    NoNodeError,
    NotEmptyError,
    RolledBackError,
)
from kazoo.handlers.threading import KazooTimeoutError
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
    known: bool = True  # False: a follower's listing that did not read this member's data
    mtime: int = 0  # of the data read (ms, ZooKeeper's clock): when it was last written

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


@dataclass
class Listing:
    """What a plain follower last listed under `nodes/`, named by that container's pzxid: the
    zxid of the last child created or deleted there, or of the container's own creation
    (a zxid names one change in the whole ensemble, so a container made again has a new
    one). The same pzxid later means the very same children. The czxid, the cversion and
    the number of children are kept beside it: for a server whose pzxid was left behind
    (ZOOKEEPER-3145, before 3.5.5), a join or a leave still changes the key."""

    key: tuple[int, int, int, int] | None = None
    children: list[str] = field(default_factory=list)


_ZK_ERRORS = (KazooException, KazooTimeoutError)
READ_TIMEOUT = 30.0  # a member's data read, bounded like every call (a dead connection)
CLAIM_TIMEOUT = 10.0  # a name claim's calls, made under the node's member lock


def read_members(client: KazooClient, paths: Paths,
                 watch: Callable[[Any], None] | None = None,
                 cache: dict[str, MemberRecord | None] | None = None,
                 corrupt: list[Corrupt] | None = None,
                 focus: str | None = None, listing: Listing | None = None,
                 recheck: bool = False) -> list[MemberRecord]:
    """Every election candidate in sequence order (corrupt ones flagged); a member that
    vanished mid-read is skipped. Problems found are appended to `corrupt`.

    A member znode's data is written once, at creation (its own node rewrites it if it was
    edited), so with a `cache` (child name -> record, None for a child that is no member)
    only new children are read: one read per join instead of one per member on every pass.

    With `focus` (a follower's own child) only the data the election needs is read: the
    front of the list up to the first member whose data decodes (the leader, unless a
    corrupt one is ahead of it), the member right after it (whose plan the follower takes
    at the leader's end, if its data decodes: see Node._elected_writer) and `focus`
    itself. The others come back `known=False`,
    with no data: a follower deals no slots, and reading every member cost each of N nodes
    N reads when a cluster formed (N^2/2 in all, what kept 1,000 members from forming).
    The election's outcome is the same as with every member read: it follows names alone,
    and a corrupt member is skipped only at the front, where its data was read.

    A listing without a watch is kept in `listing`; with `recheck` a stat of `nodes/` tells
    whether it still holds, and the listing is read again only if it does not. That is a
    follower's periodic full pass, which looks for what a watch may have missed: listing
    N members there cost each of N followers a read of N names every FULL_PASS_EVERY, the
    idle cluster's largest cost at 1,000 members (a 16 KB reply 33 times a second).
    """
    try:
        if listing is not None and watch is None:
            children = _listing(client, paths, listing, recheck)
        else:
            children = client.get_children(paths.nodes, watch=watch)
    except NoNodeError:
        return []
    ordered = sorted(children, key=node_seq)
    members = [child for child in ordered if is_member_child(child)]
    wanted = (members if focus is None
              else [c for c in (members[:2] + [focus]) if c in children])
    # Every read goes out before the first answer is awaited: one round trip for a join of
    # many (a registering node reads every member), not one per member.
    pending = {child: client.get_async(paths.node(child)) for child in wanted
               if cache is None or not _known(cache.get(child, _UNREAD))}
    front = focus is not None  # still reading the front: the leader and the one after
    leader_read = False
    records = []
    for child in ordered:
        rec = _UNREAD if cache is None else cache.get(child, _UNREAD)
        if rec is not _UNREAD and not _known(rec) and (focus is None or front
                                                       or child == focus):
            rec = _UNREAD  # a follower's placeholder, and now its data is needed
        if rec is _UNREAD:
            if focus is not None and not front and child != focus:
                if not is_member_child(child):
                    continue
                # Kept in the cache too: a follower's pass builds no record per member.
                rec = MemberRecord(child, node_seq(child), known=False)
                if cache is not None:
                    cache[child] = rec
                records.append(rec)
                continue
            if child not in pending and is_member_child(child):
                pending[child] = client.get_async(paths.node(child))  # behind a corrupt one
            rec = _read_member(paths, child, pending.get(child))
            if rec is False:
                continue  # vanished between the listing and the read
            if cache is not None and not (rec is not None and rec.corrupt):
                cache[child] = rec  # corrupt data is read again until its node repairs it
        if front and isinstance(rec, MemberRecord):
            if leader_read:
                front = False  # the member after the leader is read: that is all
            elif rec.corrupt is None:
                leader_read = True
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


_UNREAD: Any = object()  # no record cached for a child


def _known(rec: Any) -> bool:
    """A cached record that stands for a read: a member's, or None (no member at all)."""
    return rec is not _UNREAD and (rec is None or rec.known)


def _listing(client: KazooClient, paths: Paths, listing: Listing,
             recheck: bool) -> list[str]:
    """The children of `nodes/`, from `listing` when a stat shows it still holds (with
    `recheck`), else read (and kept) with the container's stat taken in the same read."""
    if recheck and listing.key is not None:
        stat = client.exists(paths.nodes)
        if stat is None:
            raise NoNodeError()
        if _key(stat) == listing.key:
            return listing.children  # read only (read_members sorts a copy)
    children, stat = client.get_children(paths.nodes, include_data=True)
    listing.key, listing.children = _key(stat), children
    return children


def _key(stat: Any) -> tuple[int, int, int, int]:
    return stat.czxid, stat.pzxid, stat.cversion, stat.numChildren


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
        return MemberRecord(child, node_seq(child), {}, stat.ephemeralOwner, data,
                            mtime=stat.mtime)
    return MemberRecord(child, node_seq(child), data, stat.ephemeralOwner, mtime=stat.mtime)


# The distinct keys remembered by _warn_once, oldest forgotten first: a key names a member
# znode and its bad content, so whoever keeps rewriting a member znode with new junk would
# otherwise grow the set for as long as the process lives (found in review).
WARNED_KEEP = 4096
_warned: OrderedDict[str, None] = OrderedDict()
_warned_lock = threading.Lock()


def _warn_once(key: str, message: str) -> None:
    with _warned_lock:
        if key in _warned:
            _warned.move_to_end(key)
            return
        _warned[key] = None
        if len(_warned) > WARNED_KEEP:
            _warned.popitem(last=False)
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
             wait_for_name: float) -> tuple[str, int]:
    """Join the group; returns (child name, session id).

    The member znode is created in one transaction with an ephemeral claim on the node's
    name (`names/<name>`): a second live process under our name holds it, so the name check
    costs one request instead of a read of every member (which made a forming cluster of N
    members read N^2/2 of them). A node restarted under the same name right after a crash
    finds its old claim still there until the old session expires; we wait for it (up to
    `wait_for_name`) instead of joining twice under one name; a genuinely different live
    process with our name is an error the user must fix.
    """
    name = data["id"]
    session = client.client_id[0] if client.client_id else 0
    claim = paths.name_claim(name)
    deadline = time.monotonic() + wait_for_name
    announced = False
    while True:
        tx = client.transaction()
        tx.create(claim, dumps(data), ephemeral=True)
        tx.create(paths.node_prefix, dumps(data), ephemeral=True, sequence=True)
        results = tx.commit()
        if not any(isinstance(r, Exception) for r in results):
            return str(results[1]).rsplit("/", 1)[1], session
        if isinstance(results[0], NoNodeError) or isinstance(results[1], NoNodeError):
            client.ensure_path(paths.names)  # deleted by hand
            client.ensure_path(paths.nodes)
            continue
        if not isinstance(results[0], NodeExistsError):
            raise next(r for r in results if isinstance(r, Exception) and not isinstance(
                r, RolledBackError))
        gone = threading.Event()
        try:
            raw, stat = client.get(claim, watch=lambda _e, ev=gone: ev.set())
        except NoNodeError:
            continue
        if stat.ephemeralOwner in (session, 0):
            # Ours (an earlier attempt on this session was applied after its reply was lost,
            # or our member znode was deleted by hand) or made by hand (no live node's): it
            # goes, and so does any member znode of ours it was created with (it would
            # shadow the new one).
            _drop_claim(client, paths, claim, stat, session)
            continue
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            twin = decode_member(raw, claim)
            where = ("" if isinstance(twin, Corrupt)
                     else f", host {twin.get('host')}, pid {twin.get('pid')}")
            raise NodeNameInUse(
                f"node name {name!r} is already used by a live node ({claim}{where}); "
                "give this node another name with --name or XCONSUMER_NAME")
        if not announced:
            logger.info("node name {} still held by another session (an earlier one?); "
                        "waiting up to {:.1f}s for it to expire", name, remaining)
            announced = True
        gone.wait(min(remaining, 1.0))


def _drop_claim(client: KazooClient, paths: Paths, claim: str, stat: Any,
                session: int) -> None:
    """Delete a claim that is no live node's but ours (and our stray member znodes), or one
    made by hand. Rare: it reads the stat of every member, once."""
    if session and stat.ephemeralOwner == session:
        children = client.get_children(paths.nodes)
        stats = {c: client.exists_async(paths.node(c)) for c in children if is_member_child(c)}
        for child, pending in stats.items():
            try:
                st = pending.get(timeout=READ_TIMEOUT)
            except NoNodeError:
                continue
            if st is not None and st.ephemeralOwner == session:
                with contextlib.suppress(NoNodeError):
                    client.delete(paths.node(child))
        with contextlib.suppress(NoNodeError, BadVersionError):
            client.delete(claim, version=stat.version)
        return
    logger.warning("{} was not made by a node (not ephemeral): deleted", claim)
    with contextlib.suppress(NoNodeError):
        client.delete(claim, recursive=True)  # an ephemeral has no children: made by hand


def release_claim(client: KazooClient, paths: Paths, name: str, session: int,
                  timeout: float = 10.0) -> None:
    """Give our name back once we have left (the session may live on a while: slots still
    ending, or stuck): a restart under our name joins then instead of waiting for it."""
    claim = paths.name_claim(name)
    with contextlib.suppress(*_ZK_ERRORS):
        stat = client.exists_async(claim).get(timeout=timeout)
        if stat is not None and session and stat.ephemeralOwner == session:
            client.delete_async(claim, version=stat.version).get(timeout=timeout)


def ensure_claim(client: KazooClient, paths: Paths, data: dict[str, Any], session: int
                 ) -> bool:
    """Make our claim again if it is gone (deleted by hand, or its container) or was made
    by hand: a second process under our name would otherwise be free to join. False:
    another live session holds it (a twin that joined while it was gone)."""
    claim = paths.name_claim(data["id"])
    # Bounded: the caller holds the node's member lock, which stop() waits for; a sync
    # call on a connection that never comes back would wait for ever.
    stat = client.exists_async(claim).get(timeout=CLAIM_TIMEOUT)
    if stat is not None and stat.ephemeralOwner:
        return stat.ephemeralOwner == session
    if stat is not None:
        with contextlib.suppress(NoNodeError):
            try:
                client.delete_async(claim).get(timeout=CLAIM_TIMEOUT)  # made by hand
            except NotEmptyError:
                client.delete(claim, recursive=True)  # with children of its own: rare
    try:
        client.create_async(claim, dumps(data), ephemeral=True, makepath=True).get(
            timeout=CLAIM_TIMEOUT)
    except NodeExistsError:
        stat = client.exists_async(claim).get(timeout=CLAIM_TIMEOUT)  # someone was quicker
        return stat is None or stat.ephemeralOwner == session
    logger.warning("our name claim {} was gone (deleted or made by hand?): made it again",
                   claim)
    return True
