"""The znode codecs: whatever bytes a znode holds, decoding answers a checked value or a
`Corrupt`, never an exception; and a checked value has exactly the shapes the readers use."""

from __future__ import annotations

import copy
import json
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xconsumer.codecs import (
    Corrupt,
    decode_assignment,
    decode_checkpoint,
    decode_marker,
    decode_member,
    decode_overrides,
    decode_owner,
    decode_plan,
    doc_plan,
    doc_unassigned,
    plan_desired,
    plan_slots,
)
from xconsumer.config import TaskConfig
from xconsumer.leader import build_doc, clamp_slots, next_generation
from xconsumer.overrides import effective_tasks
from xconsumer.zk import encode

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                   max_size=4),
    max_leaves=20)
# Objects that look like the real documents, with any value under the real keys.
KEYS = ["generation", "nodes", "tasks", "paused", "drained", "members", "unassigned", "seed",
        "leader", "strategy", "published_at", "id", "handlers", "works", "weight", "state",
        "rebalance", "node", "session", "started_at", "r", "a", "workerNum", "added",
        "removed", "name", "workName", "leader_works", "pid", "slots", "keys", "leader_name"]
shaped = st.recursive(
    json_values,
    lambda inner: st.dictionaries(st.sampled_from(KEYS), inner, max_size=6),
    max_leaves=30)
DECODERS = [decode_assignment, decode_member, decode_overrides, decode_owner, decode_plan,
            lambda raw, path: decode_marker("done", raw, path)]


def _check_assignment(doc: dict) -> None:
    """Everything the node, the views and the leader read from a decoded assignment."""
    assert isinstance(doc["generation"], int) and doc["generation"] >= 1
    for node, slots in doc_plan(doc).items():
        assert isinstance(node, str)
        assert all(isinstance(s.task, str) and isinstance(s.index, int) for s in slots)
    doc_unassigned(doc)
    for name in doc_plan(doc):
        plan_slots(doc, name)
    for key in ("paused", "drained", "members"):
        assert all(isinstance(x, str) for x in doc[key])


@settings(max_examples=400, deadline=None)
@given(value=shaped)
def test_no_decoder_raises_on_any_json(value) -> None:
    raw = json.dumps(value).encode()
    for decode in DECODERS:
        out = decode(raw, "/x")
        assert isinstance(out, Corrupt | dict)
    doc = decode_assignment(raw, "/x")
    if isinstance(doc, dict):
        _check_assignment(doc)
    overrides = decode_overrides(raw, "/x")
    if isinstance(overrides, dict):
        effective_tasks([TaskConfig(name="r", work_name="w", worker_num=2)], overrides)
    plan = decode_plan(raw, "/x")
    if isinstance(plan, dict):
        assert plan.get("leader_name") is None or isinstance(plan["leader_name"], str)
        for slot, task in plan_desired(plan).items():
            assert isinstance(slot.index, int) and task.name == slot.task


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=64))
def test_no_decoder_raises_on_any_bytes(raw: bytes) -> None:
    for decode in DECODERS:
        assert isinstance(decode(raw, "/x"), Corrupt | dict)
    assert isinstance(decode_assignment(b"XCZ1" + raw, "/x"), Corrupt | dict)


@pytest.mark.parametrize("data", [
    b'{"nodes": "x", "generation": "y"}', b'{"nodes": []}', b'{"nodes":{"a":{"r":["x"]}}}',
    b'{"generation": 3, "nodes": {"a": {"r": [0]}, "b": {"r": [0]}}}',
    b'{"generation": true}', b'{"generation": -1}', b'[1, 2]', b'"not json"', b"", b"\xff",
    b"XCZ1" + zlib.compress(b"[" * 100_000), b"[" * 100_000,
])
def test_the_wrong_shapes_found_in_the_field_are_corrupt(data: bytes) -> None:
    out = decode_assignment(data, "/c/assignment")
    assert isinstance(out, Corrupt) and out.path == "/c/assignment" and out.error
    assert "\n" not in str(out)


def test_a_plans_leader_name_is_a_node_name_or_absent() -> None:
    """It reaches logs, events and the API (a follower shows it as its leader's name)."""
    base = {"generation": 2, "leader": "n-0000000001", "node": "c", "slots": {"r": [0]}}
    assert decode_plan(json.dumps(base).encode(), "/p")["leader_name"] is None
    named = decode_plan(json.dumps({**base, "leader_name": "node-2.b_x"}).encode(), "/p")
    assert named["leader_name"] == "node-2.b_x"
    for bad in ("", "a\nb", "\x1b[31mred", "x" * 65, " a", 7, ["a"]):
        out = decode_plan(json.dumps({**base, "leader_name": bad}).encode(), "/p")
        assert isinstance(out, Corrupt) and "leader_name" in out.error, bad


