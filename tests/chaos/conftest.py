"""Chaos suite fixtures and options.

`pytest tests/chaos --soak 300` also runs the randomized soak (skipped otherwise) for 300 s;
`--soak-seed N` replays one soak run. Figures of every fault are printed (`-s`) and appended as
JSON lines to `chaos-results.jsonl` in pytest's base temp dir (or $XCONSUMER_CHAOS_RESULTS);
the table at the end of the run is printed by the root conftest, which also runs in the
controller of a parallel (pytest-xdist) run, where this one is never loaded.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.harness import ChaosCluster
from tests.util import CHAOS_RESULTS_ENV as RESULTS_ENV
from tests.util import CHAOS_RESULTS_NAME as RESULTS_NAME
from xconsumer.zkserver import ZooKeeperEnsemble, ZooKeeperServer


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
    path = Path(os.environ.get(RESULTS_ENV) or
                tmp_path_factory.getbasetemp() / RESULTS_NAME)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


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
