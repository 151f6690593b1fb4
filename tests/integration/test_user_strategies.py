"""User strategies on a real cluster: the leader plans with the user's code, and a strategy
that raises, returns an invalid plan or never returns costs a fallback to round robin with
an event and a metric, while every slot keeps running."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import ModuleType

import pytest
from kazoo.client import KazooClient

from tests.integration import test_node
from tests.integration.test_node import make_config, running, start
from tests.util import wait_until
from xconsumer.leader import read_assignment
from xconsumer.node import Node
from xconsumer.paths import Paths
from xconsumer.strategies import Member, Strategy, round_robin

STRATEGY_WORKS = Path(__file__).resolve().parents[1] / "strategy_works"
TASKS = ('[[task]]\nname = "s"\nworkName = "spin"\nworkerNum = 5\nstop_timeout = 2\n'
         '[[task]]\nname = "t"\nworkName = "spin"\nworkerNum = 2\nstop_timeout = 2\n')
SLOTS = {f"s/{i}" for i in range(5)} | {"t/0", "t/1"}


@pytest.fixture
def strategy_works(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nodes started by `start()` discover the strategy works package."""
    monkeypatch.setattr(test_node, "RECORD_WORKS", STRATEGY_WORKS)


def cluster(zk_hosts: str, zk_root: str, nodes: list[Node], strategy: str,
            timeout: float = 2.0) -> list[Node]:
    config = make_config(zk_hosts, zk_root, TASKS)
    config = dataclasses.replace(config, assignment=dataclasses.replace(
        config.assignment, strategy=strategy, strategy_timeout=timeout))
    return [start(nodes, config, name) for name in ("a", "b", "c")]


def published(zk: KazooClient, zk_root: str) -> dict:
    doc, _ = read_assignment(zk, Paths(zk_root, "it"))
    assert isinstance(doc, dict)
    return doc


def owners(doc: dict) -> dict[str, str]:
    return {f"{task}/{i}": node for node, tasks in doc["nodes"].items()
            for task, indices in tasks.items() for i in indices}


def settled(zk: KazooClient, zk_root: str, group: list[Node]) -> dict | None:
    """The published document once it covers every node and every slot runs where it
    says (None until then)."""
    doc = published(zk, zk_root)
    where = {slot: node.name for node in group for slot in running(node)}
    done = sorted(doc["members"]) == sorted(n.name for n in group) and where == owners(doc)
    return doc if done and set(where) == SLOTS else None


def works_module(node: Node) -> ModuleType:
    return next(m for m in node.registry.modules if m.__name__ == "works.strategies")


def planned(group: list[Node], strategy: Strategy) -> dict[str, str]:
    """What `strategy` plans for this cluster: members in start order (their sequence
    order), the first one leading, each with the works package's handlers."""
    ms = [Member(n.name, i, frozenset(n.registry.handlers)) for i, n in enumerate(group)]
    plan = strategy(group[0].config.tasks, ms, leader=group[0].name)
    return {s.key: node for s, node in plan.owner_of().items()}


def test_the_leader_plans_with_the_users_strategy(zk, zk_hosts, zk_root, nodes,
                                                  strategy_works):
    group = cluster(zk_hosts, zk_root, nodes, "reverse_names")
    doc = wait_until(lambda: settled(zk, zk_root, group), 20,
                     message=lambda: str([running(n) for n in group]))
    assert doc["strategy"] == "reverse_names"
    leader = group[0]
    assert leader.is_leader
    user = works_module(leader).ReverseNames()
    assert owners(doc) == planned(group, user) != planned(group, round_robin)
    assert leader.node_view()["strategy_error"] is None
    assert leader.metrics.strategy_failures._value.get() == 0


@pytest.mark.parametrize(("strategy", "why"), [
    ("raising", "strategy 'raising' raised RuntimeError: the strategy's own bug"),
    ("gives_to_ghost", "strategy 'gives_to_ghost' returned an invalid plan: node ghost is not "
                       "a live member"),
    ("sleepy", "strategy 'sleepy' did not return within 0.3 s"),
])
def test_a_failing_strategy_falls_back_to_round_robin(zk, zk_hosts, zk_root, nodes,
                                                      strategy_works, strategy: str, why: str):
    import sys

    # The works package stays imported between tests (one module for every node): an
    # earlier test's RELEASE.set() would let Sleepy's first call return a plan at once.
    cached = sys.modules.get("works.strategies")
    if cached is not None:
        cached.RELEASE.clear()
        cached.CALLS["sleepy"] = 0
    group = cluster(zk_hosts, zk_root, nodes, strategy, timeout=0.3)
    leader = group[0]
    module = works_module(leader)
    try:
        doc = wait_until(lambda: settled(zk, zk_root, group), 20,
                         message=lambda: f"{[running(n) for n in group]} {leader.node_view()}")
        assert doc["strategy"] == "round_robin"
        assert owners(doc) == planned(group, round_robin)
        error = leader.node_view()["strategy_error"] or ""
        assert error.startswith(f"strategy {strategy!r} ")
        assert error.endswith("; using round_robin instead")
        events = [e for e in leader.events.since(0) if e["kind"] == "strategy_failed"]
        assert events and events[0]["strategy"] == strategy and why in events[0]["message"]
        assert leader.metrics.strategy_failures._value.get() >= 1
        assert b"xconsumer_strategy_failures_total" in leader.metrics.render()
        if strategy == "sleepy":
            # The controller is not wedged: it keeps passing, never waiting on the stuck
            # call again and never starting a second one.
            passes = leader.passes

            def kicked() -> bool:
                leader._kick("test")
                return leader.passes > passes + 2

            wait_until(kicked, 10)
            assert module.CALLS["sleepy"] == 1
            assert "still running a call that timed out" in (leader.strategy_error or "")
    finally:
        module.RELEASE.set()
