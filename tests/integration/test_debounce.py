"""The leader's debounce window, against what else wakes its controller."""

from __future__ import annotations

from tests.integration.test_node import make_config, running, start
from tests.util import wait_until
from xconsumer.leader import read_assignment
from xconsumer.paths import Paths

KEYED = ('[assignment]\ndebounce = 2.0\n'
         '[[task]]\nname = "k"\nworkName = "record"\nkeys = "Pair"\nkeys_interval = 0.1\n'
         'stop_timeout = 2\n')


def test_a_keys_call_due_while_debouncing_waits_for_the_window(zk, zk_hosts, zk_root, nodes,
                                                              record) -> None:
    """Found in review: a keys provider falling due while the leader waits out a
    membership change's debounce kept the controller's wake-up in the past (the pass that
    calls the provider comes after the debounce), so the controller ran pass after pass,
    with no wait, until the window closed. The call waits for the window instead."""
    config = make_config(zk_hosts, zk_root, KEYED)
    paths = Paths(zk_root, "it")
    a = start(nodes, config, "a")
    wait_until(lambda: running(a) == {"k/0", "k/1"}, 15)
    before = a.passes
    b = start(nodes, config, "b")  # a membership change: the leader waits 2 s for quiet

    def b_planned() -> bool:
        doc, _ = read_assignment(zk, paths)
        return doc is not None and "b" in doc.get("members", [])

    wait_until(b_planned, 15)
    passes = a.passes - before
    # A pass on each of the join's events, and one at the window's end; the provider (due
    # every 0.1 s) is called at the end too. Spinning, it was thousands.
    assert passes < 40, f"{passes} passes of the leader's controller in a 2 s debounce"
    wait_until(lambda: running(a) | running(b) == {"k/0", "k/1"}, 15)
