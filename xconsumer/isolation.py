"""`isolation = "process"`: a slot whose handler runs in a child process that can be killed.

Python threads cannot be killed, so a thread handler that ignores `ctx.stopping` stays stuck
for good. In a child process it is asked to stop first (same `ctx.stopping` contract), then
sent SIGTERM after `stop_timeout`, then SIGKILL after a short grace: the slot's owner znode is
released only once the child is gone, so the slot still never runs twice.

"The child is gone" means every process the handler started too. A handler may start
programs of its own (`subprocess.Popen(["sleep", "60"])`); killing only the child's pid
would leave them running while the next owner starts the slot. So the child leads a
session (and process group) of its own, `os.setsid()` before anything else runs, and every
signal goes to the whole session: the group at once with `killpg`, plus any member that
moved to another group of the session (`setpgid`, a shell's job control), found in /proc.
`run_isolated` returns, and the owner znode is released, only once no live process of that
session is left; if they cannot be confirmed gone it keeps waiting (and killing), so the
slot shows as stuck and keeps its owner znode, exactly like a stuck thread handler.

When the node itself dies (kill -9), nobody in the node can clean up: the kernel kills the
child (PR_SET_PDEATHSIG), but a grandchild does not inherit that. A tiny watcher process,
forked by the child into its session before the handler is even imported, waits for the
child to end (however it ends: parent death, lease guard, normal exit, SIGKILL) and then
kills every process left in the session, itself last. It runs no user code, ignores SIGTERM
and only sleeps in `sigtimedwait`, so it is always able to act.

Limit: a descendant that calls `setsid()` itself leaves the session and cannot be told
apart from any other process on the machine; handlers must keep their children in their
session (the default for `subprocess`; do not pass `start_new_session=True`). Following the
/proc parent links instead was rejected: a descendant whose parent exits is re-parented to
init and drops out of the tree, so the tree misses exactly the processes that escape.

The child cannot see ZooKeeper. It sees the parent's lease deadline in shared memory, on the
system-wide monotonic clock: if the parent is frozen or loses its session, the deadline stops
moving and the child's `ctx.stopping` turns true on time by itself.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import multiprocessing
import os
import queue
import signal
import threading
import time
from typing import Any

from loguru import logger

from .lease import lease_clock

KILL_GRACE = 2.0  # seconds between SIGTERM and SIGKILL
# Seconds to wait for SIGKILLed processes of the child's session to vanish before the slot is
# reported stuck (it then keeps waiting, and its owner znode, until they are gone).
GONE_TIMEOUT = 5.0
EXIT_ORPHANED = 70
EXIT_LEASE = 71
_POLL = 0.05
# A checkpoint request is answered within the store's call timeout (10 s) plus a poll.
# The node answers a checkpoint request within its store's bounds (a load and a write, each
# retried within its call timeout of 10 s, plus a read-back): a child that waits longer
# takes the node for gone.
CHECKPOINT_REPLY_TIMEOUT = 35.0
_PR_SET_PDEATHSIG = 1


class ChildContext:
    """`ctx` inside the child process: the same contract as a thread slot's context."""

    def __init__(self, spec: dict[str, Any], deadline: Any, stop: Any,
                 channel: tuple[Any, Any] | None = None) -> None:
        self.task = spec["task"]["name"]
        self.work_name = spec["task"]["workName"]
        self.slot = spec["slot"]
        self.node = spec["node"]
        self.generation = spec["generation"]
        self.fence = spec["fence"]
        self._deadline = deadline
        self._stop = stop
        self._hard_margin = spec["hard_margin"]
        self._parent = spec["parent_pid"]
        self.key = spec.get("key")
        self._spec_task = spec["task"]
        self._channel = channel
        self._requests = 0
        self._channel_lock = threading.Lock()
        self.stop_event = threading.Event()
        self.logger = logger.bind(task=self.task, slot=self.slot)
        threading.Thread(target=self._mirror, name="xc-child-stop", daemon=True).start()

    def _mirror(self) -> None:
        """Mirror the cross-process stop (and the lease deadline) into a local Event, so
        `ctx.stop_event.wait()` works in the child as it does in a thread slot; and end the
        child outright when its parent is gone or the lease is past saving (see _guard)."""
        while True:
            if self.stop_event.is_set():
                time.sleep(_POLL)
            elif self._stop.wait(_POLL) or lease_clock() >= self._deadline.value:
                self.stop_event.set()
            _guard(self._deadline, self._hard_margin, self._parent)

    @property
    def param(self) -> Any:
        """As in a thread slot, except that it is the value the child was started with."""
        from .config import TaskConfig, slot_param

        return slot_param(TaskConfig.from_dict(self._spec_task), self.slot, self.key)

    @property
    def checkpoint(self) -> Any:
        return self._ask("read", None)

    def commit(self, value: Any) -> None:
        """Sent to the parent, which holds the session and commits (see checkpoint.py)."""
        from .checkpoint import encode_value

        self._ask("commit", encode_value(value))

    def _ask(self, op: str, text: str | None) -> Any:
        """One checkpoint request to the parent: it answers within its call timeout, so a
        missing answer means the parent is gone or stuck and the slot must stop."""
        from .errors import CheckpointError, OwnershipLost

        if self._channel is None:
            raise CheckpointError("this child has no checkpoint channel")
        requests, replies = self._channel
        with self._channel_lock:
            self._requests += 1
            deadline = time.monotonic() + CHECKPOINT_REPLY_TIMEOUT
            try:
                requests.send((self._requests, op, text))
                while True:
                    if not replies.poll(max(0.0, deadline - time.monotonic())):
                        raise EOFError("no answer in time")
                    number, ok, payload = replies.recv()
                    if number == self._requests:
                        break
            except (EOFError, OSError):
                self.stop_event.set()
                raise OwnershipLost("no answer from the node process to a checkpoint "
                                    "request; the slot is stopping") from None
        if ok:
            return json.loads(payload) if payload is not None else None
        kind, message = payload
        if kind == "lost":
            self.stop_event.set()
            raise OwnershipLost(message)
        raise CheckpointError(message)

    @property
    def stopping(self) -> bool:
        return (self.stop_event.is_set() or self._stop.is_set()
                or lease_clock() >= self._deadline.value)

    def sleep(self, seconds: float) -> bool:
        end = time.monotonic() + max(0.0, seconds)
        while not self.stopping:
            now = time.monotonic()
            if now >= end:
                return True
            left = max(self._deadline.value - lease_clock(), 0.0)
            self.stop_event.wait(min(end - now, left, _POLL * 4))
        return False


