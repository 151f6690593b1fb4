"""Correct under faults: real node processes on a real ZooKeeper, one fault per test.

After every fault the checkers (tests/checker.py over the handlers' own records,
tests/chaos/checker.py over ZooKeeper) prove: no slot ran twice at once (beyond the
documented bound for a frozen process), every slot ran again within the documented time,
nothing leaked (owner znodes, handler threads, non-zero exits), and no persistent data was
lost or went back. Figures are printed (`pytest -s`) and written to chaos-results.jsonl (see
conftest.py). A fault or steady state that must last is waited out on what proves it lasted
(heartbeats, lease renewals), never slept.
"""

from __future__ import annotations

import random
import time
from typing import Any

import pytest

from tests import checker
from tests.chaos import checker as chaos
from tests.chaos.conftest import ClusterFactory
from tests.chaos.harness import ChaosCluster, record_tasks
from tests.util import observe_until, wait_until
from xconsumer.zkserver import ZooKeeperEnsemble, ZooKeeperServer

pytestmark = [pytest.mark.e2e, pytest.mark.chaos]

SESSION = 2.0
TASKS = record_tasks(7, 5)  # 12 slots
NODES = ["n1", "n2", "n3", "n4"]
# Heartbeats (one per 50 ms at most, see checker.beats_since) that stand for "a while": the new
# owners of a frozen node's slots run this long before it wakes.
STEADY_BEATS = 10
CHURN_SEED = 20240611
CHURN_STEPS = 8


def boot(cluster: ChaosCluster, names: list[str]) -> None:
    for name in names:
        cluster.start_node(name)
    cluster.wait_recovered(set(names))
    cluster.take_baseline()


def add_override(cluster: ChaosCluster, via: str) -> None:
    """A runtime change that alters nothing that runs, so the overrides znode exists and its
    survival through the fault can be checked."""
    cluster.api(via, "/api/tasks/t0", "PATCH", {"interval": 1.0})


def timeout_for(kind: str) -> float:
    # Wait well past the bound, so a slow recovery is measured and reported, not timed out.
    return chaos.recovery_bound(kind, SESSION) + 20.0


# -- 1. kill -9 ---------------------------------------------------------------------------------
@pytest.mark.parametrize("role", ["leader", "follower"])
def test_kill9(role: str, zk_hosts: str, zk_root: str, make_cluster: ClusterFactory) -> None:
    c = make_cluster(zk_hosts, zk_root, TASKS, session_timeout=SESSION)
    boot(c, NODES)
    victim = c.leader() if role == "leader" else c.followers()[1]
    at = c.kill(victim)
    view = c.wait_recovered(set(NODES) - {victim}, timeout=timeout_for("crash"))
    assert view["leader"] != victim
    c.verdict(f"kill -9 {role}", kind="crash", fault_start=at, fault_end=at).assert_ok()


# -- 2. SIGTERM -----------------------------------------------------------------------------------
@pytest.mark.parametrize("role", ["leader", "follower"])
def test_sigterm(role: str, zk_hosts: str, zk_root: str, make_cluster: ClusterFactory) -> None:
    c = make_cluster(zk_hosts, zk_root, TASKS, session_timeout=SESSION)
    boot(c, NODES)
    victim = c.leader() if role == "leader" else c.followers()[1]
    at = c.terminate(victim)  # waits for the exit; verdict() checks the code is 0
    c.wait_recovered(set(NODES) - {victim}, timeout=timeout_for("graceful"))
    c.verdict(f"SIGTERM {role}", kind="graceful", fault_start=at, fault_end=at).assert_ok()


