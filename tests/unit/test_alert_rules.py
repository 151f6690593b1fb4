"""The alert rules shipped for the monitoring profile (docker/prometheus/alerts.yml).

`promtool check rules` proves Prometheus loads them; `promtool test rules` proves the main
ones fire on the series a sick cluster would show, and stay quiet on a healthy one, so a
renamed metric or a wrong label cannot leave an alert that never fires. Every metric named
in a rule must also be one a node exports.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.util import missing_tool
from xconsumer.metrics import Metrics

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "docker" / "prometheus" / "alerts.yml"
PROMETHEUS_CONFIG = REPO / "docker" / "prometheus" / "prometheus.yml"


def _promtool() -> str:
    venv_tool = REPO / ".venv" / "bin" / "promtool"
    tool = shutil.which("promtool") or (str(venv_tool) if venv_tool.exists() else None)
    if tool is None:
        missing_tool("promtool not found (bin/setup --tests installs it)")
    return tool


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_promtool(), *args], capture_output=True, text=True, timeout=60,
                          check=False)


def _rules() -> list[dict]:
    groups = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_promtool_accepts_the_rules_and_the_config() -> None:
    proc = _run("check", "rules", str(RULES))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = _run("check", "config", str(PROMETHEUS_CONFIG))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_rules_cover_the_failures_the_issue_names() -> None:
    names = {rule["alert"] for rule in _rules()}
    assert {"XConsumerNodeDown", "XConsumerSlotsUnassigned", "XConsumerSlotsStuck",
            "XConsumerNoLeader", "XConsumerZooKeeperDisconnected"} <= names, names


def test_every_metric_in_a_rule_is_exported_by_a_node() -> None:
    exported = {metric.name for metric in Metrics().registry.collect()}
    for rule in _rules():
        for name in re.findall(r"\bxconsumer_\w+", rule["expr"]):
            assert name in exported, f"{rule['alert']}: no node exports {name}"


_UNIT_TESTS = """
rule_files: [{rules}]
evaluation_interval: 15s
tests:
  - interval: 15s
    input_series:
      - series: 'up{{job="xconsumer", instance="node1:8000"}}'
        values: '1x10'
      - series: 'up{{job="xconsumer", instance="node2:8000"}}'
        values: '0x10'
      - series: 'xconsumer_leader{{job="xconsumer", instance="node1:8000"}}'
        values: '0x10'
      - series: 'xconsumer_zookeeper_connected{{job="xconsumer", instance="node1:8000"}}'
        values: '1x10'
      - series: 'xconsumer_slots_stuck{{job="xconsumer", instance="node1:8000"}}'
        values: '0x10'
      - series: 'xconsumer_task_slots_desired{{job="xconsumer", instance="node1:8000", task="a"}}'
        values: '4x10'
      - series: 'xconsumer_task_slots_assigned_here{{job="xconsumer", instance="node1:8000",
                  task="a"}}'
        values: '3x10'
    # Firing alerts as Prometheus records them (ALERTS), so the check does not depend
    # on the wording of the annotations.
    promql_expr_test:
      - expr: 'count by (alertname) (ALERTS{{alertstate="firing"}})'
        eval_time: 2m30s
        exp_samples:
          - labels: '{{alertname="XConsumerNodeDown"}}'
            value: 1
          - labels: '{{alertname="XConsumerNoLeader"}}'
            value: 1
          - labels: '{{alertname="XConsumerSlotsUnassigned"}}'
            value: 1
"""


def test_the_rules_fire_on_a_sick_cluster_and_not_on_a_healthy_one(tmp_path: Path) -> None:
    tests = tmp_path / "alerts_test.yml"
    tests.write_text(_UNIT_TESTS.format(rules=RULES), encoding="utf-8")
    proc = _run("test", "rules", str(tests))
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("key", ["summary", "description"])
def test_every_rule_explains_itself(key: str) -> None:
    for rule in _rules():
        assert rule.get("annotations", {}).get(key), f"{rule['alert']}: no {key}"
        assert rule.get("labels", {}).get("severity") in ("warning", "critical"), rule["alert"]
