"""Outbox consumer: slot i of a task tails the rows of part i of a PostgreSQL outbox table.

A worked example of fencing an external system with `ctx.fence`, written so that a handler
that lost its slot without noticing (killed, frozen past its session, cut off from
ZooKeeper) can never make a row processed twice nor skip one. See docs/EXAMPLE_OUTBOX.md for
the pattern, its crash windows and why each step is there.

Configuration comes from the environment rather than app.toml, because app.toml's keys are
the cluster's and a task has no free-form section: `XCONSUMER_OUTBOX_DSN` (required),
`XCONSUMER_OUTBOX_BATCH` (rows per transaction, default 100) and `XCONSUMER_OUTBOX_POLL`
(seconds between polls of an empty part, default 0.5). The task's `workerNum` must equal
the number of parts the producers write.

psycopg is imported inside the functions, never at module level: every node loads the whole
`works/` package at start-up, and a node that does not run this task must not need a
PostgreSQL driver to start.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: the package stays importable without xconsumer
    from xconsumer.works import SlotContextProtocol

DSN_ENV = "XCONSUMER_OUTBOX_DSN"
BATCH_ENV = "XCONSUMER_OUTBOX_BATCH"
POLL_ENV = "XCONSUMER_OUTBOX_POLL"
DEFAULT_BATCH = 100
DEFAULT_POLL = 0.5
# A client stopped inside a transaction (SIGSTOP, a debugger, a long GC pause) holds the
# slot's fence row and the snapshot horizon every part waits on; the server ends it after
# this long instead of letting one frozen process stall the whole outbox.
IDLE_IN_TRANSACTION_MS = 10_000
# Key of the advisory lock that serialises schema creation: slots of a task start together,
# and concurrent CREATE TABLE IF NOT EXISTS of the same table can fail on the catalog.
SCHEMA_LOCK = 0x786F7574626F78  # "xoutbox"
TABLES = ("outbox", "processed", "slot_fences", "rejections")

# `txid` is what makes "none skipped" hold with concurrent producers: ids are handed out at
# insert but become visible at commit, in another order, so "id > last id" would step over a
# row whose transaction commits late. Rows are read in (txid, id) order and only once their
# transaction is older than every transaction still running (see `_READ`).
SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id bigserial PRIMARY KEY,
    part int NOT NULL,
    txid xid8 NOT NULL DEFAULT pg_current_xact_id(),
    payload text
);
CREATE INDEX IF NOT EXISTS outbox_part_txid_id ON outbox (part, txid, id);
-- The effect of processing a row. Deliberately without a unique constraint on outbox_id, so
-- that a row processed twice stays visible instead of being absorbed by the table.
CREATE TABLE IF NOT EXISTS processed (
    seq bigserial PRIMARY KEY,
    outbox_id bigint NOT NULL,
    task text NOT NULL,
    slot int NOT NULL,
    fence bigint NOT NULL,
    node text NOT NULL,
    result text,
    at timestamptz NOT NULL DEFAULT clock_timestamp()
);
-- One row per slot: the highest fence that ever wrote for it, and how far it got. This row,
-- not ctx.checkpoint, is the position's source of truth: it changes in the same transaction
-- as the effects.
CREATE TABLE IF NOT EXISTS slot_fences (
    task text NOT NULL,
    slot int NOT NULL,
    fence bigint NOT NULL,
    txid xid8 NOT NULL DEFAULT '0',
    last_id bigint NOT NULL DEFAULT 0,
    node text,
    PRIMARY KEY (task, slot)
);
-- Late writes the fence refused, kept so that they can be seen and counted.
CREATE TABLE IF NOT EXISTS rejections (
    seq bigserial PRIMARY KEY,
    task text NOT NULL,
    slot int NOT NULL,
    fence bigint NOT NULL,
    current_fence bigint,
    node text NOT NULL,
    rows int NOT NULL,
    at timestamptz NOT NULL DEFAULT clock_timestamp()
);
"""

