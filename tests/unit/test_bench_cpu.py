"""The benchmark's CPU reading: per process, to well under a scheduler tick.

A handover of 20 slots costs a node a few ms of CPU, so a reading in 10 ms ticks (what
/proc/PID/stat gives) made the "CPU per moved slot" figure a step function of the tick.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from bench.common import cpu_seconds


def _spin(cpu: float) -> None:
    start = time.process_time()
    while time.process_time() - start < cpu:
        pass


def test_reads_this_process_to_the_millisecond() -> None:
    before, own_before = cpu_seconds(os.getpid()), time.process_time()
    _spin(0.003)  # under a third of a tick
    after, own_after = cpu_seconds(os.getpid()), time.process_time()
    assert before is not None and after is not None
    # The same clock as process_time(), read from outside: equal to within a ms, where
    # tick counting reads 0 or 10 ms.
    assert abs((after - before) - (own_after - own_before)) < 0.001


def test_reads_another_process_and_its_ended_threads() -> None:
    code = ("import threading, time\n"
            "def spin():\n"
            "    t = time.thread_time()\n"
            "    while time.thread_time() - t < 0.05: pass\n"
            "th = threading.Thread(target=spin); th.start(); th.join()\n"
            "print(time.process_time(), flush=True)\n"
            "import sys; sys.stdin.read()\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        own = float(proc.stdout.readline())  # the child's own clock, its thread ended
        seen = cpu_seconds(proc.pid)
        assert seen is not None
        assert own - 0.001 <= seen <= own + 0.05  # its thread's 50 ms included
        assert seen >= 0.05
    finally:
        proc.communicate("", timeout=10)
    assert cpu_seconds(proc.pid) is None  # reaped: nothing to read


def test_no_such_process() -> None:
    assert cpu_seconds(2 ** 22 + 12345) is None
