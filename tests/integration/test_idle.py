"""An idle cluster makes no ZooKeeper writes: reconciles and lease renewals are reads."""

from __future__ import annotations

import re
import threading

from tests.integration.test_node import RECORD_TASK, make_config, running, start
from tests.util import wait_until
from xconsumer.zkserver import ZooKeeperServer, four_letter_word


def zxid(server: ZooKeeperServer) -> int:
    text = four_letter_word("127.0.0.1", server.port, "srvr")
    return int(re.search(r"Zxid: (0x[0-9a-f]+)", text).group(1), 16)


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
        # An observation window, not a synchronisation: several reconcile passes (0.5 s) and
        # lease renewals (every 1/3 s) happen in it, and none may write.
        threading.Event().wait(3.0)
        assert zxid(server) == before
        for node in started:
            node.stop(timeout=5)
