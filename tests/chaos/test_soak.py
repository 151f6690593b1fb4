"""Randomized chaos soak, outside the default run: `pytest tests/chaos --soak 300`.

Loops seeded random faults for the given seconds on a private ZooKeeper (so it can be
restarted too) and checks every invariant after each round; the seed is printed, and
`--soak-seed N` replays the same sequence of faults.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import pytest

from tests import checker
from tests.chaos import checker as chaos
from tests.chaos.conftest import ClusterFactory, soak_seconds
from tests.chaos.harness import ChaosCluster, record_tasks
from tests.util import wait_until
from xconsumer.zkserver import ZooKeeperServer

pytestmark = [pytest.mark.e2e, pytest.mark.chaos, pytest.mark.soak]

SESSION = 2.0
POOL = ["n1", "n2", "n3", "n4", "n5"]
MIN_UP, TARGET_UP = 2, 3


class Soak:
    def __init__(self, cluster: ChaosCluster, zk: ZooKeeperServer, rng: random.Random) -> None:
        self.c = cluster
        self.zk = zk
        self.rng = rng
        self.up: list[str] = []  # nodes started and neither killed nor told to leave

    def start(self, name: str | None = None) -> str:
        name = name or self.rng.choice(sorted(set(POOL) - set(self.up)))
        old = self.c.nodes.get(name)
        if old is not None:  # a leave still in progress must end before the name returns
            old.proc.wait(30)
        self.c.start_node(name)
        self.up.append(name)
        return name

    def pick(self, role: str) -> tuple[str, str]:
        """A node of `up` in that role if there is one: (name, its actual role)."""
        leader = self.c.leader()
        followers = sorted(n for n in self.up if n != leader)
        if (role == "leader" and leader in self.up) or not followers:
            return leader, "leader"
        return self.rng.choice(followers), "follower"

    # Each fault returns (kind, fault start, fault end, description).
    def kill(self, role: str) -> tuple[str, float, float, str]:
        name, role = self.pick(role)
        self.up.remove(name)
        at = self.c.kill(name)
        return "crash", at, at, f"kill -9 {role} {name}"

    def term(self, role: str) -> tuple[str, float, float, str]:
        name, role = self.pick(role)
        self.up.remove(name)
        at = self.c.terminate(name)
        return "graceful", at, at, f"SIGTERM {role} {name}"

    def freeze(self) -> tuple[str, float, float, str]:
        name, _ = self.pick("follower")
        t0 = self.c.freeze(name)
        # Frozen until its session expired and the others run its slots for a while (their
        # heartbeats say so): the fault lasts past the session, observed, not slept.
        self.c.wait_converged(set(self.up) - {name}, timeout=SESSION + 15)
        since = time.time()
        wait_until(lambda: self.c.continuous_slots() <= {
            s for s, n in checker.beats_since(self.c.records(), since).items() if n >= 10}, 20)
        t1 = self.c.thaw(name)
        return "crash", t0, t1, f"SIGSTOP {name} {t1 - t0:.1f}s"

    def zk_restart(self) -> tuple[str, float, float, str]:
        t0 = time.time()
        self.zk.stop()
        self.zk.start()
        return "graceful", t0, time.time(), "ZooKeeper restart"

    def join(self) -> tuple[str, float, float, str]:
        at = time.time()
        name = self.start()
        return "graceful", at, time.time(), f"join {name}"

    def burst(self) -> tuple[str, float, float, str]:
        t0, ops = time.time(), []
        for _ in range(3):
            choices = (["start"] if len(self.up) < len(POOL) else []) + (
                ["term", "kill"] if len(self.up) > MIN_UP else [])
            op = self.rng.choice(choices)
            if op == "start":
                ops.append(f"start {self.start()}")
                continue
            name = self.rng.choice(sorted(self.up))
            self.up.remove(name)
            if op == "kill":
                self.c.kill(name)
            else:
                self.c.terminate(name, wait=False)
            ops.append(f"{op} {name}")
        return "crash", t0, time.time(), "burst: " + ", ".join(ops)

    def faults(self) -> list[Callable[[], tuple[str, float, float, str]]]:
        out: list[Callable[[], tuple[str, float, float, str]]] = [
            self.freeze, self.zk_restart, self.burst]
        if len(self.up) > MIN_UP:
            out += [lambda: self.kill("leader"), lambda: self.kill("follower"),
                    lambda: self.term("leader"), lambda: self.term("follower")]
        if len(self.up) < len(POOL):
            out.append(self.join)
        return out


def test_soak(request: pytest.FixtureRequest, private_zk: ZooKeeperServer,
              make_cluster: ClusterFactory) -> None:
    seconds = soak_seconds(request.config)
    seed = request.config.getoption("soak_seed")
    seed = int(time.time()) if seed is None else int(seed)
    print(f"\nchaos soak: {seconds:g}s, seed {seed} (replay: --soak-seed {seed})")
    c = make_cluster(private_zk.hosts, "/soak", record_tasks(7, 5), session_timeout=SESSION)
    soak = Soak(c, private_zk, random.Random(seed))
    for _ in range(TARGET_UP):
        soak.start()
    c.wait_recovered(set(soak.up))
    c.api(soak.up[0], "/api/tasks/t0", "PATCH", {"interval": 1.0})  # an overrides znode
    c.wait_recovered(set(soak.up))
    c.take_baseline()
    deadline = time.monotonic() + seconds
    rounds = 0
    for _ in range(int(seconds) + 1):  # bounded: a round takes well over a second
        if time.monotonic() >= deadline:
            break
        rounds += 1
        if len(soak.up) < MIN_UP or (len(soak.up) < TARGET_UP and soak.rng.random() < 0.5):
            while len(soak.up) < TARGET_UP:  # top up first: each round starts converged
                soak.start()
            c.wait_recovered(set(soak.up))
        kind, t0, t1, what = soak.rng.choice(soak.faults())()
        c.wait_recovered(set(soak.up), timeout=chaos.recovery_bound(kind, SESSION) + 30)
        c.verdict(f"soak #{rounds} {what}", kind=kind, fault_start=t0, fault_end=t1,
                  stop=False).assert_ok()
    # The end: every node leaves gracefully; nothing may be left behind.
    c.wait_recovered(set(soak.up))
    end = c.recovered_at or time.time()
    c.verdict(f"soak end ({rounds} rounds, seed {seed})", kind="graceful", fault_start=end,
              fault_end=end).assert_ok()
