"""The checker itself, on hand-made records: a checker that cannot see a violation would
make every chaos test pass."""

from __future__ import annotations

from typing import Any

from tests.chaos import checker


def rec(t: float, e: str, node: str, pid: int, slot: int = 0, fence: int = 1,
        task: str = "t") -> dict[str, Any]:
    return {"t": t, "e": e, "node": node, "task": task, "slot": slot, "fence": fence, "pid": pid}


def test_a_handover_in_order_has_no_overlap_and_a_late_stop_has() -> None:
    clean = [rec(0, "start", "a", 1), rec(5, "stop", "a", 1), rec(5.01, "start", "b", 2, fence=2)]
    runs = checker.runs_from_records(clean, killed={}, until=10)
    assert checker.worst_overlap(runs).seconds == 0.0
    late = [rec(0, "start", "a", 1), rec(5, "start", "b", 2, fence=2), rec(5.3, "stop", "a", 1)]
    ov = checker.worst_overlap(checker.runs_from_records(late, killed={}, until=10))
    assert abs(ov.seconds - 0.3) < 1e-9 and "t/0" in ov.where


def test_a_killed_run_ends_at_the_kill_and_an_open_one_at_the_observation_end() -> None:
    records = [rec(0, "start", "a", 1), rec(1, "beat", "a", 1), rec(3, "start", "b", 2, fence=2)]
    runs = checker.runs_from_records(records, killed={1: 2.5}, until=10)
    assert checker.worst_overlap(runs).seconds == 0.0
    runs = checker.runs_from_records(records, killed={1: 3.5}, until=10)
    assert abs(checker.worst_overlap(runs).seconds - 0.5) < 1e-9
    runs = checker.runs_from_records(records, killed={}, until=10)  # "a" never stopped
    assert checker.worst_overlap(runs).seconds == 7.0
    assert checker.unfinished_runs(runs, [1]) and not checker.unfinished_runs(runs, [3])


def test_a_frozen_window_is_cut_out_but_what_runs_after_waking_counts() -> None:
    records = [rec(0, "start", "a", 1), rec(3, "start", "b", 2, fence=2),
               rec(4.02, "stop", "a", 1)]
    runs = checker.runs_from_records(records, killed={}, until=10)
    assert checker.worst_overlap(runs).seconds > 1  # as if it had run while frozen
    ov = checker.worst_overlap(runs, {1: [(1.0, 4.0)]})
    assert abs(ov.seconds - 0.02) < 1e-9


def test_same_process_and_filtered_pairs_do_not_count() -> None:
    records = [rec(0, "start", "a", 1), rec(1, "start", "a", 1), rec(2, "stop", "a", 1)]
    runs = checker.runs_from_records(records, killed={}, until=3)
    assert checker.worst_overlap(runs).seconds == 0.0
    records = [rec(0, "start", "a", 1), rec(1, "start", "b", 2, fence=2), rec(2, "stop", "a", 1)]
    runs = checker.runs_from_records(records, killed={}, until=3)
    assert checker.worst_overlap(runs, only=lambda x, y: False).seconds == 0.0


def test_fences_must_grow_across_processes() -> None:
    ok = [rec(0, "start", "a", 1, fence=5), rec(1, "stop", "a", 1),
          rec(2, "start", "b", 2, fence=7)]
    assert not checker.fence_problems(checker.runs_from_records(ok, killed={}, until=3))
    bad = [rec(0, "start", "a", 1, fence=7), rec(1, "stop", "a", 1),
           rec(2, "start", "b", 2, fence=7)]
    assert checker.fence_problems(checker.runs_from_records(bad, killed={}, until=3))


def test_recovery_is_when_the_last_gap_closed() -> None:
    records = [rec(0, "start", "a", 1, slot=0), rec(0, "start", "a", 1, slot=1),
               rec(5, "stop", "a", 1, slot=1), rec(5.5, "start", "b", 2, slot=1, fence=2),
               rec(6, "stop", "a", 1, slot=0), rec(8, "start", "b", 2, slot=0, fence=2)]
    runs = checker.runs_from_records(records, killed={}, until=10)
    r = checker.recovery(runs, ["t/0", "t/1"], fault_start=4, fault_end=5, until=10)
    assert r.recovered == 3.0 and r.settle == 3.0 and r.max_gap == 2.0
    r = checker.recovery(runs, ["t/0", "t/1"], fault_start=4, fault_end=5, until=7)
    assert r.recovered is None  # t/0 still not running at the end of the observation
    steady = checker.recovery(runs, ["t/1"], fault_start=9, fault_end=9, until=10)
    assert steady.recovered == 0.0 and steady.max_gap == 0.0


def test_gaps() -> None:
    assert checker.gaps([(0, 2), (3, 10)], 1, 10) == [(2, 3)]
    assert checker.gaps([(0, 2)], 1, 10) == [(2, None)]
    assert checker.gaps([], 1, 10) == [(1, None)]
    assert checker.gaps([(0, 10)], 10, 10) == []
