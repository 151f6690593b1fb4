"""What an operator sees around the edges: a command against a ZooKeeper that is down says
one line, and the dev cluster never leaves nodes behind, however it is stopped."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cluster import RECORD_WORKS, REPO, write_config
from tests.e2e.record_works import pid_alive
from tests.util import wait_until
from xconsumer.zkserver import free_port

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("command", ["status", "run"])
def test_zookeeper_down_prints_one_line_and_nothing_from_kazoo(tmp_path: Path, command: str):
    # 2 s of refused connections made kazoo warn about ten times before the one line.
    cfg = write_config(tmp_path / "app.toml", cluster="c", zk_hosts=f"127.0.0.1:{free_port()}",
                       root="/x", tasks=[{"name": "t", "workName": "record", "workerNum": 1}],
                       extra={"zookeeper": {"connect_timeout": 2}, "admin": {"enabled": False}})
    args = ["--works", str(RECORD_WORKS)] if command == "run" else []
    proc = subprocess.run([sys.executable, "-m", "xconsumer", command, "--config", str(cfg),
                           *args], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 3, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("xconsumer: error: cannot reach ZooKeeper"), \
        proc.stderr
    assert proc.stdout == ""


def _kill(pids: list[int]) -> None:
    for pid in pids:
        if pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGHUP], ids=["SIGINT", "SIGHUP"])
def test_dev_cluster_piped_into_a_dying_reader_stops_every_child(tmp_path: Path, signum: int):
    """`bin/cluster | tee log` and Ctrl-C: tee dies too, so stopping must survive stdout
    going away (SIGINT); closing the terminal sends SIGHUP instead."""
    cfg = write_config(tmp_path / "app.toml", cluster="dev", zk_hosts="127.0.0.1:1",
                       root="/dev", tasks=[{"name": "t", "workName": "record",
                                            "workerNum": 2}])
    out = tmp_path / "out.txt"
    reader = subprocess.Popen(["tee", str(out)], stdin=subprocess.PIPE,
                              stdout=subprocess.DEVNULL)
    assert reader.stdin is not None
    with open(tmp_path / "err.txt", "wb") as err:
        # Its own process group, like a shell job: the signal below is the terminal's.
        cluster = subprocess.Popen(
            [sys.executable, "-m", "xconsumer.devcluster", "--nodes", "2", "--config", str(cfg),
             "--works", str(RECORD_WORKS), "--zk-port", "0", "--admin-port-base", "0"],
            stdout=reader.stdin, stderr=err, cwd=tmp_path, start_new_session=True,
            env=dict(os.environ, PYTHONPATH=str(REPO)))
    reader.stdin.close()
    pids: list[int] = []
    try:
        text = wait_until(lambda: "watch:" in out.read_text() and out.read_text(), 60,
                          message=lambda: (tmp_path / "err.txt").read_text()[-3000:])
        pids = [int(zk or node) for zk, node in
                re.findall(r"ZooKeeper at \S+ \(pid (\d+)\)|started node\d+ pid (\d+)", text)]
        assert len(pids) == 3, text  # ZooKeeper and two nodes
        assert all(pid_alive(p) for p in pids)
        reader.kill()
        reader.wait(10)
        os.killpg(cluster.pid, signum)
        cluster.wait(60)
        wait_until(lambda: not any(pid_alive(p) for p in pids), 10,
                   message=lambda: f"still running: {[p for p in pids if pid_alive(p)]}")
        assert "Traceback" not in (tmp_path / "err.txt").read_text()
    finally:
        _kill([cluster.pid, *pids])
        with contextlib.suppress(subprocess.TimeoutExpired):
            cluster.wait(10)
        reader.kill()
        reader.wait(10)
