"""bin/test's two pytest-xdist workers: the serial groups (chaos, Docker, PostgreSQL) run on one
worker, one after another. When this grouping failed silently, both workers used the Docker
engine and two dockerd were started on one socket; pytest-xdist's own `xdist_group` marks are
ignored under pytest 9.2."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import SERIAL_SCOPE, serial_scope

pytest_plugins = ["pytester"]
REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("nodeid, scope", [
    ("tests/chaos/test_faults.py::test_kill9[leader]", SERIAL_SCOPE),
    ("tests/docker/test_ensemble.py::test_x", SERIAL_SCOPE),
    ("tests/postgres/test_outbox.py::test_y[a/b]", SERIAL_SCOPE),
    ("tests/unit/test_config.py::test_z", None),
    ("tests/dockerx/test_a.py::test_a", None),
    ("tests/docker", None),
    ("other/docker/test_a.py::test_a", None),
])
def test_serial_scope_names_only_the_serial_groups(nodeid: str, scope: str | None) -> None:
    assert serial_scope(nodeid) == scope


def test_two_workers_run_every_serial_test_on_one_of_them(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        f"import sys\nsys.path.insert(0, {str(REPO)!r})\n"
        "from tests.conftest import pytest_xdist_make_scheduler  # noqa: F401\n")
    record = pytester.path / "ran.txt"
    body = ("import os\n\n"
            "def test_{i}():\n"
            f"    with open({str(record)!r}, 'a') as f:\n"
            "        f.write(f\"{{__file__}} {{os.environ['PYTEST_XDIST_WORKER']}}\\n\")\n")
    for group in ("chaos", "docker", "postgres", "unit", "e2e"):
        for m in range(2):
            pytester.makepyfile(**{f"tests/{group}/test_{group}_{m}": "\n".join(
                body.format(i=i) for i in range(4))})
    result = pytester.runpytest_subprocess("-n", "2", "-p", "no:cacheprovider", timeout=120)
    result.assert_outcomes(passed=40)
    workers: dict[str, set[str]] = {}
    for line in record.read_text().splitlines():
        path, worker = line.rsplit(" ", 1)
        workers.setdefault(Path(path).parent.name, set()).add(worker)
    serial = set().union(*(workers[g] for g in ("chaos", "docker", "postgres")))
    assert len(serial) == 1, workers
