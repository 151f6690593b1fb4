"""Assignment strategies are pure functions: tested here without ZooKeeper."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from xconsumer.assignment import (
    MAX_TURNS,
    STRATEGIES,
    Member,
    Plan,
    Slot,
    dealing_order,
    get_strategy,
    moved_slots,
    round_robin,
    sticky,
)


@dataclass(frozen=True)
class T:
    name: str
    work_name: str
    worker_num: int


@dataclass(frozen=True)
class Limited(T):
    max_per_node: int | None = None


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
    assert get_strategy("sticky") is sticky
    assert set(STRATEGIES) == {"balanced", "round_robin", "sticky", "consistent_hash"}
    with pytest.raises(ValueError, match="unknown assignment strategy 'nope'"):
        get_strategy("nope")


def test_moved_slots_counts_owner_changes():
    a = {"n1": [Slot("x", 0), Slot("x", 1)], "n2": [Slot("x", 2)]}
    b = {"n1": [Slot("x", 0)], "n2": [Slot("x", 2), Slot("x", 1)], "n3": [Slot("x", 3)]}
    assert moved_slots(a, b) == 2
    assert moved_slots(a, a) == 0


def test_moved_slots_accepts_plans():
    plan = round_robin([T("x", "a", 4)], members("a", "b"), leader="a")
    assert moved_slots(plan, plan.nodes) == 0
    assert moved_slots(plan, {}) == 4


# --- weights and max_per_node ------------------------------------------------------------


def weighted(*pairs: tuple[str, float]) -> list[Member]:
    return [Member(n, i, ALL, weight=w) for i, (n, w) in enumerate(pairs)]


def test_member_weight_defaults_to_one():
    assert Member("a", 0).weight == 1.0


def test_round_robin_equal_weights_other_than_one_change_nothing():
    tasks = [T("x", "a", 4), T("y", "b", 3)]
    heavy = weighted(("L", 3.0), ("F1", 3.0), ("F2", 3.0))
    assert round_robin(tasks, heavy, leader="L") == round_robin(tasks, members("L", "F1", "F2"),
                                                                 leader="L")


def test_round_robin_weighted_ring_gives_extra_turns_in_rounds():
    # followers first, leader last: ring B(2) C(1) L(1) B -> B gets every other slot
    ms = weighted(("L", 1.0), ("B", 2.0), ("C", 1.0))
    plan = round_robin([T("x", "a", 8)], ms, leader="L")
    assert keys(plan) == {"B": ["x/0", "x/3", "x/4", "x/7"], "C": ["x/1", "x/5"],
                          "L": ["x/2", "x/6"]}


def test_round_robin_weights_are_ratios_to_the_smallest():
    ms = weighted(("a", 0.5), ("b", 1.5))
    plan = round_robin([T("x", "a", 8)], ms, leader=None)
    assert {n: len(s) for n, s in plan.nodes.items()} == {"a": 2, "b": 6}


def test_round_robin_turns_are_capped():
    ms = weighted(("a", 1.0), ("b", 1e9))
    plan = round_robin([T("x", "a", MAX_TURNS + 1)], ms, leader=None)
    assert {n: len(s) for n, s in plan.nodes.items()} == {"a": 1, "b": MAX_TURNS}


def test_round_robin_max_per_node_skips_full_nodes_and_leaves_the_rest():
    plan = round_robin([Limited("x", "a", 7, max_per_node=2)], members("L", "F1", "F2"),
                       leader="L")
    assert keys(plan) == {"F1": ["x/0", "x/3"], "F2": ["x/1", "x/4"], "L": ["x/2", "x/5"]}
    assert plan.unassigned == (Slot("x", 6),)


def test_round_robin_max_per_node_is_per_task_and_keeps_the_pointer_moving():
    tasks = [Limited("x", "a", 3, max_per_node=1), T("y", "b", 3)]
    ms = [Member("L", 0, ALL), Member("F1", 1, ALL), Member("F2", 2, frozenset({"RunB"}))]
    plan = round_robin(tasks, ms, leader="L")
    # x: F1, (F2 cannot), L, then both full; y continues from the pointer after L
    assert keys(plan) == {"F1": ["x/0", "y/0"], "F2": ["y/1"], "L": ["x/1", "y/2"]}
    assert plan.unassigned == (Slot("x", 2),)


def test_round_robin_weights_and_max_per_node_together():
    ms = weighted(("a", 3.0), ("b", 1.0))
    plan = round_robin([Limited("x", "a", 8, max_per_node=3)], ms, leader=None)
    assert {n: len(s) for n, s in plan.nodes.items()} == {"a": 3, "b": 3}
    assert len(plan.unassigned) == 2
