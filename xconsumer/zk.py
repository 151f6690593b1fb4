"""kazoo client construction and the few session facts kazoo does not expose publicly."""

from __future__ import annotations

import contextlib
import json
import time
import zlib
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import RolledBackError, RuntimeInconsistency
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.protocol.serialization import Connect
from kazoo.security import make_acl, make_digest_acl

from .errors import ZooKeeperUnavailable
from .zkhandler import PollingThreadingHandler


class SessionInfo:
    """The session timeout the server actually granted.

    ZooKeeper clamps the requested timeout into [minSessionTimeout, maxSessionTimeout]. The
    self-fencing lease must be computed from the granted value: a server that grants less
    than we asked for would otherwise expire us while our lease still says we own slots.
    """

    def __init__(self, requested: float) -> None:
        self.requested = requested
        self.negotiated: float | None = None

    @property
    def timeout(self) -> float:
        """Seconds; the smaller of requested and granted, which is the safe one to plan with."""
        if self.negotiated is None:
            return self.requested
        return min(self.requested, self.negotiated)


def security_options(zk: Any) -> dict[str, Any]:
    """kazoo options for `[zookeeper]` auth and TLS.

    With `auth = "user:password"` the client authenticates with the digest scheme and every
    znode it creates gets an ACL that gives all permissions to that identity only (plus read
    to everyone when `acl_read_world`), so a client without the credentials cannot change the
    assignment, the overrides or anyone's membership.
    """
    opts: dict[str, Any] = {}
    auth = getattr(zk, "auth", None)
    if auth:
        user, _, password = auth.partition(":")
        opts["auth_data"] = [("digest", auth)]
        acl = [make_digest_acl(user, password, all=True)]
        if getattr(zk, "acl_read_world", True):
            acl.append(make_acl("world", "anyone", read=True))
        opts["default_acl"] = acl
    if getattr(zk, "use_tls", False):
        opts.update(use_ssl=True, ca=getattr(zk, "tls_ca", None),
                    certfile=getattr(zk, "tls_cert", None), keyfile=getattr(zk, "tls_key", None),
                    verify_certs=getattr(zk, "tls_verify", True))
    return opts


# A server that accepted a connection answers its Connect request in milliseconds, or never:
# ZooKeeper 3.8.0 listens on its client port before its database is loaded, and a connection
# it accepts in that window is neither answered nor closed (closing it fails on a
# NullPointerException in ZooKeeperServer.removeCnxn). kazoo waits session_timeout / hosts for
# the reply, so with one host a node that reconnects at that moment waits a whole session
# timeout - and the server, which gave every restored session one timeout from its start,
# expires it meanwhile. Giving up after a third of the session (kazoo's own limit for a ping
# reply) leaves the next attempt two thirds of the session to land in.
CONNECT_REPLY_SHARE = 1 / 3


def make_client(hosts: str, session_timeout: float, *, zk: Any = None, handler: Any = None
                ) -> tuple[KazooClient, SessionInfo]:
    """A client that reconnects fast after an outage and reports the granted session timeout.

    `zk` is the `[zookeeper]` config section, for auth and TLS. A connection attempt that gets
    no reply to its Connect request is dropped after `CONNECT_REPLY_SHARE` of the session
    timeout, so a server restart cannot cost the session (see the constant). The kazoo
    handler is `PollingThreadingHandler` (no epoll instance per select, see
    xconsumer/zkhandler.py) unless `handler` is given.
    """
    client = KazooClient(
        hosts=hosts,
        timeout=session_timeout,
        handler=handler if handler is not None else PollingThreadingHandler(),
        # max_tries=-1: with a dict, kazoo's default is one retry, after which the client
        # would stop reconnecting for good.
        connection_retry={"max_tries": -1, "delay": 0.05, "backoff": 2, "max_delay": 0.2},
        command_retry={"max_tries": 3, "delay": 0.05, "backoff": 2, "max_delay": 0.5},
        **(security_options(zk) if zk is not None else {}),
    )
    info = SessionInfo(session_timeout)
    conn = getattr(client, "_connection", None)
    original = getattr(conn, "_invoke", None)
    if original is not None:
        # kazoo reads the server's ConnectResponse (with the granted timeout) in the private
        # _invoke during connection set-up, and fires CONNECTED before it would let us see
        # the value any other way. Catch it here, before anyone can renew a lease with it;
        # if a kazoo release changes this method we fall back to the requested timeout.
        # The same hook caps the wait for that reply (CONNECT_REPLY_SHARE).
        connect_reply_limit = session_timeout * CONNECT_REPLY_SHARE

        def _invoke(timeout: Any, request: Any, xid: Any = None) -> Any:
            if isinstance(request, Connect):
                timeout = min(timeout, connect_reply_limit)
            result = original(timeout, request, xid)
            if isinstance(request, Connect):
                with contextlib.suppress(TypeError, ValueError, IndexError, AttributeError):
                    info.negotiated = float(result[0].time_out) / 1000.0
            return result

        conn._invoke = _invoke
    return client, info