def _guard(deadline: Any, hard_margin: float, parent: int) -> None:
    """Exit at once when the parent died (kill -9 leaves children running) or when the lease
    ended more than `hard_margin` ago: past that point the session may expire and another
    node may start this slot, so a handler that ignores ctx.stopping must not run on."""
    if os.getppid() != parent:
        os._exit(EXIT_ORPHANED)
    if lease_clock() >= deadline.value + hard_margin:
        os._exit(EXIT_LEASE)


def _prctl_pdeathsig(signum: int) -> None:
    """Linux: have the kernel send `signum` to this process when its parent thread dies."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signum)


def _die_with_parent() -> None:
    """Linux: have the kernel SIGKILL this child when its parent thread dies."""
    _prctl_pdeathsig(signal.SIGKILL)


def _threads_live(pid: int) -> bool:
    """Whether any thread of `pid` still runs. A process whose main thread exited reads as a
    zombie in /proc/<pid>/stat while its other threads go on running the program."""
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
        fields = stat[stat.rfind(b")") + 2:].split()
        if fields and fields[0] not in (b"Z", b"X"):
            return True
    return False


def session_members(sid: int) -> list[int] | None:
    """Pids of the live processes of session `sid`; None without /proc.

    True zombies are dead: they wait only for whoever adopted them (init, which in a
    container may never reap) and must not keep a slot from moving. A process whose main
    thread alone has exited also reads as a zombie, but its other threads still run the
    program: it counts as live (and is killed like the rest)."""
    try:
        entries = os.listdir("/proc")
    except OSError:
        return None
    members = []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue  # exited while we looked
        # pid (comm) state ppid pgrp session ...; comm may hold spaces and parentheses.
        fields = stat[stat.rfind(b")") + 2:].split()
        if len(fields) > 3 and int(fields[3]) == sid and (
                fields[0] not in (b"Z", b"X") or _threads_live(int(entry))):
            members.append(int(entry))
    return members


def session_alive(sid: int) -> bool:
    """Whether any process of session `sid` still lives (see session_members)."""
    members = session_members(sid)
    if members is not None:
        return bool(members)
    try:  # no /proc: the group is the best we can see (zombies count as alive here)
        os.killpg(sid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def signal_session(sid: int, signum: int, *, spare: int | None = None) -> None:
    """Send `signum` to the whole session `sid`: its process group at once, then each live
    member found in /proc (members that moved to another group of the session).

    The node passes a child's pid, never its own group: without that guard a child that
    has not yet called setsid() would make the node signal itself. The watcher, a member of
    the session, passes itself as `spare` and signals the others one by one."""
    if spare is None:
        if sid == os.getpgrp():
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(sid, signum)
    for pid in session_members(sid) or []:
        if pid != spare:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signum)


def _leads_session(pid: int) -> bool:
    try:
        return os.getsid(pid) == pid
    except (ProcessLookupError, PermissionError):
        return False


def _watch_session(leader: int) -> None:
    """Body of the watcher process (see the module docstring); never returns.

    Woken by its own PR_SET_PDEATHSIG (SIGUSR1, blocked and taken synchronously with
    sigtimedwait, so no Python signal handler is involved) or, at the latest, by a once a
    second look at its parent; then SIGKILLs the rest of the session and exits."""
    code = 0
    try:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGPIPE):
            signal.signal(signum, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
        _prctl_pdeathsig(signal.SIGUSR1)
        os.closerange(3, 1 << 16)  # hold none of the child's pipes open
        wait = getattr(signal, "sigtimedwait", None)  # Linux; elsewhere a plain poll
        while os.getppid() == leader:  # checked after prctl: the child may already be gone
            if wait is not None:
                wait([signal.SIGUSR1], 1.0)
            else:
                time.sleep(1.0)
        me = os.getpid()
        sid = os.getsid(0)
        end = time.monotonic() + GONE_TIMEOUT * 2
        while time.monotonic() < end:
            left = [p for p in session_members(sid) or [] if p != me]
            if not left:
                break
            signal_session(sid, signal.SIGKILL, spare=me)
            time.sleep(_POLL)
    except BaseException:  # noqa: BLE001 - a watcher must exit, never run the child's code
        code = 1
    os._exit(code)


def _start_session(watcher: Any) -> None:
    """Lead a new session (and process group) and fork its watcher; first thing in the child,
    while it is still single-threaded and before any handler code is imported. The watcher's
    pid goes to the parent, so it can tell the watcher from processes the handler left."""
    os.setsid()
    leader = os.getpid()
    pid = os.fork()
    if pid == 0:
        _watch_session(leader)
    watcher.value = pid


def child_main(spec: dict[str, Any], deadline: Any, stop: Any, results: Any,
               watcher: Any, channel: tuple[Any, Any] | None = None) -> None:
    """Entry point of the child process (spawned: a fresh interpreter)."""
    _start_session(watcher)
    _die_with_parent()
    _guard(deadline, spec["hard_margin"], spec["parent_pid"])
    from .breaker import Breaker
    from .config import TaskConfig
    from .logs import setup_logging
    from .loop import handler_loop
    from .works import discover

    setup_logging(spec.get("log_level", "INFO"), node=spec["node"])
    task = TaskConfig.from_dict(spec["task"], where="isolated slot")
    handler = discover(spec["works_dir"]).resolve(task.work_name)
    ctx = ChildContext(spec, deadline, stop, channel)
    # The child gates its own calls with the breaker state the parent had when it started
    # it (the parent keeps its copy in step from the same reports; see breaker.py).
    breaker = Breaker.from_snapshot(spec.get("breaker"))

    def report(kind: str, seconds: float, error: BaseException | None, backoff: float) -> None:
        if error is not None:
            ctx.logger.opt(exception=error).error("handler raised {}: {}",
                                                  type(error).__name__, error)
        if kind in ("ok", "failed"):
            breaker.record(kind == "ok", task)
        text = f"{type(error).__name__}: {error}" if error is not None else None
        results.put((kind, seconds, text, backoff))

    completed = handler_loop(handler, ctx, task, report, breaker=breaker,
                             backoff=spec.get("backoff", 0.0))
    results.put(("completed" if completed else "ended", 0.0, None, 0.0))


class _Runs:
    """What the parent knows of its child's runs, from the reports it drained."""

    def __init__(self) -> None:
        self.began: float | None = None  # monotonic receipt of the run in progress
        self.backoff = 0.0  # the wait of the last failure in a row (0 after a success)
        self.completed = False


