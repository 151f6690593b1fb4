"""isolation = "process": handlers run in a child process that can be terminated."""

from __future__ import annotations

import os

from kazoo.client import KazooClient

from tests.integration.test_node import make_config, records, running, start
from tests.util import wait_until
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
