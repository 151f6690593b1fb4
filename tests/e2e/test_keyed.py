"""Keyed tasks end to end: slots follow what a `Keys<Name>()` provider returns, adding a key
moves no other, a failing provider keeps the last good keys, and a key's checkpoint follows
the key when its slot index changes."""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cluster import Cluster
from tests.e2e.test_admin_api import call, url_of
from tests.e2e.test_checkpoints import WORKS, cli, current_starts, events
from tests.util import wait_until

pytestmark = pytest.mark.e2e

TOKEN = "keyed-token"


@pytest.fixture
def keys_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "keys.txt"
    path.write_text("s-a\ns-b\n")
    monkeypatch.setenv("XCONSUMER_TEST_KEYS", str(path))
    return path


@pytest.fixture
def cluster(tmp_path: Path, zk_hosts: str, zk_root: str, keys_file: Path
            ) -> Iterator[Cluster]:
    c = Cluster(tmp_path, zk_hosts, zk_root,
                [{"name": "shards", "workName": "counter", "keys": "shards",
                  "keys_interval": 0.3, "params": {"s-a": "alpha"}}],
                works=WORKS, extra={"admin": {"token": TOKEN}})
    try:
        c.start_node("n1")
        c.start_node("n2")
        yield c
    finally:
        c.close()


def running_keys(cluster: Cluster) -> dict[str, int]:
    """key -> slot index, for every slot whose latest start is not followed by its end."""
    latest: dict[int, dict[str, Any]] = {}
    for e in events(cluster, event="start"):
        latest[e["slot"]] = e
    doc = json.loads(cluster.client.get(cluster.paths.assignment)[0])
    listed = doc.get("keys", {}).get("shards", [])
    return {e["key"]: slot for slot, e in latest.items()
            if slot < len(listed) and listed[slot] == e["key"]}


def settled(cluster: Cluster, keys: dict[str, int]) -> bool:
    """Those keys run at those indices, and the plan (made with both nodes) fully runs,
    each slot's current owner having recorded its start."""
    cluster.expected_slots = lambda: {f"shards/{i}" for i in range(len(keys))}  # type: ignore
    return (running_keys(cluster) == keys and cluster.converged({"n1", "n2"}) is not None
            and current_starts(cluster, "shards") is not None)


def starts(cluster: Cluster, key: str) -> list[dict[str, Any]]:
    return [e for e in events(cluster, event="start") if e["key"] == key]


def test_keyed_slots_follow_the_provider(cluster: Cluster, keys_file: Path):
    wait_until(lambda: settled(cluster, {"s-a": 0, "s-b": 1}), 30)
    assert starts(cluster, "s-a")[0]["param"] == "alpha"
    assert starts(cluster, "s-b")[0]["param"] is None
    wait_until(lambda: all(len(events(cluster, event="commit", slot=i)) >= 3
                           for i in (0, 1)), 20)
    before = {k: len(starts(cluster, k)) for k in ("s-a", "s-b")}

    # Adding a key starts one slot and restarts none.
    keys_file.write_text("s-a\ns-b\ns-c\n")
    wait_until(lambda: settled(cluster, {"s-a": 0, "s-b": 1, "s-c": 2}), 20)
    assert {k: len(starts(cluster, k)) for k in ("s-a", "s-b")} == before

    # A failing provider keeps the last good keys, and says so.
    keys_file.write_text("!raise\n")
    leader = next(n for n in cluster.view()["nodes"] if n["leader"])["id"]
    url = url_of(cluster, leader)
    wait_until(lambda: any(e["kind"] == "keys_failed" and "shard registry unavailable"
                           in e["message"] for e in call(f"{url}/api/events")[1]["events"]),
               20)
    metrics = urllib.request.urlopen(f"{url}/metrics", timeout=10).read().decode()
    failures = re.search(r'xconsumer_keys_failures_total\{task="shards"\} ([0-9.]+)', metrics)
    assert failures and float(failures.group(1)) >= 1
    keys_file.write_text("!bad\n")
    wait_until(lambda: any("a int at position 1" in e["message"]
                           for e in call(f"{url}/api/events")[1]["events"]), 20)
    assert running_keys(cluster) == {"s-a": 0, "s-b": 1, "s-c": 2}

    # Removing s-a moves the last key into its index; its checkpoint follows the key.
    last_c = max(e["value"] for e in events(cluster, event="commit", slot=2))
    keys_file.write_text("s-b\ns-c\n")
    wait_until(lambda: settled(cluster, {"s-c": 0, "s-b": 1}), 20)
    moved = starts(cluster, "s-c")[-1]
    assert moved["slot"] == 0 and moved["value"] >= last_c


def test_refresh_on_request_and_the_api_refuses_workernum(cluster: Cluster, keys_file: Path):
    wait_until(lambda: settled(cluster, {"s-a": 0, "s-b": 1}), 30)
    url = url_of(cluster, "n1")
    status, body, _ = call(f"{url}/api/tasks/shards", "PATCH", {"keys_interval": 3600},
                           token=TOKEN)
    assert status == 200, body
    status, body, _ = call(f"{url}/api/tasks/shards/scale", "POST", {"workerNum": 3},
                           token=TOKEN)
    assert status == 400 and "leave workerNum out" in body["message"], body
    keys_file.write_text("s-a\ns-b\ns-d\n")
    result = cli(cluster, "refresh-keys", "shards")
    assert result.returncode == 0 and "keys refresh requested" in result.stdout, result.stderr
    wait_until(lambda: running_keys(cluster).get("s-d") == 2, 20)
    status, body, _ = call(f"{url}/api/tasks/shards", "PATCH",
                           {"params": {"s-d": {"region": "eu"}}}, token=TOKEN)
    assert status == 200, body
    status, body, _ = call(f"{url}/api/tasks/shards/keys/refresh", "POST", {}, token=TOKEN)
    assert status == 202, body
