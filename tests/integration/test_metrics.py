"""/metrics as Prometheus reads it: per-task series follow the task table and this node's
share of it (no stale values for tasks that moved away or were removed), every labelled
series exists from the start, and a live node's exposition passes `promtool check metrics`."""

from __future__ import annotations

import shutil
import subprocess
import urllib.request
from pathlib import Path

from kazoo.client import KazooClient
from prometheus_client.parser import text_string_to_metric_families

from tests.cluster import Cluster
from tests.integration.test_node import make_config, running, start
from tests.util import missing_tool, wait_until
from xconsumer.node import Node
from xconsumer.overrides import remove_task

TASKS = ('[[task]]\nname = "a"\nworkName = "record"\nworkerNum = 1\n'
         '[[task]]\nname = "b"\nworkName = "record"\nworkerNum = 1\n')
PER_TASK = ("xconsumer_task_slots_desired", "xconsumer_task_slots_assigned_here",
            "xconsumer_task_slots_running_here")


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, parsed strictly (a malformed line raises)."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def per_task(node: Node) -> dict[str, dict[str, float]]:
    """{metric: {task: value}} for the per-task gauges, as a scrape would see them now."""
    node.refresh_metrics()
    out: dict[str, dict[str, float]] = {name: {} for name in PER_TASK}
    for (name, labels), value in samples(node.metrics.render().decode()).items():
        if name in out:
            out[name][dict(labels)["task"]] = value
    return out


def test_per_task_gauges_follow_the_task_table_and_this_nodes_share(zk_hosts, zk_root, nodes,
                                                                    record):
    config = make_config(zk_hosts, zk_root, TASKS)
    a = start(nodes, config, "a")
    wait_until(lambda: running(a) == {"a/0", "b/0"}, 15)
    assert per_task(a) == {name: {"a": 1.0, "b": 1.0} for name in PER_TASK}
    b = start(nodes, config, "b")  # first in the dealing order: one slot moves to b
    wait_until(lambda: len(running(a)) == 1 and len(running(b)) == 1, 15)
    moved = ({"a", "b"} - {s.split("/")[0] for s in running(a)}).pop()
    kept = ({"a", "b"} - {moved}).pop()
    # The task that moved away reads 0 here, not the 1 it had.
    want = {"xconsumer_task_slots_desired": {"a": 1.0, "b": 1.0},
            "xconsumer_task_slots_assigned_here": {kept: 1.0, moved: 0.0},
            "xconsumer_task_slots_running_here": {kept: 1.0, moved: 0.0}}
    wait_until(lambda: per_task(a) == want, 10, message=lambda: str(per_task(a)))
    # A removed task has no series left at all.
    a.overrides.update(lambda d: remove_task(d, a.seed_tasks(), kept))
    wait_until(lambda: running(a) == set(), 15)
    gone = {name: {moved: 0.0} for name in PER_TASK}
    gone["xconsumer_task_slots_desired"] = {moved: 1.0}
    wait_until(lambda: per_task(a) == gone, 10, message=lambda: str(per_task(a)))


def test_session_event_series_exist_before_the_first_event(zk_hosts, zk_root, nodes, record):
    node = start(nodes, make_config(zk_hosts, zk_root, TASKS), "a")
    found = samples(node.metrics.render().decode())
    for state in ("connected", "suspended", "lost"):
        key = ("xconsumer_zookeeper_session_events_total", (("state", state),))
        assert found.get(key) == 0.0, sorted(k for k in found if "session" in k[0])


def _promtool() -> str | None:
    venv_tool = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "promtool"
    return shutil.which("promtool") or (str(venv_tool) if venv_tool.exists() else None)


def test_a_live_nodes_metrics_pass_promtool(tmp_path: Path, zk_hosts: str, zk_root: str,
                                            zk: KazooClient):
    tool = _promtool()
    if tool is None:
        missing_tool("promtool not found (bin/setup --tests installs it)")
    cluster = Cluster(tmp_path, zk_hosts, zk_root,
                      [{"name": "t", "workName": "record", "workerNum": 2}])
    try:
        cluster.start_node("n1")
        view = cluster.wait_converged({"n1"})
        url = view["nodes"][0]["admin_url"]
        with urllib.request.urlopen(f"{url}/metrics", timeout=10) as resp:
            text = resp.read().decode()
        assert samples(text)  # strict parse: every line is valid exposition
        check = subprocess.run([tool, "check", "metrics"], input=text, capture_output=True,
                               text=True, timeout=30)
        assert (check.returncode, check.stdout + check.stderr) == (0, "")
    finally:
        cluster.close()