# -- 3. SIGSTOP ------------------------------------------------------------------------------------
def freeze_follower(c: ChaosCluster, silent_zk: ZooKeeperServer | None = None
                    ) -> None:
    """SIGSTOP a follower until its session expired and its slots run elsewhere, then SIGCONT;
    its handlers must stop within FROZEN_OVERLAP_BOUND of waking. With `silent_zk`, that server
    is paused around the wake-up, so the woken node cannot learn from ZooKeeper that its
    session expired: only its own lease can stop its handlers in time."""
    boot(c, NODES)
    victim = c.followers()[0]
    pid = c.proc(victim).pid

    def frozen_runs() -> list[checker.Run]:
        return [r for r in checker.runs_from_records(c.records(), killed={}, until=time.time())
                if r.pid == pid and r.start < t0]

    t0 = c.freeze(victim)
    # Its session expires and the others take its slots while it sleeps.
    c.wait_converged(set(NODES) - {victim}, timeout=SESSION + 15)
    taken = time.time() - t0
    # It stays frozen until the new owners have run its slots for a while (their own
    # heartbeats say so), so that anything it still runs on waking overlaps a live run.
    moved, since = {r.slot for r in frozen_runs()}, time.time()
    wait_until(lambda: all(checker.beats_since(c.records(), since).get(s, 0) >= STEADY_BEATS
                           for s in moved), 20,
               message=lambda: f"{sorted(moved)} not running elsewhere after the freeze")
    problems: list[str] = []
    if silent_zk is not None:
        silent_zk.pause()
    t1 = c.thaw(victim)
    try:
        if silent_zk is not None:
            # The server stays silent until the woken node's handlers have stopped: only its
            # lease can have stopped them.
            wait_until(lambda: all(r.stopped for r in frozen_runs()), 5,
                       message="the woken node's handlers did not stop with ZooKeeper silent")
    except AssertionError as exc:
        problems.append(str(exc).splitlines()[0])
    finally:
        if silent_zk is not None:
            silent_zk.resume()
    wait_until(lambda: all(r.stopped for r in frozen_runs()), 10,
               message="the woken node's handlers did not stop")
    slowest = max((r.end - t1 for r in frozen_runs()), default=0.0)
    if slowest > chaos.FROZEN_OVERLAP_BOUND:
        problems.append(f"a handler of the woken node stopped {slowest * 1e3:.0f} ms after "
                        f"SIGCONT, over the {chaos.FROZEN_OVERLAP_BOUND * 1e3:.0f} ms bound")
    c.wait_recovered(set(NODES), timeout=timeout_for("crash"))
    what = " (ZooKeeper silent on wake)" if silent_zk is not None else ""
    c.verdict(f"SIGSTOP follower past its session{what}", kind="crash", fault_start=t0,
              fault_end=t1, problems=problems,
              extra={"frozen_s": round(t1 - t0, 2), "moved_while_frozen_s": round(taken, 2),
                     "slowest_stop_after_wake_ms": round(slowest * 1e3, 1)}
              ).assert_ok()


def test_sigstop_follower(zk_hosts: str, zk_root: str, make_cluster: ClusterFactory) -> None:
    freeze_follower(make_cluster(zk_hosts, zk_root, TASKS, session_timeout=SESSION))


def test_sigstop_follower_zookeeper_silent_on_wake(private_zk: ZooKeeperServer,
                                                   make_cluster: ClusterFactory) -> None:
    c = make_cluster(private_zk.hosts, "/chaos", TASKS, session_timeout=SESSION)
    freeze_follower(c, silent_zk=private_zk)


# -- 4. ZooKeeper restart --------------------------------------------------------------------------
def test_zookeeper_restart(private_zk: ZooKeeperServer, make_cluster: ClusterFactory) -> None:
    c = make_cluster(private_zk.hosts, "/chaos", TASKS, session_timeout=SESSION)
    names = NODES[:3]
    for name in names:
        c.start_node(name)
    c.wait_recovered(set(names))
    add_override(c, names[0])
    c.wait_recovered(set(names))
    c.take_baseline()
    members = {n["id"]: n["znode"] for n in c.view()["nodes"]}
    t0 = time.time()
    private_zk.stop()  # SIGTERM, data dir kept
    private_zk.start()  # same port, same data
    t1 = time.time()
    view = c.wait_recovered(set(names), timeout=timeout_for("graceful"))
    kept = sum(1 for n in view["nodes"] if members.get(n["id"]) == n["znode"])
    # The sessions survive a restart (README), so nothing has to wait for an expiry.
    lost = [] if kept == len(names) else [f"sessions lost in the restart: {kept}/{len(names)} "
                                          f"kept"]
    c.verdict("ZooKeeper restart", kind="graceful", fault_start=t0, fault_end=t1, problems=lost,
              extra={"zk_down_s": round(t1 - t0, 2), "sessions_kept": f"{kept}/{len(names)}"}
              ).assert_ok()


# A leaving node waits for ZooKeeper no longer than its session could live, and the server's
# restart here starts a new JVM. With a 2 s session, a stress run (two busy loops beside the
# suite, load 3.7) had the node give up first: it exited 2.32 s after SIGTERM and left its
# znodes to the session expiry.
OUTAGE_SESSION = 4.0