def test_a_zlib_bomb_is_corrupt_not_an_out_of_memory() -> None:
    bomb = b"XCZ1" + zlib.compress(b" " * (80 * 1024 * 1024))
    out = decode_assignment(bomb, "/a")
    assert isinstance(out, Corrupt) and "inflates" in out.error


def test_members_and_overrides_of_the_wrong_shape() -> None:
    assert isinstance(decode_member(b'{"id":"zz","handlers":5}', "/m"), Corrupt)
    assert isinstance(decode_member(b'{"id":"a","weight":0}', "/m"), Corrupt)
    assert isinstance(decode_member(b'{"id":"a b"}', "/m"), Corrupt)
    ok = decode_member(b'{"id":"a","handlers":["RunX"],"future_key":1}', "/m")
    assert isinstance(ok, dict) and ok["handlers"] == ["RunX"] and ok["weight"] == 1.0
    for bad in (b'"not json"', b"[1,2]", b'{"tasks": []}', b'{"rebalance": "1"}',
                b'{"tasks": {"t": {"workerNum": -1}}}', b'{"tasks": {"t": {"paused": 1}}}',
                b'{"tasks": {"t": {"added": true, "name": "u", "workName": "w", '
                b'"workerNum": 1}}}'):
        assert isinstance(decode_overrides(bad, "/o"), Corrupt), bad
    good = decode_overrides(b'{"tasks": {"t": {"workerNum": 5}}, "drained": ["b", "a"]}', "/o")
    assert good == {"tasks": {"t": {"workerNum": 5}}, "drained": ["a", "b"], "rebalance": 0}
    assert decode_marker("done", b"", "/d") == {}
    assert isinstance(decode_marker("done", b"junk", "/d"), Corrupt)
    assert isinstance(decode_owner(b'{"node": 5}', "/o"), Corrupt)


def test_a_published_document_round_trips() -> None:
    from xconsumer.assignment import Plan, Slot
    from xconsumer.membership import MemberRecord

    tasks = effective_tasks([TaskConfig(name="r", work_name="w", worker_num=2)], {})
    plan = Plan({"a": (Slot("r", 0),), "b": (Slot("r", 1),)})
    doc = build_doc(plan=plan, tasks=tasks, leader="a", strategy="round_robin",
                    members=[MemberRecord("n-0000000001", 1, {"id": "a"})], generation=7)
    decoded = decode_assignment(encode(doc), "/a")
    assert isinstance(decoded, dict) and decoded["generation"] == 7
    assert doc_plan(decoded) == {"a": [Slot("r", 0)], "b": [Slot("r", 1)]}


@given(gen=st.integers(1, 10**6), version=st.integers(-1, 10**6), seen=st.integers(0, 10**6))
def test_generations_only_grow(gen: int, version: int, seen: int) -> None:
    valid = {"generation": gen, "nodes": {}}
    corrupt = Corrupt("assignment", "/a", "x")
    assert next_generation(valid, version, seen) > max(gen, seen)
    # Every publish wrote generation >= version + 1; a corrupt write bumped the version.
    assert next_generation(corrupt, version, seen) > max(version + 1, seen)
    assert next_generation(None, -1) == 1


def test_the_slot_cap_cuts_in_table_order() -> None:
    tasks = [TaskConfig(name=n, work_name="w", worker_num=k) for n, k in
             (("a", 4), ("b", 5), ("c", 3))]
    cut, over = clamp_slots(tasks, 6)
    assert [t.worker_num for t in cut] == [4, 2, 0] and over == 6
    assert clamp_slots(tasks, None) == (tasks, 0)


def test_found_by_review_huge_numbers_and_foreign_digits() -> None:
    """Python refuses ints over 4300 digits with a plain ValueError; "²" passes isdigit()."""
    from xconsumer.codecs import MAX_GENERATION, slot_index
    from xconsumer.paths import is_member_child

    huge = b'{"generation": ' + b"1" * 5000 + b', "nodes": {}}'
    for decode in DECODERS:
        assert isinstance(decode(huge, "/x"), Corrupt)
    assert [slot_index(c) for c in ("0", "7", "99999", "\u00b2", "007", "-1", "1e3")] == [
        0, 7, 99999, None, None, None, None]
    assert is_member_child("n-0000000001")
    assert not is_member_child("n-\u0660\u0660\u0660\u0660\u0660\u0660\u0660\u0660\u0660\u0660")
    # A generation at the cap decodes, and the next one stays decodable (no repair loop).
    at_cap = {"generation": MAX_GENERATION, "nodes": {}}
    assert isinstance(decode_assignment(json.dumps(at_cap).encode(), "/a"), dict)
    assert next_generation(at_cap, 5) == MAX_GENERATION