def run_isolated(runner: Any, ctx: Any, report: Any) -> bool:
    """Run the slot's handler loop in a child; True when a once-slot completed there.

    A run past `run_timeout` ends its child (terminated, then killed, with every process of
    its session) and a fresh child takes the next run after the backoff. This function does
    not return in between, so the runner keeps the owner znode (and its fence) across the
    restart, and the next child starts only once no process of the last one is left: the
    slot still never runs twice, here or elsewhere."""
    from .loop import RunTimedOut, next_backoff

    backoff = 0.0
    while True:
        completed, over = _run_child(runner, ctx, report, backoff)
        if over is None:
            return completed
        limit, seconds, backoff = over
        backoff = next_backoff(backoff, runner.task)
        report("timeout", seconds, RunTimedOut(limit, seconds), backoff)
        if not ctx.sleep(backoff):
            return False


def _run_child(runner: Any, ctx: Any, report: Any, backoff: float
               ) -> tuple[bool, tuple[float, float, float] | None]:
    """One child, until it ends and its session is gone: (completed, None), or (False,
    (run_timeout, seconds, backoff so far)) when it was ended for running past its limit."""
    lease = runner._lease
    # The lease ends at 2/3 of the session; half of the remaining third is the most a child
    # may overrun it before it exits by itself (or is killed here).
    hard_margin = lease.session_timeout / 6.0
    mp = multiprocessing.get_context("spawn")
    deadline = mp.Value("d", lease.now() + max(lease.remaining(), 0.0), lock=False)
    stop = mp.Event()
    results = mp.Queue()
    watcher = mp.Value("i", 0, lock=False)
    # Pipes, not queues: once the child is started the parent closes the child's ends, so
    # a child that dies mid-message gives EOF instead of a read that blocks for ever, and
    # there is no feeder thread left to hang the node's exit.
    requests_r, requests_w = mp.Pipe(duplex=False)
    replies_r, replies_w = mp.Pipe(duplex=False)
    channel = (requests_w, replies_r)
    spec = {"task": runner.task.to_dict(), "slot": runner.slot.index, "node": runner.node,
            "key": runner.task.slot_key,
            "generation": runner.generation, "fence": ctx.fence,
            "works_dir": str(runner._registry.path), "log_level": "INFO",
            "parent_pid": os.getpid(), "hard_margin": hard_margin, "backoff": backoff,
            "breaker": runner.breaker.snapshot()}
    runner.breaker_task = runner.task  # the breaker keys this child gates its calls by
    proc = mp.Process(target=child_main,
                      args=(spec, deadline, stop, results, watcher, channel),
                      name=f"xc-slot-{runner.slot.task}-{runner.slot.index}", daemon=True)
    proc.start()
    requests_w.close()
    replies_r.close()
    server = _CheckpointServer(runner, requests_r, replies_w)
    runner.child_pid = proc.pid
    runner.log.info("handler running in child process {}", proc.pid)
    def limit(seconds: float) -> float:
        # A stop caused by the lease cannot wait for stop_timeout: the session may expire.
        return seconds if lease.valid() else min(seconds, hard_margin)

    runs = _Runs()
    runs.backoff = backoff
    asked_at: float | None = None
    signalled = ""
    over: tuple[float, float, float] | None = None
    over_at = 0.0
    while True:
        deadline.value = lease.now() + max(lease.remaining(), 0.0)
        _drain(results, report, runs)
        if not proc.is_alive():
            break
        run_limit = runner.task.run_timeout
        now = time.monotonic()
        if (over is None and run_limit and runs.began is not None
                and now - runs.began > run_limit):
            over, over_at = (run_limit, now - runs.began, runs.backoff), now
            runner.log.warning("run exceeded run_timeout ({:g}s): terminating child {} and "
                               "its processes", run_limit, proc.pid)
            _signal_child(proc, signal.SIGTERM)
        elif over is not None and signalled != "kill" and now - over_at > KILL_GRACE:
            runner.log.warning("child {} survived SIGTERM: killing it and its processes",
                               proc.pid)
            _signal_child(proc, signal.SIGKILL)
            signalled = "kill"
        if ctx.stopping:
            now = time.monotonic()
            if asked_at is None:
                stop.set()
                asked_at = now
            elif not signalled and now - asked_at > limit(runner.task.stop_timeout):
                runner.log.warning("child {} ignored stop for {:.1f}s: terminating it and "
                                   "its processes", proc.pid, now - asked_at)
                _signal_child(proc, signal.SIGTERM)
                signalled = "term"
            elif signalled == "term" and now - asked_at > limit(runner.task.stop_timeout
                                                                + KILL_GRACE):
                runner.log.warning("child {} survived SIGTERM: killing it and its processes",
                                   proc.pid)
                _signal_child(proc, signal.SIGKILL)
                signalled = "kill"
        proc.join(_POLL)
    _drain(results, report, runs)
    if proc.exitcode not in (0, None):
        runner.log.info("child process {} ended with exit code {}", proc.pid, proc.exitcode)
    results.close()
    server.close()
    _wait_session_gone(runner, proc.pid, watcher.value)
    runner.child_pid = None
    if over is not None and not runs.completed:
        return False, over
    return runs.completed and proc.exitcode == 0, None


