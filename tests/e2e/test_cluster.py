"""End to end: real `xconsumer run` processes on a real ZooKeeper.

Each test checks cluster behaviour from the outside, the way a user would: the znodes in
ZooKeeper, the admin API, exit codes, and a record file the handlers append to.
"""

from __future__ import annotations

import json
import signal
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import checker
from tests.cluster import Cluster, round_robin_deal
from tests.util import wait_until

pytestmark = pytest.mark.e2e

TASKS = [
    {"name": "alpha", "workName": "record", "workerNum": 4, "stop_timeout": 5},
    {"name": "beta", "workName": "record", "workerNum": 3, "stop_timeout": 5},
]


@pytest.fixture
def cluster(tmp_path: Path, zk_hosts: str, zk_root: str) -> Iterator[Cluster]:
    c = Cluster(tmp_path, zk_hosts, zk_root, [dict(t) for t in TASKS])
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def redealing_cluster(tmp_path: Path, zk_hosts: str, zk_root: str) -> Iterator[Cluster]:
    """`round_robin`, which re-deals from the followers on every membership change: the
    default (`balanced`) deals so only when a cluster forms, then moves what it must."""
    c = Cluster(tmp_path, zk_hosts, zk_root, [dict(t) for t in TASKS],
                extra={"assignment": {"strategy": "round_robin"}})
    try:
        yield c
    finally:
        c.close()


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


def _expected(names: list[str]) -> dict[str, list[dict]]:
    return round_robin_deal(TASKS, names)


def test_leader_is_smallest_sequence_and_slots_are_dealt_followers_first(cluster: Cluster):
    # Started one after another (so their sequence numbers follow the names), they must
    # all join within the leader's formation window to be dealt together. The default
    # 1 s was shorter than a node process's start on a slow 2-core machine (imports
    # compiled afresh without .pyc files), and the first plan was built by joins.
    cluster.extra = {"assignment": {"formation_window": 8}}
    cluster.rewrite_config()
    for name in ("n1", "n2", "n3"):
        cluster.start_node(name)
    view = cluster.wait_converged({"n1", "n2", "n3"})
    seqs = {n["id"]: n["seq"] for n in view["nodes"]}
    assert view["leader"] == min(seqs, key=seqs.get) == "n1"
    # Followers first (n2, n3), the leader last, one pointer across both tasks.
    assert view["assignment"] == _expected(["n1", "n2", "n3"])
    assert view["assignment"]["n2"][0] == {"task": "alpha", "slot": 0}
    assert view["assignment"]["n1"][0] == {"task": "alpha", "slot": 2}
    # Every slot runs, once, on the node the assignment names (the handlers' own records).
    named = {f"{s['task']}/{s['slot']}": {node}
             for node, slots in view["assignment"].items() for s in slots}
    wait_until(lambda: cluster.running_on() == named, 10,
               message=lambda: f"running {cluster.running_on()}, assigned {named}")


def test_admin_api_and_status_cli(cluster: Cluster):
    import subprocess
    import sys

    cluster.start_node("n1")
    cluster.start_node("n2")
    view = cluster.wait_converged({"n1", "n2"})
    url = next(n["admin_url"] for n in view["nodes"] if n["id"] == "n2")
    assert url.startswith("http://127.0.0.1:")
    health = _get(url + "/healthz")
    assert health["status"] == "ok" and health["node"] == "n2"
    api = _get(url + "/api/cluster")
    assert api["leader"] == "n1"
    assert {n["id"] for n in api["nodes"]} == {"n1", "n2"}
    assert set(api["owners"]) == cluster.expected_slots()
    me = _get(url + "/api/node")
    assert me["id"] == "n2" and me["leader"] is False
    # Converged means the owner znodes are taken; a runner may still be starting.
    mine = {(s["task"], s["slot"]) for s in api["assignment"]["n2"]}
    wait_until(lambda: {(s["task"], s["slot"]) for s in _get(url + "/api/node")["slots"]
                        if s["state"] == "running"} == mine, 20)
    with pytest.raises(urllib.error.HTTPError) as err:
        _get(url + "/api/nope")
    assert err.value.code == 404
    assert json.loads(err.value.read())["error"] == "not_found"

    out = subprocess.run([sys.executable, "-m", "xconsumer", "status", "--config",
                          str(cluster.config), "--json"], capture_output=True, text=True,
                         timeout=30, cwd=cluster.tmp)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["leader"] == "n1"
    text = subprocess.run([sys.executable, "-m", "xconsumer", "status", "--config",
                           str(cluster.config)], capture_output=True, text=True, timeout=30,
                          cwd=cluster.tmp)
    assert "leader n1" in text.stdout and "alpha/0" in text.stdout