def test_moved_between_counts_what_moved_slots_counts():
    """The leader's fast count over the published form agrees with the strategies' count."""
    import random

    from xconsumer.assignment import moved_slots
    from xconsumer.codecs import doc_plan
    from xconsumer.leader import moved_between

    rng = random.Random(7)
    for _ in range(200):
        def plan() -> dict:
            nodes: dict = {}
            for task in ("a", "b"):
                for i in rng.sample(range(30), rng.randint(0, 30)):
                    nodes.setdefault(f"n{rng.randint(0, 4)}", {}).setdefault(task, []).append(i)
            return nodes
        before, after = plan(), plan()
        assert moved_between(before, after) == moved_slots(
            doc_plan({"nodes": before}), doc_plan({"nodes": after}))


def test_a_slot_given_twice_is_named_on_the_fast_path_too():
    from xconsumer.codecs import Corrupt, decode_assignment
    from xconsumer.zk import dumps

    for nodes in ({"a": {"t": [1, 2]}, "b": {"t": [3, 2]}}, {"a": {"t": [4, 4]}}):
        doc = decode_assignment(dumps({"generation": 1, "nodes": nodes}), "/x")
        assert isinstance(doc, Corrupt) and "is given to both" in doc.error, doc
    bad = decode_assignment(dumps({"generation": 1, "nodes": {"a": {"t": [1, True]}}}), "/x")
    assert isinstance(bad, Corrupt) and "nodes.a.t[]" in bad.error


# -- found by an adversarial review: deep nesting, NaN, weights, writer/decoder agreement ----

def _nest(depth: int, as_dict: bool) -> object:
    """JSON `depth` containers deep (1: `[]` or `{}`), built without recursion."""
    value: object = {} if as_dict else []
    for _ in range(depth - 1):
        value = {"k": value} if as_dict else [value]
    return value


# A valid document of each kind, and where free-form JSON may sit in it (its depth there).
_VALID = {
    "member": (decode_member, {"id": "a", "handlers": ["RunX"]}, 1),
    "assignment": (decode_assignment, {"generation": 2, "nodes": {"a": {"r": [0]}},
                                       "tasks": [{"name": "r", "workName": "w",
                                                  "workerNum": 1}]}, 1),
    "plan": (decode_plan, {"generation": 2, "leader": "n-1", "node": "a",
                           "slots": {"r": [0]}}, 1),
    "overrides": (decode_overrides, {"tasks": {"t": {"workerNum": 2}}}, 1),
    "owner": (decode_owner, {"node": "a"}, 1),
    "checkpoint": (decode_checkpoint, {"value": None, "fence": 1}, 1),
    "done": (lambda raw, path: decode_marker("done", raw, path), {"by": "a"}, 1),
}


@pytest.mark.parametrize("kind", sorted(_VALID))
@settings(max_examples=60, deadline=None)
@given(depth=st.integers(1, 700), as_dict=st.booleans())
def test_any_nesting_decodes_to_data_python_can_copy_and_encode_or_is_corrupt(
        kind: str, depth: int, as_dict: bool) -> None:
    """Deep JSON decodes (json.loads allows ~1,000 levels) but broke copy.deepcopy and the
    JSON encoder: 600 levels in the overrides stopped every publish and every API request."""
    decode, base, at = _VALID[kind]
    raw = json.dumps({**base, "extra": _nest(depth, as_dict)}).encode()
    out = decode(raw, "/x")
    if at + depth > 32:
        assert isinstance(out, Corrupt) and "nested deeper than 32" in out.error, out
    else:
        assert isinstance(out, dict), out
        copy.deepcopy(out)
        json.dumps(out, allow_nan=False)


@pytest.mark.parametrize("kind", sorted(_VALID))
@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_corrupt_in_every_kind(kind: str, constant: str) -> None:
    """They are not JSON: served by the API (a checkpoint's value), a browser refused it."""
    decode, base, _ = _VALID[kind]
    raw = json.dumps(base)[:-1].encode() + b', "extra": ' + constant.encode() + b"}"
    out = decode(raw, "/x")
    assert isinstance(out, Corrupt) and "not a JSON number" in out.error, out
    assert isinstance(decode(json.dumps(base).encode(), "/x"), dict)


def test_a_checkpoint_value_of_nan_is_corrupt() -> None:
    out = decode_checkpoint(b'{"value": NaN, "fence": 1}', "/c")
    assert isinstance(out, Corrupt) and "NaN" in out.error


@pytest.mark.parametrize("weight,read", [
    (0.001, 0.001), (1000, 1000.0), (1, 1.0), (2.5, 2.5), (1e-309, 0.001), (0.0009, 0.001),
    (1000.5, 1000.0), (1e307, 1000.0), (0, None), (-1, None), (True, None), ("2", None)])
