"""Test harness: real node processes (`python -m xconsumer run`) on a real ZooKeeper.

Every process is started here and stopped by its PID; nothing is ever killed by name.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kazoo.client import KazooClient

from tests import checker
from tests.util import wait_until
from xconsumer.assignment import Member, round_robin
from xconsumer.config import TaskConfig
from xconsumer.leader import read_assignment, valid_doc
from xconsumer.paths import Paths
from xconsumer.procfs import wait_stopped
from xconsumer.view import read_cluster

REPO = Path(__file__).resolve().parents[1]
RECORD_WORKS = Path(__file__).resolve().parent / "e2e" / "record_works"


def round_robin_deal(tasks: list[dict], names: list[str]) -> dict[str, list[dict]]:
    """Round robin's deal from the followers (names[0] leads), as a view's "assignment"
    shows it: what a forming cluster and an explicit rebalance get."""
    members = [Member(n, i, frozenset({"RunRecord"})) for i, n in enumerate(names)]
    plan = round_robin([TaskConfig.from_dict(t) for t in tasks], members, leader=names[0])
    return {n: [{"task": s.task, "slot": s.index} for s in slots]
            for n, slots in plan.nodes.items()}


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):  # an inline table
        return "{ " + ", ".join(f"{json.dumps(k)} = {toml_value(v)}"
                                for k, v in value.items()) + " }"
    return repr(value)


def write_config(path: Path, *, cluster: str, zk_hosts: str, root: str, tasks: list[dict],
                 session_timeout: float = 2.0, extra: dict[str, dict[str, Any]] | None = None
                 ) -> Path:
    sections: dict[str, dict[str, Any]] = {
        "cluster": {"name": cluster},
        "zookeeper": {"hosts": zk_hosts, "session_timeout": session_timeout, "root": root,
                      "connect_timeout": 10},
        "admin": {"host": "127.0.0.1", "port": 0},
        "node": {"reconcile_interval": 1.0},
    }
    for key, values in (extra or {}).items():
        sections.setdefault(key, {}).update(values)
    lines = []
    for name, values in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in values.items()]
        lines.append("")
    for task in tasks:
        lines.append("[[task]]")
        lines += [f"{k} = {toml_value(v)}" for k, v in task.items()]
        lines.append("")
    path.write_text("\n".join(lines))
    return path


@dataclass
class NodeProc:
    name: str
    proc: subprocess.Popen
    log_path: Path
    killed_at: float | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, signum: int) -> None:
        if self.alive():
            os.kill(self.pid, signum)
            if signum == signal.SIGKILL:
                self.killed_at = time.time()

    def freeze(self, timeout: float = 10.0) -> None:
        """SIGSTOP, and return only once every thread of the process is stopped. The kernel
        stops a thread when it next runs kernel code: on a loaded machine one can run on for
        milliseconds after kill() returned (seen: a handler got its database read's reply
        and opened its write transaction after the test had sent SIGSTOP)."""
        self.signal(signal.SIGSTOP)
        assert wait_stopped(self.pid, timeout), f"{self.name} (pid {self.pid}) did not stop"

    def terminate(self, timeout: float = 20.0) -> int:
        self.signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.proc.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass
class Cluster:
    """A cluster of node processes sharing one config file and one record file."""

    tmp: Path
    zk_hosts: str
    root: str
    tasks: list[dict]
    works: Path = RECORD_WORKS
    name: str = "e2e"
    session_timeout: float = 2.0
    extra: dict[str, dict[str, Any]] = field(default_factory=dict)
    nodes: dict[str, NodeProc] = field(default_factory=dict)  # name -> its latest process
    procs: list[NodeProc] = field(default_factory=list)  # every process started, in order

    def __post_init__(self) -> None:
        self.rewrite_config()
        self.record = self.tmp / "record.jsonl"
        self.release = self.tmp / "release"
        self.paths = Paths(self.root, self.name)
        self.client = KazooClient(hosts=self.zk_hosts, timeout=10,
                                  connection_retry={"max_tries": -1, "max_delay": 0.5})
        self.client.start(timeout=15)

    def rewrite_config(self) -> None:
        """(Re)write app.toml from `tasks` and `extra`, for the nodes started next."""
        self.config = write_config(self.tmp / "app.toml", cluster=self.name,
                                   zk_hosts=self.zk_hosts, root=self.root, tasks=self.tasks,
                                   session_timeout=self.session_timeout, extra=self.extra)

    def start_node(self, name: str, *args: str, wait: bool = True) -> NodeProc:
        log_path = self.tmp / f"{name}.log"
        env = dict(os.environ, XCONSUMER_TEST_RECORD=str(self.record),
                   XCONSUMER_TEST_RELEASE=str(self.release), PYTHONUNBUFFERED="1",
                   PYTHONPATH=str(REPO))
        for var in ("XCONSUMER_ZK", "XCONSUMER_NAME", "XCONSUMER_ADMIN_PORT"):
            env.pop(var, None)
        cmd = [sys.executable, "-m", "xconsumer", "run", "--config", str(self.config),
               "--works", str(self.works), "--name", name, "--admin-port", "0", *args]
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=self.tmp,
                                    env=env)
        node = NodeProc(name, proc, log_path)
        self.nodes[name] = node
        self.procs.append(node)
        if wait:
            wait_until(lambda: name in self.member_names() or not node.alive(), 20,
                       message=lambda: f"{name} did not join:\n{node.log()[-3000:]}")
            assert node.alive(), f"{name} exited early:\n{node.log()[-3000:]}"
        return node

    def member_names(self) -> list[str]:
        return [n["id"] for n in self.view()["nodes"]]

    def view(self) -> dict[str, Any]:
        return read_cluster(self.client, self.paths, self.name)

    def expected_slots(self) -> set[str]:
        return {f"{t['name']}/{i}" for t in self.tasks for i in range(t["workerNum"])}

    def converged(self, members: set[str] | None = None) -> dict[str, Any] | None:
        """The view, once the published plan was made with every live member, and every
        slot is assigned to a live member and owned by that member. (Without the first
        check, a plan made before the last join, fully running, would pass.)"""
        view = self.view()
        names = {n["id"] for n in view["nodes"]}
        if members is not None and names != members:
            return None
        doc = valid_doc(read_assignment(self.client, self.paths)[0])
        if doc is None or set(doc.get("members", [])) != names:
            return None
        if view.get("generation") != doc.get("generation"):
            # The view read the document before a publish that this read sees: its
            # assignment is the older one (seen once the leader got faster to publish).
            return None
        assigned = {f"{s['task']}/{s['slot']}": node
                    for node, slots in view["assignment"].items() for s in slots}
        if set(assigned) != self.expected_slots() or not set(assigned.values()) <= names:
            return None
        if view["owners"] != assigned:
            return None
        return view

    def wait_converged(self, members: set[str] | None = None, timeout: float = 30.0
                       ) -> dict[str, Any]:
        return wait_until(lambda: self.converged(members), timeout,
                          message=lambda: f"cluster did not converge; view: "
                                          f"{json.dumps(self.view(), indent=1)}\n{self.logs()}")

    def logs(self, tail: int = 2000) -> str:
        return "\n".join(f"--- {n.name} (pid {n.pid}) ---\n{n.log()[-tail:]}"
                         for n in self.procs)

    def records(self) -> list[dict[str, Any]]:
        return checker.load_records(self.record)

    def kill_map(self) -> dict[int, float]:
        """pid -> when this harness SIGKILLed it: where the runs of that process ended."""
        return {p.pid: p.killed_at for p in self.procs if p.killed_at is not None}

    def runs(self) -> list[checker.Run]:
        """Every run recorded so far (tests/checker.py); an open run lasts until now."""
        until = time.time()  # before reading: what is open in the file was open then
        return checker.runs_from_records(self.records(), killed=self.kill_map(), until=until)

    def worst_overlap(self) -> checker.Overlap:
        """The longest time any slot ran twice at once, between any two distinct runs."""
        return checker.worst_overlap(self.runs())

    def running_on(self) -> dict[str, set[str]]:
        """Slot -> nodes with an open run of it in a live process (from the records)."""
        alive = {p.pid for p in self.procs if p.alive()}
        out: dict[str, set[str]] = {}
        for run in self.runs():
            if not run.stopped and not run.killed and run.pid in alive:
                out.setdefault(run.slot, set()).add(run.node)
        return out

    def close(self) -> None:
        for node in self.procs:
            if node.alive():
                node.signal(signal.SIGKILL)
                node.proc.wait(10)
        self.client.stop()
        self.client.close()