# Raise the slot's fence to ours unless a newer owner already did. ON CONFLICT ... WHERE
# locks the row even when the WHERE is false, so an older owner racing a newer one waits for
# it and then sees its fence; no row returned means a newer owner exists.
_CLAIM = """
INSERT INTO slot_fences (task, slot, fence, node) VALUES (%(task)s, %(slot)s, %(fence)s, %(node)s)
ON CONFLICT (task, slot) DO UPDATE SET fence = EXCLUDED.fence, node = EXCLUDED.node
    WHERE slot_fences.fence <= EXCLUDED.fence
RETURNING txid::text AS txid_text, last_id
"""
# Only rows whose transaction is below the snapshot's xmin: those transactions have all
# ended, so no row can still appear before the position we move to. ORDER BY names the
# table's columns: a bare `txid` would mean the text output column, and sort "1000" before
# "999".
_READ = """
SELECT o.id, o.txid::text AS txid_text, o.payload FROM outbox o
WHERE o.part = %(part)s AND (o.txid, o.id) > (%(txid)s::xid8, %(id)s)
  AND o.txid < pg_snapshot_xmin(pg_current_snapshot())
ORDER BY o.txid, o.id
LIMIT %(limit)s
"""
_ADVANCE = """
UPDATE slot_fences SET txid = %(txid)s::xid8, last_id = %(id)s
WHERE task = %(task)s AND slot = %(slot)s
"""
_EFFECT = """
INSERT INTO processed (outbox_id, task, slot, fence, node, result)
SELECT * FROM unnest(%(ids)s::bigint[], %(tasks)s::text[], %(slots)s::int[],
                     %(fences)s::bigint[], %(nodes)s::text[], %(results)s::text[])
"""


class OutboxError(RuntimeError):
    """The handler cannot run at all (configuration, driver); retrying will not help until
    the node's environment is fixed, so the message says what to fix."""


class Rejected(Exception):
    """A newer owner of the slot has written to the database: this handler must stop."""

    def __init__(self, current_fence: int | None) -> None:
        super().__init__(f"a newer owner holds the slot (fence {current_fence})")
        self.current_fence = current_fence


@dataclass(frozen=True, order=True)
class Position:
    """Where a slot stands in its part: the last row consumed, in (txid, id) order."""

    txid: int = 0
    id: int = 0

    def to_json(self) -> dict[str, Any]:
        # txid as a string: xid8 is 64-bit and JSON readers differ on big integers.
        return {"txid": str(self.txid), "id": self.id}

    @classmethod
    def from_json(cls, value: Any) -> Position | None:
        """None for anything that is not a position this handler wrote: the database row
        decides then, so a reset or a hand-edited checkpoint cannot derail the slot."""
        try:
            return cls(int(value["txid"]), int(value["id"]))
        except (TypeError, KeyError, ValueError):
            return None


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError as e:
        raise OutboxError("the outbox handler needs psycopg 3: pip install 'psycopg[binary]' "
                          f"on this node ({e})") from None
    return psycopg


def _env_number(name: str, default: float, kind: type) -> Any:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise OutboxError(f"{name}={raw!r} must be a positive {kind.__name__}")
    return value


def connect(ctx: SlotContextProtocol) -> Any:
    """A connection in autocommit mode: reads take no snapshot that outlives them, and each
    batch's write is one explicit transaction. The application name lets an operator (and
    the test) tell which slot a server backend belongs to."""
    dsn = os.environ.get(DSN_ENV, "").strip()
    if not dsn:
        raise OutboxError(f"{DSN_ENV} is not set: set it to the outbox database's connection "
                          "string, e.g. 'postgresql://user@db.example/shop'")
    psycopg = _psycopg()
    return psycopg.connect(
        dsn, autocommit=True, connect_timeout=10,
        application_name=f"xconsumer-outbox {ctx.task}/{ctx.slot} {ctx.node}"[:63],
        options=f"-c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_MS}")


def create_schema(conn: Any) -> None:
    """Create the tables unless they all exist. Checked first because CREATE INDEX IF NOT
    EXISTS still locks the outbox against writes, and would wait for every open producer."""
    if all(conn.execute("SELECT to_regclass(%s) IS NOT NULL", (t,)).fetchone()[0]
           for t in TABLES):
        return
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
        conn.execute(SCHEMA)


def produce(conn: Any, payloads: list[str], parts: int) -> list[int]:
    """Insert one outbox row per payload, spread over `parts` parts (part = id % parts), in
    one transaction; returns the ids. Producers may run concurrently."""
    rows = conn.execute(
        "WITH ids AS (SELECT nextval(pg_get_serial_sequence('outbox', 'id')) AS id, p "
        "FROM unnest(%s::text[]) WITH ORDINALITY AS u(p, n) ORDER BY n) "
        "INSERT INTO outbox (id, part, payload) SELECT id, id %% %s, p FROM ids RETURNING id",
        (payloads, parts)).fetchall()
    return [r[0] for r in rows]


def process(payload: str | None) -> str:
    """The example's business logic; replace it. It runs outside the database transaction,
    so it must not have effects of its own that a retry would repeat (see the doc page)."""
    return (payload or "").upper()


def _ids(ctx: SlotContextProtocol) -> dict[str, Any]:
    return {"task": ctx.task, "slot": ctx.slot, "fence": ctx.fence, "node": ctx.node}


