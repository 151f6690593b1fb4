"""The test harness's freeze: SIGSTOP, then wait until every thread of the process is
stopped, since the kernel stops each thread only when it next runs kernel code."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from tests.cluster import NodeProc
from tests.util import wait_until
from xconsumer.procfs import thread_states, threads_stopped

BUSY = """
import threading, time
def spin():
    while True:
        pass
for _ in range(2):
    threading.Thread(target=spin, daemon=True).start()
threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
print("ready", flush=True)
time.sleep(60)
"""


def test_freeze_returns_once_every_thread_is_stopped(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", BUSY], stdout=subprocess.PIPE, text=True)
    node = NodeProc("busy", proc, tmp_path / "busy.log")
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        assert not threads_stopped(proc.pid)  # two threads spin, two sleep
        node.freeze()
        assert threads_stopped(proc.pid)
        assert thread_states(proc.pid) == {"T"}
        node.signal(signal.SIGCONT)
        wait_until(lambda: not threads_stopped(proc.pid), 5)
    finally:
        proc.kill()
        proc.wait(10)
    assert threads_stopped(proc.pid)  # gone: nothing left to wait for
