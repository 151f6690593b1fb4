"""The strategies' fast paths against the slow paths they stand in for.

Each fast path is a shortcut for a common case (equal weights, no limits, one list of nodes
per workName); each must give exactly what the general code gives, bit for bit, or the
plan a cluster publishes would depend on which path ran.
"""

from __future__ import annotations

import gc
from dataclasses import replace
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.strategy_cases import clusters
from xconsumer.gcpause import gc_paused, without_gc
from xconsumer.strategies import Slot, round_robin
from xconsumer.strategies.base import slots_of
from xconsumer.strategies.sticky import _Quota, _Shared


@settings(max_examples=300, deadline=None)
@given(case=clusters(weighted=False, limits=False))
def test_property_round_robin_deals_slices_as_it_deals_cards(case):
    """A limit no node reaches sends round robin down its card-by-card deal: the plan must
    be the one the slice-per-node deal (equal weights, no limit) gives."""
    tasks, ms, leader, leader_works, _ = case
    fast = round_robin(tasks, ms, leader=leader, leader_works=leader_works)
    slow = round_robin([replace(t, max_per_node=10_000) for t in tasks], ms, leader=leader,
                       leader_works=leader_works)
    assert fast == slow


def test_slots_of_builds_ordinary_slots():
    built = slots_of("t", range(3))
    assert built == [Slot("t", 0), Slot("t", 1), Slot("t", 2)]
    assert all(type(s) is Slot and s.task == "t" for s in built)
    assert slots_of("t", []) == []


@st.composite
def quota_tables(draw: st.DrawFn) -> tuple[list[_Quota], int]:
    """Quotas as `_shares` makes them: uniform ones share their workName's node list (some
    nodes in two workNames), weighted ones have a list and fractions of their own."""
    n = draw(st.integers(1, 8))
    works = [sorted(draw(st.sets(st.integers(0, n - 1), min_size=1))) for _ in range(3)]
    quotas = []
    for t in range(draw(st.integers(0, 12))):
        nodes = works[draw(st.integers(0, 2))]
        extra = draw(st.integers(0, len(nodes)))
        if draw(st.booleans()):
            quotas.append(_Quota(f"t{t}", extra, dict.fromkeys(nodes, 0), nodes,
                                 [extra / len(nodes)] * len(nodes), extra, 0, True))
        else:
            own = [p for p in nodes if draw(st.booleans())]
            parts = [float(Fraction(draw(st.integers(1, 9)), 10)) for _ in own]
            quotas.append(_Quota(f"t{t}", extra, dict.fromkeys(nodes, 0), own, parts,
                                 min(extra, len(own)), 0, False))
    return quotas, n


@settings(max_examples=300, deadline=None)
@given(table=quota_tables())
def test_property_shared_tallies_equal_per_node_tallies(table):
    """`_Shared` tracks most nodes through their group: every node's running sum (the same
    float, summed in the same order) and chances must be those of a tally kept per node."""
    quotas, n = table
    shared = _Shared(quotas, n)
    behind = [0.0] * n
    chances = [sum(p in q.fractional for q in quotas) for p in range(n)]
    for t, q in enumerate(quotas):
        shared.reach(t)
        for p, f in zip(q.fractional, q.fraction, strict=True):
            behind[p] += f
        assert [shared.behind[p] for p in range(n)] == behind
        assert [shared.chances[p] for p in range(n)] == chances
        shared.passed(t)
        for p in q.fractional:
            chances[p] -= 1
    assert [shared.chances[p] for p in range(n)] == [0] * n


def test_gc_paused_restores_the_collector():
    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
        with gc_paused():  # nested: the outer pause owns it
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(ZeroDivisionError), gc_paused():
        1 / 0  # noqa: B018
    assert gc.isenabled()


def test_gc_paused_leaves_a_disabled_collector_disabled():
    gc.disable()
    try:
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_without_gc_keeps_the_function():
    @without_gc
    def add(a: int, b: int = 1) -> int:
        """Adds."""
        assert not gc.isenabled()
        return a + b

    assert add(1, b=2) == 3 and add.__name__ == "add" and add.__doc__ == "Adds."
    assert gc.isenabled()