def claim(conn: Any, ctx: SlotContextProtocol) -> Position:
    """Raise the slot's fence in the database before anything else: from this commit on, no
    older owner can write for the slot, so the position read here cannot move behind our
    back. Raises Rejected when a newer owner already claimed it."""
    with conn.transaction():
        row = conn.execute(_CLAIM, _ids(ctx)).fetchone()
        if row is None:
            raise Rejected(_current_fence(conn, ctx))
    return Position(int(row[0]), int(row[1]))


def _current_fence(conn: Any, ctx: SlotContextProtocol) -> int | None:
    row = conn.execute("SELECT fence FROM slot_fences WHERE task = %s AND slot = %s",
                       (ctx.task, ctx.slot)).fetchone()
    return None if row is None else int(row[0])


def read_batch(conn: Any, ctx: SlotContextProtocol, after: Position, limit: int
               ) -> list[tuple[int, int, str | None]]:
    """Rows of the slot's part after `after`, as (id, txid, payload)."""
    rows = conn.execute(_READ, {"part": ctx.slot, "txid": str(after.txid), "id": after.id,
                                "limit": limit}).fetchall()
    return [(int(r[0]), int(r[1]), r[2]) for r in rows]


def write_batch(conn: Any, ctx: SlotContextProtocol, expected: Position,
                rows: list[tuple[int, int, str | None]], results: list[str]
                ) -> tuple[bool, Position]:
    """One transaction: fence check, position check, effects, new position. Returns (True,
    the new position), or (False, the database's position) with nothing written when that is
    not `expected`: only someone moving the row by hand does that once the slot is claimed.
    Raises Rejected when a newer owner has written, and then nothing of the batch lands."""
    with conn.transaction():
        row = conn.execute(_CLAIM, _ids(ctx)).fetchone()
        if row is None:
            raise Rejected(None)
        stored = Position(int(row[0]), int(row[1]))
        if stored != expected:
            return False, stored
        n = len(rows)
        conn.execute(_EFFECT, {"ids": [r[0] for r in rows], "tasks": [ctx.task] * n,
                               "slots": [ctx.slot] * n, "fences": [ctx.fence] * n,
                               "nodes": [ctx.node] * n, "results": results})
        last = Position(rows[-1][1], rows[-1][0])
        conn.execute(_ADVANCE, {"txid": str(last.txid), "id": last.id, "task": ctx.task,
                                "slot": ctx.slot})
    return True, last


def record_rejection(conn: Any, ctx: SlotContextProtocol, rows: int) -> int | None:
    """Keep a trace of the refused write (outside the rolled-back transaction)."""
    current = _current_fence(conn, ctx)
    conn.execute("INSERT INTO rejections (task, slot, fence, current_fence, node, rows) "
                 "VALUES (%s, %s, %s, %s, %s, %s)",
                 (ctx.task, ctx.slot, ctx.fence, current, ctx.node, rows))
    return current


def RunOutbox(ctx: SlotContextProtocol) -> None:
    # Runs until the slot stops (loop mode calls it again if it returns for another reason).
    from xconsumer import OwnershipLost

    batch = _env_number(BATCH_ENV, DEFAULT_BATCH, int)
    poll = _env_number(POLL_ENV, DEFAULT_POLL, float)
    with connect(ctx) as conn:
        create_schema(conn)
        try:
            position = claim(conn, ctx)
        except Rejected as e:
            record_rejection(conn, ctx, 0)
            ctx.logger.warning("outbox: fence {} refused at start, {}: stopping", ctx.fence, e)
            return
        checkpoint = Position.from_json(ctx.checkpoint) or Position()
        if checkpoint != position:
            # Expected after a crash between a batch's database commit and its ctx.commit:
            # the database row already has the batch, the checkpoint does not.
            ctx.logger.info("outbox: checkpoint {} differs from the database's {}; resuming "
                            "from the database", checkpoint, position)
        ctx.logger.info("outbox: part {} from {} (fence {})", ctx.slot, position, ctx.fence)
        while not ctx.stopping:
            rows = read_batch(conn, ctx, position, batch)
            if not rows:
                if not ctx.sleep(poll):
                    return
                continue
            # No ctx.stopping check from here to the write on purpose: a stale owner is
            # stopped by the fence in the database, not by a check that races its loss.
            results = [process(payload) for _, _, payload in rows]
            try:
                written, new = write_batch(conn, ctx, position, rows, results)
            except Rejected:
                current = record_rejection(conn, ctx, len(rows))
                ctx.logger.warning("outbox: write of {} row(s) with fence {} refused, the slot "
                                   "has fence {} now: stopping", len(rows), ctx.fence, current)
                return
            if not written:
                ctx.logger.warning("outbox: position moved in the database from {} to {}; "
                                   "resuming from there", position, new)
                position = new
                continue
            position = new
            try:
                ctx.commit(position.to_json())
            except OwnershipLost:
                ctx.logger.warning("outbox: ownership lost at {}: stopping", position)
                return
