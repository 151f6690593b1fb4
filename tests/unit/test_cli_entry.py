"""The process entry point exits the ordinary way, only without the collector's last walks:
what a works package registered for the exit (a producer's flush, a buffered log handler)
still runs, and the exit code is main's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

SCRIPT = """
import atexit, gc, logging, logging.handlers, sys
atexit.register(lambda: print("atexit hook ran, collector enabled:", gc.isenabled(), flush=True))
buffered = logging.handlers.MemoryHandler(capacity=100,
                                          target=logging.StreamHandler(sys.stderr))
logging.getLogger("works").addHandler(buffered)
logging.getLogger("works").setLevel(logging.INFO)
logging.getLogger("works").info("buffered record from a handler")
from xconsumer.cli import entry
entry(["status", "--config", "/nonexistent/app.toml"])
"""


def test_entry_runs_exit_hooks_and_keeps_the_exit_code() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2, done  # main's code for a config that cannot be read
    assert "atexit hook ran, collector enabled: False" in done.stdout
    assert "buffered record from a handler" in done.stderr
    assert "config file /nonexistent/app.toml not found" in done.stderr
