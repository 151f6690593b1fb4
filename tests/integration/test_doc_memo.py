"""The leader remembers the document it last read or wrote (leader.DocMemo): a stat with the
same mzxid stands for reading it again. What anyone else writes there changes its mzxid,
so it is read and acted on as before. Real ZooKeeper, real in-process nodes."""

from __future__ import annotations

from typing import Any

from kazoo.client import KazooClient

from tests.integration.test_node import make_config, running, start
from tests.util import wait_until
from xconsumer.leader import read_assignment, valid_doc
from xconsumer.paths import Paths
from xconsumer.zk import dumps

TASK = '[[task]]\nname = "r"\nworkName = "record"\nworkerNum = 6\nstop_timeout = 2\n'
ALL = {f"r/{i}" for i in range(6)}


def converged(nodes_: list[Any]) -> bool:
    held = [running(n) for n in nodes_]
    return set().union(*held) == ALL and sum(map(len, held)) == len(ALL) and all(held)


def generation(zk: KazooClient, paths: Paths) -> int:
    doc = valid_doc(read_assignment(zk, paths)[0])
    return int(doc["generation"]) if doc else 0


def test_the_leader_does_not_read_back_the_document_it_wrote(
        zk: KazooClient, zk_hosts, zk_root, nodes, record, monkeypatch) -> None:
    config = make_config(zk_hosts, zk_root, TASK)
    a, b = start(nodes, config, "a"), start(nodes, config, "b")
    wait_until(lambda: converged([a, b]), 20)
    paths = Paths(zk_root, "it")
    reads: list[str] = []
    real_get = a.client.get

    def get(path: str, *args: Any, **kwargs: Any) -> Any:
        reads.append(path)
        return real_get(path, *args, **kwargs)

    monkeypatch.setattr(a.client, "get", get)
    before = generation(zk, paths)
    c = start(nodes, config, "c")
    wait_until(lambda: converged([a, b, c]) and generation(zk, paths) > before, 20)
    passes = a.passes
    wait_until(lambda: a.passes > passes + 2, 10)  # and a few more passes of the leader
    assert a.is_leader and paths.assignment not in reads, reads


def test_a_document_written_by_someone_else_is_read_and_repaired(
        zk: KazooClient, zk_hosts, zk_root, nodes, record) -> None:
    """Same version count, other bytes: only the mzxid tells the leader's copy is stale."""
    config = make_config(zk_hosts, zk_root, TASK)
    a, b = start(nodes, config, "a"), start(nodes, config, "b")
    wait_until(lambda: converged([a, b]), 20)
    paths = Paths(zk_root, "it")
    good = valid_doc(read_assignment(zk, paths)[0])
    assert good is not None
    # Everything on a, with b's name and generation kept: b would stop all it runs.
    forged = {**good, "nodes": {"a": {"r": list(range(6))}}}
    zk.set(paths.assignment, dumps(forged))
    wait_until(lambda: generation(zk, paths) > good["generation"], 10)
    wait_until(lambda: converged([a, b]) and running(b), 20)
    repaired = valid_doc(read_assignment(zk, paths)[0])
    assert repaired is not None and set(repaired["nodes"]) == {"a", "b"}

    zk.set(paths.assignment, b"{not json")  # and a corrupt one is repaired too
    wait_until(lambda: generation(zk, paths) > repaired["generation"], 10)
    assert converged([a, b])
