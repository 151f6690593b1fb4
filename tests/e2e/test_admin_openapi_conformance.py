"""The admin API against its own OpenAPI document, checked by schemathesis with every check.

Schemathesis reads /openapi.json from a live node of the shared two-node cluster and sends
what the document allows (and what it forbids): every answer must be documented, match its
schema and content type, never be a 5xx, reject invalid input, accept valid input, enforce
the bearer token where the document says so, and answer undeclared methods with 405 + Allow.

Run deterministically (fixed seed, deterministic generation, a bounded number of examples
per operation) so a failure reproduces, and kept well under a minute.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster import Cluster

pytestmark = pytest.mark.e2e

TOKEN = "fuzz-token"
SEED = 20240607
MAX_EXAMPLES = 25
BUDGET_S = 60

# What the document cannot say, so valid-looking data may still get a 400 here:
# - POST /api/tasks: whether some live node has a handler for workName, and that
#   retry_backoff_max >= retry_backoff (a rule across two fields);
# - PATCH /api/tasks/{name}: the same cross-field rule against the task's current values.
CONFIG = """
[phases.stateful]
max-steps = 10
generation.max-examples = 25

[[operations]]
include-path = "/api/tasks"
include-method = "POST"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "409"]

[[operations]]
include-path = "/api/tasks/{name}"
include-method = "PATCH"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "409"]
"""


@pytest.fixture
def cluster(tmp_path: Path, zk_hosts: str, zk_root: str) -> Iterator[Cluster]:
    """Two nodes that run no slot at all (`[node] works` names no handler they have).

    Schemathesis learns the task names from the answers and then sends boundary values such
    as workerNum = 100000 to them: the API must take those, but nothing should start that
    many threads on a shared test machine. The slots stay unassigned instead.
    """
    c = Cluster(tmp_path, zk_hosts, zk_root,
                [{"name": "alpha", "workName": "record", "workerNum": 2},
                 {"name": "beta", "workName": "record", "workerNum": 1}],
                extra={"admin": {"token": TOKEN}, "node": {"works": ["runs_nothing"]}})
    try:
        c.start_node("n1")
        c.start_node("n2")
        yield c
    finally:
        c.close()


def test_schemathesis_all_checks_are_clean(cluster: Cluster, tmp_path: Path):
    url = next(n["admin_url"] for n in cluster.view()["nodes"] if n["id"] == "n2")
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    cmd = [sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run",
           f"{url}/openapi.json", "--checks", "all", "--seed", str(SEED),
           "--generation-deterministic",
           "--max-examples", str(MAX_EXAMPLES), "--workers", "1",
           "--request-timeout", "10", "--no-color",
           "--header", f"Authorization: Bearer {TOKEN}"]
    started = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=BUDGET_S * 3,
                          cwd=tmp_path, check=False)
    elapsed = time.monotonic() - started
    output = proc.stdout + proc.stderr
    print(output[-4000:])  # the summary, shown with -rP
    assert proc.returncode == 0, f"schemathesis found problems:\n{output[-15000:]}"
    assert "passed" in output.lower(), output[-3000:]
    assert elapsed < BUDGET_S * 2, f"schemathesis took {elapsed:.0f}s"
    # The fuzzing did not take the cluster down.
    assert {n["id"] for n in cluster.view()["nodes"]} == {"n1", "n2"}
