"""Keyed tasks' pure parts: what a provider may return, and where each key's slot goes."""

from __future__ import annotations

import json
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xconsumer.keys import KeysError, KeysTracker, check_keys, stable_order

KEYS = st.lists(st.sampled_from([f"k{i}" for i in range(30)]), unique=True, max_size=30)


@given(KEYS, KEYS)
def test_stable_order_lists_each_fresh_key_once(previous, fresh):
    assert sorted(stable_order(previous, fresh)) == sorted(fresh)


@given(KEYS, KEYS)
def test_adding_keys_never_moves_another(previous, extra):
    fresh = previous + [k for k in extra if k not in previous]
    assert stable_order(previous, fresh)[:len(previous)] == previous


@given(KEYS, KEYS)
def test_a_change_moves_at_most_one_kept_key_per_removed_key(previous, fresh):
    out = stable_order(previous, fresh)
    removed = len(set(previous) - set(fresh))
    kept = [k for k in previous if k in fresh]
    moved = [k for k in kept if out.index(k) != previous.index(k)]
    assert len(moved) <= removed


def test_new_keys_fill_the_indices_removed_keys_freed():
    assert stable_order(["a", "b", "c"], ["a", "c", "d"]) == ["a", "d", "c"]
    assert stable_order(["a", "b", "c", "d"], ["a", "d"]) == ["a", "d"]
    assert stable_order(["a", "b", "c"], ["a", "b"]) == ["a", "b"]
    assert stable_order([], ["x", "y"]) == ["x", "y"]


@pytest.mark.parametrize("value, message", [
    ("abc", "must return a list"),
    (None, "must return a list"),
    ({"a": 1}, "must return a list"),
    (["a", 1], "a int at position 1"),
    (["a", "a"], "key 'a' twice"),
    (["a b"], "a key is 1-200"),
    ([""], "a key is 1-200"),
    (["x" * 201], "a key is 1-200"),
    (["a/b"], "a key is 1-200"),
])
def test_bad_provider_results_get_one_clear_line(value, message):
    with pytest.raises(KeysError, match=message):
        check_keys(value, "Keys provider of task 't'")


def test_accepts_tuples_and_sets_of_valid_keys():
    assert check_keys(("p-0", "topic:1", "tenant@eu"), "w") == ["p-0", "topic:1", "tenant@eu"]
    assert sorted(check_keys({"b", "a"}, "w")) == ["a", "b"]


class _Task:
    def __init__(self, name: str, keys: str, interval: float = 30.0) -> None:
        self.name, self.keys, self.keys_interval = name, keys, interval


def test_tracker_keeps_the_last_good_keys_and_reports_each_failure():
    results: list[object] = [["a", "b"], RuntimeError("down"), ["b", "c"]]
    errors: list[tuple[str, str]] = []
    changed = threading.Event()
    now = [0.0]

    def provider():
        value = results.pop(0)
        if isinstance(value, Exception):
            raise value
        return value

    tracker = KeysTracker(lambda name: provider if name == "P" else None,
                          on_change=changed.set, on_error=lambda t, m: errors.append((t, m)),
                          clock=lambda: now[0])
    task = _Task("t", "P", interval=5.0)

    def poll_and_wait() -> None:
        tracker.poll([task], {}, {})
        for state in list(tracker._states.values()):
            if state.thread is not None:
                state.thread.join(5)

    poll_and_wait()
    assert tracker.keys("t") == ["a", "b"] and changed.is_set()
    poll_and_wait()  # not due yet: no call
    assert len(results) == 2
    now[0] = 6.0
    poll_and_wait()
    assert tracker.keys("t") == ["a", "b"]
    assert errors and "raised RuntimeError: down; keeping the last good keys" in errors[-1][1]
    tracker.poll([task], {}, {"t": 1})  # an operator's refresh request is due at once
    tracker.poll([task], {}, {"t": 2})
    for state in list(tracker._states.values()):
        if state.thread is not None:
            state.thread.join(5)
    assert tracker.keys("t") == ["c", "b"]  # b kept its index; c took a's
    tracker.stop()


def test_a_missing_provider_is_reported_once_and_a_new_leader_starts_from_the_published():
    errors: list[str] = []
    tracker = KeysTracker(lambda name: None, on_change=lambda: None,
                          on_error=lambda t, m: errors.append(m), clock=lambda: 100.0)
    tracker.poll([_Task("t", "gone")], {"t": ["x"]}, {})
    tracker.poll([_Task("t", "gone")], {"t": ["x"]}, {})
    assert tracker.keys("t") == ["x"]
    assert len(errors) == 1 and "no function KeysGone()" in errors[0]


def test_a_keyed_task_without_its_provider_fails_at_start(tmp_path):
    from xconsumer.config import parse_config
    from xconsumer.errors import ConfigError
    from xconsumer.node import validate_works
    from xconsumer.works import discover

    works = tmp_path / "works"
    works.mkdir()
    (works / "__init__.py").write_text("")
    (works / "a.py").write_text("def RunX(ctx):\n    pass\n\ndef KeysOther():\n    return []\n")
    config = parse_config('[[task]]\nname = "t"\nworkName = "x"\nkeys = "shards"\n',
                          source="app.toml")
    with pytest.raises(ConfigError, match=r"keys 'shards': no function KeysShards\(\) in "
                                          r"works/ \(found: KeysOther\)"):
        validate_works(config, discover(works))


