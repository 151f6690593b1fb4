"""Flapping: a node that drops and comes back within `rejoin_grace` gets its own slots back
and nothing else moves; a graceful leave moves slots at once whatever the grace."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster import Cluster
from tests.util import wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture
def cluster(tmp_path: Path, zk_hosts: str, zk_root: str) -> Iterator[Cluster]:
    c = Cluster(tmp_path, zk_hosts, zk_root,
                [{"name": "a", "workName": "record", "workerNum": 6}],
                extra={"assignment": {"strategy": "sticky", "rejoin_grace": 20}})
    try:
        for name in ("n1", "n2", "n3"):
            c.start_node(name)
        c.wait_converged({"n1", "n2", "n3"})
        yield c
    finally:
        c.close()


def member_znode(cluster: Cluster, name: str) -> str | None:
    return next((n["znode"] for n in cluster.view()["nodes"] if n["id"] == name), None)


def test_a_node_that_flaps_gets_its_slots_back_and_nothing_else_moves(cluster: Cluster):
    before = cluster.view()
    n2_slots = before["assignment"]["n2"]
    others = {k: f for k, f in before["fences"].items() if before["owners"][k] != "n2"}
    first = member_znode(cluster, "n2")
    assert first is not None
    cluster.nodes["n2"].freeze()
    try:
        # Frozen until its session expired (its member znode is gone), so that it comes back
        # as a new member under the same name.
        wait_until(lambda: member_znode(cluster, "n2") is None,
                   cluster.session_timeout + 15, message="n2's session never expired")
    finally:
        cluster.nodes["n2"].signal(signal.SIGCONT)
    # The rejoin itself: a new member znode for n2, not the first join's.
    wait_until(lambda: member_znode(cluster, "n2") not in (None, first), 20,
               message="n2 did not rejoin")
    view = cluster.wait_converged({"n1", "n2", "n3"}, timeout=20)
    assert view["assignment"]["n2"] == n2_slots
    # The other nodes' slots never moved: same owner znodes (same fencing tokens).
    assert {k: view["fences"][k] for k in others} == others
    # n2's runs from before the freeze ended before its runs after the rejoin began.
    ov = cluster.worst_overlap()
    assert ov.seconds == 0, ov.where


def test_a_graceful_leave_moves_slots_at_once_despite_the_grace(cluster: Cluster):
    assert cluster.nodes["n3"].terminate() == 0
    cluster.wait_converged({"n1", "n2"}, timeout=10)
