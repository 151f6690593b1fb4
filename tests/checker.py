"""The one overlap checker of the test suite, over the handlers' own records.

The recording handlers (tests/e2e/record_works) append one JSON line per event:
`{t, e: start|beat|stop|fail, node, task, slot, fence, pid, thread, run}`, where `run` is a
unique id the handler draws when it starts and writes on every record of that run, and
`thread` names the thread that ran it. That file is the ground truth of what ran where.

A **run** is everything recorded under one run id: it begins at its `start` record and ends
at its `stop` record; a run with no `stop` ended when its process was SIGKILLed (when the
caller says so) or else is taken as still running at the end of the observation. Every pair
of distinct runs of one slot is compared - on different nodes, on one node, in one process,
in one thread: a slot running twice at once is an overlap whoever ran it. Node names,
processes and pids are reused across restarts, so none of them identifies a run; the run id
does.

A process frozen by SIGSTOP executes nothing, so its frozen windows can be cut out of its
runs (`paused`): what remains after SIGCONT is the time its handlers needed to notice.

`worst_overlap_in_file(path, killed)` is the whole checker in one call, for anything that
only has a record file and the kill times (e.g. a mutation runner).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RUN_EVENTS = ("start", "beat", "stop")
RUN_FIELDS = ("node", "pid", "thread", "run", "task", "slot")
# pid -> time(s) that process was SIGKILLed. A pid may be reused by a later process, so a
# kill ends only the runs of that pid that started before it.
KillMap = Mapping[int, float | Sequence[float]]
Paused = Mapping[int, Sequence[tuple[float, float]]]


class MalformedRecords(ValueError):
    """The record file cannot be read as runs: a checker that guessed could hide an overlap."""


# -- records -------------------------------------------------------------------------------------
def complete_records(text: str) -> list[dict[str, Any]]:
    """Records in file order. A last line without its newline is still being written (each
    record is one O_APPEND write) and is left for the next read."""
    lines = text.split("\n")
    complete = lines[:-1]  # after the last "\n": empty, or a partial line
    return [json.loads(line) for line in complete if line.strip()]


def parse_records(text: str) -> list[dict[str, Any]]:
    """Records in time order (see complete_records)."""
    return sorted(complete_records(text), key=lambda r: r["t"])


def load_records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return parse_records(path.read_text())


# -- runs ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Run:
    """One run of a handler: from its `start` record to its `stop` (or assumed end)."""

    slot: str
    node: str
    pid: int
    thread: str
    run_id: str
    start: float
    end: float
    fence: int
    stopped: bool  # ended by its own `stop` record
    killed: bool  # ended by the SIGKILL of its process
    last_record: float  # its last record of any kind

    def pieces(self, paused: Paused | None = None) -> list[tuple[float, float]]:
        """The run minus the windows its process was frozen (it executed nothing then)."""
        parts = [(self.start, self.end)]
        for p0, p1 in (paused or {}).get(self.pid, ()):
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

    def label(self) -> str:
        return (f"{self.node} (pid {self.pid}, thread {self.thread}, run {self.run_id[:8]}, "
                f"fence {self.fence})")


def kill_time(killed: KillMap | None, pid: int, start: float) -> float | None:
    """When the run of `pid` that started at `start` was killed: the first SIGKILL of that
    pid at or after its start (an earlier one killed a previous process with the same pid)."""
    times = (killed or {}).get(pid)
    if times is None:
        return None
    candidates = [times] if isinstance(times, int | float) else list(times)
    after = [t for t in candidates if t >= start]
    return min(after) if after else None


def runs_from_records(records: Iterable[dict[str, Any]], *, killed: KillMap | None = None,
                      until: float) -> list[Run]:
    """Every run seen up to `until` (records after it are ignored: the observation ended).

    A run without a `stop` ended when its process was killed, else at `until`. Raises
    MalformedRecords for records that do not describe runs (no run id, a run started twice,
    a `beat`/`stop` with no `start`, one run id on two slots or processes).
    """
    opened: dict[str, dict[str, Any]] = {}
    last: dict[str, float] = {}
    closed: dict[str, Run] = {}
    for rec in sorted(records, key=lambda r: r["t"]):
        if rec["t"] > until or rec["e"] not in RUN_EVENTS:
            continue
        missing = [f for f in RUN_FIELDS if f not in rec]
        if missing:
            raise MalformedRecords(f"record without {', '.join(missing)}: {rec}")
        rid = str(rec["run"])
        if rec["e"] == "start":
            if rid in opened or rid in closed:
                raise MalformedRecords(f"run {rid} started twice: {rec}")
            opened[rid] = rec
            last[rid] = rec["t"]
            continue
        start = opened.get(rid)
        if start is None:
            what = "after its stop" if rid in closed else "without a start"
            raise MalformedRecords(f"{rec['e']} record {what}: {rec}")
        if any(rec[f] != start[f] for f in RUN_FIELDS):
            raise MalformedRecords(f"run {rid} changed identity: {start} then {rec}")
        last[rid] = rec["t"]
        if rec["e"] == "stop":
            del opened[rid]
            closed[rid] = _run(start, rec["t"], stopped=True, killed=False, last=rec["t"])
    out = list(closed.values())
    for rid, start in opened.items():
        at = kill_time(killed, int(start["pid"]), start["t"])
        end = until if at is None else min(at, until)
        out.append(_run(start, max(end, start["t"]), stopped=False, killed=at is not None,
                        last=last[rid]))
    return sorted(out, key=lambda r: (r.slot, r.start, r.run_id))


def _run(start: dict[str, Any], end: float, *, stopped: bool, killed: bool, last: float
         ) -> Run:
    return Run(slot=f"{start['task']}/{start['slot']}", node=str(start["node"]),
               pid=int(start["pid"]), thread=str(start["thread"]), run_id=str(start["run"]),
               start=float(start["t"]), end=end, fence=int(start["fence"]), stopped=stopped,
               killed=killed, last_record=last)


# -- overlap -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Overlap:
    seconds: float
    where: str


def worst_overlap(runs: Sequence[Run], paused: Paused | None = None,
                  only: Callable[[Run, Run], bool] | None = None) -> Overlap:
    """Largest time one slot ran twice at once, over every pair of distinct runs (0.0:
    never); `only` restricts it to some pairs (e.g. those involving a frozen process)."""
    by_slot: dict[str, list[tuple[float, float, Run]]] = {}
    for run in runs:
        for s, e in run.pieces(paused):
            by_slot.setdefault(run.slot, []).append((s, e, run))
    worst = Overlap(0.0, "")
    for slot, parts in sorted(by_slot.items()):
        parts.sort(key=lambda p: p[0])
        for i, (s2, e2, r2) in enumerate(parts):
            for s1, e1, r1 in parts[:i]:
                if r1.run_id == r2.run_id or (only is not None and not only(r1, r2)):
                    continue
                overlap = min(e1, e2) - max(s1, s2)
                if overlap > worst.seconds:
                    worst = Overlap(overlap, f"{slot}: {r1.label()} ran {s1:.3f}-{e1:.3f}, "
                                             f"{r2.label()} ran {s2:.3f}-{e2:.3f}")
    return worst


def worst_overlap_in_file(path: Path, killed: KillMap | None = None, *,
                          until: float | None = None, paused: Paused | None = None) -> Overlap:
    """The worst overlap between any two distinct runs recorded in `path`.

    `killed` maps a pid to the time(s) it was SIGKILLed. `until` is the end of the
    observation (default: now, taken before the file is read, so a run still open is
    counted as running until the moment it was last seen open).
    """
    end = time.time() if until is None else until
    return worst_overlap(runs_from_records(load_records(path), killed=killed, until=end),
                         paused)


# -- other invariants over runs --------------------------------------------------------------
def fence_problems(runs: Sequence[Run]) -> list[str]:
    """Per slot, in start order: the fence never decreases, and grows on a change of node.

    One node may run a slot in several processes under one owner znode (an isolated
    handler's child restarted after a run timeout), so an equal fence is fine there; another
    node must have created a new owner znode, whose czxid is higher."""
    problems = []
    by_slot: dict[str, list[Run]] = {}
    for run in runs:
        by_slot.setdefault(run.slot, []).append(run)
    for slot, rs in sorted(by_slot.items()):
        rs.sort(key=lambda r: r.start)
        for a, b in zip(rs, rs[1:], strict=False):
            if b.fence < a.fence or (b.node != a.node and b.fence == a.fence):
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
             fault_end: float, until: float, paused: Paused | None = None) -> Recovery:
    """A slot runs when some unfrozen run covers it. The cluster has recovered when the last
    gap (after the fault started) of any slot has closed."""
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
    return [f"{r.slot} on {r.label()} started {r.start:.3f}, last record "
            f"{r.last_record:.3f}, no stop" for r in runs if r.pid in pids and not r.stopped]


def stopped_or_restarted_since(records: Sequence[dict[str, Any]], since: float,
                               until: float) -> list[str]:
    """Every `stop` or `start` record in (since, until]: a steady cluster has none."""
    return [f"{r['e']} {r['task']}/{r['slot']} on {r['node']} (pid {r['pid']}) at {r['t']:.3f}"
            for r in records if since < r["t"] <= until and r["e"] in ("start", "stop")]


def beats_since(records: Sequence[dict[str, Any]], since: float) -> dict[str, int]:
    """Heartbeats per slot recorded after `since`. RunRecord beats after each
    `ctx.sleep(0.05)`, which never returns early unless the slot must stop, so N beats of one
    slot prove that at least N x 50 ms passed: the suite's clock for a steady state that must
    last, observed rather than slept."""
    out: dict[str, int] = {}
    for r in records:
        if r["e"] == "beat" and r["t"] > since:
            key = f"{r['task']}/{r['slot']}"
            out[key] = out.get(key, 0) + 1
    return out
