"""Run-level failure control without ZooKeeper: the new task keys (validation, defaults left
out of published documents, changeable at run time) and the breaker's state machine."""

from __future__ import annotations

import pytest

from xconsumer.breaker import Breaker
from xconsumer.codecs import MUTABLE_FIELDS, decode_overrides
from xconsumer.config import TaskConfig, parse_config
from xconsumer.errors import ConfigError
from xconsumer.slot import restart_needed
from xconsumer.zk import dumps

BASE = '[[task]]\nname = "t"\nworkName = "w"\nworkerNum = 1\n'


def error_of(extra: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(BASE + extra, source="app.toml", env={})
    return str(info.value)


@pytest.mark.parametrize(("extra", "fragment"), [
    ("run_timeout = 0", "run_timeout must be a number > 0"),
    ("run_timeout = -2.5", "run_timeout must be a number > 0"),
    ('run_timeout = "5"', "run_timeout must be a number > 0"),
    ("run_timeout = true", "run_timeout must be a number > 0"),
    ("breaker_failures = 0", "breaker_failures must be an integer 1..1000000"),
    ("breaker_failures = 2.5", "breaker_failures must be an integer 1..1000000"),
    ("breaker_failures = 1000001", "breaker_failures must be an integer 1..1000000"),
    ("breaker_cooldown = 0", "breaker_cooldown must be a number > 0"),
    ("breaker_cooldown = inf", "breaker_cooldown must be a number > 0"),
])
def test_bad_failure_control_values_are_one_line_errors(extra: str, fragment: str) -> None:
    message = error_of(extra)
    assert message.startswith("app.toml: task[0] (name 't') ")
    assert fragment in message and "\n" not in message


def test_a_misspelt_key_gets_a_suggestion() -> None:
    assert "did you mean run_timeout?" in error_of("runTimeout = 3")


def test_defaults_are_left_out_of_the_published_task_and_values_round_trip() -> None:
    plain = parse_config(BASE, env={}).tasks[0]
    assert (plain.run_timeout, plain.breaker_failures, plain.breaker_cooldown) == (None, None,
                                                                                  30.0)
    assert not {"run_timeout", "breaker_failures", "breaker_cooldown"} & set(plain.to_dict())
    task = parse_config(BASE + "run_timeout = 2.5\nbreaker_failures = 3\n"
                        "breaker_cooldown = 4\n", env={}).tasks[0]
    assert task.to_dict()["run_timeout"] == 2.5 and task.to_dict()["breaker_failures"] == 3
    assert TaskConfig.from_dict(task.to_dict()) == task


def test_the_keys_are_changeable_at_run_time_and_never_restart_a_slot() -> None:
    assert {"run_timeout", "breaker_failures", "breaker_cooldown"} <= set(MUTABLE_FIELDS)
    old = parse_config(BASE, env={}).tasks[0]
    new = TaskConfig.from_dict({**old.to_dict(), "run_timeout": 1, "breaker_failures": 2,
                                "breaker_cooldown": 5})
    assert not restart_needed(old, new)
    # null (from the API) means "none" for the optional ones.
    assert TaskConfig.from_dict({**new.to_dict(), "run_timeout": None}).run_timeout is None
    bad = decode_overrides(dumps({"tasks": {"t": {"breaker_failures": 0}}}), "/o")
    assert "breaker_failures must be an integer" in str(bad)


class _Task:
    breaker_failures: int | None = 3
    breaker_cooldown = 10.0


def test_breaker_opens_after_n_failures_waits_then_half_opens_for_one_trial() -> None:
    now = [100.0]
    breaker, task = Breaker(clock=lambda: now[0]), _Task()
    assert [breaker.record(False, task) for _ in range(3)] == [None, None, "opened"]
    assert breaker.state == "open" and breaker.gate(task) == 10.0
    now[0] += 9.5
    assert breaker.gate(task) == pytest.approx(0.5)
    now[0] += 0.5
    assert breaker.gate(task) == 0.0 and breaker.state == "half_open"
    assert breaker.record(False, task) == "opened" and breaker.opened_in_a_row == 2
    assert breaker.consecutive_failures == 4 and breaker.open_until == 120.0
    now[0] += 10
    assert breaker.gate(task) == 0.0
    assert breaker.record(True, task) == "closed"
    assert (breaker.state, breaker.consecutive_failures, breaker.opened_in_a_row,
            breaker.open_until) == ("closed", 0, 0, None)
    assert breaker.record(True, task) is None


def test_a_success_resets_the_count_and_a_breaker_switched_off_lets_runs_through() -> None:
    now = [0.0]
    breaker, task = Breaker(clock=lambda: now[0]), _Task()
    breaker.record(False, task)
    breaker.record(False, task)
    breaker.record(True, task)
    assert breaker.record(False, task) is None and breaker.state == "closed"
    breaker.record(False, task)
    assert breaker.record(False, task) == "opened"
    task.breaker_failures = None  # changed over the API while open
    assert breaker.gate(task) == 0.0 and breaker.state == "half_open"
    assert breaker.record(False, task) == "closed"


def test_the_parent_copy_follows_a_childs_trial_and_snapshots_round_trip() -> None:
    now = [0.0]
    parent, task = Breaker(clock=lambda: now[0]), _Task()
    for _ in range(3):
        parent.record(False, task)
    child = Breaker.from_snapshot(parent.snapshot())
    assert child.snapshot() == parent.snapshot()
    parent.started()  # the child's trial started a moment before the parent's cooldown ended
    assert parent.state == "half_open"
