"""The outbox example (works/outbox.py) against a real PostgreSQL server.

The first tests drive the handler's database protocol directly, with a stand-in for the slot
context, to pin each race on purpose: an older owner's write after a newer owner's, an older
owner blocked on the fence row while a newer one writes, a crash between a batch's database
commit and its `ctx.commit`, and rows whose transactions commit out of id order. The last
test runs the handler in a real three-node cluster on a real ZooKeeper and kills -9 one
owner and freezes another past its session while producers keep writing: every outbox row
must be processed exactly once.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from loguru import logger

from tests.chaos.harness import ChaosCluster
from tests.postgres.server import psycopg_module
from tests.util import wait_until
from works import outbox
from xconsumer import OwnershipLost

TASK = "outbox"
PARTS = 4
SESSION = 2.0


@dataclass
class FakeCtx:
    """The slot context as the handler sees it, for tests without a cluster: `commit` keeps
    the checkpoint in memory, and the slot stops once its part is drained (`sleep`)."""

    fence: int
    slot: int = 0
    task: str = TASK
    node: str = "fake"
    generation: int = 1
    checkpoint: Any = None
    lost: bool = False
    commits: list[Any] = field(default_factory=list)
    stop_event: threading.Event = field(default_factory=threading.Event)

    @property
    def logger(self) -> Any:
        return logger.bind(node=self.node, task=self.task, slot=self.slot)

    @property
    def stopping(self) -> bool:
        return self.stop_event.is_set()

    def sleep(self, seconds: float) -> bool:
        self.stop_event.set()
        return False

    def commit(self, value: Any) -> None:
        if self.lost:
            raise OwnershipLost(f"{self.task}/{self.slot} is no longer ours")
        self.checkpoint = value
        self.commits.append(value)


@pytest.fixture
def db(pg_dsn: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv(outbox.DSN_ENV, pg_dsn)
    psycopg = psycopg_module()
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        outbox.create_schema(conn)
        yield conn


def connect(ctx: FakeCtx) -> Any:
    return outbox.connect(ctx)  # type: ignore[arg-type]


def processed_counts(db: Any) -> dict[int, int]:
    return dict(db.execute("SELECT outbox_id, count(*) FROM processed GROUP BY 1").fetchall())


def all_ids(db: Any) -> list[int]:
    return [r[0] for r in db.execute("SELECT id FROM outbox ORDER BY id").fetchall()]


def test_a_newer_owner_fences_out_an_older_one(db: Any) -> None:
    ids = outbox.produce(db, [f"r{i}" for i in range(8)], parts=1)
    old, new = FakeCtx(fence=10, node="old"), FakeCtx(fence=20, node="new")
    with connect(old) as c_old:
        start = outbox.claim(c_old, old)
        rows = outbox.read_batch(c_old, old, start, 100)  # the old owner is mid-batch ...
        outbox.RunOutbox(new)  # ... when the new one takes the slot and drains the part
        with pytest.raises(outbox.Rejected):
            outbox.write_batch(c_old, old, start, rows, ["late"] * len(rows))
        with pytest.raises(outbox.Rejected):  # and it cannot claim the slot back either
            outbox.claim(c_old, old)
    assert processed_counts(db) == dict.fromkeys(ids, 1)
    assert db.execute("SELECT DISTINCT fence FROM processed").fetchall() == [(20,)]
    assert new.checkpoint == {"txid": new.checkpoint["txid"], "id": ids[-1]}


def test_an_older_owner_blocked_on_the_fence_row_fails_once_the_newer_commits(db: Any) -> None:
    outbox.produce(db, ["a", "b"], parts=1)
    old, new = FakeCtx(fence=10, node="old"), FakeCtx(fence=20, node="new")
    outcome: list[object] = []
    with connect(old) as c_old, connect(new) as c_new:
        start = outbox.claim(c_old, old)
        rows = outbox.read_batch(c_old, old, start, 100)
        with c_new.transaction():
            c_new.execute(outbox._CLAIM, outbox._ids(new))  # the new owner holds the row

            def late_write() -> None:
                try:
                    outcome.append(outbox.write_batch(c_old, old, start, rows, ["x", "y"]))
                except outbox.Rejected as e:
                    outcome.append(e)

            writer = threading.Thread(target=late_write)
            writer.start()
            wait_until(lambda: db.execute(
                "SELECT 1 FROM pg_stat_activity WHERE application_name LIKE %s "
                "AND wait_event_type = 'Lock'", ("% old",)).fetchone(), 10,
                message="the older owner's write did not wait for the fence row")
        writer.join(10)
    assert len(outcome) == 1 and isinstance(outcome[0], outbox.Rejected), outcome
    assert processed_counts(db) == {}


def test_a_crash_between_the_database_commit_and_ctx_commit_repeats_nothing(db: Any) -> None:
    ids = outbox.produce(db, [f"r{i}" for i in range(30)], parts=1)
    first = FakeCtx(fence=10, node="first")
    with connect(first) as conn:
        start = outbox.claim(conn, first)
        rows = outbox.read_batch(conn, first, start, 10)
        written, _ = outbox.write_batch(conn, first, start, rows, ["done"] * len(rows))
        assert written  # ... and the process dies here, before ctx.commit
    # The next owner starts from the checkpoint before that batch (none at all here).
    second = FakeCtx(fence=20, node="second", checkpoint=None)
    outbox.RunOutbox(second)
    assert processed_counts(db) == dict.fromkeys(ids, 1)
    assert second.commits[-1]["id"] == ids[-1]


def test_a_row_whose_transaction_commits_late_is_not_skipped(db: Any, pg_dsn: str) -> None:
    psycopg = psycopg_module()
    with psycopg.connect(pg_dsn) as slow:  # a producer whose transaction stays open
        early = outbox.produce(slow, ["early id, late commit"], parts=1)
        late = outbox.produce(db, ["late id, early commit"], parts=1)
        assert early[0] < late[0]
        ctx = FakeCtx(fence=10)
        outbox.RunOutbox(ctx)
        # Reading by id alone would have consumed `late` and moved past `early` for good.
        assert processed_counts(db) == {}
        slow.commit()
    outbox.RunOutbox(FakeCtx(fence=10, checkpoint=ctx.checkpoint))
    assert processed_counts(db) == {early[0]: 1, late[0]: 1}


def test_rows_are_taken_in_transaction_order_across_a_power_of_ten(
        db: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # Transaction ids crossing from n to n+1 digits: compared as text, "1000" sorts before
    # "999" and a batch would step over rows (a bug the cluster test once found this way).
    xid = int(db.execute("SELECT pg_current_xact_id()::text").fetchone()[0])
    boundary = 10 ** len(str(xid + 3))
    db.execute("CREATE TABLE burn (x int)")
    # Each block with an exception handler is a subtransaction with an xid of its own.
    db.execute("DO $$ BEGIN FOR i IN 1..%s LOOP BEGIN INSERT INTO burn VALUES (i); "
               "EXCEPTION WHEN others THEN NULL; END; END LOOP; END $$" % (boundary - xid - 4))
    ids = [i for n in range(6) for i in outbox.produce(db, [f"r{n}"], parts=1)]
    txids = [int(r[0]) for r in db.execute("SELECT txid::text FROM outbox").fetchall()]
    assert min(txids) < boundary <= max(txids), (txids, boundary)
    monkeypatch.setenv(outbox.BATCH_ENV, "2")
    outbox.RunOutbox(FakeCtx(fence=10))
    assert processed_counts(db) == dict.fromkeys(ids, 1)
    assert [r[0] for r in db.execute("SELECT outbox_id FROM processed ORDER BY seq")] == ids


def test_a_lost_ownership_on_commit_stops_the_handler(db: Any) -> None:
    outbox.produce(db, [f"r{i}" for i in range(5)], parts=1)
    ctx = FakeCtx(fence=10, lost=True)
    outbox.RunOutbox(ctx)  # returns instead of processing further
    assert sum(processed_counts(db).values()) == 5 and ctx.commits == []


def test_missing_dsn_and_missing_driver_are_one_line_errors(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(outbox.DSN_ENV, raising=False)
    with pytest.raises(outbox.OutboxError, match=f"^{outbox.DSN_ENV} is not set: ") as e:
        outbox.RunOutbox(FakeCtx(fence=1))
    assert "\n" not in str(e.value)
    monkeypatch.setenv(outbox.DSN_ENV, "postgresql://nobody@127.0.0.1:1/none")
    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(outbox.OutboxError, match="needs psycopg 3: pip install") as e:
        outbox.RunOutbox(FakeCtx(fence=1))
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(("var", "value"), [(outbox.BATCH_ENV, "0"), (outbox.BATCH_ENV, "ten"),
                                             (outbox.POLL_ENV, "-1")])
def test_bad_batch_and_poll_values_are_one_line_errors(
        var: str, value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(outbox.OutboxError, match=f"^{var}='{value}' must be a positive "):
        outbox.RunOutbox(FakeCtx(fence=1))


# -- the whole thing: a real cluster under kill -9 and SIGSTOP ----------------------------------
class Producer(threading.Thread):
    """Writes outbox rows at a steady rate until stopped, so that faults hit a moving stream.
    The pause between chunks is the load generator's pace, not a wait for the cluster."""

    CHUNK = 20
    PACE = 0.03

    def __init__(self, dsn: str) -> None:
        super().__init__(daemon=True)
        self.dsn = dsn
        self.halt = threading.Event()
        self.count = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with psycopg_module().connect(self.dsn, autocommit=True) as conn:
                while not self.halt.is_set():
                    self.count += len(outbox.produce(
                        conn, [f"order {self.count + i}" for i in range(self.CHUNK)], PARTS))
                    self.halt.wait(self.PACE)
        except BaseException as e:  # reported by the test
            self.error = e