def start_client(client: KazooClient, hosts: str, timeout: float) -> None:
    """Connect or raise a one-line ZooKeeperUnavailable; never leave kazoo retrying behind."""
    try:
        client.start(timeout=timeout)
    except (KazooTimeoutError, OSError) as exc:
        client.stop()
        client.close()
        raise ZooKeeperUnavailable(
            f"cannot reach ZooKeeper at {hosts} within {timeout:g}s "
            f"(is it running? try `bin/zk start`): {exc or type(exc).__name__}"
        ) from exc


# ZooKeeper refuses a znode (or a whole multi-op) larger than jute.maxbuffer, 1 MiB minus a
# little by default. Documents past COMPRESS_ABOVE are stored zlib-compressed behind a magic
# prefix; ZNODE_LIMIT leaves room for the rest of the transaction.
# How long a reply to a request sent ahead (a node taking over asks for what it will read
# at once, see Node._prefetch_takeover) is waited for: a sync call's bound.
AHEAD_TIMEOUT = 10.0
COMPRESS_ABOVE = 64 * 1024
ZNODE_LIMIT = 1_000_000
_MAGIC = b"XCZ1"


def dumps(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":"), sort_keys=True).encode()


def encode(data: Any, *, limit: int = ZNODE_LIMIT) -> bytes:
    """JSON, compressed when large; ValueError if even that cannot fit in a znode."""
    raw = dumps(data)
    if len(raw) > COMPRESS_ABOVE:
        raw = _MAGIC + zlib.compress(raw, 6)
    if len(raw) > limit:
        raise ValueError(f"document is {len(raw)} bytes compressed, over the {limit}-byte "
                         "znode limit (fewer slots per cluster, or raise jute.maxbuffer)")
    return raw


def loads(raw: bytes | None, *, where: str) -> Any:
    """Parse JSON written by a node; corrupt data is reported, not raised into a watch."""
    if not raw:
        return None
    try:
        if raw.startswith(_MAGIC):
            raw = zlib.decompress(raw[len(_MAGIC):])
        return json.loads(raw.decode())
    except (UnicodeDecodeError, json.JSONDecodeError, zlib.error) as exc:
        raise ValueError(f"znode {where} holds data that is not valid JSON: {exc}") from exc


def refused_ops(results: list[Any]) -> list[int]:
    """Indices of the ops a refused multi-op transaction failed on: ZooKeeper answers the
    ops before the failing one with RolledBackError and those after it with
    RuntimeInconsistency, so the rest name what was wrong."""
    return [i for i, r in enumerate(results)
            if isinstance(r, Exception) and not isinstance(r, _NOT_RUN)]


_NOT_RUN = (RolledBackError, RuntimeInconsistency)


class _AfterSync:
    """The answer of an exists sent behind a sync: the exists's, once the sync's too says
    it went through. A connection dropped between the two fails the sync and may leave the
    exists to go alone on the next connection, to a server that may lag: its answer then
    counts for nothing (the sync's error is raised, the look is tried again)."""

    def __init__(self, synced: Any, look: Any) -> None:
        self._synced = synced
        self._look = look

    def get(self, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        stat = self._look.get(timeout=timeout)
        self._synced.get(timeout=max(0.0, deadline - time.monotonic()))
        return stat


def exists_after_sync(client: KazooClient, path: str) -> _AfterSync:
    """`exists_async` behind a `sync`, for a look that a server behind the others must not
    answer. The lease's renewal needs it (a server cut off from the quorum still answers
    reads while our session expires), and so does a look at a znode that a request whose
    answer was lost may have made: after a lost answer the client may be on another server
    of the ensemble, one that has not applied that request yet (a reconnect only promises a
    server that has seen what the client saw answered), so a plain read could say "no node"
    and the znode appear later. A session's requests are handled in order, so the read is
    answered after the sync, which brings that server up to the leader; sent together,
    they cost one round trip. (A sync is not a quorum operation in ZooKeeper 3.x: a leader
    cut off from its quorum could still answer it, for up to its sync limit.)"""
    synced = client.sync_async(path)
    return _AfterSync(synced, client.exists_async(path))


def owner_look(client: KazooClient, path: str, fence: int | None) -> Any:
    """The look at an owner znode before it is given back. With a fence the client saw its
    znode answered (a reconnect only goes to a server that has seen as much): a plain
    exists. Without one, the create's answer may have been lost: behind a sync."""
    return client.exists_async(path) if fence is not None else exists_after_sync(client, path)


def stop_client(client: KazooClient) -> None:
    try:
        client.stop()
    finally:
        client.close()
