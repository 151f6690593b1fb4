"""Container tasks (`image = ...`) on a real engine, run by in-process nodes against the
session's ZooKeeper (the containers never talk to ZooKeeper; only the nodes do).

The worker image (tests/docker/worker) prints `REC {json}` records on stdout; the nodes
forward container output through their logger, so the records are collected from a loguru
sink: that proves the log forwarding and feeds the overlap checker at once.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from kazoo.client import KazooClient
from loguru import logger

from tests.checker import worst_overlap_in_file
from tests.integration.test_node import make_config, start
from tests.util import wait_until
from xconsumer.codecs import plan_slots
from xconsumer.config import ClusterConfig, Config
from xconsumer.executors import container as container_executor
from xconsumer.membership import read_members
from xconsumer.node import Node
from xconsumer.overrides import update_task
from xconsumer.paths import Paths

WORKER_IMAGE = "xconsumer/test-worker:local"
WORKER_DIR = Path(__file__).parent / "worker"


@pytest.fixture(scope="session")
def worker_image(docker_client: Any, base_images: None) -> str:
    docker_client.images.build(path=str(WORKER_DIR), tag=WORKER_IMAGE, rm=True, forcerm=True)
    return WORKER_IMAGE


class Records:
    """The `REC` lines containers printed, as forwarded by the nodes' loggers."""

    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def sink(self, message: Any) -> None:
        text = message.record["message"]
        if text.startswith("container: REC "):
            rec = json.loads(text.removeprefix("container: REC "))
            rec["bound"] = {k: message.record["extra"].get(k) for k in ("task", "slot")}
            with self.lock:
                self.lines.append(rec)

    def of(self, task: str, event: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            return [r for r in self.lines if r["task"] == task and event in (None, r["e"])]

    def write(self, path: Path) -> Path:
        with self.lock:
            path.write_text("".join(json.dumps(r) + "\n" for r in self.lines))
        return path


@pytest.fixture
def records() -> Iterator[Records]:
    recs = Records()
    sink = logger.add(recs.sink, level="INFO", format="{message}")
    yield recs
    logger.remove(sink)


@pytest.fixture
def cluster(docker_client: Any) -> Iterator[str]:
    """A cluster name of this test alone: the containers' labels carry it, so a concurrent
    test session on the same engine is never touched; whatever is left is removed."""
    name = f"ct-{uuid.uuid4().hex[:10]}"
    yield name
    left = docker_client.containers.list(
        all=True, filters={"label": f"{container_executor.LABEL}.cluster={name}"})
    for c in left:
        c.remove(force=True)
    assert not left, f"containers left behind: {[c.name for c in left]}"


@pytest.fixture
def nodes() -> Iterator[list[Node]]:
    started: list[Node] = []
    yield started
    for node in started:
        node.stop(timeout=10)


def config(zk_hosts: str, root: str, cluster: str, tasks: str) -> Config:
    return replace(make_config(zk_hosts, root, tasks), cluster=ClusterConfig(cluster))


def containers(client: Any, cluster: str, **labels: str) -> list[Any]:
    wanted = [f"{container_executor.LABEL}.cluster={cluster}"] + [
        f"{container_executor.LABEL}.{k}={v}" for k, v in labels.items()]
    return client.containers.list(all=True, filters={"label": wanted})


def status(node: Node, task: str, slot: int = 0) -> Any:
    return next((s for s in node.runtime.statuses() if s.task == task and s.slot == slot),
                None)


def test_a_container_slot_runs_is_revoked_and_handed_over_without_overlap(
        docker_client, worker_image, zk_hosts, zk_root, zk: KazooClient, cluster, nodes,
        records, tmp_path):
    task = (f'[[task]]\nname = "box"\nworkName = "box"\nworkerNum = 1\nstop_timeout = 5\n'
            f'image = "{worker_image}"\nenv = {{ GREETING = "hello" }}\n')
    cfg = config(zk_hosts, zk_root, cluster, task)
    a, b = start(nodes, cfg, "a"), start(nodes, cfg, "b")
    assert a.docker and b.docker

    def settled() -> tuple[Node, Any, dict[str, Any]] | None:
        """The owner of box/0 in a plan made with both nodes, its slot and its container's
        start record. On a loaded machine b may join after a's formation window: box/0 then
        starts on a first and moves to b, so the first record may be an earlier run's."""
        doc = a.assignment or {}
        if set(doc.get("members", [])) != {"a", "b"}:
            return None
        for node in (a, b):
            slot = status(node, "box")
            if (slot is not None and slot.state == "running"
                    and any(s.task == "box" for s in plan_slots(doc, node.name))):
                rec = next((r for r in records.of("box", "start") if r["fence"] == slot.fence),
                           None)
                return (node, slot, rec) if rec is not None else None
        return None

    owner, slot, first = wait_until(settled, 30)
    other = b if owner is a else a
    later = records.of("box", "start").index(first) + 1  # where this run's successors go
    stops_before = len(records.of("box", "stop"))  # of earlier runs, if it moved at the start
    # The environment the node gave the container, and the logger binding of its lines.
    assert (first["slot"], first["fence"], first["generation"], first["greeting"]) == (
        0, slot.fence, slot.generation, "hello")
    assert first["bound"] == {"task": "box", "slot": 0}
    [running] = containers(docker_client, cluster)
    assert running.labels[f"{container_executor.LABEL}.node"] == owner.name
    assert running.labels[f"{container_executor.LABEL}.fence"] == str(slot.fence)

    # Whenever the owner znode goes, the container of its node must already be gone.
    owner_path = Paths(zk_root, cluster).owner("box", 0)
    seen: list[tuple[str, list[str]]] = []

    def on_owner(event: Any) -> None:
        if event is not None and event.type == "DELETED":
            holder = seen_holder[0]
            seen.append((holder, [c.name for c in containers(docker_client, cluster,
                                                             node=holder)]))
        watch()

    seen_holder = [owner.name]

    def watch() -> None:
        zk.exists(owner_path, watch=on_owner)

    watch()
    owner.overrides.update(lambda d: update_task(d, owner.seed_tasks(), "box", {"paused": True}))
    wait_until(lambda: seen and records.of("box", "stop")[stops_before:], 15)
    assert seen[0] == (owner.name, []), seen
    assert not containers(docker_client, cluster)

    owner.overrides.update(lambda d: update_task(d, owner.seed_tasks(), "box",
                                                 {"paused": False}))
    second = wait_until(lambda: records.of("box", "start")[later:], 20)[0]
    holder = {"a": a, "b": b}[second["node"]]
    seen_holder[0] = holder.name
    # A handover: the node running it leaves; the other one takes the slot.
    holder.stop(timeout=10)
    third = wait_until(lambda: records.of("box", "start")[later + 1:], 20)[0]
    assert third["node"] == (other.name if holder is owner else owner.name)
    assert seen[-1] == (holder.name, []), seen
    assert third["fence"] > second["fence"] > first["fence"]
    overlap = worst_overlap_in_file(records.write(tmp_path / "records.jsonl"))
    assert overlap.seconds == 0, overlap.where


def test_once_exit_zero_is_done_and_a_failing_container_is_retried_with_backoff(
        docker_client, worker_image, zk_hosts, zk_root, zk, cluster, nodes, records):
    tasks = (f'[[task]]\nname = "job"\nworkName = "box"\nworkerNum = 1\nmode = "once"\n'
             f'image = "{worker_image}"\ncommand = ["/bin/sh", "/worker.sh", "once", "0.1"]\n'
             f'[[task]]\nname = "bad"\nworkName = "box"\nworkerNum = 1\nretry_backoff = 0.4\n'
             f'retry_backoff_max = 0.8\nimage = "{worker_image}"\n'
             f'command = ["/bin/sh", "/worker.sh", "fail", "3"]\n')
    node = start(nodes, config(zk_hosts, zk_root, cluster, tasks), "a")
    wait_until(lambda: (s := status(node, "job")) is not None and s.state == "done", 20)
    assert zk.exists(Paths(zk_root, cluster).done_marker("job", 0)) is not None
    assert len(records.of("job", "start")) == 1
    assert not containers(docker_client, cluster, task="job")
    bad = wait_until(lambda: (s := status(node, "bad")) is not None and s.failures >= 3 and s,
                     20)
    assert "exited with code 3" in (bad.last_error or ""), bad
    starts = [r["t"] for r in records.of("bad", "start")]
    gaps = [later - earlier for earlier, later in zip(starts, starts[1:], strict=False)]
    assert gaps and min(gaps) >= 0.4, gaps  # backoff 0.4, then 0.8 (the cap)
    assert gaps[1] >= 0.8, gaps


def test_a_node_without_docker_gets_none_of_the_container_slots(
        docker_client, worker_image, zk_hosts, zk_root, zk, cluster, nodes, records,
        monkeypatch):
    tasks = (f'[[task]]\nname = "box"\nworkName = "box"\nworkerNum = 3\n'
             f'image = "{worker_image}"\nstop_timeout = 5\n')
    cfg = config(zk_hosts, zk_root, cluster, tasks)
    a = start(nodes, cfg, "a")
    monkeypatch.setattr(container_executor, "engine_available", lambda: False)
    b = start(nodes, cfg, "b")
    assert a.docker and not b.docker
    members = {m.name: m for m in read_members(zk, Paths(zk_root, cluster))}
    assert members["a"].data["docker"] is True and members["b"].data["docker"] is False
    wait_until(lambda: len({r["slot"] for r in records.of("box", "start")}) == 3, 20)
    doc = a.assignment or {}
    assert doc["nodes"].get("b", {}) == {} and doc["nodes"]["a"] == {"box": [0, 1, 2]}
    assert {r["node"] for r in records.of("box")} == {"a"}
    # Without a node that has an engine the slots wait, unassigned, rather than go to b.
    a.stop(timeout=10)
    wait_until(lambda: (b.assignment or {}).get("unassigned", {}).get("box") == [0, 1, 2], 15)
    assert not b.runtime.statuses()
    assert not containers(docker_client, cluster)
