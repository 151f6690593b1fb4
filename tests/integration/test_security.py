"""Digest authentication and ACLs: without the credentials nobody can change the cluster."""

from __future__ import annotations

from dataclasses import replace

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import NoAuthError

from tests.integration.test_node import RECORD_TASK, make_config, running, start
from tests.util import wait_until
from xconsumer.paths import Paths


def secure_config(zk_hosts: str, root: str, *, read_world: bool):
    config = make_config(zk_hosts, root, RECORD_TASK)
    return replace(config, zookeeper=replace(config.zookeeper, auth="xc:s3cret",
                                             acl_read_world=read_world))


def test_without_credentials_the_cluster_can_be_read_but_not_changed(zk: KazooClient,
                                                                      zk_hosts, zk_root,
                                                                      nodes, record):
    node = start(nodes, secure_config(zk_hosts, zk_root, read_world=True), "a")
    wait_until(lambda: running(node) == {"r/0", "r/1", "r/2"}, 15)
    paths = Paths(zk_root, "it")
    raw, stat = zk.get(paths.assignment)  # world-readable
    assert raw
    with pytest.raises(NoAuthError):
        zk.set(paths.assignment, b"{}", version=stat.version)
    with pytest.raises(NoAuthError):
        zk.create(paths.node_prefix, b"{}", ephemeral=True, sequence=True)
    with pytest.raises(NoAuthError):
        zk.create(paths.overrides, b"{}")
    member = zk.get_children(paths.nodes)[0]
    with pytest.raises(NoAuthError):
        zk.set(paths.node(member), b"{}")
    owner = paths.owner("r", 0)
    with pytest.raises(NoAuthError):
        zk.delete(owner)
    # With the credentials, a client (an operator's tool) may change things.
    admin = KazooClient(hosts=zk_hosts, auth_data=[("digest", "xc:s3cret")])
    admin.start(timeout=10)
    try:
        assert admin.exists(paths.assignment) is not None
        admin.set(paths.assignment, admin.get(paths.assignment)[0])
    finally:
        admin.stop()
        admin.close()
    assert running(node) == {"r/0", "r/1", "r/2"}


def test_read_world_off_hides_the_cluster(zk: KazooClient, zk_hosts, zk_root, nodes, record):
    node = start(nodes, secure_config(zk_hosts, zk_root, read_world=False), "a")
    wait_until(lambda: running(node) == {"r/0", "r/1", "r/2"}, 15)
    with pytest.raises(NoAuthError):
        zk.get(Paths(zk_root, "it").assignment)
