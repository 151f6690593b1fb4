"""The leader's debounce window, against what else wakes its controller."""

from __future__ import annotations

import time

from tests.integration.test_node import make_config, running, start
from tests.util import wait_until

KEYED = ('[assignment]\ndebounce = 2.0\n'
         '[[task]]\nname = "k"\nworkName = "record"\nkeys = "Pair"\nkeys_interval = 0.1\n'
         'stop_timeout = 2\n')


def test_a_keys_call_due_while_debouncing_waits_for_the_window(zk_hosts, zk_root, nodes,
                                                              record) -> None:
    """Found in review: a keys provider falling due while the leader waits out a
    membership change's debounce kept the controller's wake-up in the past (the pass that
    calls the provider comes after the debounce), so the controller ran pass after pass,
    with no wait, until the window closed (459 passes in 2 s). The call waits for the
    window's end instead, and is made then."""
    config = make_config(zk_hosts, zk_root, KEYED)
    a = start(nodes, config, "a")
    wait_until(lambda: running(a) == {"k/0", "k/1"}, 15)
    b = start(nodes, config, "b")  # a membership change: the leader waits 2 s for quiet
    wait_until(lambda: a._debouncing_until is not None, 15)
    before = a.passes
    wait_until(lambda: a._debouncing_until is None, 15)
    passes, ended = a.passes - before, time.monotonic()
    # Inside the window: the periodic passes (one per reconcile_interval, 0.5 s), one on
    # each event of the join and one at its end; spinning, hundreds.
    assert passes < 100, f"{passes} passes of the leader's controller in a 2 s debounce"
    # The provider, due all along, is called once the window is over.
    wait_until(lambda: a.keys._states["k"].due > ended, 5)
    wait_until(lambda: running(a) | running(b) == {"k/0", "k/1"}, 15)
