"""The leader's housekeeping runs after it applied its own slots, in the same pass as the
publish it follows, and only then: a pass that failed in between leaves nothing for a
later pass, which may run on a node that lost the leadership, with an old task table
(found by review: it deleted a newer task's done marker, so a finished once-task would
run again). Real ZooKeeper, real in-process nodes."""

from __future__ import annotations

from kazoo.client import KazooClient
from kazoo.exceptions import ConnectionLoss

from tests.integration.test_node import make_config, running, start
from tests.util import wait_until
from xconsumer.overrides import OverrideStore, add_task
from xconsumer.paths import Paths

TASK = '[[task]]\nname = "r"\nworkName = "record"\nworkerNum = 2\nstop_timeout = 2\n'


def test_housekeeping_left_by_a_failed_pass_never_runs_later(
        zk: KazooClient, zk_hosts, zk_root, nodes, record) -> None:
    config = make_config(zk_hosts, zk_root, TASK, session_timeout=2.0)
    a = start(nodes, config, "a")
    wait_until(lambda: a.is_leader and running(a) == {"r/0", "r/1"}, 20)
    b = start(nodes, config, "b")
    wait_until(lambda: len(running(a) | running(b)) == 2 and running(b), 20)
    paths = Paths(zk_root, "it")
    calls: list[tuple[bool, object]] = []
    real_housekeep = a._housekeep

    def housekeep(live, tasks, purge=(), **kwargs):
        calls.append((a.is_leader, tasks))
        return real_housekeep(live, tasks, purge, **kwargs)
    a._housekeep = housekeep  # type: ignore[method-assign]
    armed = {"on": True}
    real_read = a._read_document

    def failing_read():
        if armed["on"] and a._chores is not None and a._chores[1] is not None:
            armed["on"] = False
            # Right after a's publish an operator adds a once-task that the next leader
            # publishes and that completes (its done marker)...
            OverrideStore(zk, paths.overrides).update(lambda d: add_task(
                d, config.tasks, {"name": "x", "workName": "record", "workerNum": 1,
                                  "mode": "once"}, lambda w: True))
            zk.ensure_path(paths.done_marker("x", 0))
            # ...and a's connection drops, and its session expires: b leads from now on.
            twin = KazooClient(hosts=zk_hosts, client_id=a.client.client_id, timeout=2.0)
            twin.start(timeout=10)
            twin.stop()
            twin.close()
            raise ConnectionLoss()
        return real_read()
    a._read_document = failing_read  # type: ignore[method-assign]
    start(nodes, config, "c")  # a publishes (its housekeeping: tasks {"r"}), then the read fails
    wait_until(lambda: not armed["on"], 20)
    wait_until(lambda: b.is_leader and not a.is_leader, 20)
    passes = a.passes
    wait_until(lambda: a.passes > passes + 3 and a._member_child is not None, 20)
    assert all(leading for leading, _ in calls), calls
    assert zk.exists(paths.done_marker("x", 0)) is not None
