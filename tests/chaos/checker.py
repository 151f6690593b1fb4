"""Chaos-suite invariants beyond the records: bounds, ZooKeeper state, and the figures.

What ran where - overlap, recovery, fencing, leaked handlers - is computed by the suite's one
record checker, tests/checker.py. This module adds:

- **bounds**: how long recovery may take after each kind of fault, from the README's figures;
- **ZooKeeper**: no owner znode left once every node left gracefully, persistent znodes
  (assignment, overrides) never lost nor recreated, the assignment generation never going
  back;
- **figures**: every measurement printed (`pytest -s`) and appended as one JSON line to a
  results file.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError

from xconsumer.paths import Paths
from xconsumer.zk import loads

# -- documented bounds ------------------------------------------------------------------------
# Time from the end of a fault until every slot runs again, and until the last handover.
# README (2-core VM, 2 s sessions): a graceful leave hands over in 0.04-0.13 s, a ZooKeeper
# restart that keeps the sessions in 0-0.6 s, a crash in 2.0-2.1 s (the session timeout).
# Measured before choosing the bounds, four runs of this suite at load 0.7-35: faults where no
# session has to expire 0.00-0.08 s (SIGTERM 0.03-0.08 s); kill -9 session + 0.0-0.49 s,
# churn with kills 1.5-1.8 s, SIGSTOP past the session 0.14-0.71 s after SIGCONT. So the
# graceful bound is 6x the worst measured (4x the README's 0.13 s), and the crash bound allows
# 3x the worst delay seen past the session: a loaded machine passes, a handover a few times
# slower than documented does not. A ZooKeeper restart was later seen at 0.22 s on a loaded
# machine, and 0.5 s failed once with three other suites running beside it: the graceful
# bound is 1.0 s, under twice the README's worst figure for that fault (0.6 s).
# On a 2-core VM whose ZooKeeper round trips are 2.2 times as long, the vandal's recovery
# took 1.05 s (every figure of the handover scales so, docs/BENCHMARKS.md): 2.0 s, still
# over three times the README's worst figure, holds there without hiding a lost wake-up.
GRACEFUL_BOUND = 2.0  # nothing has to wait for a session to expire
CRASH_EXTRA = 1.5  # ... beyond the session timeout, when a session has to expire first
KINDS = ("graceful", "crash")
# A frozen (SIGSTOP) process's lease ended while it slept, so on SIGCONT its handlers see
# ctx.stopping at once; RunRecord looks every 50 ms: one heartbeat plus scheduling slack.
FROZEN_OVERLAP_BOUND = 0.250


def recovery_bound(kind: str, session_timeout: float) -> float:
    """Seconds allowed from the end of a fault until every slot runs again: `graceful` when
    no session has to expire for the slots to move (a leave, a ZooKeeper restart or member
    loss that keeps the sessions, a released handler), `crash` when one has to (kill -9,
    SIGSTOP past the session, churn with kills)."""
    if kind == "graceful":
        return GRACEFUL_BOUND
    if kind == "crash":
        return session_timeout + CRASH_EXTRA
    raise ValueError(f"unknown fault kind {kind!r}, expected one of {KINDS}")


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
