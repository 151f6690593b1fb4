"""kazoo client construction and the few session facts kazoo does not expose publicly."""

from __future__ import annotations

import contextlib
import json
import zlib
from typing import Any

from kazoo.client import KazooClient
from kazoo.handlers.threading import KazooTimeoutError

from .errors import ZooKeeperUnavailable


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


def make_client(hosts: str, session_timeout: float) -> tuple[KazooClient, SessionInfo]:
    """A client that reconnects fast after an outage and reports the granted session timeout."""
    client = KazooClient(
        hosts=hosts,
        timeout=session_timeout,
        connection_retry={"max_tries": -1, "delay": 0.05, "backoff": 2, "max_delay": 0.5},
        command_retry={"max_tries": 3, "delay": 0.05, "backoff": 2, "max_delay": 0.5},
    )
    info = SessionInfo(session_timeout)
    conn = getattr(client, "_connection", None)
    original = getattr(conn, "_connect", None)
    if original is not None:
        # kazoo computes read_timeout = negotiated * 2/3 (ms) and returns it from _connect
        # without storing the granted timeout anywhere; recover it here. If a kazoo release
        # changes this private method we fall back to the requested timeout.
        def _connect(*args: Any, **kwargs: Any) -> Any:
            result = original(*args, **kwargs)
            with contextlib.suppress(TypeError, ValueError, IndexError):
                info.negotiated = float(result[0]) * 1.5 / 1000.0
            return result

        conn._connect = _connect
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


def stop_client(client: KazooClient) -> None:
    try:
        client.stop()
    finally:
        client.close()