def _signal_child(proc: Any, signum: int) -> None:
    """Signal the child's whole session once it leads one; before its first line ran it has
    started nothing, and its pid alone is the target."""
    if _leads_session(proc.pid):
        signal_session(proc.pid, signum)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signum)


def _wait_session_gone(runner: Any, sid: int, watcher: int) -> None:
    """Return only once no process of the child's session is left, SIGKILLing leftovers.

    The child has exited (and was reaped) here; whatever remains of its session was started
    by the handler and would run on beside the slot's next owner. Its pid cannot be reused
    while any process still uses it as session or group id, so `sid` names only them. Past
    GONE_TIMEOUT the slot is asked to stop (so it is reported stuck) and this keeps waiting:
    the owner znode must outlive every process of the slot, like a stuck thread handler's."""
    # Kill first, look after: a signal to a dead session costs nothing, and a look first
    # could miss what /proc shows wrongly (see session_members).
    signal_session(sid, signal.SIGKILL)
    if not session_alive(sid):
        return
    left = [p for p in session_members(sid) or [] if p != watcher]
    if left:
        runner.log.warning("child {} left processes behind ({}): killing them", sid,
                           ", ".join(map(str, left)))
    started = time.monotonic()
    reported = False
    while session_alive(sid):
        signal_session(sid, signal.SIGKILL)
        waited = time.monotonic() - started
        if waited > GONE_TIMEOUT and not reported:
            reported = True
            runner.log.error("processes of child {} still alive {:.1f}s after SIGKILL ({}): "
                             "keeping the owner znode until they are gone", sid, waited,
                             ", ".join(map(str, session_members(sid) or [])) or "its group")
            runner.request_stop("processes of its child would not die")
        time.sleep(_POLL if not reported else 1.0)
    if reported:
        runner.log.warning("processes of child {} finally gone", sid)


