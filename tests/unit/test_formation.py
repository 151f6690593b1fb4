"""The formation window: only a fresh cluster's first publish waits, and only once."""

from __future__ import annotations

import pytest

from xconsumer.formation import FormationWindow, is_fresh


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


DEALT = {"generation": 4, "nodes": {"a": {"x": [0, 1]}, "b": {}}}


def test_a_fresh_cluster_waits_from_the_first_look_then_publishes_once_for_good():
    clock = Clock()
    window = FormationWindow(1.0, clock=clock)
    clock.now = 500.0  # the process started long ago: the window starts at the first look
    assert window.wait(None, ["a"]) == pytest.approx(1.0)
    clock.now += 0.4
    assert window.wait(None, ["a"]) == pytest.approx(0.6)
    clock.now += 0.6
    assert window.wait(None, ["a"]) == 0.0
    clock.now += 0.1  # latched: a later look at a still-empty document does not wait again
    assert window.wait(None, ["a", "b", "c", "d"]) == 0.0


def test_each_join_starts_the_window_again_up_to_its_stretch():
    """Like Kafka's initial rebalance delay: a mass start is one plan, not one per join."""
    from xconsumer.formation import MAX_STRETCH

    clock = Clock()
    window = FormationWindow(1.0, clock=clock)
    assert window.wait(None, ["a"]) == pytest.approx(1.0)
    clock.now += 0.8
    assert window.wait(None, ["a", "b"]) == pytest.approx(1.0)  # b joined: again
    clock.now += 0.5
    assert window.wait(None, ["b"]) == pytest.approx(0.5)  # a left: no join
    for _ in range(100):  # a join every 0.9 s for ever: capped
        clock.now += 0.9
        left = window.wait(None, ["b", f"n{clock.now}"])
        if left == 0.0:
            break
    assert left == 0.0 and clock.now - 100.0 <= MAX_STRETCH * 1.0 + 1.0


def test_a_cluster_that_already_deals_to_a_live_node_publishes_at_once():
    """A new leader after a leader change or a crash: no wait, then or later."""
    window = FormationWindow(5.0, clock=Clock())
    assert window.wait(DEALT, ["b", "c"]) == 0.0  # b is listed, with no slots
    assert window.wait(None, ["c"]) == 0.0


def test_a_document_naming_only_departed_nodes_is_a_fresh_cluster():
    """A whole cluster restarted under new names: nobody in the document is live."""
    clock = Clock()
    window = FormationWindow(2.0, clock=clock)
    assert window.wait(DEALT, ["c", "d"]) == pytest.approx(2.0)
    clock.now += 2.0
    assert window.wait(DEALT, ["c", "d"]) == 0.0


@pytest.mark.parametrize("seconds", [0, 0.0, -1.0])
def test_zero_disables_the_window(seconds: float):
    window = FormationWindow(seconds, clock=Clock())
    assert window.seconds == 0.0
    assert window.wait(None, ["a"]) == 0.0


@pytest.mark.parametrize(("doc", "fresh"), [
    (None, True), ({}, True), ({"nodes": None}, True), ({"nodes": {}}, True),
    ({"nodes": {"gone": {"x": [0]}}}, True), (DEALT, False),
])
def test_is_fresh(doc, fresh: bool):
    assert is_fresh(doc, ["a", "z"]) is fresh
