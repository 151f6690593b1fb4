"""Handlers for end-to-end tests: they record what ran where, so a checker (tests/checker.py)
can prove that no slot ever ran twice at once.

Every record of one run carries the run's own id (`run`, drawn at its `start`) and the thread
that ran it: node names and pids are reused across restarts, so only the id tells two runs
of one slot apart."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import uuid

# The run this thread is recording: a handler's records all come from the thread running it.
_current = threading.local()


def _record(ctx, event: str, **extra) -> None:
    path = os.environ.get("XCONSUMER_TEST_RECORD")
    if not path:
        return
    if event in ("start", "fail"):  # a new invocation of the handler: a new run
        _current.run = uuid.uuid4().hex
    run = getattr(_current, "run", None) or "none"  # a record outside a run: the checker says so
    if event == "stop":
        _current.run = None
    thread = f"{threading.current_thread().name}/{threading.get_ident()}"
    line = json.dumps({"t": time.time(), "e": event, "node": ctx.node, "task": ctx.task,
                       "slot": ctx.slot, "fence": ctx.fence, "pid": os.getpid(),
                       "thread": thread, "run": run, **extra}) + "\n"
    # One O_APPEND write per line: lines from concurrent processes never interleave.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def RunRecord(ctx) -> None:
    """Runs until told to stop, with a heartbeat every 50 ms."""
    _record(ctx, "start")
    try:
        while ctx.sleep(0.05):
            _record(ctx, "beat")
    finally:
        _record(ctx, "stop")


def RunOnce(ctx) -> None:
    """A once-mode job: records its single run."""
    _record(ctx, "start")
    ctx.sleep(0.1)
    _record(ctx, "stop")


def RunFlaky(ctx) -> None:
    """Always fails: exercises retry with backoff."""
    _record(ctx, "fail")
    raise RuntimeError("flaky handler failed on purpose")


def RunStubborn(ctx) -> None:
    """Ignores cancellation until a file appears: the stuck-handler case."""
    _record(ctx, "start")
    release = os.environ.get("XCONSUMER_TEST_RELEASE", "")
    while not (release and os.path.exists(release)):
        time.sleep(0.05)
    _record(ctx, "stop")


def pid_alive(pid: int) -> bool:
    """Whether `pid` still runs: any of its threads is not a zombie. (A process whose main
    thread exited reads as a zombie in /proc/<pid>/stat while its other threads run on.)

    Written here again on purpose rather than imported from xconsumer.isolation: the test's
    oracle must not share a bug with the code it checks."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return False
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        if stat[stat.rfind(b")") + 2:][:1] not in (b"Z", b"X"):
            return True
    return False


def _grandchildren_alive() -> list[int]:
    """Grandchild pids recorded so far (by any node) that are still running."""
    path = os.environ.get("XCONSUMER_TEST_RECORD", "")
    if not path or not os.path.exists(path):
        return []
    with open(path) as f:
        pids = [json.loads(line).get("grandchild") for line in f if line.strip()]
    return [p for p in pids if p and pid_alive(p)]


# A program whose main thread exits while another thread goes on (in a process group of its
# own, as a shell's job control would put it): /proc shows its main thread as a zombie.
HALF_DEAD = """
import ctypes, os, threading, time
os.setpgid(0, 0)
threading.Thread(target=lambda: time.sleep(60)).start()
ctypes.CDLL("libc.so.6").pthread_exit(None)
"""


def _spawn(ctx, argv: list[str] | None = None) -> subprocess.Popen:
    """Start a program of the handler's own and record its pid, plus any earlier one still
    running: a new owner must never start beside what its predecessor started."""
    others = _grandchildren_alive()
    child = subprocess.Popen(argv or ["sleep", "60"])
    _record(ctx, "start", grandchild=child.pid, others_alive=others)
    return child


def RunSpawner(ctx) -> None:
    """Starts `sleep 60` and ignores cancellation until a file appears: a stuck handler whose
    own child must die with it."""
    _spawn(ctx)
    release = os.environ.get("XCONSUMER_TEST_RELEASE", "")
    while not (release and os.path.exists(release)):
        time.sleep(0.05)
    _record(ctx, "stop")


def RunHalfdead(ctx) -> None:
    """Like RunLeaver, with a program whose main thread has exited (see HALF_DEAD)."""
    import sys

    _spawn(ctx, [sys.executable, "-c", HALF_DEAD])
    while ctx.sleep(0.05):
        pass
    _record(ctx, "stop")


def RunLeaver(ctx) -> None:
    """Starts `sleep 60`, stops when asked, and returns without ending it."""
    _spawn(ctx)
    while ctx.sleep(0.05):
        pass
    _record(ctx, "stop")


def RunOverrun(ctx) -> None:
    """Runs until `ctx.stopping` (a heartbeat every 50 ms), then records what stopped it:
    under run_timeout the run's context turns stopping while the slot's stop event stays
    clear (the timeout stops the run, not the slot)."""
    _record(ctx, "start")
    try:
        while ctx.sleep(0.05):
            _record(ctx, "beat")
    finally:
        _record(ctx, "stop", stopping=ctx.stopping, slot_stopping=ctx.stop_event.is_set())


def _alive_runs_of_slot(ctx) -> list[int]:
    """Pids of earlier runs of this slot (in the record file) whose process still lives."""
    path = os.environ.get("XCONSUMER_TEST_RECORD", "")
    if not path or not os.path.exists(path):
        return []
    with open(path) as f:
        recs = [json.loads(line) for line in f if line.strip()]
    pids = {r["pid"] for r in recs if r.get("e") == "start" and r.get("task") == ctx.task
            and r.get("slot") == ctx.slot and r.get("pid") != os.getpid()}
    return sorted(p for p in pids if pid_alive(p))


def RunHog(ctx) -> None:
    """For `isolation = "process"`: ignores SIGTERM and the stop request, beating until a
    file appears; records the earlier runs of its slot still alive when it started."""
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # only SIGKILL ends it
    _record(ctx, "start", others_alive=_alive_runs_of_slot(ctx))
    release = os.environ.get("XCONSUMER_TEST_RELEASE", "")
    while not (release and os.path.exists(release)):
        time.sleep(0.05)
        _record(ctx, "beat")
    _record(ctx, "stop")


def RunSwitch(ctx) -> None:
    """Fails until a file appears, then succeeds: a dependency that is down, then back."""
    release = os.environ.get("XCONSUMER_TEST_RELEASE", "")
    if not (release and os.path.exists(release)):
        _record(ctx, "fail")
        raise RuntimeError("switch is off")
    _record(ctx, "start")
    _record(ctx, "stop")


def KeysPair() -> list[str]:  # noqa: N802 - the provider naming convention
    """Two fixed keys: a keyed task whose provider the leader calls every keys_interval."""
    return ["k1", "k2"]
