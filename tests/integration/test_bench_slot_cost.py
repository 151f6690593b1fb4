"""bench.slot_cost runs against its own ZooKeeper and reads what it claims to read.

Only the shape is checked (speed is for the benchmark to print, not for a test to
assert): every case measured in every run, both clocks moved, and the table names them.
"""

from __future__ import annotations

from bench.slot_cost import report, run


def test_every_case_is_measured_on_both_sides() -> None:
    results = run(n=40, runs=2)
    assert set(results) == {"create + delete, one request each",
                            "stat + delete, one request each",
                            "create + delete, transactions of 5",
                            "create + delete, transactions of 20"}
    for per_run in results.values():
        assert len(per_run) == 2
        # The client's clock counts this process (its connection thread too); the server's
        # is the JVM's, read by pid: each served 40 slots' requests, so each moved.
        assert all(r["client_us"] > 0 and r["zk_us"] > 0 for r in per_run)
    table = report(results, 40)
    assert "transactions of 20" in table and "ZooKeeper" in table
