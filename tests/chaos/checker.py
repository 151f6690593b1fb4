"""Invariant checks for the chaos suite, over the handlers' own records and over ZooKeeper.

The record file (see tests/e2e/record_works) is the ground truth of what ran where: every
handler appends `{t, e: start|beat|stop|fail, node, task, slot, fence, pid}` lines. From it:

- **overlap**: the longest time one slot ran in two processes at once. A run ends at its
  `stop` record, at the SIGKILL of its process, or (still running) at the observation end.
  A process frozen by SIGSTOP executes nothing, so its pause windows are cut out of its runs:
  what is left after SIGCONT is exactly the time its handlers needed to notice `ctx.stopping`.
- **recovery**: from the end of the fault to the first instant every slot runs again, and
  to the last new `start` record (the last handover) before the cluster was seen converged.
- **fencing**: for one slot, the fencing token of successive runs never goes down, and goes
  strictly up when the slot changes process.

And from ZooKeeper: no owner znode left once every node left gracefully, persistent znodes
(assignment, overrides) never lost nor recreated, the assignment generation never going back.

Every figure is printed (`pytest -s`) and appended as one JSON line to a results file.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError

from tests.util import wait_until
from xconsumer.paths import Paths
from xconsumer.zk import loads

# -- documented bounds ------------------------------------------------------------------------
# Time from the end of a fault until every slot runs again (README: "a killed node's ... slots
# move within about the session timeout"; a graceful leave hands over at once).
CRASH_EXTRA = 5.0
GRACEFUL_BOUND = 5.0
OTHER_EXTRA = 10.0
# A frozen (SIGSTOP) process's lease ended while it slept, so on SIGCONT its handlers see
# ctx.stopping at once; RunRecord looks every 50 ms: one heartbeat plus scheduling slack.
FROZEN_OVERLAP_BOUND = 0.250


def recovery_bound(kind: str, session_timeout: float) -> float:
    """Seconds allowed from the end of a fault until every slot runs again."""
    if kind == "crash":
        return session_timeout + CRASH_EXTRA
    if kind == "graceful":
        return GRACEFUL_BOUND
    return session_timeout + OTHER_EXTRA


# -- records -----------------------------------------------------------------------------------
def load_records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        if line.strip():
            out.append(json.loads(line))
    return sorted(out, key=lambda r: r["t"])


@dataclass(frozen=True)
class Run:
    """One run of a handler: from its `start` record to its `stop` (or assumed end)."""

    slot: str
    node: str
    pid: int
    start: float
    end: float
    fence: int
    stopped: bool  # ended by its own `stop` record
    last_record: float  # its last record of any kind

    def pieces(self, paused: Mapping[int, Sequence[tuple[float, float]]]
               ) -> list[tuple[float, float]]:
        """The run minus the windows its process was frozen (it executed nothing then)."""
        parts = [(self.start, self.end)]
        for p0, p1 in paused.get(self.pid, ()):
            cut: list[tuple[float, float]] = []
            for s, e in parts:
                if p1 <= s or p0 >= e:
                    cut.append((s, e))
                    continue
                if s < p0:
                    cut.append((s, p0))
                if p1 < e:
                    cut.append((p1, e))
            parts = cut
        return parts


def runs_from_records(records: Iterable[dict[str, Any]], *, killed: Mapping[int, float],
                      until: float) -> list[Run]:
    """Runs per (process, slot). A run without a `stop` ended when its process was killed,
    else it is taken as running until `until` (the observation end)."""
    open_runs: dict[tuple[int, str], dict[str, Any]] = {}
    last: dict[tuple[int, str], float] = {}
    out: list[Run] = []
    for rec in sorted(records, key=lambda r: r["t"]):
        if rec["t"] > until or rec["e"] not in ("start", "beat", "stop"):
            continue
        key = (int(rec["pid"]), f"{rec['task']}/{rec['slot']}")
        last[key] = rec["t"]
        if rec["e"] == "start":
            prev = open_runs.pop(key, None)
            if prev is not None:  # a start without a stop in the same process: keep both
                out.append(Run(key[1], prev["node"], key[0], prev["t"], rec["t"],
                               int(prev["fence"]), False, rec["t"]))
            open_runs[key] = rec
        elif rec["e"] == "stop" and key in open_runs:
            start = open_runs.pop(key)
            out.append(Run(key[1], start["node"], key[0], start["t"], rec["t"],
                           int(start["fence"]), True, rec["t"]))
    for key, start in open_runs.items():
        end = killed.get(key[0], until)
        out.append(Run(key[1], start["node"], key[0], start["t"], max(end, start["t"]),
                       int(start["fence"]), False, last[key]))
    return sorted(out, key=lambda r: (r.slot, r.start))


@dataclass(frozen=True)
class Overlap:
    seconds: float
    where: str


def worst_overlap(runs: Sequence[Run],
                  paused: Mapping[int, Sequence[tuple[float, float]]] | None = None,
                  only: Callable[[Run, Run], bool] | None = None) -> Overlap:
    """Largest time one slot ran in two different processes at once (0.0: never); `only`
    restricts it to some pairs of runs (e.g. those involving a frozen process)."""
    paused = paused or {}
    by_slot: dict[str, list[tuple[float, float, Run]]] = {}
    for run in runs:
        for s, e in run.pieces(paused):
            by_slot.setdefault(run.slot, []).append((s, e, run))
    worst = Overlap(0.0, "")
    for slot, parts in sorted(by_slot.items()):
        parts.sort(key=lambda p: p[0])
        for i, (s2, e2, r2) in enumerate(parts):
            for s1, e1, r1 in parts[:i]:
                if r1.pid == r2.pid or (only is not None and not only(r1, r2)):
                    continue
                overlap = min(e1, e2) - max(s1, s2)
                if overlap > worst.seconds:
                    worst = Overlap(overlap, (
                        f"{slot}: {r1.node} (pid {r1.pid}, fence {r1.fence}) ran "
                        f"{s1:.3f}-{e1:.3f}, {r2.node} (pid {r2.pid}, fence {r2.fence}) "
                        f"ran {s2:.3f}-{e2:.3f}"))
    return worst


def fence_problems(runs: Sequence[Run]) -> list[str]:
    """Per slot, in start order: the fence never decreases, and grows on a change of process."""
    problems = []
    by_slot: dict[str, list[Run]] = {}
    for run in runs:
        by_slot.setdefault(run.slot, []).append(run)
    for slot, rs in sorted(by_slot.items()):
        rs.sort(key=lambda r: r.start)
        for a, b in zip(rs, rs[1:], strict=False):
            if b.fence < a.fence or (b.pid != a.pid and b.fence == a.fence):
                problems.append(f"{slot}: fence {a.fence} ({a.node} pid {a.pid} at "
                                f"{a.start:.3f}) then {b.fence} ({b.node} pid {b.pid} at "
                                f"{b.start:.3f})")
    return problems


@dataclass(frozen=True)
class Recovery:
    recovered: float | None  # fault end -> last gap closed: every slot runs (None: never)
    settle: float  # fault end -> last new `start` record (0.0: none after the fault)
    max_gap: float  # longest time one slot ran nowhere, counted from the fault start
    gap_where: str


def gaps(parts: Sequence[tuple[float, float]], start: float, until: float
         ) -> list[tuple[float, float | None]]:
    """Times in [start, until] covered by no part: (from, to), `to` None if still open."""
    out: list[tuple[float, float | None]] = []
    if start >= until:
        return out
    cursor = start
    for s, e in sorted(parts):
        if e <= cursor:
            continue
        if s > cursor:
            if s >= until:
                break
            out.append((cursor, s))
        cursor = max(cursor, e)
        if cursor >= until:
            return out
    out.append((cursor, None))
    return out


def recovery(runs: Sequence[Run], slots: Iterable[str], *, fault_start: float,
             fault_end: float, until: float,
             paused: Mapping[int, Sequence[tuple[float, float]]] | None = None) -> Recovery:
    """A slot runs when some unfrozen run covers it. The cluster has recovered when the last
    gap (after the fault started) of any slot has closed."""
    paused = paused or {}
    slots = sorted(slots)
    parts: dict[str, list[tuple[float, float]]] = {s: [] for s in slots}
    for run in runs:
        if run.slot in parts:
            parts[run.slot].extend(run.pieces(paused))
    last_close = fault_end
    never = False
    max_gap, where = 0.0, ""
    for slot in slots:
        for g0, g1 in gaps(parts[slot], fault_start, until):
            length = (until if g1 is None else g1) - g0
            if length > max_gap:
                max_gap = length
                where = (f"{slot}: not running since {g0:.3f}" if g1 is None
                         else f"{slot}: ran nowhere {g0:.3f}-{g1:.3f}")
            if g1 is None:
                never = True
            else:
                last_close = max(last_close, g1)
    starts = [r.start for r in runs if r.slot in parts and fault_end < r.start <= until]
    settle = max(starts) - fault_end if starts else 0.0
    return Recovery(None if never else last_close - fault_end, settle, max_gap, where)


def unfinished_runs(runs: Sequence[Run], graceful_pids: Iterable[int]) -> list[str]:
    """Runs of processes that exited gracefully but never recorded `stop`: a leaked thread
    (or a node that exited with a handler still running)."""
    pids = set(graceful_pids)
    return [f"{r.slot} on {r.node} (pid {r.pid}) started {r.start:.3f}, last record "
            f"{r.last_record:.3f}, no stop" for r in runs if r.pid in pids and not r.stopped]


def stopped_or_restarted_since(records: Sequence[dict[str, Any]], since: float,
                               until: float) -> list[str]:
    """Every `stop` or `start` record in (since, until]: a steady cluster has none."""
    return [f"{r['e']} {r['task']}/{r['slot']} on {r['node']} (pid {r['pid']}) at {r['t']:.3f}"
            for r in records if since < r["t"] <= until and r["e"] in ("start", "stop")]


# -- ZooKeeper ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Znode:
    path: str
    czxid: int
    version: int
    doc: Any


def persistent_snapshot(client: KazooClient, paths: Paths) -> dict[str, Znode]:
    """The persistent documents of the cluster (assignment, overrides when written)."""
    out = {}
    for path in (paths.assignment, paths.overrides):
        try:
            raw, stat = client.get(path)
        except NoNodeError:
            continue
        try:
            doc: Any = loads(raw, where=path)
        except ValueError as exc:
            doc = f"unparsable: {exc}"
        out[path] = Znode(path, stat.czxid, stat.version, doc)
    return out


def data_loss_problems(before: Mapping[str, Znode], after: Mapping[str, Znode]) -> list[str]:
    problems = []
    for path, old in before.items():
        new = after.get(path)
        if new is None:
            problems.append(f"{path} is gone")
            continue
        if new.czxid != old.czxid:
            problems.append(f"{path} was recreated (czxid {old.czxid:#x} -> {new.czxid:#x})")
        if new.version < old.version:
            problems.append(f"{path} version went back {old.version} -> {new.version}")
        if not isinstance(new.doc, dict):
            problems.append(f"{path} does not parse as a JSON object: {new.doc!r:.80}")
        if path.endswith("/assignment"):
            old_gen, new_gen = generation(old), generation(new)
            if new_gen is None or (old_gen is not None and new_gen < old_gen):
                problems.append(f"assignment generation went {old_gen} -> {new_gen}")
    return problems


def generation(node: Znode | None) -> int | None:
    if node is None or not isinstance(node.doc, dict):
        return None
    gen = node.doc.get("generation")
    return gen if isinstance(gen, int) else None


class GenerationMonitor:
    """Every version of the assignment znode seen through a data watch (no polling)."""

    def __init__(self, client: KazooClient, paths: Paths) -> None:
        self.seen: list[tuple[float, int | None, int, int]] = []  # (t, generation, version, czxid)
        self._lock = threading.Lock()
        self._active = True
        client.DataWatch(paths.assignment, self._on_data)

    def _on_data(self, data: bytes | None, stat: Any, *_: Any) -> bool:
        if stat is not None:
            try:
                doc = loads(data, where="assignment")
                gen = doc.get("generation") if isinstance(doc, dict) else None
            except ValueError:
                gen = None
            with self._lock:
                self.seen.append((time.time(), gen, stat.version, stat.czxid))
        return self._active  # False unregisters the watch

    def stop(self) -> None:
        self._active = False

    def problems(self) -> list[str]:
        with self._lock:
            seen = list(self.seen)
        out = []
        for (_t0, g0, v0, c0), (t1, g1, v1, c1) in zip(seen, seen[1:], strict=False):
            if c1 != c0:
                out.append(f"assignment recreated at {t1:.3f} (czxid {c0:#x} -> {c1:#x})")
            if v1 < v0 or (g0 is not None and (g1 is None or g1 < g0)):
                out.append(f"assignment went back at {t1:.3f}: generation {g0} v{v0} -> "
                           f"{g1} v{v1}")
        return out


def owner_znodes(client: KazooClient, paths: Paths) -> list[str]:
    """Every `owners/<task>/<i>` znode still present."""
    try:
        tasks = client.get_children(paths.owners)
    except NoNodeError:
        return []
    out = []
    for task in tasks:
        try:
            out += [f"{task}/{i}" for i in client.get_children(paths.owner_task(task))]
        except NoNodeError:
            continue
    return sorted(out)


# -- holding a fault for a duration --------------------------------------------------------------
def hold(seconds: float, check: Callable[[], str | None] | None = None,
         interval: float = 0.1) -> list[str]:
    """Let `seconds` pass (a fault or a steady state that must *last*: a duration, not a
    synchronisation), polling `check` meanwhile and collecting what it reports."""
    problems: list[str] = []
    end = time.monotonic() + seconds

    def elapsed() -> bool:
        if check is not None:
            problem = check()
            if problem:
                problems.append(problem)
        return time.monotonic() >= end

    wait_until(elapsed, seconds + 10.0, interval=interval,
               message=f"hold of {seconds:g}s overran")
    return problems


# -- figures -------------------------------------------------------------------------------------
@dataclass
class Figures:
    """One fault's measured figures and every invariant violation found."""

    name: str
    kind: str
    bound: float
    overlap_bound: float = 0.0
    overlap: float = 0.0
    overlap_where: str = ""
    raw_overlap: float = 0.0  # frozen periods counted as running, for the record
    recovered: float | None = None
    settle: float = 0.0
    max_gap: float = 0.0
    gap_where: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def line(self) -> str:
        rec = "never" if self.recovered is None else f"{self.recovered:.2f}s"
        return (f"chaos {self.name}: worst overlap {self.overlap * 1e3:.1f} ms "
                f"(bound {self.overlap_bound * 1e3:.0f} ms), recovery {rec}, last handover "
                f"{self.settle:.2f}s (bound {self.bound:.1f}s), longest slot gap "
                f"{self.max_gap:.2f}s" + "".join(f", {k} {v}" for k, v in self.extra.items()))

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "overlap_ms": round(self.overlap * 1e3, 1),
                "overlap_bound_ms": round(self.overlap_bound * 1e3, 1),
                "overlap_where": self.overlap_where,
                "raw_overlap_ms": round(self.raw_overlap * 1e3, 1),
                "recovery_s": None if self.recovered is None else round(self.recovered, 3),
                "last_handover_s": round(self.settle, 3), "bound_s": self.bound,
                "max_gap_s": round(self.max_gap, 3), "gap_where": self.gap_where,
                **self.extra, "problems": self.problems, "t": time.time()}

    def report(self, results: Path) -> None:
        print(self.line())
        for problem in self.problems:
            print(f"chaos {self.name}: VIOLATION {problem}")
        with open(results, "a") as f:
            f.write(json.dumps(self.as_json()) + "\n")

    def assert_ok(self) -> None:
        assert not self.problems, f"chaos {self.name}: invariants violated:\n" + "\n".join(
            f"- {p}" for p in self.problems)
