"""Data in ZooKeeper written by someone else (corrupt or foreign) must not stop the cluster
or lose anything that can be kept."""

from __future__ import annotations

import pytest
from kazoo.client import KazooClient

from tests.integration.test_node import RECORD_TASK, make_config, running, start
from tests.util import wait_until
from xconsumer.leader import read_assignment
from xconsumer.paths import Paths

SLOTS = {"r/0", "r/1", "r/2"}


@pytest.fixture
def leader(zk_hosts, zk_root, nodes, record):
    node = start(nodes, make_config(zk_hosts, zk_root, RECORD_TASK), "a")
    wait_until(lambda: running(node) == SLOTS, 15)
    return node


def test_corrupt_assignment_is_rewritten_by_the_leader(zk: KazooClient, zk_root, leader):
    paths = Paths(zk_root, "it")
    _, before = read_assignment(zk, paths)
    zk.set(paths.assignment, b"\x00not json{")
    wait_until(lambda: isinstance(read_assignment(zk, paths)[0], dict), 15)
    doc, version = read_assignment(zk, paths)
    assert version > before and doc["leader"] == "a"
    assert running(leader) == SLOTS


def test_foreign_member_znode_gets_no_slots_nor_holds_the_leadership(
        zk: KazooClient, zk_root, nodes, zk_hosts, record):
    paths = Paths(zk_root, "it")
    zk.ensure_path(paths.nodes)
    # Sorts before any real node: by the sequence it leads, until it has stayed corrupt
    # past two session timeouts and is taken as foreign.
    zk.create(paths.node_prefix, b"garbage", ephemeral=True, sequence=True)
    node = start(nodes, make_config(zk_hosts, zk_root, RECORD_TASK), "a")
    wait_until(lambda: running(node) == SLOTS, 20)
    assert node.is_leader
    doc, _ = read_assignment(zk, paths)
    assert list(doc["nodes"]) == ["a"]


def test_corrupt_overrides_never_written_valid_mean_app_toml(zk: KazooClient, zk_root, leader):
    paths = Paths(zk_root, "it")
    passes = leader.passes
    zk.create(paths.overrides, b"[1, 2", makepath=True)
    leader._kick("test")
    # The leader's own read, and a pass after it (read() below reads the znode itself, so a
    # wait on it would not wait for the leader).
    wait_until(lambda: any(c["kind"] == "overrides" for c in leader.node_view()["corrupt"])
               and leader.passes >= passes + 2, 10)
    assert leader.overrides.read()[1] == 0
    assert leader.overrides.read()[0]["tasks"] == {}
    assert running(leader) == SLOTS
    # The next change replaces the unreadable document with a valid one.
    from xconsumer.overrides import update_task

    leader.overrides.update(lambda d: update_task(d, leader.seed_tasks(), "r", {"workerNum": 2}))
    wait_until(lambda: running(leader) == {"r/0", "r/1"}, 15)


def test_corrupt_owner_znode_data_does_not_break_views(zk: KazooClient, zk_root, leader):
    paths = Paths(zk_root, "it")
    path = paths.owner("r", 0)
    stat = zk.exists(path)
    zk.set(path, b"{{{", version=stat.version)
    view = leader.cluster_view()
    # The owner is found by the session holding the znode, which no edit can change.
    assert view["owners"] == {"r/0": "a", "r/1": "a", "r/2": "a"}
    assert [c["znode"] for c in view["corrupt"]] == [path]
    assert running(leader) == SLOTS
