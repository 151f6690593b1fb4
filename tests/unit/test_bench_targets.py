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


def _members(requests: dict[int, float], errors: dict[int, list[str]] | None = None) -> dict:
    sizes = {str(n): {"start": {"converge_s": 1.0}, "errors": (errors or {}).get(n, []),
                      "summary": {"leave": {"requests": {"median": req}, "top": []}}}
             for n, req in requests.items()}
    return {"members_scale": {"sizes": sizes}}


def test_a_herd_at_one_size_is_a_miss_however_cheap_the_others_are() -> None:
    # The run that found it: 100 members cost under one request each, so a rule on the
    # count per member passed a storm of 13,978 requests at 1,000.
    rows = targets(_members({10: 20, 100: 19, 300: 19, 1000: 13_978}))
    leave = _row(rows, "ZooKeeper requests per leave")
    assert leave[1].endswith("1000: 13.98/member")
    assert leave[2].startswith("missed") and "736 times" in leave[2]


def test_a_few_requests_more_at_a_thousand_members_is_not_a_herd() -> None:
    rows = targets(_members({10: 24, 100: 24, 300: 26, 1000: 31}))
    assert _row(rows, "ZooKeeper requests per leave")[2] == "met"


def test_a_thousand_members_that_formed_but_failed_a_step_is_a_miss() -> None:
    failed = targets(_members({10: 20, 1000: 20},
                              {1000: ["crash rep 0: 999 members converged not met within 190s"]}))
    row = _row(failed, "a cluster of 1,000 members")
    assert row[2] == "missed" and "crash rep 0" in row[1]
    assert _row(targets(_members({10: 20, 1000: 20})), "a cluster of 1,000 members")[2] == "met"