def slot_of(c: ChaosCluster, name: str) -> list[int]:
    return sorted(int(k.split("/")[1]) for k, v in c.view()["owners"].items() if v == name)


@pytest.mark.e2e
def test_cluster_under_kill9_and_sigstop_processes_every_row_once(
        db: Any, pg_dsn: str, zk_hosts: str, zk_root: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(outbox.BATCH_ENV, "20")
    monkeypatch.setenv(outbox.POLL_ENV, "0.05")
    tasks = [{"name": TASK, "workName": "outbox", "workerNum": PARTS, "stop_timeout": 5,
              "interval": 0.2, "retry_backoff": 0.2, "retry_backoff_max": 1}]
    c = ChaosCluster(tmp_path, zk_hosts, zk_root, tasks, works=outbox_works(),
                     name="outbox", session_timeout=SESSION)
    producer = Producer(pg_dsn)
    t_start = time.monotonic()
    figures: dict[str, Any] = {}
    try:
        names = ["n1", "n2", "n3"]
        for name in names:
            c.start_node(name)
        c.wait_converged(set(names))
        producer.start()

        def progressed(slot: int, fence: int, rows: int = 20) -> bool:
            got = db.execute("SELECT count(*) FROM processed WHERE slot = %s AND fence > %s",
                             (slot, fence)).fetchone()[0]
            return got >= rows

        wait_until(lambda: all(progressed(s, 0) for s in range(PARTS)), 20,
                   message=lambda: f"not every part is being consumed\n{c.logs()}")

        # 1. kill -9 the owner of slot 0; the survivors take its slots and carry on.
        killed = c.view()["owners"][f"{TASK}/0"]
        killed_fences = {s: c.view()["fences"][f"{TASK}/{s}"] for s in slot_of(c, killed)}
        c.kill(killed)
        c.wait_converged(set(names) - {killed}, timeout=SESSION + 15)
        wait_until(lambda: all(progressed(s, f) for s, f in killed_fences.items()), 20,
                   message=lambda: f"the killed node's parts did not move on\n{c.logs()}")
        c.start_node(killed)
        c.wait_converged(set(names), timeout=SESSION + 20)

        # 2. SIGSTOP a follower while each of its slots is mid-batch: with the outbox table
        # locked, their reads wait in the database; rows for them are added under the lock.
        victim = next(n for n in c.followers() if slot_of(c, n))
        slots = slot_of(c, victim)
        fences = {s: c.view()["fences"][f"{TASK}/{s}"] for s in slots}
        with psycopg_module().connect(pg_dsn) as locker:
            locker.execute("LOCK TABLE outbox IN ACCESS EXCLUSIVE MODE")
            for s in slots:
                locker.execute("INSERT INTO outbox (part, payload) SELECT %s, 'under lock ' || g "
                               "FROM generate_series(1, 5) g", (s,))

            def victim_reads_blocked() -> bool:
                waiting = {r[0] for r in db.execute(
                    "SELECT application_name FROM pg_stat_activity "
                    "WHERE wait_event_type = 'Lock' AND application_name LIKE %s",
                    (f"xconsumer-outbox {TASK}/% {victim}",)).fetchall()}
                return waiting >= {f"xconsumer-outbox {TASK}/{s} {victim}" for s in slots}

            wait_until(victim_reads_blocked, 20,
                       message=lambda: f"{victim}'s slots {slots} never read\n{c.logs()}")
            c.freeze(victim)
            locker.commit()
        c.wait_converged(set(names) - {victim}, timeout=SESSION + 15)
        # Every frozen slot has a newer owner that claimed it in the database.
        wait_until(lambda: all(db.execute(
            "SELECT fence > %s FROM slot_fences WHERE task = %s AND slot = %s",
            (f, TASK, s)).fetchone()[0] for s, f in fences.items()), 20,
            message=lambda: f"the frozen node's slots were not claimed\n{c.logs()}")
        c.thaw(victim)
        wait_until(lambda: db.execute(
            "SELECT count(*) FROM rejections WHERE node = %s AND rows > 0",
            (victim,)).fetchone()[0] >= len(slots), 20,
                   message=lambda: f"the woken node's late writes were not refused\n{c.logs()}")
        c.wait_converged(set(names), timeout=SESSION + 20)

        # 3. Stop producing; everything written must be processed, once.
        producer.halt.set()
        producer.join(10)
        assert producer.error is None, producer.error
        wait_until(lambda: db.execute(
            "SELECT count(*) FROM outbox o WHERE NOT EXISTS "
            "(SELECT 1 FROM processed p WHERE p.outbox_id = o.id)").fetchone()[0] == 0, 30,
            message=lambda: f"rows left unprocessed\n{db_state(db)}\n{c.logs()}")
        codes = c.stop_all()
        assert all(code == 0 for pid, code in codes.items() if pid not in c.killed), codes
    finally:
        producer.halt.set()
        c.close()

    counts = processed_counts(db)
    ids = all_ids(db)
    twice = {i: n for i, n in counts.items() if n != 1}
    assert not twice, f"rows processed more than once: {dict(list(twice.items())[:20])}"
    assert set(counts) == set(ids), f"{len(set(ids) - set(counts))} rows skipped"
    # A slot's writes come from owners in fence order: never an older one after a newer one.
    backwards = db.execute(
        "SELECT slot, count(*) FROM (SELECT slot, fence, lag(fence) OVER "
        "(PARTITION BY slot ORDER BY seq) AS before FROM processed) w "
        "WHERE fence < before GROUP BY slot").fetchall()
    assert not backwards, backwards
    late = db.execute("SELECT node, slot, fence, current_fence, rows FROM rejections "
                      "WHERE rows > 0").fetchall()
    assert any(node == victim and rows > 0 for node, _, _, _, rows in late), late
    figures.update(
        rows=len(ids), rejections=len(late),
        rejected_rows=sum(r[4] for r in late),
        owners_per_slot=dict(db.execute(
            "SELECT slot, count(DISTINCT fence) FROM processed GROUP BY slot ORDER BY slot"
        ).fetchall()),
        seconds=round(time.monotonic() - t_start, 1))
    print(f"\noutbox under kill -9 ({killed}) and SIGSTOP ({victim}): {json.dumps(figures)}")


def db_state(db: Any) -> str:
    """What the database says when the test fails: positions, backlog, sessions."""
    fences = db.execute("SELECT slot, fence, txid::text, last_id, node FROM slot_fences "
                        "ORDER BY slot").fetchall()
    backlog = db.execute("SELECT part, count(*), min(id), min(txid::text) FROM outbox o "
                         "WHERE NOT EXISTS (SELECT 1 FROM processed p WHERE p.outbox_id = o.id) "
                         "GROUP BY part ORDER BY part").fetchall()
    sessions = db.execute("SELECT application_name, state, wait_event_type, backend_xid::text, "
                          "backend_xmin::text, left(query, 60) FROM pg_stat_activity "
                          "WHERE datname = current_database()").fetchall()
    xmin = db.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())::text").fetchone()[0]
    around = db.execute(
        "SELECT p.seq, p.outbox_id, o.txid::text, p.fence, p.node, p.at::time FROM processed p "
        "JOIN outbox o ON o.id = p.outbox_id JOIN (SELECT part, min(txid) AS t FROM outbox o2 "
        "WHERE NOT EXISTS (SELECT 1 FROM processed q WHERE q.outbox_id = o2.id) GROUP BY part) g "
        "ON g.part = p.slot WHERE o.txid::text::bigint BETWEEN g.t::text::bigint - 30 "
        "AND g.t::text::bigint + 30 ORDER BY p.seq").fetchall()
    rej = db.execute("SELECT * FROM rejections").fetchall()
    sessions = [*sessions, ("around the first skipped", around), ("rejections", rej)]
    return (f"slot_fences: {fences}\nunprocessed per part: {backlog}\nxmin: {xmin}\n"
            f"sessions: {sessions}")


def outbox_works() -> Path:
    return Path(outbox.__file__).resolve().parent
