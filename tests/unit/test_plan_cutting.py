"""Per-node plans, pure parts: a plan cut from a document gives its node exactly what the
document gives it (keys and task definitions included), through the bytes a follower reads;
the writes are cut into transactions ZooKeeper accepts, in order."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from xconsumer.assignment import Member, round_robin
from xconsumer.codecs import decode_assignment, decode_plan, plan_desired, plan_slots
from xconsumer.config import TaskConfig
from xconsumer.leader import build_doc, with_keys
from xconsumer.membership import MemberRecord
from xconsumer.overrides import effective_tasks
from xconsumer.plans import OP_OVERHEAD, TX_BUDGET, chunks, node_plan
from xconsumer.zk import encode

names = st.lists(st.sampled_from(["a", "b", "c", "d", "e"]), min_size=1, max_size=5,
                 unique=True)


@settings(max_examples=150, deadline=None)
@given(nodes=names, counts=st.lists(st.integers(0, 9), min_size=1, max_size=4),
       keyed=st.lists(st.booleans(), min_size=4, max_size=4), data=st.data())
def test_a_plan_gives_its_node_what_the_document_gives_it(nodes, counts, keyed, data) -> None:
    table = []
    keys = {}
    for i, n in enumerate(counts):
        if keyed[i]:
            table.append(TaskConfig.from_dict({"name": f"t{i}", "workName": "w", "keys": "k"},
                                              where="t"))
            keys[f"t{i}"] = data.draw(st.lists(st.text(min_size=1, max_size=5), max_size=n,
                                               unique=True))
        else:
            table.append(TaskConfig.from_dict({"name": f"t{i}", "workName": "w",
                                               "workerNum": n,
                                               "params": [{"p": j} for j in range(n)]},
                                              where="t"))
    tasks, used = with_keys(effective_tasks(table, {}), keys)
    members = [Member(name=n, seq=i) for i, n in enumerate(nodes)]
    plan = round_robin([t.task for t in tasks], members, leader=nodes[0])
    doc = build_doc(plan=plan, tasks=tasks, leader=nodes[0], strategy="round_robin",
                    members=[MemberRecord(f"n-{i:010d}", i, {"id": n})
                             for i, n in enumerate(nodes)],
                    generation=5, keys=used)
    published = decode_assignment(encode(doc), "/assignment")
    assert isinstance(published, dict)
    for node in nodes:
        content = node_plan(published, node, "n-0000000000")
        raw = encode({**content, "generation": 5})
        decoded = decode_plan(raw, f"/plans/{node}")
        assert isinstance(decoded, dict), decoded
        assert plan_desired(decoded) == plan_slots(published, node)
        # Equal work gives an equal plan: what the leader compares before it writes.
        assert node_plan(published, node, "n-0000000000") == content


@given(sizes=st.lists(st.integers(1, TX_BUDGET), max_size=30),
       room=st.integers(0, TX_BUDGET))
def test_plan_writes_are_cut_into_transactions_in_order(sizes, room) -> None:
    writes = [(f"n{i}", b"x" * size, False) for i, size in enumerate(sizes)]
    parts = chunks(writes, room)
    assert [w for part in parts for w in part] == writes
    for i, part in enumerate(parts):
        used = sum(len(w[1]) + OP_OVERHEAD for w in part)
        # A single write past the budget goes alone (ZooKeeper will say no to it alone).
        assert used <= (room if i == 0 else TX_BUDGET) or len(part) == 1 and (
            i > 0 or room == TX_BUDGET)
        assert part or i == 0