def test_sigterm_during_zookeeper_outage(private_zk: ZooKeeperServer,
                                         make_cluster: ClusterFactory) -> None:
    """SIGTERM reaches a node while the server is down for a moment (a restart): the leave
    must still be graceful once ZooKeeper is back, not left to the session expiry."""
    c = make_cluster(private_zk.hosts, "/chaos", TASKS, session_timeout=OUTAGE_SESSION)
    names = NODES[:3]
    for name in names:
        c.start_node(name)
    c.wait_recovered(set(names))
    c.take_baseline()
    victim = c.followers()[0]
    t0 = time.time()
    private_zk.stop()
    at = c.terminate(victim, wait=False)
    # The node must stop its slots and wait for ZooKeeper (within its shutdown deadline) to
    # delete its znodes; a clean exit that left them to the session expiry would keep the
    # next owners waiting. Let it see the outage before the server returns.
    wait_until(lambda: "ZooKeeper unreachable while leaving" in c.nodes[victim].log(), 10)
    private_zk.start()
    t1 = time.time()
    c.exit_codes[c.nodes[victim].pid] = c.nodes[victim].proc.wait(30)
    exited = time.time() - at
    # What the leaver left behind, right after it exited (its session, restored by the
    # restart, would otherwise expire about a session timeout from now).
    view = wait_until(c.view, 10)
    leftovers = [f"member {n['znode']}" for n in view["nodes"] if n["id"] == victim] + [
        f"owners/{slot}" for slot, node in view["owners"].items() if node == victim]
    c.wait_recovered(set(names) - {victim}, timeout=timeout_for("crash"))
    problems = [f"{victim} exited ({exited:.2f}s after SIGTERM) leaving {', '.join(leftovers)} "
                f"to its session expiry"] if leftovers else []
    c.verdict("SIGTERM during ZooKeeper outage", kind="crash", fault_start=t0, fault_end=t1,
              problems=problems, extra={"exit_after_sigterm_s": round(exited, 2),
                                        "leftovers": len(leftovers)}).assert_ok()


# -- 5. loss of one ensemble member ----------------------------------------------------------------
# The session here is 4 s, not 2: when the member that leaves is the ensemble's leader, no
# member serves for ~0.4-1.1 s while another is elected. A node's lease ends 2/3 of the
# session after its last renewal (renewed every 1/6 session, and at once on reconnecting),
# so a 2 s session leaves it too little margin and every slot would stop and restart; the
# README states the rule (session timeout comfortably above the ensemble's election time).
ENSEMBLE_SESSION = 4.0


@pytest.mark.parametrize("member", ["leader", "follower"])
def test_ensemble_member_loss(member: str, ensemble: ZooKeeperEnsemble,
                              make_cluster: ClusterFactory) -> None:
    c = make_cluster(ensemble.hosts, "/chaos", TASKS, session_timeout=ENSEMBLE_SESSION)
    names = NODES[:3]
    for name in names:
        c.start_node(name)
    c.wait_recovered(set(names))
    add_override(c, names[0])
    c.wait_recovered(set(names))
    c.take_baseline()
    lead = ensemble.leader()
    assert lead is not None
    victim = lead if member == "leader" else next(
        m for m in ensemble.members if m is not lead)
    steady_since = time.time()
    victim.stop()
    t1 = time.time()
    # How long the ensemble could not serve: a new leader must be elected when it was the
    # leader that left (the figure that decides whether the nodes' leases outlive it).
    serving = wait_until(lambda: ensemble.leader(), 30, interval=0.01)
    serving_at = time.time()
    no_leader_s = serving_at - steady_since
    unread = []

    def still_converged() -> str | None:
        try:
            ok = c.converged(set(names))
        except Exception as exc:  # noqa: BLE001 - our own client may be reconnecting too
            unread.append(type(exc).__name__)
            return None
        return None if ok else f"view not converged at {time.time():.3f}: {c.view()}"

    def renewed_since_serving() -> bool:
        """Every node renewed its lease with a request sent after the ensemble served again:
        its session is alive and proven, so neither it nor the lease can still run out
        because of this fault. A lease ends 2/3 of the session after its request was sent."""
        for name in names:
            asked = time.time()  # before the reply: the lease end estimated low, never high
            remaining = c.api(name, "/api/node")["lease_remaining"]
            if asked + remaining <= serving_at + ENSEMBLE_SESSION * 2 / 3:
                return False
        return True

    # Run one member short until that is proven, checking the view all along.
    problems = observe_until(renewed_since_serving, 30, check=still_converged,
                             message="a node did not renew its lease after the member loss")
    # A handler the lease stopped meanwhile would have a stop (and a new start) record by
    # the time every slot has beaten again.
    proven = time.time()
    wait_until(lambda: c.continuous_slots() <= set(checker.beats_since(c.records(), proven)),
               10, message="a slot stopped beating after the member loss")
    c.wait_recovered(set(names), timeout=5)
    changes = checker.stopped_or_restarted_since(c.records(), steady_since, time.time())
    problems = problems[:5] + [f"slot stopped or started with a quorum up: {x}"
                               for x in changes[:20]]
    c.verdict(f"ensemble {member} member lost", kind="graceful", fault_start=steady_since,
              fault_end=t1, problems=problems,
              extra={"zk_stop_s": round(t1 - steady_since, 2),
                     "zk_serving_again_s": round(no_leader_s, 2),
                     "zk_leader": f"member {victim.my_id} -> {serving.my_id}",
                     "slot_changes": len(changes), "unreadable_polls": len(unread)}
              ).assert_ok()


