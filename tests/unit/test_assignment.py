"""Assignment strategies are pure functions: tested here without ZooKeeper."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from xconsumer.assignment import (
    Member,
    Plan,
    Slot,
    dealing_order,
    get_strategy,
    moved_slots,
    round_robin,
)


@dataclass(frozen=True)
class T:
    name: str
    work_name: str
    worker_num: int


ALL = frozenset({"RunA", "RunB"})


def members(*names: str, handlers=ALL) -> list[Member]:
    return [Member(n, i, handlers) for i, n in enumerate(names)]


def keys(plan: Plan) -> dict[str, list[str]]:
    return {n: [s.key for s in slots] for n, slots in plan.nodes.items()}


def test_dealing_order_is_followers_in_sequence_then_leader():
    ms = [Member("c", 7), Member("a", 3), Member("b", 5)]
    assert [m.name for m in dealing_order(ms, "a")] == ["b", "c", "a"]
    assert [m.name for m in dealing_order(ms, "a", leader_works=False)] == ["b", "c"]


def test_round_robin_one_pointer_across_tasks_leader_last():
    tasks = [T("x", "a", 4), T("y", "b", 3)]
    plan = round_robin(tasks, members("L", "F1", "F2"), leader="L")
    assert keys(plan) == {
        "F1": ["x/0", "x/3", "y/2"],
        "F2": ["x/1", "y/0"],
        "L": ["x/2", "y/1"],
    }
    assert plan.unassigned == ()


def test_round_robin_counts_differ_by_at_most_one():
    plan = round_robin([T("x", "a", 17)], members("a", "b", "c", "d", "e"), leader="a")
    sizes = [len(s) for s in plan.nodes.values()]
    assert max(sizes) - min(sizes) <= 1 and sum(sizes) == 17
    # The leader is dealt last, so it is never among the most loaded when counts differ.
    assert len(plan.nodes["a"]) == min(sizes)


def test_only_nodes_with_the_handler_get_its_slots():
    ms = [Member("L", 0, frozenset({"RunA"})), Member("F", 1, frozenset({"RunB"}))]
    plan = round_robin([T("x", "a", 3), T("y", "b", 2)], ms, leader="L")
    assert keys(plan) == {"F": ["y/0", "y/1"], "L": ["x/0", "x/1", "x/2"]}


def test_exact_handler_name_is_accepted():
    ms = [Member("L", 0, frozenset({"Runtest01"}))]
    plan = round_robin([T("x", "test01", 1)], ms, leader="L")
    assert keys(plan) == {"L": ["x/0"]}


def test_works_restriction_and_draining_exclude_nodes():
    ms = [Member("L", 0, ALL, works=frozenset({"b"})), Member("F", 1, ALL, draining=True),
          Member("G", 2, ALL)]
    plan = round_robin([T("x", "a", 2), T("y", "b", 2)], ms, leader="L")
    assert keys(plan) == {"F": [], "G": ["x/0", "x/1", "y/1"], "L": ["y/0"]}


def test_no_eligible_node_leaves_slots_unassigned():
    plan = round_robin([T("x", "zzz", 2)], members("a", "b"), leader="a")
    assert plan.unassigned == (Slot("x", 0), Slot("x", 1))
    assert all(not s for s in plan.nodes.values())


def test_no_members_and_zero_workers():
    assert round_robin([T("x", "a", 2)], [], leader=None).unassigned == (Slot("x", 0),
                                                                        Slot("x", 1))
    assert keys(round_robin([T("x", "a", 0)], members("a"), leader="a")) == {"a": []}


def test_leader_without_work_gets_nothing():
    plan = round_robin([T("x", "a", 3)], members("L", "F"), leader="L", leader_works=False)
    assert keys(plan) == {"F": ["x/0", "x/1", "x/2"]}


def test_deterministic_whatever_the_input_order():
    tasks = [T("x", "a", 5), T("y", "b", 4)]
    ms = members("a", "b", "c")
    assert round_robin(tasks, ms, leader="a") == round_robin(tasks, ms[::-1], leader="a")


def test_strategy_registry():
    assert get_strategy("round_robin") is round_robin
    with pytest.raises(ValueError, match="unknown assignment strategy 'nope'"):
        get_strategy("nope")


def test_moved_slots_counts_owner_changes():
    a = {"n1": [Slot("x", 0), Slot("x", 1)], "n2": [Slot("x", 2)]}
    b = {"n1": [Slot("x", 0)], "n2": [Slot("x", 2), Slot("x", 1)], "n3": [Slot("x", 3)]}
    assert moved_slots(a, b) == 2
    assert moved_slots(a, a) == 0
