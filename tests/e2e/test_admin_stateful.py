"""A stateful property test of the admin API against the shared live two-node cluster.

Hypothesis drives random sequences of scale / pause / resume / add / remove / reset /
drain / undrain / rebalance, with valid and invalid values, bad bodies and headers, and
current, absent or stale versions, sent to either node. A model of the task table is kept
alongside, and after every step:

* the API never answered 5xx;
* the status is the one the model predicts: 409 exactly for a stale version or a documented
  conflict (adding a task that exists, resetting a task added at runtime), and a stale
  version's 409 says so;
* the overrides version only grows, by one per accepted change, and nothing else moves it;
* `GET /api/tasks` (from either node) equals the model;

and at the end of every example the cluster converges to the model (`wait_until`, no
sleeps): exactly the slots of unpaused tasks run, on nodes that are not drained.
Bounded and derandomized so that it is repeatable and stays well under two minutes.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from tests.cluster import Cluster
from tests.util import wait_until

pytestmark = pytest.mark.e2e

TOKEN = "stateful-token"
SEEDS = {"alpha": 2, "beta": 2}  # the shared fixture's app.toml
NODES = ("n1", "n2")
TASKS = ("alpha", "beta", "gamma", "delta", "ghost")  # gamma/delta may be added; ghost never
CONVERGE_S = 30.0
STEPS: list[str] = []  # rules run, so the test can prove it exercised something


def send(url: str, method: str = "GET", body: Any = None, *, raw: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, Any]:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Authorization", f"Bearer {TOKEN}")
    if method != "GET":
        req.add_header("Content-Type", "application/json")
    for key, value in (headers or {}).items():
        req.add_header(key, value)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            status, text = resp.status, resp.read()
    except urllib.error.HTTPError as err:
        status, text = err.code, err.read()
    assert status < 500, f"{method} {url} -> {status}: {text[:300]!r}"
    return status, json.loads(text) if text else None


@dataclass
class ModelTask:
    workerNum: int
    paused: bool = False
    source: str = "app.toml"


@dataclass
class Model:
    tasks: dict[str, ModelTask] = field(default_factory=dict)
    removed_seeds: set[str] = field(default_factory=set)
    drained: set[str] = field(default_factory=set)
    version: int = -1


version_modes = st.sampled_from(["none", "current", "stale"])
carriers = st.sampled_from(["header", "body"])
node_names = st.sampled_from(NODES)
task_names = st.sampled_from(TASKS)
worker_nums = st.one_of(st.integers(0, 3), st.sampled_from([-1, "2", 1.5, True, None, 100001]))


class AdminApiMachine(RuleBasedStateMachine):
    cluster: Cluster  # set by the test before the run
    urls: dict[str, str]

    def __init__(self) -> None:
        super().__init__()
        self.model = Model(tasks={n: ModelTask(w) for n, w in SEEDS.items()})
        self._restore()

    # -- helpers --------------------------------------------------------------------------------

    def _restore(self) -> None:
        """Back to app.toml (the cluster outlives each example): unconditional requests."""
        url = self.urls["n1"]
        _, listing = send(f"{url}/api/tasks")
        for task in listing["tasks"]:
            if task["source"] == "api":
                assert send(f"{url}/api/tasks/{task['name']}", "DELETE", {})[0] == 200
        for name in SEEDS:
            assert send(f"{url}/api/tasks/{name}/reset", "POST", {})[0] == 200
        for node in NODES:
            assert send(f"{url}/api/nodes/{node}/undrain", "POST", {})[0] == 200
        self.model.version = send(f"{url}/api/tasks")[1]["version"]

    def _versioned(self, mode: str, carrier: str, body: dict[str, Any]
                   ) -> tuple[dict[str, Any], dict[str, str], bool]:
        """The body and headers for a change based on no / the current / a stale version."""
        if mode == "none":
            return body, {}, False
        version = self.model.version
        if mode == "stale":
            version = version + 1 if version < 3 else version - 2
        if carrier == "header":
            return body, {"If-Match": f'"{version}"'}, mode == "stale"
        return {**body, "version": version}, {}, mode == "stale"

    def _change(self, node: str, method: str, path: str, body: dict[str, Any], mode: str,
                carrier: str, expect: int, *, stale_first: bool = True) -> bool:
        """Send a change, check its status against the model's prediction; True if applied.

        `expect` is the answer for a current or absent version; a stale one gets 409 first
        unless `stale_first` is off (drain checks the node before the version).
        """
        body, headers, stale = self._versioned(mode, carrier, body)
        STEPS.append(f"{method} {path} {mode}")
        if stale and (stale_first or expect < 300):
            expect = 409
        status, payload = send(self.urls[node] + path, method, body, headers=headers)
        assert status == expect, (method, path, body, headers, status, payload)
        if status == 409:
            assert ("stale version" in payload["message"]) == stale, payload
        before = self.model.version
        if status < 300:
            assert payload["version"] == before + 1, (before, payload)
            self.model.version = payload["version"]
        return status < 300

    @staticmethod
    def _valid_workers(n: Any) -> bool:
        return isinstance(n, int) and not isinstance(n, bool) and 0 <= n <= 100_000

    # -- rules ----------------------------------------------------------------------------------

    @rule(node=node_names, name=task_names, n=worker_nums, mode=version_modes, carrier=carriers)
    def scale(self, node: str, name: str, n: Any, mode: str, carrier: str) -> None:
        task = self.model.tasks.get(name)
        expect = 404 if task is None else 200 if self._valid_workers(n) else 400
        if self._change(node, "POST", f"/api/tasks/{name}/scale", {"workerNum": n}, mode,
                        carrier, expect) and task is not None:
            task.workerNum = n

    @rule(node=node_names, name=task_names, paused=st.booleans(), mode=version_modes,
          carrier=carriers)
    def pause_or_resume(self, node: str, name: str, paused: bool, mode: str,
                        carrier: str) -> None:
        task = self.model.tasks.get(name)
        action = "pause" if paused else "resume"
        if self._change(node, "POST", f"/api/tasks/{name}/{action}", {}, mode, carrier,
                        404 if task is None else 200) and task is not None:
            task.paused = paused

    @rule(node=node_names, name=st.sampled_from(["gamma", "delta", "alpha"]),
          work=st.sampled_from(["record", "record", "nosuch"]), n=worker_nums,
          mode=version_modes, carrier=carriers)
    def add(self, node: str, name: str, work: str, n: Any, mode: str, carrier: str) -> None:
        body = {"name": name, "workName": work, "workerNum": n, "interval": 0}
        if not self._valid_workers(n):
            expect = 400
        elif name in self.model.tasks:
            expect = 409
        elif work == "nosuch":
            expect = 400
        else:
            expect = 201
        if self._change(node, "POST", "/api/tasks", body, mode, carrier, expect):
            seed = name in SEEDS
            self.model.tasks[name] = ModelTask(n, source="app.toml" if seed else "api")
            self.model.removed_seeds.discard(name)

    @rule(node=node_names, name=task_names, mode=version_modes, carrier=carriers)
    def remove(self, node: str, name: str, mode: str, carrier: str) -> None:
        expect = 200 if name in self.model.tasks else 404
        if self._change(node, "DELETE", f"/api/tasks/{name}", {}, mode, carrier, expect):
            del self.model.tasks[name]
            if name in SEEDS:
                self.model.removed_seeds.add(name)

    @rule(node=node_names, name=task_names, mode=version_modes, carrier=carriers)
    def reset(self, node: str, name: str, mode: str, carrier: str) -> None:
        if name in SEEDS:
            expect = 200
        elif name in self.model.tasks:
            expect = 409  # added at runtime: nothing to reset it to
        else:
            expect = 404
        if self._change(node, "POST", f"/api/tasks/{name}/reset", {}, mode, carrier, expect) \
                and name in SEEDS:
            self.model.tasks[name] = ModelTask(SEEDS[name])
            self.model.removed_seeds.discard(name)

    @rule(node=node_names, which=st.sampled_from([*NODES, "ghost"]), drained=st.booleans(),
          mode=version_modes, carrier=carriers)
    def drain_or_undrain(self, node: str, which: str, drained: bool, mode: str,
                         carrier: str) -> None:
        expect = 404 if drained and which == "ghost" else 200
        action = "drain" if drained else "undrain"
        if self._change(node, "POST", f"/api/nodes/{which}/{action}", {}, mode, carrier,
                        expect, stale_first=False) and which in NODES:
            (self.model.drained.add if drained else self.model.drained.discard)(which)

    @rule(node=node_names, mode=version_modes, carrier=carriers)
    def rebalance(self, node: str, mode: str, carrier: str) -> None:
        self._change(node, "POST", "/api/rebalance", {}, mode, carrier, 202)

    @rule(node=node_names, name=task_names, bad=st.sampled_from([
        ("raw", b"{not json"), ("raw", b'{"workerNum": 1e400}'), ("raw", b"[1]"),
        ("raw", b'{"workerNum": NaN}'), ("raw", b"\xff\xfe"), ("ctype", "text/plain"),
        ("ifmatch", "yesterday"), ("ifmatch", ""), ("field", "workernum")]))
    def bad_request(self, node: str, name: str, bad: tuple[str, Any]) -> None:
        """Malformed requests change nothing and get a 4xx (never a 409 or a 5xx)."""
        kind, value = bad
        STEPS.append(f"bad {kind}")
        url = f"{self.urls[node]}/api/tasks/{name}/scale"
        if kind == "raw":
            status, payload = send(url, "POST", raw=value)
        elif kind == "ctype":
            status, payload = send(url, "POST", raw=b'{"workerNum": 1}',
                                   headers={"Content-Type": value})
        elif kind == "ifmatch":
            status, payload = send(url, "POST", {"workerNum": 1}, headers={"If-Match": value})
        else:
            status, payload = send(url, "POST", {"workerNum": 1, value: 1})
        assert status == (415 if kind == "ctype" else 400), (bad, status, payload)
        assert payload["error"] and "\n" not in payload["message"]

    # -- invariants -----------------------------------------------------------------------------

    @invariant()
    def listing_matches_the_model(self) -> None:
        for node in NODES:
            status, listing = send(f"{self.urls[node]}/api/tasks")
            assert status == 200
            assert listing["version"] == self.model.version, (listing["version"], self.model)
            got = {t["name"]: (t["workerNum"], t["paused"], t["source"])
                   for t in listing["tasks"]}
            want = {n: (t.workerNum, t.paused, t.source) for n, t in self.model.tasks.items()}
            assert got == want

    def teardown(self) -> None:
        wait_until(self._converged, CONVERGE_S,
                   message=lambda: f"not converged to {self.model}: {self.cluster.view()}")

    def _converged(self) -> bool:
        view = self.cluster.view()
        runnable = set(NODES) - self.model.drained
        want = {f"{name}/{i}" for name, t in self.model.tasks.items() if not t.paused
                for i in range(t.workerNum)} if runnable else set()
        return set(view["owners"]) == want and set(view["owners"].values()) <= runnable


def test_admin_api_state_machine(cluster: Cluster):
    STEPS.clear()
    urls = {n["id"]: n["admin_url"] for n in cluster.view()["nodes"]}
    machine = type("Machine", (AdminApiMachine,), {"cluster": cluster, "urls": urls})
    run_state_machine_as_test(machine, settings=settings(
        max_examples=10, stateful_step_count=15, derandomize=True, deadline=None,
        database=None, suppress_health_check=list(HealthCheck)))
    print(f"{len(STEPS)} steps: {sorted(set(s.split()[0] + ' ' + s.split()[1] for s in STEPS))}")
    assert len(STEPS) >= 50, STEPS
