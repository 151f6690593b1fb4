"""isolation = "process": handlers run in a child process that can be terminated."""

from __future__ import annotations

import contextlib
import os
import signal

import pytest
from kazoo.client import KazooClient

from tests.cluster import Cluster
from tests.e2e.record_works import pid_alive
from tests.integration.test_node import make_config, records, running, start
from tests.util import wait_until
from xconsumer.overrides import update_task
from xconsumer.paths import Paths


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_isolated_slots_run_in_children_and_stop_cleanly(zk: KazooClient, zk_hosts, zk_root,
                                                         nodes, record):
    task = ('[[task]]\nname = "p"\nworkName = "record"\nworkerNum = 2\n'
            'isolation = "process"\n')
    node = start(nodes, make_config(zk_hosts, zk_root, task), "a")
    wait_until(lambda: running(node) == {"p/0", "p/1"}
               and sum(r["e"] == "beat" for r in records(record)) >= 4, 30)
    pids = {r["pid"] for r in records(record) if r["e"] == "start"}
    assert len(pids) == 2 and os.getpid() not in pids
    node.stop(timeout=10)
    assert sum(r["e"] == "stop" for r in records(record)) == 2  # cooperative stop
    assert not any(_alive(p) for p in pids)
    assert zk.get_children(Paths(zk_root, "it").owner_task("p")) == []


def test_a_stuck_isolated_handler_is_killed_and_the_slot_moves(zk: KazooClient, zk_hosts,
                                                               zk_root, nodes, record):
    task = ('[[task]]\nname = "s"\nworkName = "stubborn"\nworkerNum = 1\n'
            'stop_timeout = 0.5\nisolation = "process"\n')
    config = make_config(zk_hosts, zk_root, task)
    start(nodes, config, "a")
    wait_until(lambda: any(r["e"] == "start" for r in records(record)), 30)
    first_pid = records(record)[0]["pid"]
    start(nodes, config, "b")  # first in the dealing order: the slot moves to b
    second = wait_until(lambda: [r for r in records(record)
                                 if r["e"] == "start" and r["node"] == "b"], 30)
    # b started only after a's child was gone (terminated: it never ran its stop record).
    assert not _alive(first_pid)
    assert not any(r["e"] == "stop" and r["pid"] == first_pid for r in records(record))
    assert second[0]["fence"] > records(record)[0]["fence"]
    (record.parent / "release").write_text("go")


def _kill(pids: list[int]) -> None:
    """Test hygiene: end (by pid) any grandchild a failing run left behind."""
    for pid in pids:
        if pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _on_release(zk: KazooClient, path: str, pid: int) -> list[bool]:
    """Whether `pid` was still running when the owner znode at `path` went away (one entry,
    appended by the watch); a released slot must have nothing of its run left running."""
    seen: list[bool] = []
    assert zk.exists(path, watch=lambda _e: seen.append(pid_alive(pid))) is not None
    return seen


@pytest.mark.parametrize("work", ["spawner", "leaver", "halfdead"])
def test_processes_the_handler_started_are_gone_before_the_slot_moves(
        zk: KazooClient, zk_hosts, zk_root, nodes, record, work):
    # spawner ignores the stop (its child is terminated, then killed); leaver returns when
    # asked but leaves its own child running. Either way that child must not outlive the slot.
    task = (f'[[task]]\nname = "g"\nworkName = "{work}"\nworkerNum = 1\n'
            'stop_timeout = 0.5\nisolation = "process"\n')
    config = make_config(zk_hosts, zk_root, task)
    start(nodes, config, "a")
    first = wait_until(lambda: [r for r in records(record) if r["e"] == "start"], 30)[0]
    try:
        released = _on_release(zk, Paths(zk_root, "it").owner("g", 0), first["grandchild"])
        start(nodes, config, "b")  # first in the dealing order: the slot moves to b
        second = wait_until(lambda: [r for r in records(record)
                                     if r["e"] == "start" and r["node"] == "b"], 30)[0]
        assert wait_until(lambda: released, 10) == [False]
        assert second["others_alive"] == []
    finally:
        (record.parent / "release").write_text("go")
        _kill([r["grandchild"] for r in records(record) if r["e"] == "start"])


