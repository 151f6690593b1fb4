"""The command line as a user meets it: bad input gets one readable line and a named exit
code, never a traceback; the dev cluster command runs and stops cleanly."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cluster import REPO, write_config
from tests.util import wait_until
from xconsumer.zkserver import free_port

pytestmark = pytest.mark.e2e

TASK = {"name": "t", "workName": "test01", "workerNum": 1}


def run(*args: str, cwd: Path, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "xconsumer", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=cwd)


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("xconsumer: error:")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_malformed_toml(tmp_path: Path):
    (tmp_path / "app.toml").write_text('[cluster]\nname = "x"\n[[task]\nname = 1\n')
    proc = run("run", "--config", "app.toml", "--works", str(REPO / "works"), cwd=tmp_path)
    assert proc.returncode == 2
    assert "app.toml: invalid TOML at line 3" in one_line_error(proc)


def test_unknown_work_name_names_the_task(tmp_path: Path, zk_hosts: str):
    cfg = write_config(tmp_path / "app.toml", cluster="c", zk_hosts=zk_hosts, root="/x",
                       tasks=[{"name": "ingest", "workName": "nosuch", "workerNum": 1}])
    proc = run("run", "--config", str(cfg), "--works", str(REPO / "works"), cwd=tmp_path)
    assert proc.returncode == 2
    line = one_line_error(proc)
    assert "task[0] (name 'ingest')" in line and "RunNosuch" in line


def test_bad_worker_num(tmp_path: Path):
    cfg = write_config(tmp_path / "app.toml", cluster="c", zk_hosts="127.0.0.1:1", root="/x",
                       tasks=[{"name": "t", "workName": "test01", "workerNum": -2}])
    proc = run("run", "--config", str(cfg), "--works", str(REPO / "works"), cwd=tmp_path)
    assert proc.returncode == 2
    assert "workerNum" in one_line_error(proc)


def test_handler_import_error_points_at_the_file(tmp_path: Path):
    works = tmp_path / "works"
    works.mkdir()
    (works / "__init__.py").write_text("")
    (works / "broken.py").write_text("import os\n\nimport no_such_module_here\n")
    cfg = write_config(tmp_path / "app.toml", cluster="c", zk_hosts="127.0.0.1:1", root="/x",
                       tasks=[TASK])
    proc = run("run", "--config", str(cfg), cwd=tmp_path)
    assert proc.returncode == 2
    line = one_line_error(proc)
    assert "broken.py" in line and "line 3" in line and "no_such_module_here" in line


def test_zookeeper_down_fails_fast_with_a_hint(tmp_path: Path):
    port = free_port()
    cfg = write_config(tmp_path / "app.toml", cluster="c", zk_hosts=f"127.0.0.1:{port}",
                       root="/x", tasks=[TASK], extra={"zookeeper": {"connect_timeout": 1.5}})
    proc = run("run", "--config", str(cfg), "--works", str(REPO / "works"), "--admin-port",
               "0", cwd=tmp_path)
    assert proc.returncode == 3
    assert f"cannot reach ZooKeeper at 127.0.0.1:{port}" in one_line_error(proc)
    status = run("status", "--config", str(cfg), "--timeout", "1", cwd=tmp_path)
    assert status.returncode == 3
    one_line_error(status)


def test_admin_port_in_use(tmp_path: Path, zk_hosts: str):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cfg = write_config(tmp_path / "app.toml", cluster="c", zk_hosts=zk_hosts, root="/x",
                           tasks=[TASK])
        proc = run("run", "--config", str(cfg), "--works", str(REPO / "works"),
                   "--admin-port", str(port), cwd=tmp_path)
    assert proc.returncode == 2
    assert f"127.0.0.1:{port}" in one_line_error(proc)


def test_env_overrides_file(tmp_path: Path):
    cfg = write_config(tmp_path / "app.toml", cluster="c", zk_hosts="127.0.0.1:1", root="/x",
                       tasks=[TASK], extra={"zookeeper": {"connect_timeout": 1}})
    port = free_port()
    proc = subprocess.run([sys.executable, "-m", "xconsumer", "status", "--config", str(cfg)],
                          capture_output=True, text=True, timeout=30, cwd=tmp_path,
                          env={"XCONSUMER_ZK": f"127.0.0.1:{port}", "PATH": "/usr/bin:/bin",
                               "PYTHONPATH": str(REPO)})
    assert f"127.0.0.1:{port}" in one_line_error(proc)


def test_dev_cluster_command_runs_and_stops(tmp_path: Path, zk_hosts: str, zk_root: str):
    """Stopped by SIGTERM once both nodes joined and the leader published (on a loaded
    machine a fixed --for could end before the second node even started)."""
    cfg = write_config(tmp_path / "app.toml", cluster="dev", zk_hosts=zk_hosts, root=zk_root,
                       tasks=[{"name": "ticker", "workName": "test01", "workerNum": 3,
                               "interval": 0.2}])
    out, err = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    with open(out, "w") as o, open(err, "w") as e:
        proc = subprocess.Popen(
            [sys.executable, "-m", "xconsumer.devcluster", "--nodes", "2", "--config", str(cfg),
             "--works", str(REPO / "works"), "--zk", zk_hosts, "--admin-port-base", "0",
             "--for", "120"], stdout=o, stderr=e, cwd=tmp_path)
    try:
        wait_until(lambda: err.read_text().count("joined cluster dev as") >= 2
                   and "published assignment" in err.read_text(), 60,
                   message=lambda: err.read_text()[-3000:])
    finally:
        # The command's own stop: it stops its nodes (in sessions of their own) by PID.
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
            raise
    assert code == 0, err.read_text()[-3000:]
    stdout, stderr = out.read_text(), err.read_text()
    assert "started node1" in stdout and "started node2" in stdout
    assert stderr.count("] stopped") == 2, stderr[-3000:]
    assert "Traceback" not in stderr


def test_a_second_live_node_with_the_same_name_is_refused(tmp_path: Path, zk_hosts: str,
                                                          zk_root: str):
    from tests.cluster import Cluster

    cluster = Cluster(tmp_path, zk_hosts, zk_root,
                      [{"name": "t", "workName": "record", "workerNum": 1}])
    try:
        cluster.start_node("twin")
        proc = run("run", "--config", str(cluster.config), "--works", str(cluster.works),
                   "--name", "twin", "--admin-port", "0", cwd=tmp_path, timeout=60)
        assert proc.returncode == 4
        assert "node name 'twin' is already used by a live node" in one_line_error(proc)
        assert cluster.nodes["twin"].alive()
    finally:
        cluster.close()
