"""The leader remembers the document it last read or wrote (leader.DocMemo): a stat with the
same mzxid stands for reading it again. What anyone else writes there changes its mzxid,
so it is read and acted on as before. Real ZooKeeper, real in-process nodes."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace
from typing import Any

from kazoo.client import KazooClient

from tests.integration.test_node import make_config, records, running, start
from tests.util import first_args, wait_until
from xconsumer import node as node_module
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


def pair(nodes_: list[Any], zk_hosts: str, zk_root: str) -> tuple[Any, Any, Any, Paths]:
    """Nodes a (the leader) and b, converged: (config, a, b, paths)."""
    config = make_config(zk_hosts, zk_root, TASK)
    a, b = start(nodes_, config, "a"), start(nodes_, config, "b")
    wait_until(lambda: converged([a, b]), 20)
    return config, a, b, Paths(zk_root, "it")


def test_the_leader_does_not_read_back_the_document_it_wrote(
        zk: KazooClient, zk_hosts, zk_root, nodes, record, monkeypatch) -> None:
    config, a, b, paths = pair(nodes, zk_hosts, zk_root)
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
    _, a, b, paths = pair(nodes, zk_hosts, zk_root)
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


def test_a_publish_writes_against_the_document_its_pass_read(
        zk: KazooClient, zk_hosts, zk_root, nodes, record, monkeypatch) -> None:
    """The pass that publishes has read the document, or its watch says it is unchanged
    since the last read or write, and the publish writes against that version (refused if
    anyone wrote in between): it asks ZooKeeper nothing more about the document, a round
    trip fewer in front of every handover."""
    config, a, b, paths = pair(nodes, zk_hosts, zk_root)
    inside = threading.local()
    asked: list[str] = []
    published: list[Any] = []
    for name in ("get", "exists"):
        real = getattr(a.client, name)

        def recording(path: str, *args: Any, real: Any = real, **kwargs: Any) -> Any:
            if getattr(inside, "publishing", False) and path == paths.assignment:
                asked.append(path)
            return real(path, *args, **kwargs)
        monkeypatch.setattr(a.client, name, recording)
    real_publish = node_module.publish

    def publish(*args: Any, **kwargs: Any) -> Any:
        inside.publishing = True
        try:
            out = real_publish(*args, **kwargs)
        finally:
            inside.publishing = False
        if out is not None:
            published.append(out)
        return out
    monkeypatch.setattr(node_module, "publish", publish)
    before = generation(zk, paths)
    c = start(nodes, config, "c")
    wait_until(lambda: converged([a, b, c]) and generation(zk, paths) > before, 20)
    assert published and asked == []


def test_a_change_that_came_before_the_leaders_document_watch_is_read(
        zk: KazooClient, zk_hosts, zk_root, nodes, record, monkeypatch) -> None:
    """After its publish the leader sets its document watch with a stat it does not wait
    for; the stat's answer, when it comes, tells a change made before the watch was set
    (or no answer at all): then a pass reads the document again."""
    config = make_config(zk_hosts, zk_root, TASK)
    a = start(nodes, config, "a")
    wait_until(lambda: converged([a]) and a._memo.mzxid is not None, 20)
    kicks = first_args(monkeypatch, a, "_kick")
    mzxid = a._memo.mzxid

    def answer(value: Any = None, error: Exception | None = None) -> Any:
        result = a.client.handler.async_result()
        result.set_exception(error) if error is not None else result.set(value)
        return result
    a._doc_watch_set(answer(SimpleNamespace(mzxid=mzxid)), mzxid)
    assert [k for k in kicks if k.startswith("watch:")] == []  # ours: nothing to do
    a._doc_watch_set(answer(SimpleNamespace(mzxid=mzxid + 1)), mzxid)
    a._doc_watch_set(answer(None), mzxid)  # deleted meanwhile
    a._doc_watch_set(answer(error=RuntimeError("connection lost")), mzxid)
    assert [k for k in kicks if k.startswith("watch:")] == ["watch:"] * 3


# Found by review: a deleted document left the memo's entry in place; the leader's pass took
# it for the current document, found nothing to publish, and ran again at once, forever.
def test_a_deleted_document_is_written_again_at_once(
        zk: KazooClient, zk_hosts, zk_root, nodes, record) -> None:
    _, a, b, paths = pair(nodes, zk_hosts, zk_root)
    before = generation(zk, paths)
    zk.delete(paths.assignment)
    wait_until(lambda: zk.exists(paths.assignment) is not None, 10)
    assert generation(zk, paths) > before
    wait_until(lambda: converged([a, b]), 10)
    # And the leader is quiet again, over a window with a clock of its own (the slots'
    # heartbeats, each every 50 ms: about half a second), not one its passes could end.
    passes, since = a.passes, time.time()
    wait_until(lambda: sum(r["e"] == "beat" and r["t"] > since for r in records(record))
               >= 60, 10)
    assert a.passes - passes < 10
