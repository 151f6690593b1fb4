"""One exception root, so callers (the CLI above all) can turn any expected failure into a
one-line message instead of a traceback."""

from __future__ import annotations


class XConsumerError(Exception):
    """Root of every error xconsumer raises on purpose.

    The message is meant for a human: it says what went wrong, where, and what to do.
    """

    exit_code = 1


class ConfigError(XConsumerError):
    """`app.toml` (or a flag/environment override) is invalid."""

    exit_code = 2


class WorksError(XConsumerError):
    """The `works/` package cannot be imported or lacks a handler."""

    exit_code = 2


class ZooKeeperUnavailable(XConsumerError):
    """ZooKeeper could not be reached in time."""

    exit_code = 3


class NodeNameInUse(XConsumerError):
    """Another live node already uses this node name."""

    exit_code = 4


class OwnershipLost(XConsumerError):
    """A slot's `ctx.commit` could not prove this node still owns the slot.

    Raised inside a handler: the slot is already stopping and another node may own it now,
    so the handler must not write anything more for it and should return."""


class CheckpointError(XConsumerError, ValueError):
    """A value given to `ctx.commit` cannot be stored (not JSON, or over the size limit)."""
