"""The guarded call: a user strategy that raises, lies or hangs costs the leader a fallback
to round robin and one line of explanation, never the cluster's schedule."""

from __future__ import annotations

import threading

import pytest

from tests.strategy_cases import ALL, T
from tests.util import wait_until
from xconsumer.strategies import Member, Plan, Slot, Strategy, round_robin, sticky
from xconsumer.strategies.guard import StrategyRunner, run_strategy

TASKS = [T("x", "a", 5), T("y", "b", 2)]
MEMBERS = [Member("L", 0, ALL), Member("F1", 1, ALL), Member("F2", 2, ALL)]
RR = round_robin(TASKS, MEMBERS, leader="L")


class Fixed(Strategy):
    """Returns a given plan (or raises a given exception), counting its calls."""

    def __init__(self, result: object) -> None:
        self.result = result
        self.calls = 0

    def __call__(self, tasks, members, *, leader, leader_works=True, previous=None) -> Plan:
        self.calls += 1
        if isinstance(self.result, BaseException):
            raise self.result
        return self.result  # type: ignore[return-value]


GOOD = Plan({"F2": (Slot("x", 0), Slot("x", 1), Slot("x", 2), Slot("x", 3), Slot("x", 4)),
             "F1": (Slot("y", 0), Slot("y", 1))})


def runner(strategy: Strategy, timeout: float = 2.0) -> tuple[StrategyRunner, list]:
    results: list[tuple[str, str | None]] = []
    r = StrategyRunner({"round_robin": round_robin, "mine": strategy}, {"mine"},
                       timeout=timeout, on_result=lambda n, e: results.append((n, e)))
    return r, results


def run(r: StrategyRunner, name: str = "mine") -> tuple[Plan, str | None]:
    return r.run(name, TASKS, MEMBERS, leader="L", leader_works=True, previous=None)


def test_a_valid_user_plan_is_used_as_it_is():
    r, results = runner(Fixed(GOOD))
    plan, error = run(r)
    assert error is None and plan.owner_of() == GOOD.owner_of()
    assert results == [("mine", None)]


def test_lists_are_made_tuples_and_idle_names_that_take_no_work_are_dropped():
    lists = Plan({"F2": [Slot("x", i) for i in range(5)], "F1": [Slot("y", 0), Slot("y", 1)],
                  "L": []})
    r, _ = runner(Fixed(lists))
    plan, error = r.run("mine", TASKS, MEMBERS, leader="L", leader_works=False)
    assert error is None
    assert plan.nodes == {"F2": GOOD.nodes["F2"], "F1": GOOD.nodes["F1"]}


@pytest.mark.parametrize(("result", "expected"), [
    (RuntimeError("boom"), "strategy 'mine' raised RuntimeError: boom; using round_robin"),
    (SystemExit(3), "strategy 'mine' raised SystemExit: 3"),
    (None, "strategy 'mine' returned an invalid plan: a strategy must return a Plan, got "
           "NoneType; using round_robin instead"),
    (Plan({"ghost": GOOD.nodes["F2"] + GOOD.nodes["F1"]}),
     "returned an invalid plan: node ghost is not a live member"),
])
def test_a_failure_falls_back_to_round_robin_with_one_line(result, expected: str):
    r, results = runner(Fixed(result))
    plan, error = run(r)
    assert plan == RR
    assert error is not None and expected in error and "\n" not in error
    assert results == [("mine", error)]


def test_a_strategy_that_hangs_is_abandoned_and_not_called_again_while_it_runs():
    release = threading.Event()
    calls = []

    class Hangs(Strategy):
        def __call__(self, tasks, members, *, leader, leader_works=True, previous=None):
            calls.append(1)
            release.wait(30)
            return GOOD

    r, results = runner(Hangs(), timeout=0.2)
    try:
        plan, error = run(r)
        assert plan == RR and "did not return within 0.2 s" in (error or "")
        assert r.running("mine")
        # The next pass does not wait again, and does not start a second call.
        plan, again = run(r)
        assert plan == RR and "still running a call that timed out" in (again or "")
        assert len(calls) == 1
    finally:
        release.set()
    wait_until(lambda: not r.running("mine"), 10)
    plan, error = run(r)
    assert error is None and plan.owner_of() == GOOD.owner_of() and len(calls) == 2
    assert [e is None for _, e in results] == [False, False, True]


def test_the_strategy_gets_copies_it_cannot_spoil():
    class Spoils(Strategy):
        def __call__(self, tasks, members, *, leader, leader_works=True, previous=None):
            tasks.clear()  # a tuple: raises, and the leader's list is untouched
            return GOOD

    tasks = list(TASKS)
    r, _ = runner(Spoils())
    plan, error = r.run("mine", tasks, MEMBERS, leader="L")
    assert tasks == TASKS and plan == RR and "AttributeError" in (error or "")


def test_the_previous_plan_a_strategy_gets_is_its_own():
    """The leader hands the same remembered previous plan to every pass while the document
    is unchanged (leader.DocMemo): a strategy that consumes its lists must not empty it
    for the next pass (found by review)."""
    seen: list[dict[str, list[Slot]]] = []

    class Consumes(Strategy):
        def __call__(self, tasks, members, *, leader, leader_works=True, previous=None):
            seen.append({n: list(s) for n, s in (previous or {}).items()})
            for slots in (previous or {}).values():
                slots.clear()
            return GOOD

    previous = {n: list(s) for n, s in GOOD.nodes.items()}
    r, _ = runner(Consumes())
    for _ in range(2):
        plan, error = r.run("mine", TASKS, MEMBERS, leader="L", previous=previous)
        assert error is None and plan == GOOD
    assert seen == [previous, previous] and previous == {n: list(s) for n, s in GOOD.nodes.items()}


def test_builtins_run_directly_and_unknown_names_fall_back():
    plan, error = run_strategy("sticky", TASKS, MEMBERS, leader="L")
    assert error is None and plan == sticky(TASKS, MEMBERS, leader="L")
    plan, error = run_strategy("nope", TASKS, MEMBERS, leader="L")
    assert plan == RR
    assert error == ("unknown assignment strategy 'nope' (known: balanced, consistent_hash, "
                     "round_robin, sticky); using round_robin instead")