def test_kill_leader_elects_next_and_every_slot_runs_again(redealing_cluster: Cluster):
    cluster = redealing_cluster
    for name in ("n1", "n2", "n3"):
        cluster.start_node(name)
    cluster.wait_converged({"n1", "n2", "n3"})
    cluster.nodes["n1"].kill()
    view = cluster.wait_converged({"n2", "n3"}, timeout=cluster.session_timeout * 5 + 10)
    assert view["leader"] == "n2"
    assert view["assignment"] == _expected(["n2", "n3"])
    ov = cluster.worst_overlap()  # n1's open runs end at its SIGKILL (kill_map)
    assert ov.seconds == 0, ov.where


def test_sigterm_follower_moves_its_slots_and_exits_zero(cluster: Cluster):
    for name in ("n1", "n2", "n3"):
        cluster.start_node(name)
    cluster.wait_converged({"n1", "n2", "n3"})
    assert cluster.nodes["n2"].terminate() == 0
    view = cluster.wait_converged({"n1", "n3"})
    assert view["leader"] == "n1"
    log = cluster.nodes["n2"].log()
    assert "Traceback" not in log and "stopped" in log
    ov = cluster.worst_overlap()
    assert ov.seconds == 0, ov.where
    # Every run n2 started has its stop record: it stopped them before leaving.
    runs = [r for r in cluster.runs() if r.node == "n2"]
    assert runs and not checker.unfinished_runs(runs, [cluster.nodes["n2"].pid])


def test_new_node_gets_a_share(redealing_cluster: Cluster):
    cluster = redealing_cluster
    cluster.start_node("n1")
    cluster.start_node("n2")
    cluster.wait_converged({"n1", "n2"})
    cluster.start_node("n3")
    view = cluster.wait_converged({"n1", "n2", "n3"})
    assert len(view["assignment"]["n3"]) >= 2
    assert view["assignment"] == _expected(["n1", "n2", "n3"])
    ov = cluster.worst_overlap()
    assert ov.seconds == 0, ov.where


def test_no_slot_ever_owned_twice_through_churn(cluster: Cluster):
    """Joins, a graceful leave and a crash in a row; the handlers' own record must show no
    slot running on two nodes at once at any moment."""
    for name in ("n1", "n2"):
        cluster.start_node(name)
    cluster.wait_converged({"n1", "n2"})
    cluster.start_node("n3")
    cluster.wait_converged({"n1", "n2", "n3"})
    assert cluster.nodes["n1"].terminate() == 0
    cluster.wait_converged({"n2", "n3"})
    cluster.start_node("n4")
    cluster.wait_converged({"n2", "n3", "n4"})
    cluster.nodes["n3"].kill()
    cluster.wait_converged({"n2", "n4"}, timeout=cluster.session_timeout * 5 + 10)
    runs = cluster.runs()  # n3's open runs end at its SIGKILL (kill_map)
    ov = checker.worst_overlap(runs)
    assert ov.seconds == 0, ov.where
    # Fencing tokens only grow for a slot, and strictly across owners.
    assert checker.fence_problems(runs) == []


def test_second_signal_exits_at_once(cluster: Cluster):
    cluster.tasks[:] = [{"name": "stubborn", "workName": "stubborn", "workerNum": 1,
                         "stop_timeout": 30}]
    cluster.rewrite_config()
    node = cluster.start_node("n1")
    wait_until(lambda: any(r["e"] == "start" for r in cluster.records()), 20)
    node.signal(signal.SIGTERM)
    wait_until(lambda: "stopping slot" in node.log(), 10)
    node.signal(signal.SIGTERM)
    assert node.proc.wait(10) == 130

