"""Shared fixtures: one real ZooKeeper per test session, and an isolated root per test.

Tests talk to a real server rather than a fake because the behaviour under test (sessions,
ephemerals, watches, failover) is exactly what fakes get wrong. One server per session keeps
startup cost (~0.5-1 s) out of each test; a unique root per test keeps tests independent.
Set XCONSUMER_TEST_ZK=host:port to use an existing server instead (e.g. a CI service).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import uuid
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kazoo.client import KazooClient

from tests.util import CHAOS_RESULTS_ENV, CHAOS_RESULTS_NAME, missing_tool
from xconsumer.errors import XConsumerError
from xconsumer.zkserver import ZooKeeperServer, find_classpath

# Test modules import helpers as `tests.util`; with rootdir-less test dirs pytest only puts
# the test file's own directory on sys.path, so make the repo root importable too.
_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

EXTERNAL_ZK_ENV = "XCONSUMER_TEST_ZK"
LOG_TAIL_LINES = 50
# Set while the session server runs, so the failure hook can attach its log.
_session_server: ZooKeeperServer | None = None


@dataclass(frozen=True)
class ExternalZooKeeper:
    """A server someone else runs: tests can use it but not stop, kill or restart it."""

    hosts: str


def pytest_configure(config: pytest.Config) -> None:
    # Kazoo logs every reconnect at INFO; fault tests cause many on purpose.
    logging.getLogger("kazoo").setLevel(logging.WARNING)


# Tests that share one outside resource, or that must not compete with each other for the
# machine, run on one pytest-xdist worker, one after another (bin/test runs two workers): the
# Docker tests share one dockerd, and a second worker would start another on the same
# socket; the PostgreSQL tests share one server; each chaos fault's recovery time is checked
# against a bound. The other worker runs everything else meanwhile.
SERIAL_GROUPS = ("chaos", "docker", "postgres")
SERIAL_SCOPE = "serial"


def serial_scope(nodeid: str) -> str | None:
    """`SERIAL_SCOPE` for a test under one of `SERIAL_GROUPS` (node ids are relative to the
    repository: tests/<group>/...), else None."""
    parts = nodeid.split("/", 2)
    return SERIAL_SCOPE if len(parts) == 3 and parts[0] == "tests" \
        and parts[1] in SERIAL_GROUPS else None


# The scheduler is ours rather than `--dist loadgroup` with `xdist_group` marks: pytest-xdist
# 3.8 tags a grouped test by rewriting `item._nodeid`, which pytest 9.2 no longer reads, so
# the marks are silently ignored.
@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    if config.getvalue("dist") != "load":  # another --dist was asked for: xdist's own
        return None
    from xdist.scheduler import LoadScopeScheduling

    class SerialGroupsScheduling(LoadScopeScheduling):
        """Like `--dist load` (each test its own unit), but one unit for the serial groups."""

        def _split_scope(self, nodeid: str) -> str:
            return serial_scope(nodeid) or nodeid

    return SerialGroupsScheduling(config, log)


def _chaos_rows(config: pytest.Config) -> tuple[Path | str, list[dict[str, Any]]]:
    """The chaos suite's figures of this run. In a parallel run each worker writes under its
    own base temp dir, a child of the controller's, so they are gathered from there."""
    env = os.environ.get(CHAOS_RESULTS_ENV)
    if env:
        files = [Path(env)]
        where: Path | str = Path(env)
    else:
        factory = getattr(config, "_tmp_path_factory", None)
        if factory is None:
            return "", []
        base = factory.getbasetemp()
        files = sorted(base.glob(CHAOS_RESULTS_NAME)) + sorted(base.glob(f"*/{CHAOS_RESULTS_NAME}"))
        where = files[0] if len(files) == 1 else base / f"**/{CHAOS_RESULTS_NAME}"
    rows = [json.loads(line) for f in files if f.exists()
            for line in f.read_text().splitlines() if line]
    return where, rows


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    where, rows = _chaos_rows(config)
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
    tr.write_line(f"(JSON lines: {where})")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    # Fixtures can look at item.rep_setup / rep_call / rep_teardown to act on failures.
    setattr(item, f"rep_{report.when}", report)
    if report.failed and _session_server is not None:
        # A section (rather than print) shows up in the failure output even with capture on.
        report.sections.append(
            (
                f"ZooKeeper log, last {LOG_TAIL_LINES} lines ({_session_server.log_path})",
                _session_server.log_tail(LOG_TAIL_LINES),
            )
        )


def _client(hosts: str) -> KazooClient:
    # max_tries=-1 matters: with a dict, kazoo's default is a single retry, after which the
    # client silently gives up reconnecting for good.
    return KazooClient(
        hosts=hosts, timeout=10, connection_retry={"max_tries": -1, "max_delay": 0.5}
    )


@pytest.fixture(scope="session")
def zk_server() -> Iterator[ZooKeeperServer | ExternalZooKeeper]:
    global _session_server
    external = os.environ.get(EXTERNAL_ZK_ENV)
    if external:
        yield ExternalZooKeeper(hosts=external)
        return
    with ZooKeeperServer() as server:
        _session_server = server
        try:
            yield server
        finally:
            _session_server = None


@pytest.fixture
def zk_server_control(zk_server: ZooKeeperServer | ExternalZooKeeper) -> ZooKeeperServer:
    """The session server for tests that stop/pause it; they must leave it running."""
    if not isinstance(zk_server, ZooKeeperServer):
        pytest.skip(f"needs a ZooKeeper this test run controls ({EXTERNAL_ZK_ENV} is set)")
    return zk_server


@pytest.fixture
def local_zookeeper() -> None:
    """Skip tests that launch their own servers when only an external one is available
    (and ZooKeeper is not installed here); in CI that fails instead, see missing_tool."""
    try:
        find_classpath()
    except XConsumerError as e:
        if os.environ.get(EXTERNAL_ZK_ENV):
            missing_tool(str(e))
        raise


@pytest.fixture
def zk_hosts(zk_server: ZooKeeperServer | ExternalZooKeeper) -> str:
    return zk_server.hosts


@pytest.fixture
def zk_root(zk_hosts: str) -> Iterator[str]:
    root = f"/tests-{uuid.uuid4().hex}"
    yield root
    client = _client(zk_hosts)
    try:  # best effort: a failed cleanup must not turn a passing test red
        client.start(timeout=5)
        client.delete(root, recursive=True)
    except Exception as e:
        logging.getLogger(__name__).warning("could not delete %s: %s", root, e)
    finally:
        client.stop()
        client.close()


@pytest.fixture
def zk(zk_hosts: str) -> Iterator[KazooClient]:
    client = _client(zk_hosts)
    client.start(timeout=10)
    yield client
    client.stop()
    client.close()