@pytest.mark.parametrize("toml, message", [
    ('workerNum = 2\nkeys = "s"\n', "has both workerNum and keys"),
    ("", r"missing required key workerNum \(or keys"),
    ('keys = "s"\nimage = "i"\n', "keys is not available for container tasks"),
    ('workerNum = 2\nparams = { x = 1 }\n', "params has key 'x', which is not a slot index"),
    ('workerNum = 2\nparams = 3\n', "params must be a list"),
    # 17 levels: one more than a value may nest (deeper data broke copy.deepcopy downstream)
    ('workerNum = 2\nparams = [' + "[" * 17 + "]" * 17 + ']\n',
     r"params 0 is nested deeper than 16 levels"),
    ('keys = "s"\nkeys_interval = 0\n', "keys_interval"),
    ('keys = "9s"\n', "keys"),
])
def test_keyed_and_params_config_errors(toml, message):
    from xconsumer.config import parse_config
    from xconsumer.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        parse_config(f'[[task]]\nname = "t"\nworkName = "x"\n{toml}', source="app.toml")


def test_params_nested_as_deep_as_allowed_are_kept():
    from xconsumer.config import parse_config

    task = parse_config('[[task]]\nname = "t"\nworkName = "x"\nworkerNum = 1\nparams = ['
                        + "[" * 16 + "]" * 16 + "]\n", source="app.toml").tasks[0]
    assert task.to_dict()["params"] == {"0": json.loads("[" * 16 + "]" * 16)}


def test_params_list_table_and_slot_param():
    from xconsumer.config import parse_config, slot_param

    task = parse_config('[[task]]\nname = "t"\nworkName = "x"\nworkerNum = 3\n'
                        'params = ["a", { city = "Beijing" }]\n').tasks[0]
    assert slot_param(task, 0) == "a" and slot_param(task, 1) == {"city": "Beijing"}
    assert slot_param(task, 2) is None
    assert task.to_dict()["params"] == {"0": "a", "1": {"city": "Beijing"}}
    keyed = parse_config('[[task]]\nname = "t"\nworkName = "x"\nkeys = "s"\n'
                         'params = { "p-1" = 5 }\n').tasks[0]
    assert slot_param(keyed, 0, "p-1") == 5 and "workerNum" not in keyed.to_dict()


def test_a_published_document_without_keys_decodes_equal_to_itself():
    """Found in review: decoding added an empty `keys`, so the leader saw every published
    document as changed and republished it on every pass."""
    from xconsumer.codecs import decode_assignment
    from xconsumer.zk import dumps

    doc = {"generation": 3, "nodes": {"a": {"t": [0]}}, "tasks": [], "members": ["a"]}
    decoded = decode_assignment(dumps(doc), "/a")
    assert "keys" not in decoded
    assert decode_assignment(dumps({**doc, "keys": {"t": ["x"]}}), "/a")["keys"] == {"t": ["x"]}


def test_an_async_handler_with_process_isolation_fails_at_start(tmp_path):
    """It would never run: the child would call it and drop the coroutine unawaited."""
    from xconsumer.config import parse_config
    from xconsumer.errors import ConfigError
    from xconsumer.node import validate_works
    from xconsumer.works import discover

    works = tmp_path / "works"
    works.mkdir()
    (works / "__init__.py").write_text("")
    (works / "a.py").write_text("async def RunX(ctx):\n    pass\n")
    config = parse_config('[[task]]\nname = "t"\nworkName = "x"\nworkerNum = 1\n'
                          'isolation = "process"\n', source="app.toml")
    with pytest.raises(ConfigError, match='cannot run with isolation = "process"'):
        validate_works(config, discover(works))


def test_a_provider_raising_systemexit_is_reported_and_keeps_the_keys():
    errors: list[str] = []

    def provider():
        raise SystemExit(3)

    tracker = KeysTracker(lambda name: provider, on_change=lambda: None,
                          on_error=lambda t, m: errors.append(m), clock=lambda: 0.0)
    tracker.poll([_Task("t", "p")], {"t": ["a"]}, {})
    for state in list(tracker._states.values()):
        if state.thread is not None:
            state.thread.join(5)
    assert tracker.keys("t") == ["a"] and "raised SystemExit" in errors[0]


def test_a_task_removed_while_its_provider_hangs_leaves_no_deadline_behind():
    """Found in review: the state of a task no longer keyed was kept while its call ran,
    and only keyed tasks are checked for a hang, so the hang's deadline stayed in the past
    for good: the leader's controller, which waits for next_due, ran pass after pass
    without waiting for as long as the provider hung."""
    release = threading.Event()
    now = [0.0]
    errors: list[str] = []

    def provider():
        release.wait(10)
        return ["late"]

    tracker = KeysTracker(lambda name: provider, on_change=lambda: None,
                          on_error=lambda t, m: errors.append(m), clock=lambda: now[0],
                          timeout=10.0)
    try:
        tracker.poll([_Task("t", "p")], {}, {})
        assert tracker.next_due() == 10.0  # the hang check, while the call runs
        now[0] = 5.0
        tracker.poll([], {}, {})  # the task is removed from the table
        now[0] = 50.0
        due = tracker.next_due()
        assert due is None or due > now[0], f"a deadline left in the past: {due}"
        tracker.poll([], {}, {})
        assert tracker.keys("t") is None and not errors
    finally:
        release.set()
        tracker.stop(5)
    assert tracker.keys("t") is None  # the late answer of a removed task is dropped
