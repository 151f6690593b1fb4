"""Run-level failure control against real ZooKeeper: `run_timeout` (a thread run sees
`ctx.stopping`, an isolated run is killed and re-run in a fresh child, never two at once)
and the per-slot circuit breaker (`breaker_failures`, `breaker_cooldown`)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from kazoo.client import KazooClient

from tests.checker import worst_overlap_in_file
from tests.e2e.record_works import pid_alive
from tests.integration.test_node import make_config, records, start
from tests.util import wait_until
from xconsumer.node import Node
from xconsumer.overrides import update_task
from xconsumer.paths import Paths


def _slot(node: Node) -> dict:
    return node.node_view()["slots"][0]


def _metric(node: Node, name: str, task: str | None = None) -> float:
    """One sample of this node's /metrics text (0 when the series does not exist yet)."""
    label = f'{{task="{task}"}}' if task else ""
    for line in node.metrics.render().decode().splitlines():
        if line.startswith(f"{name}{label} "):
            return float(line.split()[-1])
    return 0.0


def _events(node: Node, kind: str) -> list[dict]:
    return [e for e in node.events.since(0, 1000) if e["kind"] == kind]


def test_a_thread_run_past_run_timeout_sees_stopping_and_is_retried_with_backoff(
        zk_hosts, zk_root, nodes, record):
    task = ('[[task]]\nname = "t"\nworkName = "overrun"\nworkerNum = 1\n'
            'run_timeout = 0.3\nretry_backoff = 0.2\nretry_backoff_max = 0.4\n')
    node = start(nodes, make_config(zk_hosts, zk_root, task), "a")
    stops = wait_until(lambda: [r for r in records(record) if r["e"] == "stop"][3:] and
                       [r for r in records(record) if r["e"] == "stop"], 20,
                       message=lambda: str(node.node_view()))
    starts = [r for r in records(record) if r["e"] == "start"]
    # The run's context said stop; the slot's did not (it keeps running: one fence).
    assert all(r["stopping"] and not r["slot_stopping"] for r in stops)
    assert len({r["fence"] for r in starts}) == 1
    for begin, end in zip(starts, stops, strict=False):
        # The deadline counts from the run's start, a little before the handler writes its
        # start record (0.298 s seen between the records on a slow 2-core machine).
        assert 0.3 - 0.05 <= end["t"] - begin["t"] < 0.3 + 1.0
    # Retried after the backoff: 0.2, then doubling to the 0.4 cap.
    gaps = [b["t"] - a["t"] for a, b in zip(stops, starts[1:], strict=False)]
    assert gaps[0] >= 0.19 and all(g >= 0.39 for g in gaps[1:3]), gaps
    wait_until(lambda: _slot(node)["timeouts"] >= 4, 5)
    slot = _slot(node)
    assert slot["failures"] >= slot["timeouts"] >= 4
    assert "run exceeded run_timeout (0.3s)" in slot["last_error"]
    assert _metric(node, "xconsumer_handler_timeouts_total", "t") >= 4
    assert len(_events(node, "handler_timeout")) >= 4


def test_a_thread_run_that_ignores_run_timeout_is_reported_stuck_and_keeps_the_slot(
        zk: KazooClient, zk_hosts, zk_root, nodes, record):
    task = ('[[task]]\nname = "s"\nworkName = "stubborn"\nworkerNum = 1\n'
            'run_timeout = 0.3\nstop_timeout = 0.3\n')
    node = start(nodes, make_config(zk_hosts, zk_root, task), "a")
    wait_until(lambda: _slot(node)["state"] == "stuck", 15, message=lambda: str(node.node_view()))
    assert any("ran past run_timeout" in e["message"] for e in _events(node, "slot_stuck"))
    assert zk.exists(Paths(zk_root, "it").owner("s", 0)) is not None
    (record.parent / "release").write_text("go")
    # It returns at last: the run is counted as timed out, and the slot runs on.
    wait_until(lambda: _slot(node)["timeouts"] == 1, 10, message=lambda: str(node.node_view()))
    wait_until(lambda: sum(r["e"] == "start" for r in records(record)) >= 2, 10)


