"""Batched claims (Runtime._claim): a generation's free slots get their owner znodes in one
transaction; a slot whose previous owner still holds its znode is left out and waits for
it as always. Real ZooKeeper, a real in-process node."""

from __future__ import annotations

from kazoo.client import KazooClient

from tests.conftest import _client
from tests.integration.test_node import make_config, running, start
from tests.util import wait_until
from xconsumer.paths import Paths
from xconsumer.zk import dumps

TASK = '[[task]]\nname = "r"\nworkName = "record"\nworkerNum = 6\nstop_timeout = 2\n'
ALL = {f"r/{i}" for i in range(6)}


def fences(node) -> dict[str, int]:
    return {f"{s.task}/{s.slot}": s.fence for s in node.runtime.statuses()
            if s.state == "running"}


def test_free_slots_are_claimed_in_one_transaction(zk: KazooClient, zk_hosts, zk_root, nodes,
                                                   record) -> None:
    a = start(nodes, make_config(zk_hosts, zk_root, TASK), "a")
    wait_until(lambda: running(a) == ALL, 15)
    paths = Paths(zk_root, "it")
    stats = [zk.exists(paths.owner("r", i)) for i in range(6)]
    czxids = {stat.czxid for stat in stats}
    assert len(czxids) == 1  # one transaction made them all
    assert {stat.ephemeralOwner for stat in stats} == {a._session_id()}  # ephemeral, ours
    assert set(fences(a).values()) == czxids  # and each runner knows it as its fence


def test_a_held_slot_is_left_out_of_the_claim_and_waits_for_its_owner(
        zk: KazooClient, zk_hosts, zk_root, nodes, record) -> None:
    paths = Paths(zk_root, "it")
    other = _client(zk_hosts)  # another session holds r/2, as an owner still ending would
    other.start()
    other.create(paths.owner("r", 2), dumps({"node": "old"}), ephemeral=True, makepath=True)
    a = start(nodes, make_config(zk_hosts, zk_root, TASK), "a")
    wait_until(lambda: running(a) == ALL - {"r/2"}, 15)
    assert len(set(fences(a).values())) == 1
    waiting = [s for s in a.runtime.statuses() if s.slot == 2]
    assert [s.state for s in waiting] == ["waiting"]
    other.stop()
    other.close()
    wait_until(lambda: running(a) == ALL, 15)
    held = fences(a)
    stat = zk.exists(paths.owner("r", 2))  # made by the slot's own thread, once free
    assert held["r/2"] == stat.czxid != held["r/0"]
    assert stat.ephemeralOwner == a._session_id()
