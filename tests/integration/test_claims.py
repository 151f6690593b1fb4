"""Batched claims (Runtime._claim): a generation's free slots get their owner znodes in one
transaction; a slot whose previous owner still holds its znode is left out and waits for
it as always. Real ZooKeeper, a real in-process node."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import replace

import pytest
from kazoo.client import KazooClient, TransactionRequest
from kazoo.exceptions import ConnectionLoss

import xconsumer.node as node_module
from tests.cluster import RECORD_WORKS
from tests.conftest import _client
from tests.integration.test_node import make_config, running, start
from tests.util import first_args, wait_until
from xconsumer.assignment import Slot
from xconsumer.config import TaskConfig
from xconsumer.lease import Lease
from xconsumer.paths import Paths
from xconsumer.runtime import Runtime
from xconsumer.slot import SlotRunner
from xconsumer.slotthreads import PrestartBudget, SlotThreads
from xconsumer.works import discover
from xconsumer.zk import dumps

TASK = '[[task]]\nname = "r"\nworkName = "record"\nworkerNum = 6\nstop_timeout = 2\n'
ALL = {f"r/{i}" for i in range(6)}


def fences(node) -> dict[str, int]:
    return {f"{s.task}/{s.slot}": s.fence for s in node.runtime.statuses()
            if s.state == "running"}


def test_free_slots_are_claimed_in_one_transaction(zk: KazooClient, zk_hosts, zk_root, nodes,
                                                   record) -> None:
    a = start(nodes, make_config(zk_hosts, zk_root, TASK), "a")
    wait_until(lambda: running(a) == ALL, 15)
    paths = Paths(zk_root, "it")
    stats = [zk.exists(paths.owner("r", i)) for i in range(6)]
    czxids = {stat.czxid for stat in stats}
    assert len(czxids) == 1  # one transaction made them all
    assert {stat.ephemeralOwner for stat in stats} == {a._session_id()}  # ephemeral, ours
    assert set(fences(a).values()) == czxids  # and each runner knows it as its fence


def test_a_held_slot_is_left_out_of_the_claim_and_waits_for_its_owner(
        zk: KazooClient, zk_hosts, zk_root, nodes, record) -> None:
    paths = Paths(zk_root, "it")
    other = _client(zk_hosts)  # another session holds r/2, as an owner still ending would
    other.start()
    other.create(paths.owner("r", 2), dumps({"node": "old"}), ephemeral=True, makepath=True)
    a = start(nodes, make_config(zk_hosts, zk_root, TASK), "a")
    # (a runner is "starting" until its thread reaches the watch: wait for it too)
    wait_until(lambda: running(a) == ALL - {"r/2"} and [
        s.state for s in a.runtime.statuses() if s.slot == 2] == ["waiting"], 15,
        message=lambda: str(a.runtime.statuses()))
    assert len(set(fences(a).values())) == 1
    other.stop()
    other.close()
    wait_until(lambda: running(a) == ALL, 15)
    held = fences(a)
    stat = zk.exists(paths.owner("r", 2))  # made by the slot's own thread, once free
    assert held["r/2"] == stat.czxid != held["r/0"]
    assert stat.ephemeralOwner == a._session_id()


def _runtime(zk: KazooClient, root: str) -> Runtime:
    lease = Lease(lambda: 600.0)
    lease.renew(lease.now())
    return Runtime(node="a", client=zk, paths=Paths(root, "it"), lease=lease,
                   registry=discover(RECORD_WORKS), session_id=lambda: zk.client_id[0],
                   on_change=lambda: None)


# Found by review: ZooKeeper names one held slot per refused transaction, so dropping one
# and sending the rest again cost one transaction per held slot (N^2 creates). A node's
# first claim after it joined (its slots come from live nodes) asks before it creates: one
# transaction, of the free slots only.
@pytest.mark.parametrize("first", [True, False], ids=["joining", "later"])
def test_held_slots_cost_at_most_two_claiming_transactions(zk: KazooClient, zk_hosts,
                                                           zk_root, record, monkeypatch,
                                                           first: bool) -> None:
    n = 60
    paths = Paths(zk_root, "it")
    other = _client(zk_hosts)
    other.start()
    for i in range(2, n):  # held by their previous owner: only r/0 and r/1 are free
        other.create(paths.owner("r", i), b"{}", ephemeral=True, makepath=True)
    commits: list[int] = []
    real = TransactionRequest.commit_async

    def counting(self):
        commits.append(len(self.operations))
        return real(self)
    monkeypatch.setattr(TransactionRequest, "commit_async", counting)
    rt = _runtime(zk, zk_root)
    if not first:
        rt._look_first = False  # as after the node's first claim
    stats = first_args(monkeypatch, zk, "exists_async")
    task = TaskConfig(name="r", work_name="record", worker_num=n)
    try:
        rt.apply({Slot("r", i): task for i in range(n)}, 1)
        assert commits == ([2] if first else [n, 2])
        owners = [p for p in stats if p.startswith(paths.owner_task("r"))]
        # One round of stats, and the probe sent behind each transaction.
        assert len(owners) == n + len(commits)
        wait_until(lambda: {s.index for s in rt.running_slots()} >= {0, 1}, 10)
        assert len({r.fence for r in rt.runners() if r.slot.index < 2}) == 1
    finally:
        rt.stop_all(time.monotonic() + 5)
        other.stop()
        other.close()


def test_a_lone_slot_of_a_new_task_makes_the_parent_from_its_thread(
        zk: KazooClient, zk_root, record) -> None:
    """One slot is claimed by its own thread (no transaction for one create). With no
    owners/<task> yet, the thread makes it and creates again itself, and so again after
    the parent is deleted by hand while the slot is off. kazoo's makepath did this too;
    it was dropped because it could land a create given up at a stop after the orphan
    sweep (test_hardening's claim given up when ZooKeeper went away): this test holds the
    thread's own making of the parent, which replaced it."""
    paths = Paths(zk_root, "it")
    rt = _runtime(zk, zk_root)
    task = TaskConfig(name="r", work_name="record", worker_num=1)
    try:
        for generation in (1, 3):
            assert zk.exists(paths.owner_task("r")) is None
            rt.apply({Slot("r", 0): task}, generation)
            wait_until(lambda: [r.state for r in rt.runners()] == ["running"], 10)
            stat = zk.exists(paths.owner("r", 0))
            assert stat is not None and stat.ephemeralOwner == zk.client_id[0]
            assert [r.fence for r in rt.runners()] == [stat.czxid]
            rt.apply({}, generation + 1)  # revoked: the thread deletes its znode
            wait_until(lambda: not any(r.alive for r in rt.runners())
                       and zk.exists(paths.owner("r", 0)) is None, 10)
            zk.delete(paths.owner_task("r"))
    finally:
        rt.stop_all(time.monotonic() + 5)


def test_a_lone_slot_under_an_ephemeral_owners_znode_is_reported_blocked(
        zk: KazooClient, zk_root, record) -> None:
    """owners/ made ephemeral by hand, with no owners/<task>: the thread's making of the
    parent is refused (found by review: it was retried in silence, a slot waiting for ever
    without a word). Reported as blocked, as an ephemeral owners/<task> is; once owners/
    is gone the slot makes its parent and runs."""
    paths = Paths(zk_root, "it")
    zk.ensure_path(paths.owners.rsplit("/", 1)[0])
    zk.create(paths.owners, b"", ephemeral=True)
    rt = _runtime(zk, zk_root)
    try:
        rt.apply({Slot("r", 0): TaskConfig(name="r", work_name="record", worker_num=1)}, 1)
        wait_until(lambda: [(r.state, r.blocked_by) for r in rt.runners()]
                   == [("blocked", paths.owners)], 10,
                   message=lambda: str([(r.state, r.last_error) for r in rt.runners()]))
        zk.delete(paths.owners)
        wait_until(lambda: [r.state for r in rt.runners()] == ["running"], 15)
        assert zk.exists(paths.owner("r", 0)).ephemeralOwner == zk.client_id[0]
    finally:
        rt.stop_all(time.monotonic() + 5)


# Found by review: a runner whose thread could not start kept its claimed znode for ever.
# Threads start while the claim's first requests are out: a znode the claim made for one
# that could not start goes to the orphan sweep.
def test_a_runner_that_never_starts_gives_its_znode_back(
        zk: KazooClient, zk_root, record, monkeypatch) -> None:
    paths = Paths(zk_root, "it")
    rt = _runtime(zk, zk_root)
    task = TaskConfig(name="r", work_name="record", worker_num=3)
    real = SlotRunner.start

    def start(self):
        if self.slot.index == 2:
            raise RuntimeError("can't start new thread")
        real(self)
    monkeypatch.setattr(SlotRunner, "start", start)
    try:
        rt.apply({Slot("r", i): task for i in range(3)}, 1)
        assert zk.exists(paths.owner("r", 0)) is not None  # claimed in the transaction
        assert Slot("r", 2) not in {r.slot for r in rt.runners()}
        monkeypatch.setattr(SlotRunner, "start", real)
        rt.apply({Slot("r", i): task for i in range(2)}, 2)  # r/2 moved to another node
        assert zk.exists(paths.owner("r", 2)) is None
    finally:
        rt.stop_all(time.monotonic() + 5)


def test_a_runner_gone_before_its_claim_landed_leaves_its_znode_to_the_sweep(
        zk: KazooClient, zk_root, record) -> None:
    """A slot whose handler this node lacks ends at once, before the claim made its owner
    znode: the znode goes to the orphan sweep, not to our session's life (it would keep the
    slot from every node that has the handler)."""
    paths = Paths(zk_root, "it")
    rt = _runtime(zk, zk_root)
    task = TaskConfig(name="r", work_name="nosuchhandler", worker_num=3)
    try:
        rt.apply({Slot("r", i): task for i in range(3)}, 1)
        wait_until(lambda: not any(r.alive for r in rt.runners()), 10)
        rt.apply({}, 2)  # the next pass sweeps
        assert [i for i in range(3) if zk.exists(paths.owner("r", i))] == []
    finally:
        rt.stop_all(time.monotonic() + 5)


def _running_that_cannot_release(rt: Runtime, slots: int, monkeypatch) -> SlotRunner:
    """Once `slots` runners own their znodes: k/0's runner, whose release will find no
    connection (its znode left to the orphan sweep)."""
    wait_until(lambda: len(rt.running_slots()) == slots
               and all(r.fence for r in rt.runners()), 10)
    r0 = rt._runners[Slot("k", 0)]

    def disconnected_release(self=r0):  # what _release does with no connection
        self.fence = None
        self.owner_version = None
    monkeypatch.setattr(r0, "_release", disconnected_release)
    return r0


# Found by review (older than the claims): orphans were kept by slot but a keyed slot's
# znode is its key's; the sweep deleted the znode the key's runner under another index held.
def test_the_orphan_sweep_spares_a_keyed_znode_another_runner_holds(
        zk: KazooClient, zk_root, record, monkeypatch) -> None:
    paths = Paths(zk_root, "it")
    rt = _runtime(zk, zk_root)
    base = TaskConfig(name="k", work_name="record", worker_num=2, keys="shards")
    rt.apply({Slot("k", 0): replace(base, slot_key="a"),
              Slot("k", 1): replace(base, slot_key="b")}, 1)
    try:
        r0 = _running_that_cannot_release(rt, 2, monkeypatch)
        desired = {Slot("k", 1): replace(base, worker_num=1, slot_key="a")}  # a: 0 -> 1
        rt.apply(desired, 2)
        wait_until(lambda: not r0.alive and paths.slot_owner("k", 0, "a") in rt._orphans, 10)
        wait_until(lambda: Slot("k", 1) not in rt.running_slots(), 10)
        real = rt.release_orphans
        monkeypatch.setattr(rt, "release_orphans", lambda: None)  # the sweep fails too
        rt.apply(desired, 2)
        wait_until(lambda: rt._runners.get(Slot("k", 1)) is not None
                   and rt._runners[Slot("k", 1)].state == "running", 10)
        monkeypatch.setattr(rt, "release_orphans", real)
        rt.apply(desired, 2)  # the connection is back: the sweep runs
        assert zk.exists(paths.slot_owner("k", 1, "a")) is not None
    finally:
        rt.stop_all(time.monotonic() + 5)


# Found by review: orphans were kept by slot, and a live runner of the slot dropped the
# record, so the znode of a key the slot no longer runs stayed for our session's life.
def test_the_orphan_sweep_deletes_the_old_keys_znode_of_a_slot_whose_key_changed(
        zk: KazooClient, zk_root, record, monkeypatch) -> None:
    paths = Paths(zk_root, "it")
    rt = _runtime(zk, zk_root)
    base = TaskConfig(name="k", work_name="record", worker_num=1, keys="shards")
    rt.apply({Slot("k", 0): replace(base, slot_key="a")}, 1)
    try:
        r0 = _running_that_cannot_release(rt, 1, monkeypatch)
        desired = {Slot("k", 0): replace(base, slot_key="b")}  # the slot's key: a -> b
        real = rt.release_orphans
        monkeypatch.setattr(rt, "release_orphans", lambda: None)  # the sweep fails too
        rt.apply(desired, 2)
        wait_until(lambda: not r0.alive and rt.has_orphans(), 10)
        rt.apply(desired, 2)  # the runner of key b starts
        wait_until(lambda: rt._runners.get(Slot("k", 0)) not in (None, r0)
                   and rt._runners[Slot("k", 0)].state == "running", 10)
        monkeypatch.setattr(rt, "release_orphans", real)
        rt.apply(desired, 2)  # the connection is back: the sweep runs
        assert zk.exists(paths.slot_owner("k", 0, "a")) is None
        stat = zk.exists(paths.slot_owner("k", 0, "b"))
        assert stat is not None and stat.ephemeralOwner == zk.client_id[0]
        assert not rt.has_orphans()
    finally:
        rt.stop_all(time.monotonic() + 5)


def test_held_slots_wait_on_the_watch_the_claim_set(zk: KazooClient, zk_hosts, zk_root,
                                                     record, monkeypatch) -> None:
    """The claim's round of stats sets each held slot's watch: its thread makes no create
    of its own while the previous owner holds it, and starts when it is gone, woken by
    that watch (the threads' own look again is put a minute away)."""
    paths = Paths(zk_root, "it")
    other = _client(zk_hosts)
    other.start()
    for i in range(2, 6):
        other.create(paths.owner("r", i), b"{}", ephemeral=True, makepath=True)
    creates = first_args(monkeypatch, zk, "create_async")
    real_init = SlotRunner.__init__

    def patient(self, *args, **kwargs):
        real_init(self, *args, **{**kwargs, "retry_wait": 12.0})
    monkeypatch.setattr(SlotRunner, "__init__", patient)
    rt = _runtime(zk, zk_root)
    task = TaskConfig(name="r", work_name="record", worker_num=6)
    try:
        rt.apply({Slot("r", i): task for i in range(6)}, 1)
        held = [r for r in rt.runners() if r.slot.index >= 2]
        assert {r.held_by for r in held} == {other.client_id[0]}
        wait_until(lambda: {r.slot.index for r in rt.runners() if r.state == "running"}
                   == {0, 1} and all(r.state == "waiting" for r in held), 10)
        assert creates == []  # the threads wait on the claim's watches
        other.stop()
        other.close()
        wait_until(lambda: all(r.state == "running" for r in rt.runners()), 10)
        assert sorted(creates) == sorted(paths.owner("r", i) for i in range(2, 6))
    finally:
        rt.stop_all(time.monotonic() + 5)
        other.stop()
        other.close()


# Found by review: a thread waiting at its gate ignored a stop, so a node stopping while a
# slow claim was out waited for it past its deadline and kept its session.
def test_a_stop_during_a_slow_claim_ends_the_threads_at_their_gate(
        zk: KazooClient, zk_root, record, monkeypatch) -> None:
    paths = Paths(zk_root, "it")
    rt = _runtime(zk, zk_root)
    go = threading.Event()
    real = Runtime._claim_batch

    def slow(self, runners, meanwhile):
        meanwhile()  # the threads start, and wait at their gate
        go.wait(10)
        return real(self, runners, meanwhile)
    monkeypatch.setattr(Runtime, "_claim_batch", slow)
    task = TaskConfig(name="r", work_name="record", worker_num=3)
    applying = threading.Thread(target=rt.apply, name="test-apply",
                                args=({Slot("r", i): task for i in range(3)}, 1))
    applying.start()
    try:
        wait_until(lambda: len(rt.runners()) == 3
                   and all(r.thread.is_alive() for r in rt.runners()), 5)
        began = time.monotonic()
        assert rt.stop_all(time.monotonic() + 5) == []
        assert time.monotonic() - began < 2
    finally:
        go.set()
        applying.join(10)
    # The claim went on and made their znodes: swept, since no thread of ours runs them.
    wait_until(lambda: [i for i in range(3) if zk.exists(paths.owner("r", i))] == [], 10)


def test_a_runner_stopped_while_its_claim_is_out_leaves_its_znode_to_the_sweep(
        zk: KazooClient, zk_root, record, monkeypatch) -> None:
    """Revoked while the claim's transaction is out: the thread ends at its gate without
    acquiring, before the claim tells it the znode is made. The znode the claim made for it
    goes to the sweep, not to our session's life."""
    paths = Paths(zk_root, "it")
    rt = _runtime(zk, zk_root)
    rt._look_first = False  # create first: the transaction is out when the threads start
    zk.ensure_path(paths.owner_task("r"))  # so the first transaction makes them
    real = Runtime._claim_batch

    def revoked_meanwhile(self, runners, meanwhile):
        def meanwhile_then_stop():
            meanwhile()
            for runner in runners:
                runner.request_stop("revoked while the claim is out")
            wait_until(lambda: not any(r.thread.is_alive() for r in runners), 5)
        return real(self, runners, meanwhile_then_stop)
    monkeypatch.setattr(Runtime, "_claim_batch", revoked_meanwhile)
    task = TaskConfig(name="r", work_name="record", worker_num=3)
    try:
        rt.apply({Slot("r", i): task for i in range(3)}, 1)
        rt.apply({}, 2)  # the next pass sweeps
        assert [i for i in range(3) if zk.exists(paths.owner("r", i))] == []
    finally:
        rt.stop_all(time.monotonic() + 5)


def test_a_claim_whose_answer_was_lost_leaves_no_znode_to_runners_stopping_at_their_gate(
        zk: KazooClient, zk_root, record, monkeypatch) -> None:
    """Found by review: the claim's transaction lands but its answer is lost, while its
    runners, told to stop at their gate, are still ending (their release looked already,
    finding no claim of theirs). Neither the claim's error path (not exited yet) nor their
    exit (no claimed fence) recorded the znodes: they stayed for the session's life."""
    paths = Paths(zk_root, "it")
    rt = _runtime(zk, zk_root)
    rt._look_first = False  # create first: the transaction is out when the threads start
    zk.ensure_path(paths.owner_task("r"))  # so the first transaction makes them
    real_commit, real_batch = TransactionRequest.commit_async, Runtime._claim_batch
    real_release = SlotRunner._release
    claim_over = threading.Event()

    def lost(self):  # the transaction lands; its answer does not come back
        real_commit(self).get(timeout=5)
        result = self.client.handler.async_result()
        result.set_exception(ConnectionLoss())
        return result

    releasing: list[SlotRunner] = []

    def revoked_meanwhile(self, runners, meanwhile):
        def meanwhile_then_stop():
            meanwhile()
            for runner in runners:
                runner.request_stop("revoked while the claim is out")
            # past their gate (no acquire: the claim is not over), in their release
            wait_until(lambda: len(releasing) == len(runners), 5)
        return real_batch(self, runners, meanwhile_then_stop)

    def release_after_the_claim(self):  # still ending when the claim's error is handled
        releasing.append(self)
        claim_over.wait(5)
        real_release(self)
    monkeypatch.setattr(TransactionRequest, "commit_async", lost)
    monkeypatch.setattr(Runtime, "_claim_batch", revoked_meanwhile)
    monkeypatch.setattr(SlotRunner, "_release", release_after_the_claim)
    task = TaskConfig(name="r", work_name="record", worker_num=3)
    try:
        rt.apply({Slot("r", i): task for i in range(3)}, 1)
        assert [i for i in range(3) if zk.exists(paths.owner("r", i))] == [0, 1, 2]
        claim_over.set()
        wait_until(lambda: not any(r.thread.is_alive() for r in rt.runners()), 10)
        rt.apply({}, 2)  # the next pass sweeps
        assert [i for i in range(3) if zk.exists(paths.owner("r", i))] == []
    finally:
        claim_over.set()
        rt.stop_all(time.monotonic() + 5)


def _held_by_other(zk_hosts: str, paths: Paths, indexes: range) -> KazooClient:
    other = _client(zk_hosts)  # another session: the owners the slots move from
    other.start()
    for i in indexes:
        other.create(paths.owner("r", i), b"{}", ephemeral=True, makepath=True)
    return other


def _commits(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The paths of each transaction committed from now on, sorted."""
    commits: list[list[str]] = []
    real_commit = TransactionRequest.commit_async

    def counting(self):
        commits.append(sorted(op.path for op in self.operations))
        return real_commit(self)
    monkeypatch.setattr(TransactionRequest, "commit_async", counting)
    return commits


def _released_while_claiming(monkeypatch: pytest.MonkeyPatch, other: KazooClient,
                             then: Callable[[list[SlotRunner]], None] = lambda _held: None
                             ) -> None:
    """The old owners let go while the claim is out: once the claim's first part has found
    the held slots, `other` (holding them) closes and every held slot's watch fires; then
    `then(held)`, before the follow-up."""
    real_free = Runtime._claim_free

    def released(self, runners, meanwhile):
        real_free(self, runners, meanwhile)
        held = [r for r in runners if r.held_by is not None]
        other.stop()  # its close deletes their znodes
        wait_until(lambda: all(r.owner_gone for r in held), 10)
        then(held)
    monkeypatch.setattr(Runtime, "_claim_free", released)


def test_held_slots_released_while_the_claim_is_out_are_claimed_in_one_more_transaction(
        zk: KazooClient, zk_hosts, zk_root, record, monkeypatch) -> None:
    """A joining node starts its threads while the old owners release: the held slots
    whose znodes went meanwhile (their watch said so) are claimed in one transaction, not
    by a create from each thread once the gates open."""
    paths = Paths(zk_root, "it")
    other = _held_by_other(zk_hosts, paths, range(2, 6))
    commits = _commits(monkeypatch)
    found: list[int] = []
    _released_while_claiming(monkeypatch, other,
                             lambda held: found.extend(r.slot.index for r in held))
    creates = first_args(monkeypatch, zk, "create_async")  # a slot thread's own claim
    rt = _runtime(zk, zk_root)
    task = TaskConfig(name="r", work_name="record", worker_num=6)
    try:
        rt.apply({Slot("r", i): task for i in range(6)}, 1)
        assert found == [2, 3, 4, 5]
        assert commits == [[paths.owner("r", i) for i in (0, 1)],
                           [paths.owner("r", i) for i in range(2, 6)]]
        wait_until(lambda: all(r.state == "running" for r in rt.runners()), 10)
        assert creates == []
        stats = {i: zk.exists(paths.owner("r", i)) for i in range(6)}
        assert len({stats[i].czxid for i in range(2, 6)}) == 1
        assert {stats[i].ephemeralOwner for i in range(6)} == {zk.client_id[0]}
        assert {r.slot.index: r.fence for r in rt.runners()} == {
            i: stat.czxid for i, stat in stats.items()}
    finally:
        rt.stop_all(time.monotonic() + 5)
        other.close()


def test_a_follow_up_claim_refused_leaves_the_slots_to_their_threads(
        zk: KazooClient, zk_hosts, zk_root, record, monkeypatch) -> None:
    """The watch's deletion is a hint: a slot taken again before the follow-up transaction
    makes ZooKeeper refuse it whole, and nothing of it is taken as claimed, even when the
    znode the probe asks about is ours. Here r/2's is made again by our own session (a
    create of ours given up that landed late) and r/3's by another one (a hand edit, an
    owner of a newer generation): r/2's thread adopts its znode, r/3's waits for the
    other session to let go."""
    paths = Paths(zk_root, "it")
    other = _held_by_other(zk_hosts, paths, range(2, 4))
    third = _client(zk_hosts)
    third.start()
    commits = _commits(monkeypatch)

    def retaken(_held: list[SlotRunner]) -> None:
        zk.create(paths.owner("r", 2), b"{}", ephemeral=True)
        third.create(paths.owner("r", 3), b"{}", ephemeral=True)
    _released_while_claiming(monkeypatch, other, retaken)
    rt = _runtime(zk, zk_root)
    task = TaskConfig(name="r", work_name="record", worker_num=4)
    try:
        rt.apply({Slot("r", i): task for i in range(4)}, 1)
        assert commits == [[paths.owner("r", i) for i in (0, 1)],
                           [paths.owner("r", i) for i in (2, 3)]]  # the follow-up, refused
        r3 = rt._runners[Slot("r", 3)]
        wait_until(lambda: {r.slot.index for r in rt.runners() if r.state == "running"}
                   == {0, 1, 2} and r3.state == "waiting", 10)
        assert r3.fence is None
        assert rt._runners[Slot("r", 2)].fence == zk.exists(paths.owner("r", 2)).czxid
        assert zk.exists(paths.owner("r", 3)).ephemeralOwner == third.client_id[0]
        third.stop()
        wait_until(lambda: r3.state == "running", 10)
        assert zk.exists(paths.owner("r", 3)).ephemeralOwner == zk.client_id[0]
    finally:
        rt.stop_all(time.monotonic() + 5)
        other.close()
        third.close()


def test_a_slot_revoked_while_its_owner_let_go_is_not_in_the_follow_up_claim(
        zk: KazooClient, zk_hosts, zk_root, record, monkeypatch) -> None:
    """A slot told to stop before the follow-up transaction gets no znode from it: one
    made for it would wait for the orphan sweep (or a leaving node's close) while its new
    owner waits for it."""
    paths = Paths(zk_root, "it")
    other = _held_by_other(zk_hosts, paths, range(2, 5))
    commits = _commits(monkeypatch)
    # Told to stop, its thread still at its gate (request_stop would also open the gate,
    # and the thread might be gone before the follow-up looks).
    _released_while_claiming(monkeypatch, other, lambda held: held[-1].stop_event.set())
    rt = _runtime(zk, zk_root)
    task = TaskConfig(name="r", work_name="record", worker_num=5)
    try:
        rt.apply({Slot("r", i): task for i in range(5)}, 1)
        assert commits == [[paths.owner("r", i) for i in (0, 1)],
                           [paths.owner("r", i) for i in (2, 3)]]
        wait_until(lambda: {r.slot.index for r in rt.runners() if r.state == "running"}
                   == {0, 1, 2, 3} and not rt._runners[Slot("r", 4)].alive, 10)
        assert zk.exists(paths.owner("r", 4)) is None
    finally:
        rt.stop_all(time.monotonic() + 5)
        other.close()


NINE = '[[task]]\nname = "r"\nworkName = "record"\nworkerNum = 9\nstop_timeout = 2\n'


def _spy_prestart(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, set[int]]]:
    """Each prestart's count, and the idle threads it left (their idents)."""
    calls: list[tuple[int, set[int]]] = []
    real = SlotThreads.prestart

    def spy(self: SlotThreads, count: int) -> None:
        real(self, count)
        wait_until(lambda: self.idle() >= count, 5)  # new threads list themselves idle
        with self._lock:
            calls.append((count, {w.thread.ident for w in self._idle}))

    monkeypatch.setattr(SlotThreads, "prestart", spy)
    # The budget is the process's: earlier tests' nodes must not have spent it.
    monkeypatch.setattr(node_module, "PRESTART_BUDGET", PrestartBudget())
    return calls


def test_a_node_joining_a_formed_cluster_runs_its_share_on_threads_started_before_it_joined(
        zk_hosts, zk_root, nodes, record, monkeypatch) -> None:
    calls = _spy_prestart(monkeypatch)
    config = make_config(zk_hosts, zk_root, NINE)
    a = start(nodes, config, "a")
    all_nine = {f"r/{i}" for i in range(9)}
    wait_until(lambda: running(a) == all_nine, 15)
    assert calls == []  # a cluster with no assignment yet is forming: nothing to guess from
    b = start(nodes, config, "b")
    assert [count for count, _ in calls] == [5]  # 9 slots over a and b, rounded up
    prestarted = calls[0][1]
    assert len(prestarted) == 5
    # b, a follower, gets 5 of the 9 (the leader is not more loaded): each runs on a
    # thread started before b joined, none on a thread started for it.
    wait_until(lambda: len(running(b)) == 5 and running(a) | running(b) == all_nine, 15)
    with b.runtime._lock:
        idents = {r.thread.ident for r in b.runtime._runners.values() if r.alive}
    assert idents == prestarted


def test_a_cluster_restarted_as_a_whole_onto_its_old_assignment_prestarts_nothing(
        zk_hosts, zk_root, nodes, record, monkeypatch) -> None:
    """An old assignment is no sign of a settled cluster: members starting together after a
    full stop would each guess a share from the members there so far (found by review)."""
    calls = _spy_prestart(monkeypatch)
    config = make_config(zk_hosts, zk_root, NINE)
    a = start(nodes, config, "a")
    wait_until(lambda: len(running(a)) == 9, 15)
    assert a.stop(10)
    b = start(nodes, config, "b")  # the old assignment names a, gone since
    assert calls == []
    wait_until(lambda: len(running(b)) == 9, 30)
    c = start(nodes, config, "c")  # settled again: c joins with threads for its share
    assert [count for count, _ in calls] == [5]
    wait_until(lambda: len(running(b)) + len(running(c)) == 9, 15)


def test_the_prestart_is_capped_by_max_per_node_and_by_the_process_budget(
        zk_hosts, zk_root, nodes, record, monkeypatch) -> None:
    calls = _spy_prestart(monkeypatch)
    monkeypatch.setattr(node_module, "PRESTART_BUDGET", PrestartBudget(limit=4))
    tasks = NINE + ('[[task]]\nname = "q"\nworkName = "record"\nworkerNum = 6\n'
                    'max_per_node = 1\nstop_timeout = 2\n')
    config = make_config(zk_hosts, zk_root, tasks)
    a = start(nodes, config, "a")
    wait_until(lambda: len(running(a)) == 10, 15)  # 9 of r, 1 of q (at most one per node)
    b = start(nodes, config, "b")
    assert [count for count, _ in calls] == [4]  # 5 of r + 1 of q = 6, capped at 4
    wait_until(lambda: len(running(a)) + len(running(b)) == 11, 15)
    c = start(nodes, config, "c")
    assert [count for count, _ in calls] == [4, 0]  # this process spent its budget
    # d prestarts only into a settled cluster: once the assignment has c in it.
    wait_until(lambda: sum(len(running(n)) for n in (a, b, c)) == 12 and running(c), 15)
    monkeypatch.setattr(node_module, "PRESTART_BUDGET", PrestartBudget())
    start(nodes, config, "d")
    assert [count for count, _ in calls] == [4, 0, 4]  # 3 of r + 1 of q