def test_pausing_a_task_ends_the_processes_its_handler_started(zk: KazooClient, zk_hosts,
                                                               zk_root, nodes, record):
    task = ('[[task]]\nname = "g"\nworkName = "spawner"\nworkerNum = 1\n'
            'stop_timeout = 0.5\nisolation = "process"\n')
    node = start(nodes, make_config(zk_hosts, zk_root, task), "a")
    first = wait_until(lambda: [r for r in records(record) if r["e"] == "start"], 30)[0]
    try:
        released = _on_release(zk, Paths(zk_root, "it").owner("g", 0), first["grandchild"])
        node.overrides.update(lambda d: update_task(d, node.seed_tasks(), "g",
                                                    {"paused": True}))
        assert wait_until(lambda: released, 15) == [False]
        assert not pid_alive(first["grandchild"])
    finally:
        (record.parent / "release").write_text("go")
        _kill([first["grandchild"]])


def test_kill_9_of_the_node_ends_the_processes_its_handler_started(tmp_path, zk_hosts, zk_root):
    cluster = Cluster(tmp_path, zk_hosts, zk_root,
                      [{"name": "g", "workName": "spawner", "workerNum": 1,
                        "isolation": "process"}])
    grandchild: list[int] = []
    try:
        node = cluster.start_node("a")
        first = wait_until(lambda: [r for r in cluster.records() if r["e"] == "start"], 30,
                           message=lambda: node.log()[-3000:])[0]
        grandchild.append(first["grandchild"])
        assert pid_alive(first["pid"]) and pid_alive(first["grandchild"])
        node.kill()
        # The kernel kills the child with its parent; the child's session watcher then kills
        # what the handler started (which no signal of the kernel's would reach).
        wait_until(lambda: not pid_alive(first["pid"]) and not pid_alive(first["grandchild"]),
                   10, message="the handler's child outlived the killed node")
    finally:
        cluster.close()
        _kill(grandchild)


def test_a_slot_whose_processes_cannot_be_confirmed_gone_stays_owned_and_stuck(
        zk: KazooClient, zk_hosts, zk_root, nodes, record, monkeypatch):
    import threading

    from xconsumer import isolation

    # Stand-in for a process that survives SIGKILL (uninterruptible sleep on a dead NFS
    # mount, say): the session looks alive until `hold` is cleared.
    hold = threading.Event()
    hold.set()
    real = isolation.session_alive
    monkeypatch.setattr(isolation, "session_alive", lambda sid: hold.is_set() or real(sid))
    monkeypatch.setattr(isolation, "GONE_TIMEOUT", 0.2)
    task = ('[[task]]\nname = "g"\nworkName = "leaver"\nworkerNum = 1\n'
            'stop_timeout = 0.5\nisolation = "process"\n')
    node = start(nodes, make_config(zk_hosts, zk_root, task), "a")
    first = wait_until(lambda: [r for r in records(record) if r["e"] == "start"], 30)[0]
    owner = Paths(zk_root, "it").owner("g", 0)
    try:
        node.overrides.update(lambda d: update_task(d, node.seed_tasks(), "g",
                                                    {"paused": True}))
        wait_until(lambda: [s.state for s in node.runtime.statuses()] == ["stuck"], 15,
                   message=lambda: str(node.node_view()))
        assert not pid_alive(first["pid"])  # the child itself is gone...
        assert zk.exists(owner) is not None  # ...but the slot keeps its owner znode
        hold.clear()
        wait_until(lambda: zk.exists(owner) is None, 15, message=lambda: str(node.node_view()))
    finally:
        hold.clear()
        _kill([first["grandchild"]])
