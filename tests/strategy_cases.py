"""Clusters for the strategy property tests: tasks, members, leader, previous plan.

Small on purpose (hypothesis shrinks them), but with every kind of constraint a strategy
must respect: handlers, `[node] works`, draining, `leader_works`, weights, max_per_node,
and a previous plan that names departed nodes, removed tasks and indices beyond workerNum.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import strategies as st

from xconsumer.strategies import Member, Slot

HANDLERS = ["RunA", "RunB", "RunC"]
ALL = frozenset(HANDLERS)


@dataclass(frozen=True)
class T:
    name: str
    work_name: str
    worker_num: int
    max_per_node: int | None = None


Case = tuple[list[T], list[Member], str | None, bool, dict[str, list[Slot]]]


@st.composite
def clusters(draw: st.DrawFn, *, weighted: bool = True, uniform: bool = False,
             limits: bool = True) -> Case:
    """`uniform`: every node may run every task and none is draining."""
    names = draw(st.lists(st.sampled_from("abcdefgh"), min_size=1, max_size=5, unique=True))
    tasks = [T(f"t{n}", draw(st.sampled_from("abc")), draw(st.integers(0, 40)),
               draw(st.one_of(st.none(), st.integers(1, 6))) if limits else None)
             for n in names]
    count = draw(st.integers(1 if uniform else 0, 8))
    seqs = draw(st.lists(st.integers(0, 99), min_size=count, max_size=count, unique=True))
    ms = [Member(f"n{i}", seq,
                 ALL if uniform else frozenset(draw(st.lists(st.sampled_from(HANDLERS),
                                                             unique=True))),
                 works=None if uniform else draw(st.one_of(
                     st.none(), st.frozensets(st.sampled_from("abc")))),
                 draining=False if uniform else draw(st.booleans()) and draw(st.booleans()),
                 weight=draw(st.sampled_from([1.0, 0.5, 2.0, 3.0])) if weighted else 1.0)
          for i, seq in enumerate(seqs)]
    leader = draw(st.sampled_from([m.name for m in ms])) if ms else None
    leader_works = True if uniform else draw(st.booleans())
    owners = [m.name for m in ms] + ["ghost"]
    previous: dict[str, list[Slot]] = {}
    for t in [*tasks, T("removed", "a", 3)]:
        for i in range(t.worker_num + 2):
            if draw(st.booleans()):
                previous.setdefault(draw(st.sampled_from(owners)), []).append(Slot(t.name, i))
    return tasks, ms, leader, leader_works, previous
