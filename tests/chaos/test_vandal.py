"""The vandal: while a cluster runs the recording handlers, a seeded generator writes wrong
shapes, random bytes, empty and oversized data into every znode kind and deletes containers,
as `zkCli.sh`, an older version or a bug could. Invariants: no slot runs twice, no node exits
or crashes its sync loop, every slot runs again within seconds once the vandal stops, and
the valid assignment generations only grow."""

from __future__ import annotations

import json
import random
import threading
import time
import zlib
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import KazooException

from tests.chaos.harness import ChaosCluster, record_tasks
from tests.chaos.test_faults import SESSION, add_override, boot
from tests.util import wait_until
from xconsumer.codecs import Corrupt, decode_assignment

VANDAL_SEED = 20261129
VANDAL_STEPS = 60
WRONG_SHAPES: list[Any] = [
    {"nodes": "x", "generation": "y"}, {"nodes": []}, {"nodes": {"a": {"t0": ["x"]}}},
    {"id": "zz", "handlers": 5}, {"tasks": []}, {"tasks": {"t0": {"workerNum": -1}}},
    {"generation": True}, {"generation": 10**30}, [1, 2], "not json", None, 0, {},
    {"tasks": {"t0": {"added": True}}}, {"drained": "n1"}, {"rebalance": "x"},
    {"node": 5, "generation": "g"}, {"generation": 3, "nodes": {"n1": {"t0": [0]},
                                                                "n2": {"t0": [0]}}},
]


def payload(rng: random.Random) -> bytes:
    kind = rng.choice(["shape", "bytes", "empty", "oversized", "bomb", "deep"])
    if kind == "shape":
        return json.dumps(rng.choice(WRONG_SHAPES)).encode()
    if kind == "bytes":
        return bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 64)))
    if kind == "empty":
        return b""
    if kind == "oversized":
        return b"[" + b"0," * 300_000 + b"0]"
    if kind == "bomb":
        return b"XCZ1" + zlib.compress(b" " * (80 * 1024 * 1024), 9)
    return b"[" * 50_000


class GenerationLog:
    """Every generation of a *valid* assignment document seen through a data watch."""

    def __init__(self, client: KazooClient, path: str) -> None:
        self.seen: list[int] = []
        self.active = True
        self._lock = threading.Lock()
        client.DataWatch(path, self._on)

    def _on(self, data: bytes | None, stat: Any, *_: Any) -> bool:
        doc = decode_assignment(data, "assignment") if stat is not None else None
        if isinstance(doc, dict):
            with self._lock:
                self.seen.append(doc["generation"])
        return self.active

    def problems(self) -> list[str]:
        with self._lock:
            seen = list(self.seen)
        return [f"generation went back {a} -> {b}" for a, b in zip(seen, seen[1:], strict=False)
                if b < a]


def vandalise(c: ChaosCluster, rng: random.Random) -> list[str]:
    zk, p = c.client, c.paths
    done: list[str] = []
    for _ in range(VANDAL_STEPS):
        target = rng.choice(["assignment", "overrides", "member", "owner", "done", "left",
                             "plan", "name", "delete"])
        data = payload(rng)
        try:
            if target == "assignment":
                zk.set(p.assignment, data)
            elif target == "overrides":
                if zk.exists(p.overrides) is None:
                    zk.create(p.overrides, data)
                else:
                    zk.set(p.overrides, data)
            elif target == "member":
                children = zk.get_children(p.nodes)
                if children:
                    zk.set(p.node(rng.choice(children)), data)
            elif target == "owner":
                tasks = zk.get_children(p.owners)
                slots = zk.get_children(p.owner_task(tasks[0])) if tasks else []
                if slots:
                    zk.set(f"{p.owner_task(tasks[0])}/{rng.choice(slots)}", data)
            elif target == "done":
                zk.create(f"{p.done}/t0/{rng.choice(['7', 'x', '99999'])}", data[:1000],
                          makepath=True)
            elif target == "plan":  # a node's own, a departed one's, or a plan for no one
                name = rng.choice(["n1", "n2", "n3", "ghost"])
                if zk.exists(p.plan(name)) is None:
                    zk.create(p.plan(name), data, makepath=True)
                else:
                    zk.set(p.plan(name), data)
            elif target == "name":  # a live node's claim, or one made by hand
                name = rng.choice(["n1", "n2", "ghost"])
                if zk.exists(p.name_claim(name)) is None:
                    zk.create(p.name_claim(name), data, makepath=True)
                else:
                    zk.set(p.name_claim(name), data)
            elif target == "left":
                zk.create(p.left_marker(rng.choice(["n1", "n2", "ghost"])), data[:1000],
                          makepath=True)
            else:
                zk.delete(rng.choice([p.left, f"{p.done}/t0", p.owner_task("gone"), p.done,
                                      p.plan("n2"), p.plans, p.names]),
                          recursive=rng.random() < 0.5)
        except KazooException as exc:
            done.append(f"{target}: {type(exc).__name__}")
            continue
        done.append(f"{target}: {len(data)} B")
    return done


def test_vandal(zk_hosts: str, zk_root: str, make_cluster: Any) -> None:
    c = make_cluster(zk_hosts, zk_root, record_tasks(6, 3), session_timeout=SESSION)
    names = ["n1", "n2", "n3"]
    boot(c, names)
    assert c.monitor is not None
    c.monitor.stop()  # it reads a corrupt write as a generation going back; see GenerationLog
    c.monitor = None
    gens = GenerationLog(c.client, c.paths.assignment)
    rng = random.Random(VANDAL_SEED)
    t0 = time.time()
    log = vandalise(c, rng)
    t1 = time.time()
    # Members rewrite their own data: every node is listed again.
    wait_until(lambda: set(c.member_names()) == set(names), 10)
    # An admin write repairs the overrides (their last valid version stays in force before).
    # Not a rebalance: that re-deals from scratch, and on a cluster formed by joins it would
    # move every slot, a cost of the repair, not of the vandalism.
    add_override(c, "n2")
    wait_until(lambda: isinstance(decode_assignment(c.client.get(c.paths.assignment)[0], "a"),
                                  dict), 10)
    c.wait_recovered(set(names), timeout=30)
    problems = gens.problems()
    for node in c.procs:
        text = node.log()
        # Bad data is decoded, never raised: not one pass may fail on it.
        failures = text.count("cluster sync failed") + text.count("Traceback")
        if failures:
            problems.append(f"{node.name}: {failures} failed passes or tracebacks")
        if not node.alive():
            problems.append(f"{node.name} exited during the vandalism")
    view = c.view()
    left_corrupt = [x for x in view["corrupt"] if x["kind"] in ("assignment", "overrides",
                                                                 "member")]
    if left_corrupt:
        problems.append(f"still corrupt after the repair: {left_corrupt}")
    gens.active = False
    print(f"chaos vandal: seed {VANDAL_SEED}, {len(log)} writes in {t1 - t0:.1f}s, "
          f"generations {gens.seen[0]}..{gens.seen[-1]}")
    figs = c.verdict("vandal", kind="graceful", fault_start=t0, fault_end=t1,
                     extra={"writes": len(log)}, problems=problems)
    figs.assert_ok()
    assert not isinstance(decode_assignment(c.client.get(c.paths.assignment)[0], "a"), Corrupt)
