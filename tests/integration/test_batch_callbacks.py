"""Batch callbacks on a real two-node cluster against a real ZooKeeper: `Assign<Work>` is
called with the slots a node gains, in one call per task per change, before any of them
runs; `Revoke<Work>` with the slots it lost, after their runners stopped, and on shutdown
for everything still held; a callback that raises is reported and the slots run anyway."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration import test_node
from tests.integration.test_node import make_config, records, running, start
from tests.util import wait_until

ASYNC_WORKS = Path(__file__).resolve().parents[1] / "async_works"
KAFKA = ('[[task]]\nname = "k"\nworkName = "kafka"\nworkerNum = 4\nstop_timeout = 2\n'
         'params = ["p0", "p1", "p2", "p3"]\n')


@pytest.fixture(autouse=True)
def async_works(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(test_node, "RECORD_WORKS", ASYNC_WORKS)


def of(record: Path, event: str, node: str) -> list[dict]:
    return [r for r in records(record) if r["e"] == event and r.get("node") == node]


def check_order(record: Path, node: str) -> None:
    """On `node`: every run of a slot comes after an Assign holding it and no Revoke in
    between; every Revoke comes after the slot's runner stopped."""
    held: set[int] = set()
    running_now: set[int] = set()
    for r in records(record):
        if r.get("node") != node or r.get("task") != "k":
            continue
        if r["e"] == "assign":
            assert not held & set(r["slots"]), f"assigned twice: {r}"
            held |= set(r["slots"])
        elif r["e"] == "revoke":
            assert set(r["slots"]) <= held and not running_now & set(r["slots"]), r
            held -= set(r["slots"])
        elif r["e"] == "run":
            assert r["slot"] in held, f"ran before its Assign: {r}"
            running_now.add(r["slot"])
        elif r["e"] == "stopped":
            running_now.discard(r["slot"])


def test_assign_before_runs_and_revoke_after_stops_in_batches(zk_hosts, zk_root, nodes,
                                                               record):
    config = make_config(zk_hosts, zk_root, KAFKA)
    a = start(nodes, config, "a")
    wait_until(lambda: running(a) == {f"k/{i}" for i in range(4)}, 15)
    first = of(record, "assign", "a")[0]
    assert first["slots"] == [0, 1, 2, 3]  # one call for the batch, sorted
    assert first["params"] == ["p0", "p1", "p2", "p3"] and first["keys"] == [None] * 4
    b = start(nodes, config, "b")
    wait_until(lambda: len(running(a)) == 2 and len(running(b)) == 2 and of(record, "revoke", "a"),
               15, message=lambda: f"{running(a)} {running(b)} {records(record)[-5:]}")
    moved = sorted(int(s.split("/")[1]) for s in running(b))
    revokes = of(record, "revoke", "a")
    assert [r["slots"] for r in revokes] == [moved]  # one Revoke call for the change
    assert [r["slots"] for r in of(record, "assign", "b")] == [moved]
    check_order(record, "a")
    check_order(record, "b")
    # b leaves: it revokes everything it held after its runners stopped; a takes them back
    # in one batch.
    assert b.stop(timeout=10)
    wait_until(lambda: running(a) == {f"k/{i}" for i in range(4)}, 15)
    assert [r["slots"] for r in of(record, "revoke", "b")] == [moved]
    wait_until(lambda: len(of(record, "assign", "a")) == 2, 5)
    assert of(record, "assign", "a")[1]["slots"] == moved
    check_order(record, "a")
    check_order(record, "b")
    a.stop(timeout=10)
    assert [r["slots"] for r in of(record, "revoke", "a")] == [moved, [0, 1, 2, 3]]
    check_order(record, "a")


def test_a_raising_callback_is_reported_and_the_slots_run(zk_hosts, zk_root, nodes, record):
    config = make_config(zk_hosts, zk_root, '[[task]]\nname = "bad"\nworkName = "bad"\n'
                                            'workerNum = 2\nstop_timeout = 2\n')
    a = start(nodes, config, "a")
    wait_until(lambda: running(a) == {"bad/0", "bad/1"}, 15)
    failed = [e for e in a.events.since(0, 1000) if e["kind"] == "callback_failed"]
    assert len(failed) == 1 and failed[0]["task"] == "bad" and failed[0]["slots"] == [0, 1]
    assert "AssignBad raised RuntimeError: the client refused the assignment" in (
        failed[0]["message"])


def test_async_callbacks_run_on_the_event_loop(zk_hosts, zk_root, nodes, record):
    config = make_config(zk_hosts, zk_root, '[[task]]\nname = "aio"\nworkName = "aio"\n'
                                            'workerNum = 2\nstop_timeout = 2\n')
    a = start(nodes, config, "a")
    wait_until(lambda: running(a) == {"aio/0", "aio/1"}, 15)
    assert [r["name"] for r in records(record) if r["e"] == "assign_thread"] == ["xc-asyncio"]
    a.stop(timeout=10)
    assert [r["slots"] for r in of(record, "revoke", "a")] == [[0, 1]]
