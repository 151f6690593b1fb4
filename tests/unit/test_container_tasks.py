"""Container tasks without an engine: their keys, who may get their slots, and the slot
that is dealt one on a node without an engine (the docker tests run them for real)."""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

import pytest

from tests.cluster import RECORD_WORKS
from xconsumer.codecs import decode_member
from xconsumer.config import TaskConfig, parse_config
from xconsumer.errors import ConfigError
from xconsumer.executors import container as container_executor
from xconsumer.executors import executor_for
from xconsumer.membership import MemberRecord
from xconsumer.node import validate_works
from xconsumer.slot import restart_needed
from xconsumer.strategies import STRATEGIES, Member, Plan, Slot, validate_plan
from xconsumer.works import discover

BOX = 'name = "c"\nworkName = "box"\nworkerNum = 2\n'


def task(extra: str) -> TaskConfig:
    return parse_config(f"[[task]]\n{BOX}{extra}", source="app.toml", env={}).tasks[0]


def test_image_makes_a_container_task_and_the_keys_round_trip():
    t = task('image = "busybox:1"\ncommand = ["sh", "-c", "true"]\nenv = { B = "2", A = "1" }\n')
    assert (t.isolation, t.image, t.command, t.env) == (
        "container", "busybox:1", ("sh", "-c", "true"), (("A", "1"), ("B", "2")))
    doc = t.to_dict()
    assert doc["command"] == ["sh", "-c", "true"] and doc["env"] == {"A": "1", "B": "2"}
    assert TaskConfig.from_dict(doc) == t
    assert executor_for(t).kind == "container"
    # Left out at their defaults: existing documents do not change.
    assert set(task("").to_dict()) == {"name", "workName", "workerNum", "mode", "interval",
                                       "stop_timeout", "retry_backoff", "retry_backoff_max"}


@pytest.mark.parametrize("extra, message", [
    ('image = ""\n', "image must be a non-empty image reference"),
    ("image = 3\n", "image must be a non-empty image reference"),
    ('image = "a"\ncommand = "run"\n', "command must be a non-empty list of strings"),
    ('image = "a"\ncommand = ["run", 1]\n', "command must be a non-empty list of strings"),
    ('image = "a"\nenv = { A = 1 }\n', "env A must be a string"),
    ('image = "a"\nenv = ["A=1"]\n', "env must be a table of strings"),
    ('image = "a"\nenv = { XCONSUMER_SLOT = "1" }\n', "may not set XCONSUMER_SLOT"),
    ('command = ["run"]\n', "command is only for container tasks: set image too"),
    ('env = { A = "1" }\n', "env is only for container tasks: set image too"),
    ('isolation = "container"\n', "isolation 'container' needs image"),
    ('image = "a"\nisolation = "process"\n', "image makes a container task, but isolation"),
])
def test_bad_container_keys_are_one_line_errors_naming_file_task_and_key(extra, message):
    with pytest.raises(ConfigError) as err:
        task(extra)
    text = str(err.value)
    assert text.startswith("app.toml: task[0] (name 'c') ") and message in text, text
    assert "\n" not in text


def test_a_change_of_image_command_or_env_restarts_the_slot():
    t = task('image = "a"\n')
    assert restart_needed(t, task('image = "b"\n'))
    assert restart_needed(t, task('image = "a"\ncommand = ["x"]\n'))
    assert restart_needed(t, task('image = "a"\nenv = { A = "1" }\n'))
    assert not restart_needed(t, task('image = "a"\ninterval = 3\n'))


def test_members_advertise_docker_and_old_members_have_none():
    old = MemberRecord("n-1", 1, {"id": "old", "handlers": ["RunBox"]}).to_member()
    new = MemberRecord("n-2", 2, {"id": "new", "docker": True}).to_member()
    assert not old.docker and new.docker
    bad = decode_member(b'{"id": "x", "docker": "yes"}', "/n-3")
    assert "docker must be true or false" in str(bad)


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_container_slots_go_only_to_nodes_with_an_engine(name):
    box = task('image = "a"\n')
    handler = TaskConfig(name="h", work_name="box", worker_num=4)  # same workName, a handler
    members = [Member("engine", 1, frozenset(), docker=True),
               Member("handler", 2, frozenset({"RunBox"})),
               Member("both", 3, frozenset({"RunBox"}), docker=True),
               Member("draining", 4, frozenset({"RunBox"}), docker=True, draining=True)]
    plan = STRATEGIES[name]([box, handler], members, leader=None)
    owners = {s: n for n, slots in plan.nodes.items() for s in slots}
    assert {owners[s] for s in owners if s.task == "c"} <= {"engine", "both"}
    assert {owners[s] for s in owners if s.task == "h"} <= {"handler", "both"}
    assert not plan.unassigned
    assert validate_plan(plan, [box, handler], members, None) == []


def test_the_validator_names_the_missing_engine():
    box = task('image = "a"\n')
    members = [Member("plain", 1, frozenset({"RunBox"}))]
    plan = STRATEGIES["round_robin"]([box], members, leader=None)
    assert plan.unassigned and not any(plan.nodes.values())
    bad = Plan({"plain": (Slot("c", 0), Slot("c", 1))})
    assert any("has no Docker engine" in p for p in validate_plan(bad, [box], members, None))


def test_a_slot_dealt_to_a_node_without_an_engine_fails_with_one_line(monkeypatch):
    monkeypatch.setattr(container_executor, "engine", lambda timeout=0: None)
    errors: list[str] = []
    log = SimpleNamespace(error=errors.append)
    runner: Any = SimpleNamespace(task=task('image = "a"\n'), state="running", last_error=None,
                                  log=log)
    ctx = SimpleNamespace(stop_event=threading.Event(), fence=1)
    assert executor_for(runner.task).run(runner, ctx, None, lambda *a: None) is False
    assert runner.state == "failed" and "no Docker engine" in runner.last_error
    assert errors == [runner.last_error] and "\n" not in runner.last_error


def test_no_engine_is_found_without_a_socket(monkeypatch):
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.setattr(container_executor, "_SOCKET", "/nonexistent/docker.sock")
    assert container_executor.engine() is None
    assert container_executor.engine_available() is False


def test_a_container_task_needs_no_handler_for_its_work_name():
    registry = discover(RECORD_WORKS)
    assert not registry.has("box")
    validate_works(parse_config(f"[[task]]\n{BOX}image = \"a\"\n", source="app.toml", env={}),
                   registry)
    with pytest.raises(ConfigError, match="workName 'box'"):
        validate_works(parse_config(f"[[task]]\n{BOX}", source="app.toml", env={}), registry)
