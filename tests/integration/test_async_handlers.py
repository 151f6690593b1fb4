"""Coroutine handlers (`async def RunX(ctx)`) on real nodes against a real ZooKeeper: they
run on the node's one event loop, a revoke cancels them for real, loop/once modes, retries
and run_timeout behave as for threads, a coroutine that blocks the loop is reported, and
the loop thread is gone once the node has stopped."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from tests.integration import test_node
from tests.integration.test_node import make_config, records, running, start
from tests.util import wait_until
from xconsumer.node import Node
from xconsumer.overrides import update_task
from xconsumer.paths import Paths

ASYNC_WORKS = Path(__file__).resolve().parents[1] / "async_works"


@pytest.fixture(autouse=True)
def async_works(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nodes started by `start()` discover the coroutine handlers."""
    monkeypatch.setattr(test_node, "RECORD_WORKS", ASYNC_WORKS)


def task(name: str, work: str, n: int = 1, extra: str = "") -> str:
    return (f'[[task]]\nname = "{name}"\nworkName = "{work}"\nworkerNum = {n}\n'
            f'stop_timeout = 2\n{extra}')


def events_of(record: Path, kind: str, task_name: str | None = None) -> list[dict]:
    return [r for r in records(record)
            if r["e"] == kind and (task_name is None or r.get("task") == task_name)]


def loop_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("xc-asyncio")]


def scale(node: Node, name: str, n: int) -> None:
    node.overrides.update(lambda d: update_task(d, node.seed_tasks(), name, {"workerNum": n}))


def test_async_slots_run_on_one_loop_and_a_revoke_wakes_sleep_and_cancels(
        zk_hosts, zk_root, nodes, record):
    config = make_config(zk_hosts, zk_root, task("tick", "ticker", 2) + task("hour", "hour", 2))
    node = start(nodes, config, "a")
    want = {"tick/0", "tick/1", "hour/0", "hour/1"}
    wait_until(lambda: running(node) == want and len(events_of(record, "start")) == 4, 15,
               message=lambda: str(node.node_view()))
    # Every coroutine slot runs on the node's one loop thread.
    assert {r["thread"] for r in events_of(record, "start")} == {"xc-asyncio"}
    revoked_at = time.time()
    scale(node, "tick", 1)
    scale(node, "hour", 1)
    wait_until(lambda: running(node) == {"tick/0", "hour/0"} and not [
        s for s in node.runtime.statuses() if s.slot == 1], 10,
        message=lambda: str(node.node_view()))
    # The revoked ticker's ctx.sleep returned False; the revoked hour-sleeper got a real
    # CancelledError inside asyncio.sleep(3600), promptly (well before its stop_timeout).
    assert [r["slot"] for r in events_of(record, "slept_false", "tick")] == [1]
    cancelled = events_of(record, "cancelled", "hour")
    assert [r["slot"] for r in cancelled] == [1]
    assert cancelled[0]["t"] - revoked_at < 1.5
    statuses = {f"{s.task}/{s.slot}": s for s in node.runtime.statuses()}
    assert all(s.state != "stuck" for s in statuses.values())


def test_once_mode_and_retries_with_backoff(zk_hosts, zk_root, nodes, record):
    config = make_config(zk_hosts, zk_root, task("o", "onceAsync", 2, 'mode = "once"\n')
                         + task("f", "flakyAsync", 1, "retry_backoff = 0.2\n"
                                "retry_backoff_max = 0.4\n"))
    node = start(nodes, config, "a")
    wait_until(lambda: {s.slot for s in node.runtime.statuses()
                        if s.task == "o" and s.state == "done"} == {0, 1}, 15,
               message=lambda: str(node.node_view()))
    assert sorted(r["slot"] for r in events_of(record, "done", "o")) == [0, 1]
    fails = wait_until(lambda: events_of(record, "fail", "f")[3:] and events_of(record, "fail"),
                       15)
    gaps = [b["t"] - a["t"] for a, b in zip(fails, fails[1:], strict=False)]
    assert gaps[0] >= 0.19 and all(g >= 0.39 for g in gaps[1:3]), gaps
    slot = next(s for s in node.runtime.statuses() if s.task == "f")
    assert slot.failures >= 3 and "async handler failed on purpose" in (slot.last_error or "")