# -- 6. rapid joins and leaves ---------------------------------------------------------------------
def test_churn(zk_hosts: str, zk_root: str, make_cluster: ClusterFactory) -> None:
    c = make_cluster(zk_hosts, zk_root, TASKS, session_timeout=SESSION)
    pool = ["n1", "n2", "n3", "n4", "n5"]
    up = ["n1", "n2", "n3"]
    boot(c, up)
    rng = random.Random(CHURN_SEED)
    ops: list[str] = []
    t0 = time.time()
    for _ in range(CHURN_STEPS):
        choices = (["start"] if len(up) < len(pool) else []) + (
            ["terminate", "kill"] if len(up) > 1 else [])
        op = rng.choice(choices)
        if op == "start":
            name = rng.choice(sorted(set(pool) - set(up)))
            old = c.nodes.get(name)
            if old is not None:  # a leave still in progress must end before the name returns
                old.proc.wait(30)
            c.start_node(name)
            up.append(name)
        else:
            name = rng.choice(sorted(up))
            up.remove(name)
            if op == "kill":
                c.kill(name)
            else:
                c.terminate(name, wait=False)
        ops.append(f"{op} {name}")
    t1 = time.time()
    print(f"chaos churn: seed {CHURN_SEED}: {', '.join(ops)}")
    c.wait_recovered(set(up), timeout=timeout_for("crash"))
    c.verdict("churn (8 steps)", kind="crash", fault_start=t0, fault_end=t1,
              extra={"ops": " / ".join(ops), "churn_s": round(t1 - t0, 2)}).assert_ok()


# -- 7. a handler that never stops during a rebalance ----------------------------------------------
def test_stubborn_handler_keeps_its_slot(zk_hosts: str, zk_root: str,
                                         make_cluster: ClusterFactory) -> None:
    c = make_cluster(zk_hosts, zk_root, record_tasks(6), session_timeout=SESSION)
    names = ["n1", "n2", "n3"]
    for name in names:
        c.start_node(name)
    c.wait_recovered(set(names))
    # Added once every node is in: a stubborn slot dealt during the joins would already be
    # stuck on the first node, before the fault this test is about.
    stub = {"name": "stub", "workName": "stubborn", "workerNum": 1, "stop_timeout": 1}
    c.api(names[0], "/api/tasks", "POST", stub)
    c.tasks.append(stub)
    c.wait_recovered(set(names))
    c.take_baseline()
    holder = c.view()["owners"]["stub/0"]
    holder_pid = c.proc(holder).pid
    t0 = time.time()
    c.api(holder, f"/api/nodes/{holder}/drain", "POST")
    # The plan moves the slot; the old handler ignores the stop and keeps the owner znode.
    heir = wait_until(lambda: next((n for n, slots in c.view()["assignment"].items()
                                    if {"task": "stub", "slot": 0} in slots and n != holder),
                                   None), 10)
    wait_until(lambda: any(s["task"] == "stub" and s["state"] == "stuck"
                           for s in c.api(holder, "/api/node")["slots"]), 15,
               message="the stubborn slot was never reported stuck")

    def held() -> str | None:
        owner = c.view()["owners"].get("stub/0")
        elsewhere = [r for r in c.records() if r["task"] == "stub" and r["e"] == "start"
                     and r["pid"] != holder_pid]
        if owner != holder or elsewhere:
            return f"stub/0 owned by {owner}, started elsewhere: {elsewhere}"
        return None

    # Stuck for a while longer: the slot must stay where it runs through at least two of the
    # heir's periodic reconcile passes (reconcile_interval 1 s in tests/cluster.py), i.e. 2 s,
    # which 40 heartbeats of one healthy slot prove (see checker.beats_since).
    stuck_at = time.time()
    problems = observe_until(
        lambda: max(checker.beats_since(c.records(), stuck_at).values(), default=0) >= 40,
        30, check=held, message="the healthy slots stopped beating")
    heir_state = next(s["state"] for s in c.api(heir, "/api/node")["slots"]
                      if s["task"] == "stub")
    c.release.touch()
    released = time.time()
    started = wait_until(lambda: next((r["t"] for r in c.records() if r["task"] == "stub"
                                       and r["e"] == "start" and r["node"] == heir), None), 15)
    c.wait_recovered(set(names), timeout=timeout_for("graceful"))
    problems = problems[:5]
    if heir_state != "waiting":
        problems.append(f"{heir} was {heir_state!r} while the slot was held, not waiting")
    c.verdict("stubborn handler in rebalance", kind="graceful", fault_start=t0, fault_end=t0,
              problems=problems,
              extra={"stuck_held_s": round(released - t0, 2), "heir_state_while_held": heir_state,
                     "heir_start_after_release_ms": round((started - released) * 1e3, 1)}
              ).assert_ok()


