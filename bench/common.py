"""Shared helpers for the benchmark suite: statistics, tables, ZooKeeper, records, processes.

Every benchmark talks only to ZooKeeper servers it starts itself on 127.0.0.1, and stops every
process it starts by PID. Waits are bounded polls with short sleeps.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import platform
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

from kazoo.client import KazooClient

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from xconsumer.zkserver import ZooKeeperServer, four_letter_word  # noqa: E402

BENCH_WORKS = Path(__file__).resolve().parent / "works"
T = TypeVar("T")

# kazoo logs every refused connection and reconnect; the benchmark reports what matters.
logging.getLogger("kazoo").setLevel(logging.CRITICAL)


# -- statistics ------------------------------------------------------------------------------
def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), q in [0, 100]."""
    if not values:
        return math.nan
    xs = sorted(values)
    if len(xs) == 1:
        return xs[0]
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summary(values: Iterable[float | None]) -> dict[str, float | int]:
    xs = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not xs:
        return {"n": 0, "median": math.nan, "p95": math.nan, "min": math.nan, "max": math.nan}
    return {"n": len(xs), "median": percentile(xs, 50), "p95": percentile(xs, 95),
            "min": min(xs), "max": max(xs)}


def ms(seconds: float | None) -> str:
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "-"
    v = seconds * 1000.0
    if abs(v) >= 10000:
        return f"{v:,.0f}"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def fmt_summary_ms(s: dict[str, Any]) -> tuple[str, str]:
    return ms(s.get("median")), ms(s.get("p95"))