def test_run_timeout_cancels_a_coroutine_run(zk_hosts, zk_root, nodes, record):
    config = make_config(zk_hosts, zk_root, task("h", "hour", 1, "run_timeout = 0.3\n"
                                                 "retry_backoff = 0.1\n"))
    node = start(nodes, config, "a")
    wait_until(lambda: len(events_of(record, "cancelled")) >= 2, 15,
               message=lambda: str(node.node_view()))
    starts, cancels = events_of(record, "start"), events_of(record, "cancelled")
    assert 0.3 <= cancels[0]["t"] - starts[0]["t"] < 1.0
    slot = next(s for s in node.runtime.statuses())
    assert slot.timeouts >= 2 and slot.state != "stuck"
    assert "run exceeded run_timeout (0.3s)" in (slot.last_error or "")
    assert any(e["kind"] == "handler_timeout" for e in node.events.since(0, 1000))


def test_a_coroutine_blocking_the_loop_is_reported(zk_hosts, zk_root, nodes, record):
    config = make_config(zk_hosts, zk_root, task("b", "blocker") + task("tick", "ticker"))
    node = start(nodes, config, "a")
    blocked = wait_until(lambda: [e for e in node.events.since(0, 1000)
                                  if e["kind"] == "loop_blocked"], 15,
                         message=lambda: str(node.node_view()))
    assert blocked[0]["task"] == "b" and blocked[0]["slot"] == 0
    assert b'xconsumer_loop_blocked_total{task="b"} 1.0' in node.metrics.render()


def test_node_shutdown_joins_the_loop_thread(zk_hosts, zk_root, nodes, record):
    config = make_config(zk_hosts, zk_root, task("hour", "hour", 2) + task("tick", "ticker"))
    node = start(nodes, config, "a")
    wait_until(lambda: len(events_of(record, "start")) == 3, 15,
               message=lambda: str(node.node_view()))
    assert "xc-asyncio" in loop_threads()
    assert node.stop(timeout=10)
    assert loop_threads() == []
    assert len(events_of(record, "cancelled")) == 2
    assert len(events_of(record, "slept_false")) == 1


def test_a_revoked_slot_lets_go_only_once_its_to_thread_work_ends(
        zk, zk_hosts, zk_root, nodes, record):
    """Found in review: a cancelled `await asyncio.to_thread(f)` ends the coroutine, not `f`,
    so the slot thread returned, the owner znode was deleted and the slot's next owner could
    start while `f` still ran here. The slot now waits for the calls its run submitted: past
    stop_timeout it is reported stuck and keeps its owner znode, like a thread handler that
    ignores a stop, and lets go once `f` has returned."""
    config = make_config(zk_hosts, zk_root, task("off", "offload", 2))
    node = start(nodes, config, "a")
    wait_until(lambda: len(events_of(record, "work_start")) == 2, 15,
               message=lambda: str(node.node_view()))
    owner = Paths(zk_root, "it").owner("off", 1)
    assert zk.exists(owner) is not None
    scale(node, "off", 1)  # revokes off/1 while its work runs in the pool

    def state() -> str | None:
        return next((s.state for s in node.runtime.statuses() if s.slot == 1), None)

    # The old code: the owner znode was gone at the cancellation. Now: the slot holds on
    # until its work returns, and is reported stuck after its stop_timeout (2 s).
    wait_until(lambda: zk.exists(owner) is None or state() == "stuck", 15,
               message=lambda: str(node.node_view()))
    assert events_of(record, "cancelled", "off"), "the coroutine was cancelled"
    assert zk.exists(owner) is not None and state() == "stuck"
    assert not events_of(record, "work_end")
    Path(os.environ["XCONSUMER_TEST_RELEASE"]).touch()  # the work returns
    wait_until(lambda: zk.exists(owner) is None, 15, message=lambda: str(node.node_view()))
    ends = [r for r in events_of(record, "work_end") if r["slot"] == 1]
    assert ends, "the slot let go before its work ended"
    assert running(node) == {"off/0"}
