"""An idle cluster makes no ZooKeeper writes: reconciles and lease renewals are reads."""

from __future__ import annotations

import re

from tests.integration.test_node import RECORD_TASK, make_config, running, start
from tests.util import wait_until
from xconsumer.node import Node
from xconsumer.zkserver import ZooKeeperServer, four_letter_word

PASSES = 3  # periodic reconciles (reconcile_interval 0.5 s) every node must make while idle


def zxid(server: ZooKeeperServer) -> int:
    text = four_letter_word("127.0.0.1", server.port, "srvr")
    return int(re.search(r"Zxid: (0x[0-9a-f]+)", text).group(1), 16)


def lease_end(node: Node) -> float:
    """When the node's lease ends, on the lease's own clock: it moves on every renewal."""
    return node.lease.now() + node.lease.remaining()


def test_idle_cluster_does_not_write(tmp_path, zk_root, nodes, record, local_zookeeper):
    with ZooKeeperServer(data_dir=tmp_path / "zk") as server:
        config = make_config(server.hosts, zk_root, RECORD_TASK, session_timeout=2.0)
        started = [start(nodes, config, name) for name in ("a", "b", "c")]
        paths = started[0].paths

        def settled() -> bool:
            # Three nodes, three slots: one running slot each, nothing else on any node.
            states = [[s.state for s in n.runtime.statuses()] for n in started]
            return (set().union(*(running(n) for n in started)) == {"r/0", "r/1", "r/2"}
                    and states == [["running"]] * 3
                    and len(started[0].client.get_children(paths.owner_task("r"))) == 3)

        wait_until(settled, 20)
        before = zxid(server)
        passes = [n.passes for n in started]
        leases = [lease_end(n) for n in started]
        # A steady state that must hold: every node makes several reconcile passes and renews
        # its lease (every 1/3 s), and none of it may write.
        wait_until(lambda: all(n.passes >= p + PASSES and lease_end(n) > end
                               for n, p, end in zip(started, passes, leases, strict=True)),
                   20, message=lambda: f"passes {[n.passes for n in started]} from {passes}")
        assert zxid(server) == before
        for node in started:
            node.stop(timeout=5)