def test_an_isolated_run_past_run_timeout_is_killed_and_rerun_never_twice_at_once(
        zk: KazooClient, zk_hosts, zk_root, nodes, record, monkeypatch):
    from xconsumer import isolation

    monkeypatch.setattr(isolation, "KILL_GRACE", 0.3)  # the hog ignores SIGTERM
    task = ('[[task]]\nname = "h"\nworkName = "hog"\nworkerNum = 1\nisolation = "process"\n'
            'run_timeout = 0.5\nretry_backoff = 0.1\nretry_backoff_max = 0.2\n')
    node = start(nodes, make_config(zk_hosts, zk_root, task), "a")
    died: dict[int, float] = {}

    def three_runs() -> bool:
        """Also notes when each run's process is first seen dead (the checker's kill map)."""
        now = time.time()
        starts = [r for r in records(record) if r["e"] == "start"]
        for r in starts:
            if r["pid"] not in died and not pid_alive(r["pid"]):
                died[r["pid"]] = now
        return len(starts) >= 3 and all(r["pid"] in died for r in starts[:2])

    try:
        wait_until(three_runs, 60, interval=0.01, message=lambda: str(node.node_view()))
        starts = [r for r in records(record) if r["e"] == "start"]
        assert len({r["pid"] for r in starts}) == len(starts)  # a fresh child per run
        assert all(r["others_alive"] == [] for r in starts)
        # The owner znode was kept across the restarts: one fence, still ours.
        owner = zk.exists(Paths(zk_root, "it").owner("h", 0))
        assert {r["fence"] for r in starts} == {owner.czxid}
        assert owner.ephemeralOwner == node.client.client_id[0]
        assert worst_overlap_in_file(record, killed=died).seconds == 0
        assert not any(r["e"] == "stop" for r in records(record))  # killed, never returned
        for a, b in zip(starts, starts[1:], strict=False):
            assert b["t"] - a["t"] >= 0.5
        wait_until(lambda: _slot(node)["timeouts"] >= 2, 10)
        assert _metric(node, "xconsumer_handler_timeouts_total", "h") >= 2
        assert len(_events(node, "handler_timeout")) >= 2
    finally:
        (record.parent / "release").write_text("go")


@pytest.mark.parametrize("isolation", ["thread", "process"])
def test_the_breaker_opens_waits_its_cooldown_tries_once_and_closes(
        zk_hosts, zk_root, nodes, record: Path, isolation):
    cooldown = 1.5
    task = (f'[[task]]\nname = "b"\nworkName = "switch"\nworkerNum = 1\n'
            f'isolation = "{isolation}"\nretry_backoff = 0.05\nretry_backoff_max = 0.05\n'
            f'breaker_failures = 3\nbreaker_cooldown = {cooldown}\n')
    node = start(nodes, make_config(zk_hosts, zk_root, task), "a")

    def fails() -> list[float]:
        return [r["t"] for r in records(record) if r["e"] == "fail"]

    wait_until(lambda: _slot(node)["breaker"] == "open", 30, message=lambda: str(node.node_view()))
    slot = _slot(node)
    assert slot["consecutive_failures"] == 3 and slot["open_until"] > time.time()
    assert len(fails()) == 3
    wait_until(lambda: _metric(node, "xconsumer_slots_breaker_open") == 1, 5)
    assert _metric(node, "xconsumer_breaker_opened_total", "b") == 1
    # The trial after the cooldown fails: open again, for another cooldown.
    wait_until(lambda: _slot(node)["consecutive_failures"] == 4
               and _slot(node)["breaker"] == "open", 15)
    assert len(fails()) == 4
    assert _metric(node, "xconsumer_breaker_opened_total", "b") == 2
    (record.parent / "release").write_text("go")
    wait_until(lambda: _slot(node)["breaker"] == "closed", 15,
               message=lambda: str(node.node_view()))
    f = fails()
    success = next(r["t"] for r in records(record) if r["e"] == "start")
    # No call during either cooldown (the records are every call the handler got).
    assert f[3] - f[2] >= cooldown - 0.05 and success - f[3] >= cooldown - 0.05
    assert len(f) == 4
    slot = _slot(node)
    assert slot["consecutive_failures"] == 0 and slot["open_until"] is None
    assert [e["kind"] for e in node.events.since(0, 1000)
            if e["kind"].startswith("breaker_")] == ["breaker_opened", "breaker_opened",
                                                     "breaker_closed"]
    # The gauge follows at the next reconcile pass.
    wait_until(lambda: _metric(node, "xconsumer_slots_breaker_open") == 0, 5)


def test_changing_run_timeout_and_breaker_keys_does_not_restart_the_slot(
        zk_hosts, zk_root, nodes, record):
    task = '[[task]]\nname = "r"\nworkName = "record"\nworkerNum = 1\n'
    node = start(nodes, make_config(zk_hosts, zk_root, task), "a")
    wait_until(lambda: _slot(node)["state"] == "running", 15)
    before = _slot(node)
    node.overrides.update(lambda d: update_task(
        d, node.seed_tasks(), "r",
        {"run_timeout": 0.5, "breaker_failures": 2, "breaker_cooldown": 3}))
    wait_until(lambda: node.runtime._runners and next(iter(node.runtime._runners.values()))
               .task.run_timeout == 0.5, 10)
    # The record handler runs until stopped: now its run ends at the new limit, in the
    # same slot runner (one start before the change, same fence, no stop of the slot).
    wait_until(lambda: _slot(node)["timeouts"] >= 1, 10, message=lambda: str(node.node_view()))
    after = _slot(node)
    assert after["fence"] == before["fence"] and after["started_at"] == before["started_at"]
    assert {r["fence"] for r in records(record)} == {before["fence"]}
