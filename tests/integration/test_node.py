"""In-process nodes against a real ZooKeeper: session loss, fencing, stuck handlers, once
mode and retries. (Multi-process behaviour is covered in tests/e2e.)"""

from __future__ import annotations

from pathlib import Path

from kazoo.client import KazooClient

from tests.checker import load_records, worst_overlap_in_file
from tests.cluster import RECORD_WORKS
from tests.util import expire_session, wait_until
from xconsumer.config import Config, parse_config
from xconsumer.leader import publish, read_assignment
from xconsumer.membership import read_members
from xconsumer.node import Node
from xconsumer.overrides import effective_tasks
from xconsumer.paths import Paths
from xconsumer.works import discover
from xconsumer.zkserver import ZooKeeperServer


def make_config(zk_hosts: str, root: str, tasks: str, session_timeout: float = 2.0,
                reconcile: float = 0.5) -> Config:
    text = f"""
[cluster]
name = "it"
[zookeeper]
hosts = "{zk_hosts}"
root = "{root}"
session_timeout = {session_timeout}
connect_timeout = 10
[admin]
enabled = false
[node]
reconcile_interval = {reconcile}
{tasks}
"""
    return parse_config(text, source="test.toml", env={})


def start(nodes: list[Node], config: Config, name: str) -> Node:
    cfg = Config(cluster=config.cluster, zookeeper=config.zookeeper, admin=config.admin,
                 node=type(config.node)(**{**config.node.__dict__, "name": name}),
                 assignment=config.assignment, tasks=config.tasks, source=config.source)
    node = Node(cfg, discover(RECORD_WORKS))
    nodes.append(node)
    return node.start()


def records(path: Path) -> list[dict]:
    return load_records(path)


def running(node: Node) -> set[str]:
    return {f"{s.task}/{s.slot}" for s in node.runtime.statuses() if s.state == "running"}


RECORD_TASK = '[[task]]\nname = "r"\nworkName = "record"\nworkerNum = 3\nstop_timeout = 2\n'


def test_publish_is_fenced_on_the_leaders_member_znode(zk: KazooClient, zk_hosts, zk_root,
                                                       nodes, record):
    config = make_config(zk_hosts, zk_root, RECORD_TASK)
    node = start(nodes, config, "a")
    wait_until(lambda: running(node) == {"r/0", "r/1", "r/2"}, 15)
    paths = Paths(zk_root, "it")
    before, version = read_assignment(zk, paths)
    members = read_members(zk, paths)
    # A deposed leader: its member znode is gone, so its write must be refused.
    result = publish(zk, paths, my_child="n-9999999999", leader="ghost", members=members,
                     tasks=effective_tasks(config.tasks, {}), strategy="round_robin",
                     leader_works=False)
    assert result is None
    after, version_after = read_assignment(zk, paths)
    assert (after, version_after) == (before, version)


def test_frozen_zookeeper_ends_the_lease_then_slots_resume(tmp_path, zk_root, nodes, record,
                                                           local_zookeeper):
    with ZooKeeperServer(data_dir=tmp_path / "zk") as server:
        config = make_config(server.hosts, zk_root, RECORD_TASK, session_timeout=3.0)
        node = start(nodes, config, "a")
        wait_until(lambda: running(node) == {"r/0", "r/1", "r/2"}, 15)
        server.pause()  # no replies: kazoo may still think it is connected for a while
        try:
            # The lease (2/3 of the session) ends and every slot stops, before the session
            # could have expired on the server.
            wait_until(lambda: not node.runtime.running_slots(), 5,
                       message=lambda: str(node.node_view()))
            assert node.lease.remaining() <= 0
        finally:
            server.resume()
        # Connection (or a new session) comes back: the node proves membership and resumes.
        wait_until(lambda: running(node) == {"r/0", "r/1", "r/2"}, 20,
                   message=lambda: str(node.node_view()))
        # One node: its runs of a slot before and after the lease ended must not overlap.
        ov = worst_overlap_in_file(record)
        assert ov.seconds == 0, ov.where
        node.stop(timeout=5)


def test_session_expiry_stops_slots_and_the_node_rejoins(zk_hosts, zk_root, nodes, record):
    config = make_config(zk_hosts, zk_root, RECORD_TASK, session_timeout=2.0)
    node = start(nodes, config, "a")
    wait_until(lambda: running(node) == {"r/0", "r/1", "r/2"}, 15)
    first_znode = node.node_view()["znode"]
    first_session = node.client.client_id
    expire_session(node.client, zk_hosts)  # another client closes it by id
    # (a slot is running before its handler has written its start record)
    wait_until(lambda: node.client.client_id and node.client.client_id[0] != first_session[0]
               and running(node) == {"r/0", "r/1", "r/2"}
               and sum(r["e"] == "start" for r in records(record)) >= 6, 30,
               message=lambda: str(node.node_view()))
    assert node.node_view()["znode"] != first_znode
    # Every run that started on the old session had stopped before the new one started.
    ov = worst_overlap_in_file(record)
    assert ov.seconds == 0, ov.where
    starts = [r for r in records(record) if r["e"] == "start"]
    assert len(starts) == 6


