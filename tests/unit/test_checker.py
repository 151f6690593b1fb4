"""The suite's overlap checker (tests/checker.py) on hand-made records.

A checker that cannot see a violation makes every test that relies on it pass, so each way
an earlier checker went blind is kept here as a counter-example with its true answer: one
node running a slot twice, a node restarted under the same name, a run that never stopped,
two starts in one process, stops that arrive out of order, a reused pid.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests import checker


def rec(t: float, e: str, node: str, pid: int, run: str, *, slot: int = 0, fence: int = 1,
        task: str = "t", thread: str = "xc-slot/1") -> dict[str, Any]:
    return {"t": t, "e": e, "node": node, "task": task, "slot": slot, "fence": fence,
            "pid": pid, "thread": thread, "run": run}


def overlap(records: list[dict[str, Any]], *, until: float = 10.0,
            killed: checker.KillMap | None = None) -> float:
    runs = checker.runs_from_records(records, killed=killed or {}, until=until)
    return checker.worst_overlap(runs).seconds


# -- counter-examples: overlaps earlier checkers reported as 0 ------------------------------
def test_one_node_running_a_slot_twice_is_an_overlap() -> None:
    # Two threads of node a's one process run t/0 from 3 to 5 together: 2 s.
    records = [rec(0, "start", "a", 1, "r1", thread="x/1"), rec(3, "start", "a", 1, "r2",
                                                                 thread="x/2"),
               rec(5, "stop", "a", 1, "r1", thread="x/1"), rec(8, "stop", "a", 1, "r2",
                                                               thread="x/2")]
    assert overlap(records) == pytest.approx(2.0)


def test_a_node_restarted_under_the_same_name_is_a_different_run() -> None:
    # Node a's first process still runs t/0 until 5; its successor, also "a", starts at 3.
    records = [rec(0, "start", "a", 1, "old"), rec(3, "start", "a", 2, "new", fence=2),
               rec(5, "stop", "a", 1, "old"), rec(8, "stop", "a", 2, "new", fence=2)]
    assert overlap(records) == pytest.approx(2.0)


def test_a_run_without_stop_lasts_to_the_end_of_the_observation() -> None:
    # a's last heartbeat is at 1, but nothing says it stopped (nor was killed): it is taken as
    # running until 10, not as ending at its last heartbeat.
    records = [rec(0, "start", "a", 1, "ra"), rec(1, "beat", "a", 1, "ra"),
               rec(3, "start", "b", 2, "rb", fence=2), rec(6, "stop", "b", 2, "rb", fence=2)]
    assert overlap(records) == pytest.approx(3.0)
    ra = next(r for r in checker.runs_from_records(records, until=10) if r.run_id == "ra")
    assert (ra.end, ra.stopped, ra.killed, ra.last_record) == (10, False, False, 1)


def test_a_second_start_in_one_process_does_not_drop_the_first_run() -> None:
    records = [rec(0, "start", "a", 1, "r1"), rec(1, "start", "a", 1, "r2"),
               rec(2, "stop", "a", 1, "r2")]
    runs = checker.runs_from_records(records, until=4)
    assert {(r.run_id, r.start, r.end) for r in runs} == {("r1", 0, 4), ("r2", 1, 2)}
    assert overlap(records, until=4) == pytest.approx(1.0)


def test_stops_out_of_order_in_one_process_overlap_the_next_owner() -> None:
    # Process A starts the slot at 0 and again at 1, stops them at 5 and 10; B runs 6-12.
    # Cutting A's first run at its second start, and pairing stops in order, loses 6-10.
    records = [rec(0, "start", "A", 1, "a1"), rec(1, "start", "A", 1, "a2"),
               rec(5, "stop", "A", 1, "a1"), rec(6, "start", "B", 2, "b", fence=2),
               rec(10, "stop", "A", 1, "a2"), rec(12, "stop", "B", 2, "b", fence=2)]
    runs = checker.runs_from_records(records, until=20)
    assert checker.worst_overlap(runs).seconds == pytest.approx(4.0)
    b_vs_a = checker.worst_overlap(runs, only=lambda x, y: "B" in (x.node, y.node))
    assert b_vs_a.seconds == pytest.approx(4.0) and "B (pid 2" in b_vs_a.where


def test_a_reused_pid_does_not_cut_the_new_process_short() -> None:
    # pid 7 is killed at 3; a later process gets pid 7 again and runs from 5 (still running);
    # b runs 6-8. The old kill must not end the new run.
    records = [rec(0, "start", "a", 7, "old"), rec(5, "start", "c", 7, "new", fence=2),
               rec(6, "start", "b", 8, "rb", fence=3), rec(8, "stop", "b", 8, "rb", fence=3)]
    assert overlap(records, killed={7: 3.0}) == pytest.approx(2.0)
    runs = {r.run_id: r for r in checker.runs_from_records(records, killed={7: 3.0}, until=10)}
    assert (runs["old"].end, runs["old"].killed) == (3.0, True)
    assert (runs["new"].end, runs["new"].killed) == (10, False)
    # Both processes killed: each run ends at the first kill after its own start.
    runs = {r.run_id: r for r in checker.runs_from_records(records, killed={7: [3.0, 9.0]},
                                                           until=10)}
    assert (runs["old"].end, runs["new"].end) == (3.0, 9.0)


# -- what is not an overlap ----------------------------------------------------------------
def test_a_handover_in_order_has_no_overlap_and_a_late_stop_has() -> None:
    clean = [rec(0, "start", "a", 1, "r1"), rec(5, "stop", "a", 1, "r1"),
             rec(5.01, "start", "b", 2, "r2", fence=2)]
    assert overlap(clean) == 0.0
    late = [rec(0, "start", "a", 1, "r1"), rec(5, "start", "b", 2, "r2", fence=2),
            rec(5.3, "stop", "a", 1, "r1")]
    ov = checker.worst_overlap(checker.runs_from_records(late, until=10))
    assert ov.seconds == pytest.approx(0.3) and "t/0" in ov.where


def test_runs_of_one_process_in_sequence_do_not_overlap() -> None:
    records = [rec(0, "start", "a", 1, "r1"), rec(1, "stop", "a", 1, "r1"),
               rec(1, "start", "a", 1, "r2"), rec(2, "stop", "a", 1, "r2"),
               rec(0, "start", "a", 1, "s1", slot=1), rec(2, "stop", "a", 1, "s1", slot=1)]
    assert overlap(records) == 0.0


def test_a_killed_run_ends_at_the_kill() -> None:
    records = [rec(0, "start", "a", 1, "ra"), rec(1, "beat", "a", 1, "ra"),
               rec(3, "start", "b", 2, "rb", fence=2)]
    assert overlap(records, killed={1: 2.5}) == 0.0
    assert overlap(records, killed={1: 3.5}) == pytest.approx(0.5)
    runs = checker.runs_from_records(records, killed={}, until=10)
    assert checker.unfinished_runs(runs, [1]) and not checker.unfinished_runs(runs, [3])


def test_a_frozen_window_is_cut_out_but_what_runs_after_waking_counts() -> None:
    records = [rec(0, "start", "a", 1, "ra"), rec(3, "start", "b", 2, "rb", fence=2),
               rec(4.02, "stop", "a", 1, "ra")]
    runs = checker.runs_from_records(records, until=10)
    assert checker.worst_overlap(runs).seconds > 1  # as if it had run while frozen
    assert checker.worst_overlap(runs, {1: [(1.0, 4.0)]}).seconds == pytest.approx(0.02)


def test_only_restricts_the_pairs() -> None:
    records = [rec(0, "start", "a", 1, "ra"), rec(1, "start", "b", 2, "rb", fence=2),
               rec(2, "stop", "a", 1, "ra")]
    runs = checker.runs_from_records(records, until=3)
    assert checker.worst_overlap(runs, only=lambda x, y: False).seconds == 0.0


def test_records_after_the_observation_end_are_not_seen() -> None:
    records = [rec(0, "start", "a", 1, "ra"), rec(4, "stop", "a", 1, "ra"),
               rec(2, "start", "b", 2, "rb", fence=2)]
    # Observed up to 3: a was still running then, and so was b.
    assert overlap(records, until=3) == pytest.approx(1.0)


# -- records that do not describe runs ----------------------------------------------------
@pytest.mark.parametrize("records, error", [
    ([{"t": 0, "e": "start", "node": "a", "task": "t", "slot": 0, "fence": 1, "pid": 1}],
     "record without thread, run"),
    ([rec(0, "start", "a", 1, "r"), rec(1, "start", "a", 1, "r")], "started twice"),
    ([rec(0, "beat", "a", 1, "r")], "without a start"),
    ([rec(0, "start", "a", 1, "r"), rec(1, "stop", "a", 1, "r"), rec(2, "beat", "a", 1, "r")],
     "after its stop"),
    ([rec(0, "start", "a", 1, "r"), rec(1, "stop", "a", 1, "r", slot=1)], "changed identity"),
])
def test_malformed_records_are_refused(records: list[dict[str, Any]], error: str) -> None:
    with pytest.raises(checker.MalformedRecords, match=error):
        checker.runs_from_records(records, until=10)


def test_fail_records_are_not_runs() -> None:
    assert checker.runs_from_records([rec(0, "fail", "a", 1, "f")], until=1) == []


# -- the file: what a mutation runner calls --------------------------------------------------
def test_worst_overlap_in_file(tmp_path: Path) -> None:
    path = tmp_path / "record.jsonl"
    assert checker.worst_overlap_in_file(path, until=1).seconds == 0.0  # nothing recorded
    lines = [rec(0, "start", "a", 7, "ra"), rec(1, "start", "b", 8, "rb", fence=2)]
    path.write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"t": 2, "e": "st')
    # The half-written last line is left for the next read; a's run ended at its kill.
    assert checker.load_records(path) == lines
    assert checker.worst_overlap_in_file(path, {7: 1.5}, until=5).seconds == pytest.approx(0.5)
    assert checker.worst_overlap_in_file(path, until=5).seconds == pytest.approx(4.0)


# -- fencing, recovery, heartbeats -----------------------------------------------------------
def test_fences_must_grow_across_processes() -> None:
    ok = [rec(0, "start", "a", 1, "r1", fence=5), rec(1, "stop", "a", 1, "r1", fence=5),
          rec(2, "start", "b", 2, "r2", fence=7)]
    assert not checker.fence_problems(checker.runs_from_records(ok, until=3))
    bad = [rec(0, "start", "a", 1, "r1", fence=7), rec(1, "stop", "a", 1, "r1", fence=7),
           rec(2, "start", "b", 2, "r2", fence=7)]
    assert checker.fence_problems(checker.runs_from_records(bad, until=3))


def test_recovery_is_when_the_last_gap_closed() -> None:
    records = [rec(0, "start", "a", 1, "a0", slot=0), rec(0, "start", "a", 1, "a1", slot=1),
               rec(5, "stop", "a", 1, "a1", slot=1),
               rec(5.5, "start", "b", 2, "b1", slot=1, fence=2),
               rec(6, "stop", "a", 1, "a0", slot=0),
               rec(8, "start", "b", 2, "b0", slot=0, fence=2)]
    runs = checker.runs_from_records(records, until=10)
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


def test_beats_since_counts_per_slot() -> None:
    records = [rec(0, "start", "a", 1, "r"), rec(0.05, "beat", "a", 1, "r"),
               rec(0.10, "beat", "a", 1, "r"), rec(0.10, "beat", "a", 1, "s", slot=1)]
    assert checker.beats_since(records, 0.05) == {"t/0": 1, "t/1": 1}
