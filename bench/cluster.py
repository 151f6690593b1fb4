"""A cluster of real `python -m xconsumer run` processes for the benchmarks.

Like tests/cluster.py (whose config writer it reuses) but built for measuring: convergence is
detected from the handlers' record file plus one read of the assignment znode, never by
reading every owner znode in a tight loop, so the observer does not load the machine it
measures. Every assignment change is captured with a data watch (its znode mtime is the
server's clock at the write).
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Any

from kazoo.exceptions import NoNodeError
from kazoo.protocol.states import ZnodeStat
from kazoo.recipe.watchers import DataWatch

from bench.common import (
    BENCH_WORKS,
    Abort,
    Proc,
    RecordLog,
    close_client,
    spawn,
    stop_all,
    zk_client,
)
from tests.cluster import write_config
from xconsumer.leader import doc_plan
from xconsumer.paths import Paths
from xconsumer.zk import loads


class XCluster:
    def __init__(self, *, hosts: str, tmp: Path, root: str, tasks: list[dict[str, Any]],
                 strategy: str = "round_robin", session_timeout: float = 2.0,
                 reconcile_interval: float = 5.0, name: str = "bench",
                 works: Path = BENCH_WORKS) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        self.tmp = tmp
        self.hosts = hosts
        self.tasks = tasks
        self.works = works
        self.session_timeout = session_timeout
        self.config = write_config(
            tmp / "app.toml", cluster=name, zk_hosts=hosts, root=root, tasks=tasks,
            session_timeout=session_timeout,
            extra={"node": {"reconcile_interval": reconcile_interval},
                   "assignment": {"strategy": strategy}})
        self.records = RecordLog(tmp / "record.jsonl")
        self.paths = Paths(root, name)
        self.client = zk_client(hosts)
        self.nodes: dict[str, Proc] = {}
        self.expected = {f"{t['name']}/{i}" for t in tasks for i in range(t["workerNum"])}
        self.pubs: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._detached = False
        DataWatch(self.client, self.paths.assignment, self._on_assignment)

    # -- observation ---------------------------------------------------------------------
    def _on_assignment(self, data: bytes | None, stat: ZnodeStat | None) -> None:
        if stat is None or not data:
            return
        try:
            doc = loads(data, where=self.paths.assignment)
        except ValueError:
            return
        with self._lock:
            self.pubs.append({"seen": time.time(), "mtime": stat.mtime / 1000.0,
                              "version": stat.version, "generation": doc.get("generation"),
                              "members": list(doc.get("members", [])), "doc": doc})

    def pubs_after(self, generation: int) -> list[dict[str, Any]]:
        with self._lock:
            return [p for p in self.pubs if (p["generation"] or 0) > generation]

    def doc(self) -> dict[str, Any] | None:
        try:
            raw, _ = self.client.get(self.paths.assignment)
        except NoNodeError:
            return None
        doc = loads(raw, where=self.paths.assignment)
        return doc if isinstance(doc, dict) else None

    def members(self) -> list[tuple[str, str, ZnodeStat]]:
        """(name, child, stat) of every member znode, in sequence order."""
        out = []
        try:
            children = self.client.get_children(self.paths.nodes)
        except NoNodeError:
            return out
        for child in sorted(children):
            try:
                raw, stat = self.client.get(self.paths.node(child))
            except NoNodeError:
                continue
            data = loads(raw, where=child) or {}
            out.append((str(data.get("id")), child, stat))
        return out

    def member(self, name: str) -> tuple[str, ZnodeStat] | None:
        for n, child, stat in self.members():
            if n == name:
                return child, stat
        return None

    def converged(self, members: set[str]) -> dict[str, Any] | None:
        """The assignment doc, once it names exactly `members` and every slot runs (per the
        record file) on exactly the node the doc assigns it to."""
        for name in members:
            proc = self.nodes.get(name)
            if proc is not None and not proc.alive():
                raise Abort(f"node {name} exited ({proc.proc.returncode}):\n"
                            f"{proc.log()[-2000:]}")
        doc = self.doc()
        if not doc or set(doc.get("members", [])) != members:
            return None
        assigned = {s.key: n for n, slots in doc_plan(doc).items() for s in slots}
        if set(assigned) != self.expected or not set(assigned.values()) <= members:
            return None
        self.records.refresh()
        owners = self.records.owners()
        for key, node in assigned.items():
            if owners.get(key) != {node}:
                return None
        return doc

    # -- processes -----------------------------------------------------------------------
    def start_node(self, name: str) -> Proc:
        cmd = [sys.executable, "-m", "xconsumer", "run", "--config", str(self.config),
               "--works", str(self.works), "--name", name, "--admin-port", "0"]
        env = {"XCONSUMER_TEST_RECORD": str(self.records.path)}
        proc = spawn(name, cmd, self.tmp / f"{name}.log", env=env, cwd=self.tmp)
        self.nodes[name] = proc
        return proc

    def detach(self) -> None:
        """Close the observer's ZooKeeper session (so it adds no requests to a measurement)."""
        if not self._detached:
            self._detached = True
            close_client(self.client)

    def close(self) -> None:
        stop_all(self.nodes.values(), graceful=False)
        self.detach()
