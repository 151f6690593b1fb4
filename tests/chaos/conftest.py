"""Chaos suite fixtures and options.

`pytest tests/chaos --soak 300` also runs the randomized soak (skipped otherwise) for 300 s;
`--soak-seed N` replays one soak run. Figures of every fault are printed (`-s`) and appended as
JSON lines to `chaos-results.jsonl` in pytest's base temp dir (or $XCONSUMER_CHAOS_RESULTS).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.harness import ChaosCluster
from xconsumer.zkserver import ZooKeeperEnsemble, ZooKeeperServer

RESULTS_ENV = "XCONSUMER_CHAOS_RESULTS"
_results_path: Path | None = None


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("chaos", "xconsumer chaos suite")
    group.addoption("--soak", type=float, default=0.0, metavar="SECONDS",
                    help="run the randomized chaos soak for this many seconds "
                         "(soak tests are skipped without it)")
    group.addoption("--soak-seed", type=int, default=None, metavar="N",
                    help="seed of the soak's random faults (default: time-based, printed)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "soak: long randomized chaos run, needs --soak SECONDS")
    config.addinivalue_line("markers", "chaos: fault injection against real node processes")


def soak_seconds(config: pytest.Config) -> float:
    # Option registered only when this conftest is an initial one (pytest tests/chaos ...);
    # under a plain `pytest` run soak tests are simply skipped.
    try:
        return float(config.getoption("soak") or 0.0)
    except ValueError:
        return 0.0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if soak_seconds(config) > 0:
        return
    skip = pytest.mark.skip(reason="soak test: run with --soak SECONDS")
    for item in items:
        if "soak" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def chaos_results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    global _results_path
    path = Path(os.environ.get(RESULTS_ENV) or
                tmp_path_factory.getbasetemp() / "chaos-results.jsonl")
    path.parent.mkdir(parents=True, exist_ok=True)
    _results_path = path
    return path


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _results_path is None or not _results_path.exists():
        return
    rows = [json.loads(line) for line in _results_path.read_text().splitlines() if line]
    if not rows:
        return
    tr = terminalreporter
    tr.section("chaos figures")
    width = max(34, *(len(r["name"]) for r in rows))
    tr.write_line(f"{'fault':<{width}} {'overlap ms':>10} {'recovery s':>10} "
                  f"{'handover s':>10} {'bound s':>7} {'gap s':>6} {'load':>5}  violations")
    for r in rows:
        rec = "never" if r["recovery_s"] is None else f"{r['recovery_s']:.2f}"
        tr.write_line(f"{r['name']:<{width}} {r['overlap_ms']:>10.1f} {rec:>10} "
                      f"{r['last_handover_s']:>10.2f} {r['bound_s']:>7.1f} "
                      f"{r['max_gap_s']:>6.2f} {r.get('load1', 0):>5.1f}  {len(r['problems'])}")
    tr.write_line(f"(JSON lines: {_results_path})")


@pytest.fixture
def private_zk(local_zookeeper: None, tmp_path: Path) -> Iterator[ZooKeeperServer]:
    """A ZooKeeper server of this test only, for faults that touch the server."""
    server = ZooKeeperServer(data_dir=tmp_path / "zk")
    with server:
        yield server


@pytest.fixture
def ensemble(local_zookeeper: None) -> Iterator[ZooKeeperEnsemble]:
    with ZooKeeperEnsemble(size=3) as zks:
        yield zks


ClusterFactory = Callable[..., ChaosCluster]


@pytest.fixture
def make_cluster(tmp_path: Path, chaos_results: Path) -> Iterator[ClusterFactory]:
    """`make_cluster(hosts, root, tasks, **kw)`: a ChaosCluster closed (by pid) at teardown."""
    made: list[ChaosCluster] = []

    def make(hosts: str, root: str, tasks: list[dict[str, Any]], **kw: Any) -> ChaosCluster:
        work = tmp_path / f"cluster{len(made)}"
        work.mkdir()
        cluster = ChaosCluster(work, hosts, root, tasks, results=chaos_results, **kw)
        made.append(cluster)
        return cluster

    yield make
    for cluster in made:
        cluster.close()
