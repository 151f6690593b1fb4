"""Management commands (`xconsumer scale/pause/resume/reset/drain/undrain/rebalance/tasks/
events`) run as a user would run them, against real node processes on a real ZooKeeper.

Both ways in are covered: straight through ZooKeeper (`--config`, no node contacted) and
through a node's admin API (`--url` + token). Every effect is checked in ZooKeeper, not in the
command's own output, and every refusal must be one line on stderr with a non-zero exit code.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from tests.cluster import REPO, Cluster, round_robin_deal
from tests.util import wait_until
from xconsumer.zkserver import free_port

pytestmark = pytest.mark.e2e

TOKEN = "cli-token"
TIMEOUT = 30.0


def cli(cluster: Cluster, *args: str, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items()
             if k not in ("XCONSUMER_ZK", "XCONSUMER_ADMIN_TOKEN", "XCONSUMER_CLUSTER")}
    clean.update(PYTHONPATH=str(REPO), **(env or {}))
    return subprocess.run([sys.executable, "-m", "xconsumer", *args], capture_output=True,
                          text=True, timeout=60, cwd=cluster.tmp, env=clean)


def ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.stdout


def ok_json(proc: subprocess.CompletedProcess) -> Any:
    return json.loads(ok(proc))


def one_line_error(proc: subprocess.CompletedProcess, code: int) -> str:
    assert proc.returncode == code, f"exit {proc.returncode} (wanted {code}): {proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("xconsumer: error: "), proc.stderr
    return lines[0]


def zk_args(cluster: Cluster) -> list[str]:
    return ["--config", str(cluster.config)]


def url_of(cluster: Cluster, name: str) -> str:
    return next(n["admin_url"] for n in cluster.view()["nodes"] if n["id"] == name)


def set_workers(cluster: Cluster, task: str, n: int) -> None:
    """Keep Cluster.expected_slots() (read by wait_converged) in step with our changes."""
    for t in cluster.tasks:
        if t["name"] == task:
            t["workerNum"] = n


def owners_of(cluster: Cluster, task: str) -> dict[str, str]:
    return {k: v for k, v in cluster.view()["owners"].items() if k.startswith(f"{task}/")}


def test_through_zookeeper_scale_pause_resume_reset(cluster: Cluster):
    listing = ok(cli(cluster, "tasks", *zk_args(cluster)))
    header, *rows = listing.splitlines()
    assert header.split()[:8] == ["TASK", "WORKNAME", "MODE", "WORKERS", "DESIRED",
                                  "ASSIGNED", "RUNNING", "STATE"]
    assert rows[0].split()[:8] == ["alpha", "record", "loop", "2", "2", "2", "2", "active"]

    out = ok(cli(cluster, "scale", "alpha", "5", *zk_args(cluster)))
    assert out.startswith("alpha: workerNum 5, desired 5")
    set_workers(cluster, "alpha", 5)
    view = cluster.wait_converged({"n1", "n2"}, timeout=TIMEOUT)
    alpha = {k: v for k, v in view["owners"].items() if k.startswith("alpha/")}
    assert len(alpha) == 5 and set(alpha.values()) == {"n1", "n2"}, alpha

    ok(cli(cluster, "pause", "beta", *zk_args(cluster)))
    wait_until(lambda: not owners_of(cluster, "beta"), TIMEOUT,
               message=lambda: f"beta still runs: {owners_of(cluster, 'beta')}")
    tasks = ok_json(cli(cluster, "tasks", "--json", *zk_args(cluster)))
    beta = next(t for t in tasks["tasks"] if t["name"] == "beta")
    assert beta["paused"] is True and beta["desired"] == 0 and beta["running"] == 0
    assert beta["workerNum"] == 2 and beta["overridden"] == ["paused"]

    ok(cli(cluster, "resume", "beta", *zk_args(cluster)))
    cluster.wait_converged({"n1", "n2"}, timeout=TIMEOUT)

    result = ok_json(cli(cluster, "reset", "alpha", "--json", *zk_args(cluster)))
    assert result["task"]["workerNum"] == 2 and result["task"]["overridden"] == []
    set_workers(cluster, "alpha", 2)
    cluster.wait_converged({"n1", "n2"}, timeout=TIMEOUT)


def test_through_a_nodes_api_with_token_drain_undrain_events(cluster: Cluster):
    url = url_of(cluster, "n1")

    refused = one_line_error(cli(cluster, "drain", "n2", "--url", url), 2)
    assert "Bearer" in refused and "--token" in refused

    out = ok(cli(cluster, "drain", "n2", "--url", url, "--token", TOKEN))
    assert out.startswith("n2: drained; drained nodes: n2")
    view = wait_until(lambda: (v := cluster.converged({"n1", "n2"})) and
                      not v["assignment"].get("n2") and v, TIMEOUT,
                      message=lambda: f"n2 still has slots: {cluster.view()['assignment']}")
    assert set(view["owners"].values()) == {"n1"}
    assert next(n for n in view["nodes"] if n["id"] == "n2")["state"] == "draining"

    # The token may also come from the environment, as for `xconsumer run`.
    result = ok_json(cli(cluster, "undrain", "n2", "--url", url, "--json",
                         env={"XCONSUMER_ADMIN_TOKEN": TOKEN}))
    assert result["drained"] is False and result["drained_nodes"] == []
    wait_until(lambda: (v := cluster.converged({"n1", "n2"})) and
               "n2" in set(v["owners"].values()), TIMEOUT,
               message=lambda: f"n2 got nothing back: {cluster.view()['assignment']}")

    result = ok_json(cli(cluster, "scale", "beta", "3", "--url", url_of(cluster, "n2"),
                         "--token", TOKEN, "--json"))
    assert result["task"]["workerNum"] == 3 and "workerNum" in result["task"]["overridden"]
    set_workers(cluster, "beta", 3)
    cluster.wait_converged({"n1", "n2"}, timeout=TIMEOUT)

    out = ok(cli(cluster, "rebalance", "--url", url, "--token", TOKEN))
    assert out.startswith("rebalance requested: request #1")
    # What a rebalance promises: round robin's deal from the followers (a wait for a
    # converged cluster alone is met by the deal before it).
    dealt = round_robin_deal(cluster.tasks, ["n1", "n2"])
    wait_until(lambda: (v := cluster.converged({"n1", "n2"})) and v["assignment"] == dealt,
               TIMEOUT, message=lambda: f"not re-dealt: {cluster.view()['assignment']}")

    listing = ok_json(cli(cluster, "tasks", "--url", url, "--json"))  # reads need no token
    assert {t["name"]: t["desired"] for t in listing["tasks"]} == {"alpha": 2, "beta": 3}
    # Scripts get the same JSON whichever way they come in.
    assert ok_json(cli(cluster, "tasks", "--json", *zk_args(cluster))) == listing

    events = ok_json(cli(cluster, "events", "--url", url, "--json"))
    kinds = {e["kind"] for e in events["events"]}
    assert {"leader", "rebalance"} <= kinds, kinds
    after = ok_json(cli(cluster, "events", "--url", url, "--json",
                        "--after", str(events["last"])))
    assert all(e["seq"] > events["last"] for e in after["events"])
    text = ok(cli(cluster, "events", "--url", url, "--limit", "3"))
    assert len(text.splitlines()) == 3 and "rebalance" in text
    # Without --url, events come from the leader's admin API, found through ZooKeeper.
    via_zk = ok_json(cli(cluster, "events", "--json", *zk_args(cluster)))
    assert via_zk["node_url"] == url and via_zk["events"]


def test_refusals_are_one_line_with_an_exit_code(cluster: Cluster):
    url = url_of(cluster, "n2")
    for args in (("scale", "alpha", "-1", *zk_args(cluster)),
                 ("scale", "alpha", "many", *zk_args(cluster)),
                 ("scale", "alpha", "-3", "--url", url, "--token", TOKEN)):
        line = one_line_error(cli(cluster, *args), 2)
        assert "workerNum" in line and "non-negative integer" in line, line

    line = one_line_error(cli(cluster, "pause", "nosuch", *zk_args(cluster)), 2)
    assert line == "xconsumer: error: unknown task 'nosuch'"
    line = one_line_error(cli(cluster, "reset", "nosuch", "--url", url, "--token", TOKEN), 2)
    assert "nosuch" in line
    line = one_line_error(cli(cluster, "drain", "ghost", *zk_args(cluster)), 2)
    assert "unknown node 'ghost'" in line and "n1, n2" in line

    dead = f"http://127.0.0.1:{free_port()}"
    line = one_line_error(cli(cluster, "tasks", "--url", dead, "--timeout", "5"), 3)
    assert f"cannot reach the admin API at {dead}" in line
    one_line_error(cli(cluster, "tasks", "--url", url, "--zk", cluster.zk_hosts), 2)

    # Nothing above changed the cluster.
    assert cluster.converged({"n1", "n2"}) is not None
    tasks = ok_json(cli(cluster, "tasks", "--json", *zk_args(cluster)))
    assert tasks["version"] == -1