def test_a_members_weight_is_read_within_the_documented_range(weight, read) -> None:
    """A weight of 1e-309 against 1 overflowed the strategies' turn counts (round(w/low))
    and stopped every publish. One out of 0.001..1000 counts as the nearest bound (a node
    of an older version may have any weight above 0: it keeps its slots and its place in
    the election); one that is not a number above 0 is corrupt, as before."""
    out = decode_member(json.dumps({"id": "a", "weight": weight}).encode(), "/m")
    if read is None:
        assert isinstance(out, Corrupt) and "weight" in out.error, out
    else:
        assert isinstance(out, dict) and out["weight"] == read, out


_KINDS = {
    "plain": {"name": "t", "workName": "w", "workerNum": 2},
    "keyed": {"name": "t", "workName": "w", "keys": "names"},
    "container": {"name": "t", "workName": "w", "workerNum": 2, "image": "alpine:3.20"},
}
_CHANGES = {
    "workerNum": st.integers(0, 5), "image": st.sampled_from(["alpine:3.20", None]),
    "command": st.sampled_from([["sh", "-c", "true"], None]),
    "env": st.sampled_from([{"A": "1"}, None]),
    "isolation": st.sampled_from(["thread", "process", "container", None]),
    "params": st.sampled_from([{"0": {"a": [1]}}, {"alpha": 1}, [1, None, "x"], None]),
    "mode": st.sampled_from(["loop", "once", "interval", None]),
    "interval": st.sampled_from([0.5, 2, None]),
    "max_per_node": st.sampled_from([1, None]),
}


@pytest.mark.parametrize("kind", sorted(_KINDS))
@settings(max_examples=150, deadline=None)
@given(changes=st.dictionaries(st.sampled_from(sorted(_CHANGES)), st.none(), max_size=4)
       .flatmap(lambda keys: st.fixed_dictionaries({k: _CHANGES[k] for k in keys})))
def test_whatever_the_api_writes_into_the_overrides_decodes(kind: str, changes) -> None:
    """The writer checks a change against the real task, the decoder against a stand-in:
    the stand-in must accept all the writer does. Found in review: an image given to a
    task (and command or env to an app.toml container task) was written with a 200 and
    then read by every node as corrupt overrides."""
    from xconsumer import overrides as ov
    from xconsumer.zk import dumps
    seed = [TaskConfig.from_dict(_KINDS[kind], where="seed")]
    try:
        doc = ov.update_task(ov.empty(), seed, "t", changes)
    except ov.OverrideError:
        return  # refused with a 400: nothing written
    out = decode_overrides(dumps(doc), "/o")
    assert not isinstance(out, Corrupt), (changes, out)
    assert {e.task.name for e in effective_tasks(seed, out)} == {"t"}


def test_request_counters_wrap_instead_of_going_past_what_the_decoder_accepts() -> None:
    from xconsumer import overrides as ov
    from xconsumer.codecs import MAX_GENERATION
    from xconsumer.zk import dumps
    seed = [TaskConfig.from_dict(_KINDS["keyed"], where="seed")]
    doc = {"tasks": {}, "drained": [], "rebalance": MAX_GENERATION,
           "keys_refresh": {"t": MAX_GENERATION}}
    bumped = ov.request_keys_refresh(ov.request_rebalance(doc), seed, "t")
    assert bumped["rebalance"] == 1 and bumped["keys_refresh"]["t"] == 1
    assert not isinstance(decode_overrides(dumps(bumped), "/o"), Corrupt)
    assert ov.request_rebalance(bumped)["rebalance"] == 2


def test_warnings_about_corrupt_members_are_once_each_and_remembered_within_a_bound(
        monkeypatch) -> None:
    """Each distinct bad content of a member znode is logged once; found in review, the
    memory of what was logged grew for as long as someone kept writing new junk."""
    from xconsumer import membership

    said: list[str] = []
    monkeypatch.setattr(membership, "_warned", type(membership._warned)())
    monkeypatch.setattr(membership.logger, "warning", said.append)
    for _ in range(3):
        membership._warn_once("n-1:bad", "n-1 is bad")
    assert said == ["n-1 is bad"]
    for i in range(membership.WARNED_KEEP * 3):
        membership._warn_once(f"n-1:junk {i}", f"junk {i}")
    assert len(said) == 1 + membership.WARNED_KEEP * 3
    assert len(membership._warned) == membership.WARNED_KEEP
    membership._warn_once(f"n-1:junk {membership.WARNED_KEEP * 3 - 1}", "again")
    assert said[-1] != "again"  # the latest are still remembered
