"""The targets table of bin/bench: absolute verdicts, figures also in ZooKeeper floors."""

from __future__ import annotations

from bench.run import targets
from xconsumer.strategies import DEFAULT_STRATEGY


def _results(floor: float | None) -> dict:
    summary = {"leave": {"all_moved_running": {"median": 0.054}},
               "join": {"join": {"median": 0.024}}}
    out: dict = {"handover": {DEFAULT_STRATEGY: {"summary": summary}}}
    if floor is not None:
        out["floor"] = {"create_delete": {"median": floor}}
    return out


def _row(rows: list[list[str]], start: str) -> list[str]:
    return next(r for r in rows if r[0].startswith(start))


def test_a_figure_is_also_given_in_floors_and_judged_in_ms() -> None:
    rows = targets(_results(0.0024))
    leave = _row(rows, "graceful leave p50")
    assert leave[1] == "54.0 ms (22.5 floors of 2.40 ms)" and leave[2] == "missed"
    join = _row(rows, "join p50")
    assert join[1] == "24.0 ms (10.0 floors of 2.40 ms)" and join[2] == "met"


def test_without_a_floor_the_figure_stands_alone() -> None:
    assert _row(targets(_results(None)), "graceful leave p50")[1] == "54.0 ms"
    crash = _row(targets(_results(None)), "crash of a follower")
    assert crash[1:] == ["-", "not measured"]
