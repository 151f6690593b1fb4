"""The leader's damper: rejoin grace for flapping nodes, debounce for bursts."""

from __future__ import annotations

from xconsumer.membership import MemberRecord
from xconsumer.stability import Damper


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def rec(name: str, seq: int) -> MemberRecord:
    return MemberRecord(f"n-{seq:010d}", seq, {"id": name})


def names(members) -> list[str]:
    return [m.name for m in members]


def test_no_damping_by_default():
    d = Damper(clock=Clock())
    assert names(d.plan_members([rec("a", 0), rec("b", 1)], lambda n: False)[0]) == ["a", "b"]
    members, wake = d.plan_members([rec("a", 0)], lambda n: False)
    assert names(members) == ["a"] and wake is None


def test_crashed_node_is_kept_as_ghost_until_grace_ends():
    clock = Clock()
    d = Damper(rejoin_grace=5.0, clock=clock)
    d.plan_members([rec("a", 0), rec("b", 1)], lambda n: False)
    members, wake = d.plan_members([rec("a", 0)], lambda n: False)
    assert names(members) == ["a", "b"] and wake == 105.0 and d.ghosts == ["b"]
    clock.t = 104.0
    assert names(d.plan_members([rec("a", 0)], lambda n: False)[0]) == ["a", "b"]
    clock.t = 105.0
    members, wake = d.plan_members([rec("a", 0)], lambda n: False)
    assert names(members) == ["a"] and wake is None and d.ghosts == []


def test_rejoin_within_grace_replaces_the_ghost():
    clock = Clock()
    d = Damper(rejoin_grace=5.0, clock=clock)
    d.plan_members([rec("a", 0), rec("b", 1)], lambda n: False)
    d.plan_members([rec("a", 0)], lambda n: False)
    clock.t = 102.0
    members, wake = d.plan_members([rec("a", 0), rec("b", 7)], lambda n: False)
    assert [(m.name, m.seq) for m in members] == [("a", 0), ("b", 7)] and wake is None


def test_graceful_leave_gets_no_grace():
    d = Damper(rejoin_grace=5.0, clock=Clock())
    d.plan_members([rec("a", 0), rec("b", 1)], lambda n: False)
    members, _ = d.plan_members([rec("a", 0)], lambda n: n == "b")
    assert names(members) == ["a"]


def test_debounce_waits_for_the_burst_to_settle():
    clock = Clock()
    d = Damper(debounce=1.0, clock=clock)
    assert names(d.plan_members([rec("a", 0)], lambda n: False)[0]) == ["a"]
    members, wake = d.plan_members([rec("a", 0), rec("b", 1)], lambda n: False)
    assert members is None and wake == 101.0
    clock.t = 100.5
    members, wake = d.plan_members([rec("a", 0), rec("b", 1), rec("c", 2)], lambda n: False)
    assert members is None and wake == 101.5
    clock.t = 101.5
    assert names(d.plan_members([rec("a", 0), rec("b", 1), rec("c", 2)],
                                lambda n: False)[0]) == ["a", "b", "c"]


def test_reset_forgets_ghosts():
    d = Damper(rejoin_grace=5.0, clock=Clock())
    d.plan_members([rec("a", 0), rec("b", 1)], lambda n: False)
    d.plan_members([rec("a", 0)], lambda n: False)
    d.reset()
    assert names(d.plan_members([rec("a", 0)], lambda n: False)[0]) == ["a"]


def test_debounce_gives_up_waiting_after_ten_debounces():
    clock = Clock()
    d = Damper(debounce=1.0, clock=clock)
    d.plan_members([rec("a", 0)], lambda n: False)
    members = [rec("a", 0)]
    for step in range(1, 30):  # a change every 0.5 s, forever
        clock.t = 100.0 + step * 0.5
        members = members[:1] + [rec(f"x{step}", step)]
        planned, _ = d.plan_members(members, lambda n: False)
        if planned is not None:
            break
    assert planned is not None and clock.t <= 100.5 + 10.0
