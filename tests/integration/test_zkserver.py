"""The local ZooKeeper harness itself: every other integration and fault test trusts it, so
it must really start, keep data across restarts, stop what it started, and fail readably."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from kazoo.client import KazooClient

from tests.util import wait_until
from xconsumer import zkserver
from xconsumer.errors import XConsumerError
from xconsumer.zkserver import ZooKeeperEnsemble, ZooKeeperServer, free_port

REPO = Path(__file__).resolve().parents[2]


def _client(hosts: str) -> KazooClient:
    client = KazooClient(
        hosts=hosts, timeout=10, connection_retry={"max_tries": -1, "max_delay": 0.2}
    )
    client.start(timeout=10)
    return client


def _alive(pid: int) -> bool:
    # Zombie-aware: an orphan whose parent does not reap it still answers kill(pid, 0).
    return zkserver._zk_alive(pid)


# ---- unit: no server needed -------------------------------------------------------------


def test_find_classpath_honours_env_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XCONSUMER_ZK_CLASSPATH", "/opt/zk/lib/a.jar:/opt/zk/lib/b.jar")
    assert zkserver.find_classpath() == "/opt/zk/lib/a.jar:/opt/zk/lib/b.jar"


def test_find_classpath_without_jar_points_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("XCONSUMER_ZK_CLASSPATH", raising=False)
    monkeypatch.setattr(zkserver, "JAVA_DIR", tmp_path)
    with pytest.raises(XConsumerError, match=r"not installed .*run `bin/zk install`") as err:
        zkserver.find_classpath()
    assert "\n" not in str(err.value)


# ---- against real servers -----------------------------------------------------------------


def test_session_server_accepts_clients_and_ephemerals(zk: KazooClient, zk_root: str) -> None:
    path = zk.create(f"{zk_root}/worker-", b"me", ephemeral=True, sequence=True, makepath=True)
    data, stat = zk.get(path)
    assert data == b"me"
    assert stat.ephemeralOwner == zk.client_id[0]
    zk.delete(path)
    assert zk.exists(path) is None


def test_restart_keeps_data_and_port(local_zookeeper: None) -> None:
    with ZooKeeperServer() as server:
        hosts, old_pid = server.hosts, server.pid
        client = _client(hosts)
        client.create("/kept", b"across restarts")
        client.stop()
        client.close()

        server.restart()

        assert server.hosts == hosts
        assert server.pid != old_pid and old_pid is not None and not _alive(old_pid)
        client = _client(hosts)
        try:
            assert client.get("/kept")[0] == b"across restarts"
        finally:
            client.stop()
            client.close()
        data_dir = server.data_dir
    assert not data_dir.exists(), "the temp data dir is removed on close, not on stop"


def test_stop_ends_the_process_and_pause_freezes_it(local_zookeeper: None) -> None:
    with ZooKeeperServer() as server:
        assert server.mode() == "standalone"
        server.pause()
        assert server.mode(timeout=0.3) is None, "a paused server must not answer"
        server.resume()
        wait_until(lambda: server.mode() == "standalone", timeout=5, message="resume")

        pid = server.pid
        assert pid is not None
        server.stop()
        assert not server.running and server.pid is None
        assert not _alive(pid)
        server.stop()  # idempotent


def _zk_cli(*args: str) -> subprocess.CompletedProcess[str]:
    # The repo root on the path, so the CLI runs this checkout even without `pip install -e`.
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, PYTHONPATH=path)
    return subprocess.run(
        [sys.executable, "-m", "xconsumer.zkserver", *args],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip


@pytest.fixture
def cli_dir(tmp_path: Path) -> Iterator[Path]:
    run_dir = tmp_path / "zk"
    yield run_dir
    pidfile = run_dir / "zk.pid"
    if pidfile.exists():  # the test failed half-way: do not leak a JVM
        _zk_cli("stop", "--dir", str(run_dir))


def test_cli_start_status_stop_round_trip(local_zookeeper: None, cli_dir: Path) -> None:
    port = free_port()
    d = str(cli_dir)

    started = _zk_cli("start", "--port", str(port), "--dir", d)
    assert started.returncode == 0, started.stderr
    m = re.fullmatch(rf"ZooKeeper running at 127\.0\.0\.1:{port} \(pid (\d+)\)\n", started.stdout)
    assert m, started.stdout
    pid = int(m.group(1))
    assert _alive(pid), "the server must outlive the CLI process"
    assert (cli_dir / "zk.pid").read_text().strip() == str(pid)

    again = _zk_cli("start", "--port", str(port), "--dir", d)
    assert (again.returncode, again.stdout) == (0, started.stdout), "second start just reports"

    status = _zk_cli("status", "--dir", d)
    assert (status.returncode, status.stdout) == (0, started.stdout)

    client = _client(f"127.0.0.1:{port}")
    client.stop()
    client.close()

    stopped = _zk_cli("stop", "--dir", d)
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout == f"ZooKeeper stopped (pid {pid})\n"
    assert not _alive(pid)
    assert not (cli_dir / "zk.pid").exists()

    status = _zk_cli("status", "--dir", d)
    assert (status.returncode, status.stdout) == (1, "ZooKeeper is not running\n")


def test_cli_start_on_busy_port_fails_with_one_line(local_zookeeper: None, cli_dir: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = _zk_cli("start", "--port", str(port), "--dir", str(cli_dir))
    assert result.returncode != 0
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and "already in use" in result.stderr, result.stderr
    assert not (cli_dir / "zk.pid").exists()


def test_ensemble_survives_losing_its_leader(local_zookeeper: None) -> None:
    with ZooKeeperEnsemble(size=3) as ensemble:
        assert len(ensemble.hosts.split(",")) == 3
        client = _client(ensemble.hosts)
        try:
            client.create("/ensemble", b"1")
            leader = ensemble.leader()
            assert leader is not None
            leader.stop()

            # The survivors elect a new leader; until then requests fail with connection loss.
            wait_until(lambda: client.set("/ensemble", b"2"), timeout=15, interval=0.1,
                       message="write after losing the leader")  # fmt: skip
            assert client.get("/ensemble")[0] == b"2"
            new_leader = wait_until(ensemble.leader, timeout=5)
            assert new_leader is not leader

            leader.start()  # the old leader rejoins as a follower and catches up
            assert leader.mode() == "follower"
        finally:
            client.stop()
            client.close()
