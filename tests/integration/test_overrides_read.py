"""OverrideStore.read against real ZooKeeper: the overrides znode made between the read's
get (no znode) and the exists that sets its watch is read, not taken for "none" until the
next change (found by review; older than the takeover's reads sent ahead, which answer
for that pair)."""

from __future__ import annotations

from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError

from tests.util import wait_until
from xconsumer.overrides import OverrideStore
from xconsumer.paths import Paths
from xconsumer.zk import dumps


def test_overrides_made_between_the_get_and_the_exists_are_read(zk: KazooClient,
                                                                  zk_root: str) -> None:
    paths = Paths(zk_root, "it")
    store = OverrideStore(zk, paths.overrides)
    fired: list[object] = []
    zk.create(paths.overrides, dumps({"rebalance": 7}), makepath=True)
    missing = zk.handler.async_result()
    missing.set_exception(NoNodeError())  # the get, answered before the create
    found = zk.exists_async(paths.overrides, watch=fired.append)  # the exists, after it
    doc, version = store.read(watch=fired.append, ahead=(missing, found))
    assert doc.get("rebalance") == 7 and version == 0


def test_no_overrides_is_none_and_their_creation_wakes_the_reader(zk: KazooClient,
                                                                   zk_root: str) -> None:
    paths = Paths(zk_root, "it")
    store = OverrideStore(zk, paths.overrides)
    fired: list[object] = []
    assert store.read(watch=fired.append)[1] == -1
    zk.create(paths.overrides, dumps({"rebalance": 1}), makepath=True)
    wait_until(lambda: fired, 5)
