"""The sticky strategy: as balanced as round robin, but a change moves only what it must.

Balance is checked against an independent, naive oracle (`fair_shares`, exact fractions):
every eligible node's count of a task is its exact share rounded down or up, and so is its
total. The property tests then throw random tasks, members and (possibly garbage) previous
plans at the strategy.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.strategy_cases import ALL, T, clusters
from xconsumer.assignment import (
    Member,
    Plan,
    Slot,
    balance_report,
    dealing_order,
    get_strategy,
    moved_slots,
    round_robin,
    sticky,
)


def members(*names: str, handlers: frozenset[str] = ALL) -> list[Member]:
    return [Member(n, i, handlers) for i, n in enumerate(names)]


def counts(plan: Plan) -> dict[str, int]:
    return {n: len(s) for n, s in plan.nodes.items()}


def spread(plan: Plan) -> int:
    sizes = list(counts(plan).values())
    return max(sizes) - min(sizes)


def kept_everywhere_but(before: Plan, after: Plan, *gone: str) -> bool:
    """Every node not in `gone` still has all of its slots."""
    return all(set(slots) <= set(after.nodes.get(n, ())) for n, slots in before.nodes.items()
               if n not in gone)


# --- the oracle ---------------------------------------------------------------------------


def fair_shares(tasks: Sequence[T], ms: Sequence[Member], leader: str | None,
                leader_works: bool = True) -> dict[str, dict[str, Fraction]]:
    """task -> node -> exact share, by plain water filling over the eligible nodes."""
    order = dealing_order(ms, leader, leader_works=leader_works)
    out: dict[str, dict[str, Fraction]] = {}
    for t in tasks:
        weight = {m.name: Fraction(repr(m.weight)) for m in order if m.can_run(t.work_name)}
        share: dict[str, Fraction] = {}
        left, active = Fraction(t.worker_num), list(weight)
        while active and t.max_per_node is not None:
            total = sum(weight[n] for n in active)
            over = [n for n in active if left * weight[n] / total > t.max_per_node]
            if not over:
                break
            share.update(dict.fromkeys(over, Fraction(t.max_per_node)))
            left -= t.max_per_node * len(over)
            active = [n for n in active if n not in over]
        total = sum((weight[n] for n in active), Fraction(0))
        share.update({n: left * weight[n] / total for n in active})
        out[t.name] = share
    return out


def assert_balanced(plan: Plan, tasks: Sequence[T], ms: Sequence[Member], leader: str | None,
                    leader_works: bool = True) -> None:
    shares = fair_shares(tasks, ms, leader, leader_works)
    order = dealing_order(ms, leader, leader_works=leader_works)
    assert set(plan.nodes) == {m.name for m in order}
    placed = [s for slots in plan.nodes.values() for s in slots] + list(plan.unassigned)
    assert len(placed) == len(set(placed)), "a slot is placed twice"
    assert set(placed) == {Slot(t.name, i) for t in tasks for i in range(t.worker_num)}
    per = {(n, s.task): 0 for n in plan.nodes for s in plan.nodes[n]}
    for n, slots in plan.nodes.items():
        for s in slots:
            per[(n, s.task)] += 1
    total = {m.name: Fraction(0) for m in order}
    for t in tasks:
        share = shares[t.name]
        assigned = sum(per.get((n, t.name), 0) for n in plan.nodes)
        # unassigned only when the eligible nodes' limits leave no room
        assert assigned == sum(share.values())
        for n in plan.nodes:
            got = per.get((n, t.name), 0)
            if n not in share:
                assert got == 0, f"{n} may not run {t.name}"
                continue
            assert math.floor(share[n]) <= got <= math.ceil(share[n]), (n, t.name, got)
            total[n] += share[n]
    for n, slots in plan.nodes.items():
        assert math.floor(total[n]) <= len(slots) <= math.ceil(total[n]), (n, len(slots))


# --- examples -----------------------------------------------------------------------------


def test_registered_as_a_strategy():
    assert get_strategy("sticky") is sticky


def test_without_previous_it_deals_like_round_robin_over_tasks_by_name():
    tasks = [T("y", "b", 3), T("x", "a", 4), T("z", "c", 7)]
    ms = members("L", "F1", "F2")
    assert sticky(tasks, ms, leader="L") == round_robin(sorted(tasks, key=lambda t: t.name), ms,
                                                        leader="L")


def test_single_task_is_even():
    plan = sticky([T("x", "a", 17)], members("a", "b", "c", "d", "e"), leader="a")
    assert spread(plan) <= 1 and sum(counts(plan).values()) == 17
    assert len(plan.nodes["a"]) == min(counts(plan).values())  # the leader is dealt last


def test_several_tasks_are_even_per_task_and_overall():
    tasks = [T("x", "a", 7), T("y", "b", 5), T("z", "c", 11)]
    ms = members("a", "b", "c", "d")
    plan = sticky(tasks, ms, leader="a")
    assert spread(plan) <= 1
    assert_balanced(plan, tasks, ms, "a")


@pytest.mark.parametrize("gone", ["L", "F1", "F3"])
def test_a_leave_moves_exactly_the_departed_nodes_slots(gone: str):
    tasks = [T("x", "a", 10), T("y", "b", 7), T("z", "c", 5)]
    ms = members("L", "F1", "F2", "F3")
    before = sticky(tasks, ms, leader="L")
    rest = [m for m in ms if m.name != gone]
    leader = "L" if gone != "L" else "F1"
    after = sticky(tasks, rest, leader=leader, previous=before)
    assert moved_slots(before, after) == len(before.nodes[gone])
    assert kept_everywhere_but(before, after, gone)
    assert_balanced(after, tasks, rest, leader)


def test_a_join_moves_exactly_what_the_new_node_receives():
    tasks = [T("x", "a", 100)]
    ms = members("a", "b", "c", "d")
    before = sticky(tasks, ms, leader="a")
    after = sticky(tasks, [*ms, Member("e", 9, ALL)], leader="a", previous=before)
    assert len(after.nodes["e"]) == 20
    assert moved_slots(before, after) == 20
    # the slots it got came from the others, highest indices first, nothing else changed
    assert all(set(after.nodes[n]) <= set(before.nodes[n]) for n in "abcd")


def test_a_join_with_several_tasks():
    tasks = [T("x", "a", 9), T("y", "b", 14), T("z", "c", 4)]
    ms = members("a", "b", "c", "d", "e")
    before = sticky(tasks, ms, leader="a")
    grown = [*ms, Member("f", 9, ALL)]
    after = sticky(tasks, grown, leader="a", previous=before)
    assert moved_slots(before, after) == len(after.nodes["f"]) == 27 // 6
    assert_balanced(after, tasks, grown, "a")


def test_rejoin_after_a_leave_is_balanced_again_and_moves_only_its_share():
    tasks = [T("x", "a", 12)]
    ms = members("a", "b", "c")
    first = sticky(tasks, ms, leader="a")
    smaller = sticky(tasks, ms[:2], leader="a", previous=first)
    again = sticky(tasks, ms, leader="a", previous=smaller)
    assert counts(again) == {"a": 4, "b": 4, "c": 4}
    assert moved_slots(smaller, again) == 4


def test_no_change_moves_nothing_whatever_the_previous_order():
    tasks = [T("x", "a", 13), T("y", "b", 6)]
    ms = members("a", "b", "c", "d")
    plan = sticky(tasks, ms, leader="a")
    shuffled = {n: list(reversed(s)) for n, s in reversed(list(plan.nodes.items()))}
    assert sticky(tasks, ms, leader="a", previous=shuffled) == plan
    assert sticky(tasks, ms, leader="a", previous=plan) == plan  # a Plan is accepted too


def test_a_balanced_round_robin_plan_is_kept_when_switching_strategy():
    tasks = [T("x", "a", 4), T("y", "b", 3)]
    ms = members("L", "F1", "F2")
    rr = round_robin(tasks, ms, leader="L")
    assert moved_slots(rr, sticky(tasks, ms, leader="L", previous=rr)) == 0


def test_unbalanced_previous_is_rebalanced_with_few_moves():
    tasks = [T("x", "a", 6)]
    ms = members("a", "b", "c")
    previous = {"a": [Slot("x", i) for i in range(6)]}
    plan = sticky(tasks, ms, leader="a", previous=previous)
    assert counts(plan) == {"a": 2, "b": 2, "c": 2}
    assert plan.nodes["a"] == (Slot("x", 0), Slot("x", 1))  # keeps its lowest indices
    assert moved_slots(previous, plan) == 4


def test_only_eligible_nodes_get_slots_and_lose_slots_they_may_no_longer_run():
    ms = [Member("L", 0, frozenset({"RunA"})), Member("F", 1, frozenset({"RunA", "RunB"})),
          Member("G", 2, ALL, works=frozenset({"b"}))]
    tasks = [T("x", "a", 4), T("y", "b", 4)]
    previous = {"G": [Slot("x", 0), Slot("y", 0)], "L": [Slot("y", 1)]}
    plan = sticky(tasks, ms, leader="L", previous=previous)
    assert_balanced(plan, tasks, ms, "L")
    assert {s.task for s in plan.nodes["L"]} == {"x"}
    assert {s.task for s in plan.nodes["G"]} == {"y"}
    assert Slot("y", 0) in plan.nodes["G"]  # still allowed, so it stays


def test_a_draining_node_hands_over_everything_and_nothing_else_moves():
    tasks = [T("x", "a", 9)]
    ms = members("a", "b", "c")
    before = sticky(tasks, ms, leader="a")
    draining = [ms[0], Member("b", 1, ALL, draining=True), ms[2]]
    after = sticky(tasks, draining, leader="a", previous=before)
    assert after.nodes["b"] == ()
    assert moved_slots(before, after) == len(before.nodes["b"])
    assert kept_everywhere_but(before, after, "b")


def test_leader_without_work_gets_nothing_even_if_it_had_slots():
    tasks = [T("x", "a", 4)]
    ms = members("L", "F", "G")
    before = sticky(tasks, ms, leader="L")
    after = sticky(tasks, ms, leader="L", leader_works=False, previous=before)
    assert "L" not in after.nodes
    assert counts(after) == {"F": 2, "G": 2}
    assert moved_slots(before, after) == len(before.nodes["L"])


def test_no_eligible_node_leaves_slots_unassigned():
    plan = sticky([T("x", "zzz", 2)], members("a", "b"), leader="a")
    assert plan.unassigned == (Slot("x", 0), Slot("x", 1))
    assert sticky([T("x", "a", 2)], [], leader=None).unassigned == (Slot("x", 0), Slot("x", 1))
    assert sticky([], members("a"), leader="a") == Plan({"a": ()}, ())
    assert sticky([T("x", "a", 0)], members("a"), leader="a") == Plan({"a": ()}, ())


# --- weights and limits -----------------------------------------------------------------


def test_weights_give_proportional_shares():
    ms = [Member("a", 0, ALL, weight=1.0), Member("b", 1, ALL, weight=2.0),
          Member("c", 2, ALL, weight=1.0)]
    plan = sticky([T("x", "a", 40)], ms, leader="a")
    assert counts(plan) == {"a": 10, "b": 20, "c": 10}


def test_fractional_weighted_shares_round_within_one():
    ms = [Member("a", 0, ALL, weight=1.0), Member("b", 1, ALL, weight=3.0)]
    tasks = [T("x", "a", 10), T("y", "b", 6)]
    plan = sticky(tasks, ms, leader="a")
    assert_balanced(plan, tasks, ms, "a")  # a: 2.5 + 1.5 = 4, b: 7.5 + 4.5 = 12
    assert counts(plan) == {"a": 4, "b": 12}


def test_equal_weights_other_than_one_are_equal_weights():
    tasks = [T("x", "a", 7)]
    heavy = [Member(n, i, ALL, weight=5.0) for i, n in enumerate("abc")]
    assert sticky(tasks, heavy, leader="a") == sticky(tasks, members("a", "b", "c"), leader="a")


def test_raising_a_weight_moves_only_the_slots_it_attracts():
    tasks = [T("x", "a", 12)]
    ms = members("a", "b", "c")
    before = sticky(tasks, ms, leader="a")
    heavier = [ms[0], ms[1], Member("c", 2, ALL, weight=2.0)]
    after = sticky(tasks, heavier, leader="a", previous=before)
    assert counts(after) == {"a": 3, "b": 3, "c": 6}
    assert moved_slots(before, after) == 2


def test_bad_weights_from_a_member_record_count_as_one():
    tasks = [T("x", "a", 6)]
    odd = [Member("a", 0, ALL, weight=0.0), Member("b", 1, ALL, weight=float("nan")),
           Member("c", 2, ALL, weight=-3.0)]
    assert counts(sticky(tasks, odd, leader="a")) == {"a": 2, "b": 2, "c": 2}


def test_max_per_node_leaves_the_rest_unassigned():
    plan = sticky([T("x", "a", 10, max_per_node=2)], members("a", "b", "c"), leader="a")
    assert counts(plan) == {"a": 2, "b": 2, "c": 2}
    assert plan.unassigned == tuple(Slot("x", i) for i in range(6, 10))


def test_max_per_node_trims_a_previous_plan_to_its_lowest_indices():
    tasks = [T("x", "a", 6, max_per_node=2)]
    previous = {"a": [Slot("x", i) for i in range(5)], "b": [Slot("x", 5)]}
    plan = sticky(tasks, members("a", "b"), leader="a", previous=previous)
    assert plan.nodes["a"] == (Slot("x", 0), Slot("x", 1))
    assert Slot("x", 5) in plan.nodes["b"] and len(plan.nodes["b"]) == 2
    assert len(plan.unassigned) == 2


def test_max_per_node_with_weights_fills_the_others_up():
    ms = [Member("a", 0, ALL, weight=1.0), Member("b", 1, ALL, weight=1.0),
          Member("c", 2, ALL, weight=4.0)]
    tasks = [T("x", "a", 12, max_per_node=5)]
    plan = sticky(tasks, ms, leader="a")
    # shares 2, 2, 8; c is capped at 5 and the other 3 are shared by a and b: 3.5 each
    assert len(plan.nodes["c"]) == 5
    assert sorted([len(plan.nodes["a"]), len(plan.nodes["b"])]) == [3, 4]
    assert len(plan.nodes["b"]) == 4  # b is dealt before the leader
    assert_balanced(plan, tasks, ms, "a")


# --- previous plans that no longer fit --------------------------------------------------


def test_previous_with_unknown_nodes_tasks_and_indices_beyond_a_scale_down():
    tasks = [T("x", "a", 4)]
    ms = members("a", "b")
    previous = {
        "ghost": [Slot("x", 0)],
        "a": [Slot("x", 1), Slot("x", 7), Slot("gone", 0), Slot("x", -1)],
        "b": [Slot("x", 2), Slot("x", 2)],
    }
    plan = sticky(tasks, ms, leader="a", previous=previous)
    assert_balanced(plan, tasks, ms, "a")
    assert Slot("x", 1) in plan.nodes["a"] and Slot("x", 2) in plan.nodes["b"]


def test_a_slot_claimed_by_two_nodes_stays_with_the_first_in_dealing_order():
    tasks = [T("x", "a", 2)]
    ms = members("L", "F")
    previous = {"L": [Slot("x", 0)], "F": [Slot("x", 0)]}
    plan = sticky(tasks, ms, leader="L", previous=previous)
    assert plan.nodes["F"] == (Slot("x", 0),)  # F is dealt before the leader
    assert plan.nodes["L"] == (Slot("x", 1),)


def test_scaling_a_task_down_keeps_the_low_indices_in_place():
    ms = members("a", "b", "c")
    before = sticky([T("x", "a", 12)], ms, leader="a")
    after = sticky([T("x", "a", 6)], ms, leader="a", previous=before)
    assert counts(after) == {"a": 2, "b": 2, "c": 2}
    assert all(set(after.nodes[n]) <= set(before.nodes[n]) for n in "abc")


def test_deterministic_whatever_the_input_order():
    tasks = [T("x", "a", 5), T("y", "b", 4), T("z", "c", 9)]
    ms = members("a", "b", "c", "d")
    previous = {"b": [Slot("x", 0), Slot("z", 3)], "d": [Slot("y", 1)]}
    one = sticky(tasks, ms, leader="a", previous=previous)
    other = sticky(tasks[::-1], ms[::-1], leader="a",
                   previous={k: v[::-1] for k, v in reversed(list(previous.items()))})
    assert one == other


def test_balance_report():
    plan = sticky([T("x", "a", 7), T("y", "b", 2)], members("a", "b", "c"), leader="a")
    report = balance_report(plan)
    assert report["nodes"] == 3 and report["slots"] == 9 and report["unassigned"] == 0
    assert (report["min"], report["max"], report["spread"]) == (3, 3, 0)
    assert report["per_task"]["x"] == (2, 3)
    assert balance_report({}) == {"nodes": 0, "slots": 0, "unassigned": 0, "min": 0, "max": 0,
                                  "spread": 0, "per_task": {}}


# --- properties ---------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(clusters())
def test_property_balanced_complete_and_stable(case):
    tasks, ms, leader, leader_works, previous = case
    plan = sticky(tasks, ms, leader=leader, leader_works=leader_works, previous=previous)
    assert_balanced(plan, tasks, ms, leader, leader_works)
    assert all(list(slots) == sorted(slots) for slots in plan.nodes.values())
    # a balanced plan for unchanged members is kept exactly
    assert sticky(tasks, ms, leader=leader, leader_works=leader_works, previous=plan) == plan


@settings(max_examples=150, deadline=None)
@given(clusters(weighted=False))
def test_property_any_balanced_previous_plan_is_kept(case):
    """Not only sticky's own plans: a round-robin plan that happens to be balanced (switching
    strategy on a running cluster) moves nothing either."""
    tasks, ms, leader, leader_works, _ = case
    rr = round_robin(tasks, ms, leader=leader, leader_works=leader_works)
    try:
        assert_balanced(rr, tasks, ms, leader, leader_works)
    except AssertionError:
        return  # round robin does not balance totals across mixed eligibility
    plan = sticky(tasks, ms, leader=leader, leader_works=leader_works, previous=rr)
    assert moved_slots(rr, plan) == 0


@settings(max_examples=200, deadline=None)
@given(clusters(), st.randoms(use_true_random=False))
def test_property_independent_of_input_order(case, rnd: random.Random):
    tasks, ms, leader, leader_works, previous = case
    plan = sticky(tasks, ms, leader=leader, leader_works=leader_works, previous=previous)
    shuffled_prev = {k: rnd.sample(v, len(v)) for k, v in rnd.sample(list(previous.items()),
                                                                     len(previous))}
    again = sticky(rnd.sample(tasks, len(tasks)), rnd.sample(ms, len(ms)), leader=leader,
                   leader_works=leader_works, previous=shuffled_prev)
    assert again == plan


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 200), st.integers(2, 12), st.data())
def test_property_single_task_leave_and_join_move_the_minimum(slots: int, n: int, data):
    tasks = [T("x", "a", slots)]
    ms = members(*[f"n{i}" for i in range(n)])
    before = sticky(tasks, ms, leader="n0")
    gone = data.draw(st.sampled_from([m.name for m in ms]))
    rest = [m for m in ms if m.name != gone]
    leader = "n0" if gone != "n0" else "n1"
    after = sticky(tasks, rest, leader=leader, previous=before)
    assert moved_slots(before, after) == len(before.nodes[gone])
    grown = [*ms, Member("new", 999, ALL)]
    joined = sticky(tasks, grown, leader="n0", previous=before)
    assert moved_slots(before, joined) == len(joined.nodes["new"]) == slots // (n + 1)
    assert spread(after) <= 1 and spread(joined) <= 1


@settings(max_examples=150, deadline=None)
@given(clusters(weighted=False), st.data())
def test_property_a_leave_keeps_everyone_elses_slots_when_balance_allows(case, data):
    """With several tasks and mixed eligibility the bound on totals can force a slot to swap
    between two other nodes; beyond the departed node's slots (and newly placeable ones),
    at most a couple move. Exact minimality is checked for one task above."""
    tasks, ms, leader, leader_works, previous = case
    if not ms:
        return
    before = sticky(tasks, ms, leader=leader, leader_works=leader_works, previous=previous)
    gone = data.draw(st.sampled_from([m.name for m in ms]))
    rest = [m for m in ms if m.name != gone]
    new_leader = leader if leader != gone else (rest[0].name if rest else None)
    after = sticky(tasks, rest, leader=new_leader, leader_works=leader_works, previous=before)
    assert_balanced(after, tasks, rest, new_leader, leader_works)
    lost = len(before.nodes.get(gone, ()))
    if gone == leader and not leader_works and new_leader is not None:
        lost += len(before.nodes.get(new_leader, ()))  # the new leader stops working
    newly_placed = sum(1 for s in after.owner_of() if s not in before.owner_of())
    moved_between_others = moved_slots(before, after) - lost - newly_placed
    assert moved_between_others <= 2


# --- size -------------------------------------------------------------------------------


def _timed(label: str, run) -> Plan:
    started = time.process_time()
    plan = run()
    seconds = time.process_time() - started
    print(f"{label}: {seconds:.3f}s")
    assert seconds < 5.0  # a sanity bound only: timing belongs in benchmarks
    return plan


@pytest.mark.parametrize("task_count", [1, 10, 100])
def test_100k_slots_over_1000_nodes(task_count: int, capsys: pytest.CaptureFixture[str]):
    tasks = [T(f"t{i:03d}", "a", 100_000 // task_count) for i in range(task_count)]
    ms = [Member(f"n{i:04d}", i, ALL) for i in range(1000)]
    with capsys.disabled():
        print()
        _timed(f"round_robin {task_count} tasks", lambda: round_robin(tasks, ms, leader="n0000"))
        fresh = _timed(f"sticky fresh {task_count} tasks",
                       lambda: sticky(tasks, ms, leader="n0000"))
        same = _timed(f"sticky unchanged {task_count} tasks",
                      lambda: sticky(tasks, ms, leader="n0000", previous=fresh))
        rest = ms[:500] + ms[501:]
        left = _timed(f"sticky leave {task_count} tasks",
                      lambda: sticky(tasks, rest, leader="n0000", previous=fresh))
        grown = [*ms, Member("new", 5000, ALL)]
        joined = _timed(f"sticky join {task_count} tasks",
                        lambda: sticky(tasks, grown, leader="n0000", previous=fresh))
    assert same == fresh
    assert moved_slots(fresh, left) == len(fresh.nodes["n0500"]) == 100
    assert moved_slots(fresh, joined) == len(joined.nodes["new"]) == 99
    assert max(spread(fresh), spread(left), spread(joined)) <= 1