# -- 8. a handler that always raises ---------------------------------------------------------------
def test_flaky_handler_is_retried_with_backoff(zk_hosts: str, zk_root: str,
                                               make_cluster: ClusterFactory) -> None:
    backoff, cap = 0.2, 0.8
    tasks = [*record_tasks(8), {"name": "flaky", "workName": "flaky", "workerNum": 1,
                                "retry_backoff": backoff, "retry_backoff_max": cap}]
    c = make_cluster(zk_hosts, zk_root, tasks, session_timeout=SESSION)
    names = ["n1", "n2", "n3"]
    boot(c, names)
    t0 = time.time()
    owner = c.view()["owners"]["flaky/0"]
    pid = c.proc(owner).pid
    # The failures of the runner that holds the slot now (it may have moved during boot).
    began = next(s["started_at"] for s in c.api(owner, "/api/node")["slots"]
                 if s["task"] == "flaky")

    def fails() -> list[dict[str, Any]]:
        return [r for r in c.records() if r["e"] == "fail" and r["pid"] == pid
                and r["t"] >= began]

    wait_until(lambda: len(fails()) >= 7, 20, message=lambda: f"fails: {len(fails())}")
    t1 = time.time()
    problems = []
    times = [r["t"] for r in fails()]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    expect = [min(backoff * 2 ** i, cap) for i in range(len(gaps))]
    for i, (gap, want) in enumerate(zip(gaps, expect, strict=True)):
        # Never early; late only by scheduling, which a loaded machine stretches: the upper
        # bound only has to tell the capped backoff from a missing cap (1.6, 3.2, 6.4 s).
        if not want * 0.95 <= gap <= 2 * want + 1.0:
            problems.append(f"retry {i + 1} came {gap:.3f}s after the previous failure, "
                            f"backoff is {want:.2f}s")
    others = [r for r in c.records() if r["e"] == "fail" and r["pid"] != pid and r["t"] > t0]
    if others:
        problems.append(f"the flaky slot also ran elsewhere: {others[:3]}")
    if c.view()["owners"].get("flaky/0") != owner or not c.proc(owner).alive():
        problems.append(f"{owner} lost the flaky slot or died")
    # Healthy slots: not stopped, not restarted, still beating.
    try:
        wait_until(lambda: c.continuous_slots() <= set(checker.beats_since(c.records(), t1)),
                   10)
    except AssertionError:
        beating = set(checker.beats_since(c.records(), t1))
        problems.append(f"no heartbeat since the failures: "
                        f"{sorted(c.continuous_slots() - beating)}")
    problems += [f"healthy slot disturbed: {x}"
                 for x in checker.stopped_or_restarted_since(c.records(), t0, time.time())]
    c.wait_recovered(set(names), timeout=5)
    c.verdict("flaky handler", kind="graceful", fault_start=t0, fault_end=t0, problems=problems,
              extra={"fail_records": len(times),
                     "retry_gaps_s": [round(g, 2) for g in gaps]}).assert_ok()
