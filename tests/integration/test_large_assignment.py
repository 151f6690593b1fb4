"""Assignment data stays under ZooKeeper's 1 MB znode limit at 100,000 slots."""

from __future__ import annotations

import time

import pytest
from kazoo.client import KazooClient

from xconsumer.assignment import STRATEGIES
from xconsumer.config import TaskConfig
from xconsumer.leader import doc_plan, publish, read_assignment
from xconsumer.membership import MemberRecord
from xconsumer.overrides import effective_tasks
from xconsumer.paths import Paths
from xconsumer.zk import ZNODE_LIMIT, dumps, encode, loads


def members(n: int) -> list[MemberRecord]:
    return [MemberRecord(f"n-{i:010d}", i, {"id": f"node-{i:04d}", "handlers": ["RunWork"]})
            for i in range(n)]


TASKS = [TaskConfig(name=f"task-{t:02d}", work_name="work", worker_num=10_000)
         for t in range(10)]


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_100k_slots_over_1000_nodes_publish_and_read_back(zk: KazooClient, zk_root: str,
                                                          strategy: str):
    paths = Paths(zk_root, "big")
    zk.ensure_path(paths.nodes)
    leader_path = zk.create(paths.node_prefix, b"{}", ephemeral=True, sequence=True)
    recs = members(1000)
    recs[0] = MemberRecord(leader_path.rsplit("/", 1)[1], recs[0].seq, recs[0].data)
    started = time.perf_counter()
    result = publish(zk, paths, my_child=recs[0].child, leader="node-0000", members=recs,
                     tasks=effective_tasks(TASKS, {}), strategy=strategy, leader_works=True)
    elapsed = time.perf_counter() - started
    assert result is not None
    raw, stat = zk.get(paths.assignment)
    print(f"{strategy}: 100,000 slots / 1,000 nodes: plain JSON "
          f"{len(dumps(result.doc)):,} B, stored {stat.dataLength:,} B, "
          f"compute+publish {elapsed * 1e3:.0f} ms")
    assert stat.dataLength < ZNODE_LIMIT
    doc, _ = read_assignment(zk, paths)
    plan = doc_plan(doc)
    assert sum(len(s) for s in plan.values()) == 100_000
    assert plan == doc_plan(result.doc)
    sizes = [len(s) for s in plan.values()]
    if strategy == "consistent_hash":  # bounded load: at most ceil(fair share x 1.25)
        assert max(sizes) <= 125
    else:
        assert max(sizes) - min(sizes) <= 1


def test_encode_round_trips_and_refuses_what_cannot_fit():
    small = {"a": 1}
    assert encode(small) == dumps(small)
    big = {"x": list(range(200_000))}
    blob = encode(big)
    assert blob.startswith(b"XCZ1") and len(blob) < len(dumps(big))
    assert loads(blob, where="test") == big
    with pytest.raises(ValueError, match="znode limit"):
        encode({"x": [str(i) * 7 for i in range(400_000)]}, limit=10_000)
    with pytest.raises(ValueError, match="not valid JSON"):
        loads(b"XCZ1garbage", where="/x")
