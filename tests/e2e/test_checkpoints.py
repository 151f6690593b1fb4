"""Checkpoints end to end: node processes commit, the API and the CLI list and reset them,
and a slot's next owner resumes from the last commit after a kill -9."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.checker import complete_records
from tests.cluster import REPO, Cluster
from tests.e2e.test_admin_api import call as api_call
from tests.e2e.test_admin_api import url_of
from tests.util import wait_until

pytestmark = pytest.mark.e2e

TOKEN = "ckpt-token"
WORKS = REPO / "tests" / "checkpoint_works"


@pytest.fixture
def cluster(tmp_path: Path, zk_hosts: str, zk_root: str) -> Iterator[Cluster]:
    c = Cluster(tmp_path, zk_hosts, zk_root,
                [{"name": "count", "workName": "counter", "workerNum": 2,
                  "params": ["first", "second"]}],
                works=WORKS, extra={"admin": {"token": TOKEN}})
    try:
        c.start_node("n1")
        c.start_node("n2")
        c.wait_converged({"n1", "n2"})
        yield c
    finally:
        c.close()


def events(cluster: Cluster, **match: Any) -> list[dict[str, Any]]:
    if not cluster.record.exists():
        return []
    rows = complete_records(cluster.record.read_text())
    return [r for r in rows if all(r.get(k) == v for k, v in match.items())]


def current_starts(cluster: Cluster, task: str) -> dict[int, dict[str, Any]] | None:
    """slot -> the `start` record of its current run, once the cluster converged and every
    slot's owner (told apart by fence) has recorded its start; None before. Convergence
    needs only the owner znodes: the handler of the last handover may not have started yet,
    and on a cluster formed by joins the same node may have run the slot before."""
    view = cluster.converged()
    if view is None:
        return None
    fences = {int(k.split("/", 1)[1]): f for k, f in view["fences"].items()
              if k.startswith(f"{task}/")}
    found = {e["slot"]: e for e in events(cluster, event="start", task=task)
             if e["fence"] == fences.get(e["slot"])}
    return found if fences and set(found) == set(fences) else None


def call(url: str, method: str = "GET", token: str | None = TOKEN) -> tuple[int, Any, Any]:
    return api_call(url, method, token=token)


def checkpoint_value(cluster: Cluster, slot: int) -> Any:
    raw, _ = cluster.client.get(cluster.paths.checkpoint("count", str(slot)))
    return json.loads(raw)["value"]


def cli(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "xconsumer", *args, "--config",
                           str(cluster.config)], capture_output=True, text=True, timeout=60,
                          cwd=REPO)


def test_slots_get_their_params_and_commit_where_the_api_shows_them(cluster: Cluster):
    starts = wait_until(lambda: (s := events(cluster, event="start")) and len(s) >= 2 and s, 20)
    assert {(s["slot"], s["param"]) for s in starts} == {(0, "first"), (1, "second")}
    wait_until(lambda: len(events(cluster, event="commit", slot=1)) >= 3, 20)
    status, body, _ = call(f"{url_of(cluster, 'n1')}/api/tasks/count/checkpoints")
    assert status == 200, body
    by_slot = {c["slot"]: c for c in body["checkpoints"]}
    assert set(by_slot) == {0, 1} and by_slot[1]["value"] >= 3
    assert by_slot[1]["node"] in {"n1", "n2"} and by_slot[1]["fence"] > 0
    metrics = "".join(urllib.request.urlopen(f"{url_of(cluster, n)}/metrics", timeout=10)
                      .read().decode() for n in ("n1", "n2"))
    assert 'xconsumer_checkpoint_commits_total{task="count"}' in metrics
    listing = cli(cluster, "checkpoints", "count")
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout.splitlines()[0].split() == ["SLOT", "NODE", "FENCE", "VALUE"]


def test_reset_needs_the_token_and_restarts_the_slot_from_none(cluster: Cluster):
    wait_until(lambda: len(events(cluster, event="commit", slot=0)) >= 3, 20)
    url = url_of(cluster, "n2")
    status, _, _ = call(f"{url}/api/tasks/count/checkpoints/0", "DELETE", token=None)
    assert status == 401
    status, body, _ = call(f"{url}/api/tasks/count/checkpoints/x", "DELETE")
    assert status == 404 and "its slots are indices" in body["message"], body
    status, body, _ = call(f"{url}/api/tasks/nope/checkpoints")
    assert status == 404
    before = len(events(cluster, event="start", slot=0))
    status, body, _ = call(f"{url}/api/tasks/count/checkpoints/0", "DELETE")
    assert status == 200 and body["reset"] == 1, body
    # The owner's next commit is refused; the slot restarts and counts from zero again.
    wait_until(lambda: len(events(cluster, event="start", slot=0)) > before, 20)
    assert events(cluster, event="start", slot=0)[-1]["value"] == 0
    assert events(cluster, event="lost", slot=0)
    result = cli(cluster, "checkpoints", "count", "--reset")
    assert result.returncode == 0 and "checkpoint(s) reset" in result.stdout, result.stderr


def test_after_a_kill_9_the_successor_resumes_from_the_last_commit(cluster: Cluster):
    wait_until(lambda: len(events(cluster, event="commit", slot=0)) >= 5, 20)
    owner = cluster.view()["owners"]["count/0"]
    survivor = "n2" if owner == "n1" else "n1"
    earlier = len(events(cluster, event="start", slot=0, node=survivor))
    cluster.nodes[owner].kill()
    last_recorded = events(cluster, event="commit", slot=0, node=owner)[-1]["value"]
    # Nobody writes the checkpoint until the successor's handler starts, so this is the
    # value the dead owner left (its last commit may have landed unrecorded: +1).
    left = checkpoint_value(cluster, 0)
    assert left in (last_recorded, last_recorded + 1)
    start = wait_until(lambda: next(iter(events(cluster, event="start", slot=0,
                                                node=survivor)[earlier:]), None), 30)
    assert start["value"] == left


def test_removing_a_task_deletes_its_checkpoints_once_no_slot_runs(cluster: Cluster):
    """Through the API only: the leader purges them after publishing the table without the
    task (a task that just vanished from one node's app.toml would keep them)."""
    wait_until(lambda: len(events(cluster, event="commit", slot=0)) >= 3, 20)
    url = url_of(cluster, "n2")
    status, body, _ = api_call(f"{url}/api/tasks/count", "DELETE", {}, token=TOKEN)
    assert status == 200, body
    parent = cluster.paths.checkpoint_task("count")
    wait_until(lambda: cluster.client.exists(parent) is None, 20)
    assert not any(k.startswith("count/") for k in cluster.view()["owners"])
    overrides = json.loads(cluster.client.get(cluster.paths.overrides)[0])
    assert "count" in overrides.get("purge", [])  # kept: the leader writes no overrides


def test_params_change_at_run_time_through_the_cli_and_the_api(cluster: Cluster):
    """The slots keep running (no restart) and read the new value."""
    wait_until(lambda: current_starts(cluster, "count"), 20)
    starts = len(events(cluster, event="start"))
    result = cli(cluster, "set", "count", 'params=["uno", {"dos": 2}]')
    assert result.returncode == 0 and "overridden: params" in result.stdout, result.stderr
    bad = cli(cluster, "set", "count", "params=7")
    assert bad.returncode == 2 and "params must be a list" in bad.stderr, bad.stderr
    status, body, _ = api_call(f"{url_of(cluster, 'n1')}/api/tasks/count")
    assert body["task"]["params"] == {"0": "uno", "1": {"dos": 2}}
    wait_until(lambda: events(cluster, event="commit", slot=1)[-1]["param"] == {"dos": 2}, 20)
    assert len(events(cluster, event="start")) == starts