# -- tables ----------------------------------------------------------------------------------
def table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]],
          note: str = "") -> str:
    cells = [[str(c) for c in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(r: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in
                         enumerate(zip(r, widths, strict=True)))

    out = [f"\n== {title} ==", line(cells[0]), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in cells[1:]]
    if note:
        out.append(note)
    return "\n".join(out)


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    out = ["| " + " | ".join(str(h) for h in headers) + " |",
           "|" + "|".join(" --- " if i == 0 else " ---: " for i in range(len(headers))) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def say(msg: str) -> None:
    print(msg, flush=True)


def progress(msg: str) -> None:
    print(f"  .. {msg}", file=sys.stderr, flush=True)


# -- waiting ---------------------------------------------------------------------------------
class Timeout(Exception):
    pass


class Abort(Exception):
    """Raised by a wait predicate when waiting longer cannot help (a process died)."""


def wait_for(predicate: Callable[[], T], timeout: float, interval: float = 0.05,
             what: str = "condition") -> T:
    """Poll until truthy; a raising predicate counts as "not yet". Bounded by `timeout`."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            value = predicate()
        except Abort:
            raise
        except Exception as exc:  # noqa: BLE001 - mid-failover reads may fail
            last, value = exc, None
        if value:
            return value
        if time.monotonic() >= deadline:
            raise Timeout(f"{what} not met within {timeout:g}s"
                          + (f" (last error: {last!r})" if last else ""))
        time.sleep(interval)


# -- ZooKeeper -------------------------------------------------------------------------------
class BenchZooKeeperServer(ZooKeeperServer):
    """The tests' server, plus `maxClientCnxns=0`: ZooKeeper accepts at most 60 connections
    per client IP by default, and the SetPartitioner runs put 75+ member processes on
    127.0.0.1."""

    def _write_config(self) -> Path:
        cfg = super()._write_config()
        with open(cfg, "a") as f:
            f.write("maxClientCnxns=0\n")
        return cfg


def start_zk(log_dir: Path | None = None) -> ZooKeeperServer:
    """A private standalone server on a free loopback port (same settings as the tests)."""
    server = BenchZooKeeperServer(log_path=(log_dir / "zookeeper.log") if log_dir else None)
    server.start(timeout=60)
    return server


def zk_client(hosts: str, timeout: float = 10.0) -> KazooClient:
    client = KazooClient(hosts=hosts, timeout=timeout,
                         connection_retry={"max_tries": -1, "delay": 0.05, "max_delay": 0.5})
    client.start(timeout=15)
    return client


def close_client(client: KazooClient) -> None:
    try:
        client.stop()
    finally:
        client.close()


def mntr(server: ZooKeeperServer) -> dict[str, str]:
    out = four_letter_word(server.host, server.port, "mntr")
    values = {}
    for line in out.splitlines():
        if "\t" in line:
            k, v = line.split("\t", 1)
            values[k.strip()] = v.strip()
    return values


def srvr(server: ZooKeeperServer) -> dict[str, str]:
    out = four_letter_word(server.host, server.port, "srvr")
    values = {}
    for line in out.splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            values[k.strip()] = v.strip()
    return values


def zxid(server: ZooKeeperServer) -> int:
    return int(srvr(server)["Zxid"], 16)


# -- processes -------------------------------------------------------------------------------
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """CPU time of a whole process (every thread, the ended ones too), in seconds, to the
    nanosecond: read from its POSIX CPU clock, which Linux lets any process read by pid.
    /proc/PID/stat counts in ticks of 10 ms, and a handover of 20 slots on five nodes uses
    tens of ms in all: per process, a tick is as large as what is measured, so the CPU per
    moved slot came out in steps of 0.5 ms, and the nodes' sum could exceed the machine's
    busy time. Falls back to the ticks where the clock cannot be read."""
    try:
        return time.clock_gettime((~pid << 3) | 2)  # CPUCLOCK_SCHED of the thread group
    except (OSError, OverflowError, ValueError):
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    # fields[0] is state (field 3); utime is field 14, stime field 15 (1-based).
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


@dataclass
class Proc:
    """A child process we started; signalled and reaped by PID only."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    started_at: float
    killed_at: float | None = None
    termed_at: float | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def term(self) -> float:
        t = time.time()
        if self.alive():
            os.kill(self.pid, signal.SIGTERM)
        self.termed_at = t
        return t

    def kill(self) -> float:
        t = time.time()
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
        self.killed_at = t
        return t

    def reap(self, timeout: float = 20.0) -> int | None:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.proc.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def spawn(name: str, cmd: list[str], log_path: Path, env: dict[str, str] | None = None,
          cwd: Path | None = None) -> Proc:
    # No XCONSUMER_* variable of the caller's shell may leak into a benchmark's node.
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("XCONSUMER_")}
    full_env.update(PYTHONUNBUFFERED="1", PYTHONPATH=str(REPO))
    full_env.update(env or {})
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        started = time.time()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=cwd or REPO,
                                env=full_env, stdin=subprocess.DEVNULL)
    return Proc(name, proc, log_path, started)


def stop_all(procs: Iterable[Proc], graceful: bool = True, timeout: float = 15.0) -> None:
    """Stop every process we started, by PID: SIGTERM then SIGKILL past the timeout."""
    procs = [p for p in procs if p.alive()]
    if graceful:
        for p in procs:
            if p.alive():
                os.kill(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for p in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.proc.wait(max(0.1, deadline - time.monotonic()))
    for p in procs:
        if p.alive():
            os.kill(p.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.proc.wait(10)


# -- record files (start/stop lines appended by handlers) ------------------------------------
@dataclass
class Record:
    t: float
    e: str
    node: str
    task: str
    slot: int
    pid: int

    @property
    def key(self) -> str:
        return f"{self.task}/{self.slot}"


@dataclass
class RecordLog:
    """Incremental reader of a JSON-lines record file, with the set of runs in progress."""

    path: Path
    records: list[Record] = field(default_factory=list)
    running: dict[str, dict[str, float]] = field(default_factory=dict)  # slot -> node -> t
    dead: set[str] = field(default_factory=set)
    _offset: int = 0

    def refresh(self) -> list[Record]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n")
        if end < 0:
            return []
        self._offset += end + 1
        new = []
        for line in data[:end].splitlines():
            if not line.strip():
                continue
            d = json.loads(line)
            rec = Record(float(d["t"]), d["e"], d["node"], d["task"], int(d["slot"]),
                         int(d.get("pid", 0)))
            new.append(rec)
            if rec.e == "start":
                self.running.setdefault(rec.key, {})[rec.node] = rec.t
            elif rec.e == "stop":
                self.running.get(rec.key, {}).pop(rec.node, None)
        self.records += new
        return new

    def mark_dead(self, node: str) -> None:
        self.dead.add(node)

    def owners(self) -> dict[str, set[str]]:
        """slot -> nodes currently running it (killed nodes excluded)."""
        return {k: {n for n in v if n not in self.dead} for k, v in self.running.items()}

    def since(self, t0: float, kind: str = "start") -> list[Record]:
        return [r for r in self.records if r.e == kind and r.t >= t0]


# -- node logs -------------------------------------------------------------------------------
_LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) (\w+)\s+\[([^\]]*)\]\s?(.*)$")


def parse_log(text: str) -> list[tuple[float, str, str]]:
    """(epoch seconds, node, rest-of-line) for every timestamped loguru line."""
    out = []
    for line in text.splitlines():
        m = _LOG_LINE.match(line)
        if m:
            t = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f").timestamp()
            out.append((t, m.group(3), m.group(4)))
    return out


# -- machine load ----------------------------------------------------------------------------
def cpu_totals() -> tuple[float, float]:
    """(machine busy CPU seconds since boot, this process + its reaped children's CPU s)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    vals = [int(v) for v in fields[:8]]
    busy = (sum(vals) - vals[3] - vals[4]) / CLK_TCK  # minus idle and iowait
    t = os.times()
    return busy, t.user + t.system + t.children_user + t.children_system


def loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


# -- machine ---------------------------------------------------------------------------------
def _first(path: str, prefix: str) -> str | None:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(prefix):
                return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def machine_info(server: ZooKeeperServer | None) -> dict[str, Any]:
    mem_kb = _first("/proc/meminfo", "MemTotal")
    java = subprocess.run(["java", "-version"], capture_output=True, text=True)
    info: dict[str, Any] = {
        "cores": os.cpu_count(),
        "memory_gib": round(int(mem_kb.split()[0]) / 1024 / 1024, 1) if mem_kb else None,
        "cpu_model": _first("/proc/cpuinfo", "model name"),
        "os": platform.platform(),
        "python": platform.python_version(),
        "kazoo": metadata.version("kazoo"),
        "xconsumer": metadata.version("xconsumer"),
        "java": (java.stderr.splitlines() or ["?"])[0],
    }
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                             capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "xconsumer"], cwd=REPO,
                               capture_output=True, text=True).stdout.strip()
        info["git"] = rev + (" (xconsumer/ has uncommitted changes)" if dirty else "")
    except OSError:
        info["git"] = None
    if server is not None:
        info["zookeeper"] = srvr(server).get("Zookeeper version", "?").split(",")[0]
    return info
