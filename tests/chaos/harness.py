"""The chaos harness: tests/cluster.py's Cluster, extended with fault bookkeeping.

Every process is started here and signalled by its PID, never by name. The harness remembers
each process it started (a node name may be reused by a later process), when it was killed,
when it was frozen and thawed, and how it exited, so the checker can tell a fault from a bug.
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests import checker
from tests.chaos import checker as chaos
from tests.cluster import Cluster, NodeProc
from tests.util import wait_until

# The handlers of tests/e2e/record_works whose runs are continuous (start ... stop).
CONTINUOUS = "record"


def record_tasks(*counts: int) -> list[dict[str, Any]]:
    """Tasks named t0, t1, ... with workName "record" and the given slot counts."""
    return [{"name": f"t{i}", "workName": CONTINUOUS, "workerNum": n, "stop_timeout": 5}
            for i, n in enumerate(counts)]


@dataclass
class ChaosCluster(Cluster):
    name: str = "chaos"
    killed: dict[int, float] = field(default_factory=dict)
    paused: dict[int, list[tuple[float, float]]] = field(default_factory=dict)
    exit_codes: dict[int, int | None] = field(default_factory=dict)
    results: Path | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        self._frozen_since: dict[int, float] = {}
        self._terminating: set[int] = set()
        self.recovered_at: float | None = None
        self.baseline: dict[str, chaos.Znode] = {}
        self.monitor: chaos.GenerationMonitor | None = None

    # -- processes -------------------------------------------------------------------------
    def start_node(self, name: str, *args: str, wait: bool = True) -> NodeProc:
        node = super().start_node(name, *args, wait=False)
        if wait:
            self.wait_joined(node)
        return node

    def wait_joined(self, node: NodeProc, timeout: float | None = None) -> None:
        """Until this very process (its pid) is a member: a restarted name first waits for
        its predecessor's session to expire."""
        wait_until(lambda: self._joined(node) or not node.alive(),
                   timeout or self.session_timeout + 20,
                   message=lambda: f"{node.name} (pid {node.pid}) did not join:\n"
                                   f"{node.log()[-3000:]}")
        assert node.alive(), f"{node.name} exited early:\n{node.log()[-3000:]}"

    def _joined(self, node: NodeProc) -> bool:
        return any(n["id"] == node.name and n["pid"] == node.pid for n in self.view()["nodes"])

    def proc(self, name: str) -> NodeProc:
        return self.nodes[name]

    def alive_names(self) -> list[str]:
        return sorted(n for n, p in self.nodes.items() if p.alive())

    def leader(self) -> str:
        leader = self.view()["leader"]
        assert leader, "no leader"
        return str(leader)

    def followers(self) -> list[str]:
        leader = self.leader()
        return [n for n in self.alive_names() if n != leader]

    def kill(self, name: str) -> float:
        """SIGKILL; returns when the process is gone (time of the kill)."""
        node = self.nodes[name]
        node.signal(signal.SIGCONT)  # harmless if running; a frozen one dies either way
        node.signal(signal.SIGKILL)
        at = time.time()
        self.killed[node.pid] = at
        self.exit_codes[node.pid] = node.proc.wait(10)
        return at

    def terminate(self, name: str, wait: bool = True, timeout: float = 30.0) -> float:
        """SIGTERM (a graceful leave); returns the time it was sent."""
        node = self.nodes[name]
        at = time.time()
        node.signal(signal.SIGTERM)
        self._terminating.add(node.pid)  # a second SIGTERM would mean "exit at once"
        if wait:
            self.exit_codes[node.pid] = node.proc.wait(timeout)
        return at

    def freeze(self, name: str) -> float:
        node = self.nodes[name]
        node.freeze()
        at = time.time()  # every thread of the process is stopped from here on
        self._frozen_since[node.pid] = at
        return at

    def thaw(self, name: str) -> float:
        node = self.nodes[name]
        at = time.time()  # before SIGCONT is sent: the window cut out of its runs is minimal
        node.signal(signal.SIGCONT)
        since = self._frozen_since.pop(node.pid)
        self.paused.setdefault(node.pid, []).append((since, at))
        return at

    def admin_url(self, name: str) -> str:
        url = next(n["admin_url"] for n in self.view()["nodes"] if n["id"] == name)
        assert url, f"{name} has no admin URL"
        return str(url)

    def api(self, name: str, path: str, method: str = "GET",
            body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.admin_url(name) + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    # -- observation -------------------------------------------------------------------------
    def continuous_slots(self) -> set[str]:
        return {f"{t['name']}/{i}" for t in self.tasks if t["workName"] == CONTINUOUS
                for i in range(t["workerNum"])}

    def running_slots(self) -> set[str]:
        """Slots with an open run (a `start` and no `stop`) in a live, unfrozen process."""
        now = time.time()
        alive = {p.pid for p in self.procs if p.alive()} - set(self._frozen_since)
        runs = checker.runs_from_records(self.records(), killed=self.killed, until=now)
        return {r.slot for r in runs if not r.stopped and r.pid in alive
                and r.pid not in self.killed}

    def take_baseline(self) -> None:
        """What the fault must not lose: the persistent znodes, and a watch on the
        assignment generation from here on."""
        self.baseline = chaos.persistent_snapshot(self.client, self.paths)
        assert self.paths.assignment in self.baseline, "no assignment published yet"
        self.monitor = chaos.GenerationMonitor(self.client, self.paths)

    def healthy(self) -> bool:
        """Every member says it is connected to ZooKeeper and started (GET /healthz 200)."""
        for node in self.view()["nodes"]:
            with urllib.request.urlopen(node["admin_url"] + "/healthz", timeout=5) as resp:
                if resp.status != 200:
                    return False
        return True

    def wait_recovered(self, members: set[str] | None = None, timeout: float = 40.0
                       ) -> dict[str, Any]:
        """Converged in ZooKeeper, every member connected again, and every continuous slot's
        handler running (records); remembers when, as the end of the recovery observation."""
        self.wait_converged(members, timeout)
        wait_until(self.healthy, timeout, message="a member is not connected to ZooKeeper")
        want = self.continuous_slots()
        wait_until(lambda: want <= self.running_slots(), 10,
                   message=lambda: f"slots not running: {sorted(want - self.running_slots())}")
        self.recovered_at = time.time()
        return self.wait_converged(members, timeout)

    def stop_all(self, timeout: float = 30.0) -> dict[int, int | None]:
        """Graceful leave of every live node at once; exit code per pid."""
        live = [p for p in self.procs if p.alive()]
        for p in live:
            if p.pid in self._frozen_since:
                self.thaw(p.name)
            if p.pid not in self._terminating:
                p.signal(signal.SIGTERM)
                self._terminating.add(p.pid)
        for p in live:
            try:
                self.exit_codes[p.pid] = p.proc.wait(timeout)
            except Exception:  # noqa: BLE001 - reported as a missing exit code
                self.exit_codes[p.pid] = None
        return self.exit_codes

    def close(self) -> None:
        """Teardown: kill whatever is left, by pid."""
        if self.monitor is not None:
            self.monitor.stop()
        for p in self.procs:
            if p.alive():
                p.signal(signal.SIGCONT)
                p.signal(signal.SIGKILL)
                p.proc.wait(10)
        self.client.stop()
        self.client.close()

    # -- the verdict -------------------------------------------------------------------------
    def verdict(self, name: str, *, kind: str, fault_start: float, fault_end: float,
                stop: bool = True,
                extra: dict[str, Any] | None = None,
                problems: list[str] | None = None) -> chaos.Figures:
        """Check every invariant after a fault, stop the cluster gracefully, and report.

        Recovery is measured on the records up to `wait_recovered()`; overlap and fencing on
        every record, including the final graceful stop. `problems` are the test's own
        findings, reported with the rest.
        """
        assert self.recovered_at is not None, "call wait_recovered() first"
        frozen = set(self.paused)
        figs = chaos.Figures(name, kind, chaos.recovery_bound(kind, self.session_timeout),
                             overlap_bound=chaos.FROZEN_OVERLAP_BOUND if frozen else 0.0,
                             extra=dict(extra or {}))
        figs.problems += problems or []
        problems = figs.problems
        # ZooKeeper, before anyone leaves.
        after = chaos.persistent_snapshot(self.client, self.paths)
        problems += chaos.data_loss_problems(self.baseline, after)
        figs.extra["generation"] = "->".join(
            str(chaos.generation(snap.get(self.paths.assignment)))
            for snap in (self.baseline, after))
        # Recovery, on what was seen up to the recovery point.
        upto = checker.runs_from_records(self.records(), killed=self.killed,
                                         until=self.recovered_at)
        rec = checker.recovery(upto, self.continuous_slots(), fault_start=fault_start,
                               fault_end=fault_end, until=self.recovered_at, paused=self.paused)
        figs.recovered, figs.settle = rec.recovered, rec.settle
        figs.max_gap, figs.gap_where = rec.max_gap, rec.gap_where
        if rec.recovered is None or rec.recovered > figs.bound:
            problems.append(f"slots not all running within {figs.bound:g}s of the fault end "
                            f"(recovered: {rec.recovered}); {rec.gap_where}")
        if rec.settle > figs.bound:
            problems.append(f"last handover {rec.settle:.2f}s after the fault end, over the "
                            f"{figs.bound:g}s bound")
        # Leave, then check nothing leaked.
        if stop:
            codes = self.stop_all()
            for p in self.procs:
                if p.pid in self.killed:
                    continue
                code = codes.get(p.pid, p.proc.poll())
                if code != 0:
                    problems.append(f"{p.name} (pid {p.pid}) exited {code}, not 0:\n"
                                    f"{p.log()[-1500:]}")
            leaked = wait_until(lambda: (chaos.owner_znodes(self.client, self.paths),), 10)[0]
            if leaked:
                problems.append(f"owner znodes left after every node left: {leaked}")
        if self.monitor is not None:
            if stop:
                self.monitor.stop()
            problems += self.monitor.problems()
        end = time.time()
        runs = checker.runs_from_records(self.records(), killed=self.killed, until=end)
        # Two processes that were never frozen: no overlap at all. With a process that was
        # frozen: at most the documented time its handlers need to notice on waking.
        plain = checker.worst_overlap(
            runs, self.paused, only=lambda a, b: a.pid not in frozen and b.pid not in frozen)
        thawed = checker.worst_overlap(
            runs, self.paused, only=lambda a, b: a.pid in frozen or b.pid in frozen)
        ov = max(plain, thawed, key=lambda o: o.seconds)
        figs.overlap, figs.overlap_where = ov.seconds, ov.where
        figs.raw_overlap = checker.worst_overlap(runs).seconds
        if plain.seconds > 0:
            problems.append(f"overlap of {plain.seconds * 1e3:.1f} ms: {plain.where}")
        if thawed.seconds > chaos.FROZEN_OVERLAP_BOUND:
            problems.append(f"overlap of {thawed.seconds * 1e3:.1f} ms after a SIGCONT, over "
                            f"the {chaos.FROZEN_OVERLAP_BOUND * 1e3:.0f} ms bound: "
                            f"{thawed.where}")
        problems += [f"fencing: {p}" for p in checker.fence_problems(runs)]
        if stop:
            graceful = [p.pid for p in self.procs if p.pid not in self.killed]
            problems += [f"leaked handler: {u}" for u in checker.unfinished_runs(runs, graceful)]
        # Context for timing figures: this machine may be shared with other test runs.
        figs.extra["load1"] = round(os.getloadavg()[0], 1)
        tracebacks = sum(p.log().count("Traceback") for p in self.procs)
        if tracebacks:
            figs.extra["tracebacks_in_logs"] = tracebacks
        if self.results is not None:
            figs.report(self.results)
        return figs
