"""What the leader remembers of the document it wrote (leader.DocMemo) must be what reading
it back would give: the same previous plan, in the same order, for every strategy (a user
strategy may depend on the order; found by review)."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.strategy_cases import clusters
from xconsumer.codecs import decode_assignment, doc_plan
from xconsumer.config import TaskConfig
from xconsumer.leader import DocMemo, build_doc
from xconsumer.membership import MemberRecord
from xconsumer.overrides import EffectiveTask
from xconsumer.strategies import STRATEGIES, Plan
from xconsumer.zk import encode


@settings(max_examples=200, deadline=None)
@given(case=clusters(), name=st.sampled_from(sorted(STRATEGIES)),
       rnd=st.randoms(use_true_random=False), shuffle=st.booleans())
def test_property_remembered_plan_is_the_plan_read_back(case, name, rnd: random.Random,
                                                         shuffle: bool):
    tasks, ms, leader, leader_works, previous = case
    plan = STRATEGIES[name](tasks, ms, leader=leader, leader_works=leader_works,
                            previous=previous)
    if shuffle:  # a user strategy may list a node's slots in any order
        plan = Plan({n: tuple(rnd.sample(list(s), len(s)))
                     for n, s in rnd.sample(list(plan.nodes.items()), len(plan.nodes))},
                    plan.unassigned)
    effective = [EffectiveTask(TaskConfig(name=t.name, work_name=t.work_name,
                                          worker_num=t.worker_num), False, "app.toml", ())
                 for t in tasks]
    records = [MemberRecord(f"n-{m.seq:010d}", m.seq, {"id": m.name}) for m in ms]
    doc = build_doc(plan=plan, tasks=effective, leader=leader or "", strategy=name,
                    members=records, generation=2)
    memo = DocMemo()
    memo.remember(7, doc, plan)
    read_back = decode_assignment(encode(doc), "/assignment")
    assert isinstance(read_back, dict)
    remembered, expected = memo.plan_of(doc), doc_plan(read_back)
    assert list(remembered) == list(expected)
    assert all(remembered[n] == expected[n] for n in expected)
    assert memo.plan_of(doc) is remembered  # built once
