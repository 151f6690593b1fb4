"""The two-node cluster the API, CLI and dashboard tests share: tasks alpha and beta with two
slots each, and the admin token of the test module (`TOKEN`). Modules that need another shape
define their own `cluster` fixture."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster import Cluster


@pytest.fixture
def cluster(request: pytest.FixtureRequest, tmp_path: Path, zk_hosts: str,
            zk_root: str) -> Iterator[Cluster]:
    c = Cluster(tmp_path, zk_hosts, zk_root,
                [{"name": "alpha", "workName": "record", "workerNum": 2},
                 {"name": "beta", "workName": "record", "workerNum": 2}],
                extra={"admin": {"token": request.module.TOKEN}})
    try:
        c.start_node("n1")
        c.start_node("n2")
        c.wait_converged({"n1", "n2"})
        yield c
    finally:
        c.close()