def test_zookeeper_restart_keeps_the_session_and_slots_resume(tmp_path, zk_root, nodes, record,
                                                              local_zookeeper):
    with ZooKeeperServer(data_dir=tmp_path / "zk") as server:
        config = make_config(server.hosts, zk_root, RECORD_TASK, session_timeout=8.0)
        node = start(nodes, config, "a")
        wait_until(lambda: running(node) == {"r/0", "r/1", "r/2"}, 15)
        session = node.client.client_id[0]
        # 8 s: the session must outlive the restart (a JVM start can take seconds on a busy
        # 2-core machine) for this test to be about a surviving session. A reconnect that
        # lands while the new server is still loading is never answered (ZooKeeper 3.8.0);
        # make_client drops it after a third of the session (tests/unit/test_zk_client.py),
        # where kazoo alone waited the whole session and lost it.
        server.restart()
        # The server restores sessions from its log; ours survives, the node keeps its
        # owner znodes and fences, and every slot runs again.
        wait_until(lambda: node.client.connected and running(node) == {"r/0", "r/1", "r/2"}
                   and node.lease.valid(), 20, message=lambda: str(node.node_view()))
        assert node.client.client_id[0] == session
        node.stop(timeout=5)


def test_stuck_handler_keeps_its_owner_znode_until_it_really_ends(zk: KazooClient, zk_hosts,
                                                                  zk_root, nodes, record):
    task = ('[[task]]\nname = "s"\nworkName = "stubborn"\nworkerNum = 1\n'
            'stop_timeout = 0.5\n')
    config = make_config(zk_hosts, zk_root, task)
    a = start(nodes, config, "a")
    wait_until(lambda: any(r["e"] == "start" for r in records(record)), 15)
    paths = Paths(zk_root, "it")
    owner_session = zk.exists(paths.owner("s", 0)).ephemeralOwner
    assert owner_session == a.client.client_id[0]
    b = start(nodes, config, "b")  # b is first in the dealing order: the slot moves to b
    wait_until(lambda: any(s.state == "stuck" for s in a.runtime.statuses()), 10,
               message=lambda: str(a.node_view()))
    # Still owned by a, and b is waiting rather than running it a second time.
    assert zk.exists(paths.owner("s", 0)).ephemeralOwner == owner_session
    wait_until(lambda: any(s.state == "waiting" for s in b.runtime.statuses()), 10)
    (record.parent / "release").write_text("go")
    wait_until(lambda: sum(r["e"] == "start" for r in records(record)) == 2, 15)
    ov = worst_overlap_in_file(record)
    assert ov.seconds == 0, ov.where
    assert zk.exists(paths.owner("s", 0)).ephemeralOwner == b.client.client_id[0]


def test_once_mode_runs_each_slot_once_even_across_a_restart(zk: KazooClient, zk_hosts,
                                                             zk_root, nodes, record):
    task = '[[task]]\nname = "o"\nworkName = "once"\nworkerNum = 2\nmode = "once"\n'
    config = make_config(zk_hosts, zk_root, task)
    a = start(nodes, config, "a")
    paths = Paths(zk_root, "it")
    wait_until(lambda: zk.exists(paths.done_marker("o", 0)) and
               zk.exists(paths.done_marker("o", 1)), 15)
    wait_until(lambda: {s.state for s in a.runtime.statuses()} == {"done"}, 5)
    assert a.cluster_view()["done"] == ["o/0", "o/1"]
    a.stop(timeout=5)
    start(nodes, config, "b")
    wait_until(lambda: read_assignment(zk, paths)[0]["leader"] == "b", 10)
    assert sum(r["e"] == "start" for r in records(record)) == 2


def test_failing_handler_is_retried_with_backoff(zk_hosts, zk_root, nodes, record):
    task = ('[[task]]\nname = "f"\nworkName = "flaky"\nworkerNum = 1\n'
            'retry_backoff = 0.05\nretry_backoff_max = 0.2\n')
    node = start(nodes, make_config(zk_hosts, zk_root, task), "a")
    # Seven failures, six gaps: 0.05, 0.1, then the 0.2 cap four times (uncapped: up to 1.6).
    wait_until(lambda: sum(r["e"] == "fail" for r in records(record)) >= 7, 15)
    status = node.runtime.statuses()[0]
    assert status.failures >= 4
    assert status.last_error == "RuntimeError: flaky handler failed on purpose"
    fails = [r["t"] for r in records(record) if r["e"] == "fail"]
    gaps = [b - a for a, b in zip(fails, fails[1:], strict=False)]
    assert gaps[0] >= 0.04  # first backoff
    # Capped at 0.2 s: late only by scheduling, which a loaded machine stretches; an uncapped
    # doubling would reach 1.6 s by the sixth retry.
    assert max(gaps[:6]) < 2 * 0.2 + 1.0