class _CheckpointServer:
    """Answers a child's checkpoint requests with the runner's own store, in a thread of
    its own (xc-ckpt-<task>-<i>): the parent holds the ZooKeeper session, so the fence
    checks are those of a thread slot, and a slow ZooKeeper call never holds up the loop
    that keeps the child's lease deadline current."""

    def __init__(self, runner: Any, requests: Any, replies: Any) -> None:
        self._runner = runner
        self._requests = requests
        self._replies = replies
        self._done = threading.Event()
        self._thread = threading.Thread(
            target=self._serve, daemon=True,
            name=f"xc-ckpt-{runner.slot.task}-{runner.slot.index}")
        self._thread.start()

    def _serve(self) -> None:
        while not self._done.is_set():
            try:
                if not self._requests.poll(_POLL):
                    continue
                number, op, text = self._requests.recv()
            except (EOFError, OSError):
                return  # the child is gone (maybe mid-message)
            try:
                self._replies.send(self._answer(number, op, text))
            except (BrokenPipeError, EOFError, OSError):
                return

    def _answer(self, number: int, op: str, text: str | None) -> tuple[Any, ...]:
        from .errors import CheckpointError, OwnershipLost

        store = self._runner.checkpoint
        try:
            if store is None:
                raise CheckpointError("this slot has no checkpoint store")
            if op == "commit":
                store.commit(json.loads(text or "null"))
                return (number, True, None)
            return (number, True, json.dumps(store.value()))
        except OwnershipLost as exc:
            return (number, False, ("lost", str(exc)))
        except (CheckpointError, ValueError) as exc:
            return (number, False, ("error", str(exc)))

    def close(self) -> None:
        """After the child ended: stop serving, join (an answer still being computed ends
        within the store's bounds), close the parent's pipe ends."""
        self._done.set()
        self._thread.join(CHECKPOINT_REPLY_TIMEOUT)
        if self._thread.is_alive():
            self._runner.log.warning("checkpoint server of the child still busy; left")
        self._requests.close()
        self._replies.close()


def _drain(results: Any, report: Any, runs: _Runs) -> None:
    while True:
        try:
            kind, seconds, error, backoff = results.get_nowait()
        except queue.Empty:
            return
        except (EOFError, OSError):
            return
        if kind == "completed":
            runs.completed = True
        elif kind != "ended":
            runs.began = time.monotonic() if kind == "running" else None
            runs.backoff = backoff if kind == "failed" else 0.0 if kind == "ok" else runs.backoff
            report(kind, seconds, error, backoff)
