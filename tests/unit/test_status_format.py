"""`xconsumer status` output, from a cluster view."""

from __future__ import annotations

from xconsumer.cli import format_status


def test_status_shows_leader_slots_and_their_state():
    view = {
        "cluster": "c", "leader": "a", "generation": 3,
        "nodes": [{"id": "a", "leader": True, "seq": 0, "state": "active",
                   "admin_url": "http://127.0.0.1:8001"},
                  {"id": "b", "leader": False, "seq": 1, "state": "draining",
                   "admin_url": None}],
        "assignment": {"a": [{"task": "t", "slot": 0}, {"task": "o", "slot": 0}],
                       "b": [{"task": "t", "slot": 1}]},
        "owners": {"t/0": "a", "t/1": "a"},
        "done": ["o/0"],
        "unassigned": [{"task": "t", "slot": 2}],
    }
    text = format_status(view)
    assert text.splitlines()[0] == "cluster c: 2 node(s), leader a, generation 3"
    assert "a (leader) seq=0 state=active admin=http://127.0.0.1:8001 slots=2" in text
    assert "b seq=1 state=draining admin=- slots=1" in text
    lines = {line.split()[0]: line for line in text.splitlines() if line.startswith("    ")}
    assert lines["t/0"].endswith("running")
    assert lines["o/0"].endswith("done (once)")
    assert lines["t/1"].endswith("owned by a")
    assert text.rstrip().endswith("unassigned (no eligible node): t/2")
