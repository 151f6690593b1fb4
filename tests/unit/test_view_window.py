"""The views' reads go out a window at a time: whatever the cluster's size, at most
VIEW_WINDOW of them are ahead of a request the node sends on the same session meanwhile
(its lease's renewal), and their pending answers never fill memory."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from xconsumer import view


@given(n=st.integers(0, 700))
def test_at_most_a_window_is_in_flight_and_answers_come_in_order(n: int) -> None:
    sent: list[int] = []
    taken: list[int] = []
    for item, answer in view._windowed(range(n), lambda i: sent.append(i) or -i):
        assert answer == -item
        taken.append(item)
        assert len(sent) - len(taken) < view.VIEW_WINDOW
    assert sent == taken == list(range(n))
