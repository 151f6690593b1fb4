"""Each safety guard on its own, against real ZooKeeper and real in-process nodes.

The scenario tests (test_node, the chaos suite) exercise the guards together, and the guards
cover for each other: the lease thread revokes what `ctx.stopping` would have stopped, the
controller revokes what the lease thread would have. A guard removed outright then passes
every scenario. Here the other guards are frozen (a node's controller or lease renewals
patched out for the test) so that each test fails when exactly its guard is missing; the
mutation check (tests/mutation) proves it for each of them."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import ConnectionLoss
from kazoo.protocol.states import KazooState

from tests.integration import test_node
from tests.integration.test_node import RECORD_TASK, make_config, records, running, start
from tests.util import expire_session, observe_until, wait_until
from xconsumer import node as node_module
from xconsumer.leader import DocMemo, publish, read_assignment
from xconsumer.lease import LEASE_FRACTION, Lease
from xconsumer.membership import read_members
from xconsumer.node import Node
from xconsumer.overrides import effective_tasks, update_task
from xconsumer.paths import Paths
from xconsumer.runtime import Runtime
from xconsumer.works import discover
from xconsumer.zkserver import ZooKeeperServer

SLOTS = {"r/0", "r/1", "r/2"}
STUBBORN = ('[[task]]\nname = "s"\nworkName = "stubborn"\nworkerNum = 1\n'
            'stop_timeout = 0.5\n')


def _freeze_controller(node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    """The controller's passes do nothing from now on (it would revoke on an ended lease or
    a lost membership by itself, hiding the guard under test). Returns once a pass has run
    frozen: passes are sequential, so none of the old kind is still under way (one that
    was would otherwise go on to act, e.g. repair a corrupt assignment)."""
    monkeypatch.setattr(node, "_sync", lambda *_args: None)
    before = node.passes
    node._kick("freeze")
    wait_until(lambda: node.passes > before, 10)


def _stop_renewals(node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    """No reply renews the lease any more: it ends within 2/3 of the session."""
    monkeypatch.setattr(node.lease, "renew", lambda sent_at: None)


def _count_lease_rounds(node: Node, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The lease thread's rounds that reached ZooKeeper from now on, counted as they end,
    so a test can wait for rounds to pass instead of for time."""
    ended = [0]
    real = node._prove_membership

    def counted(*args, **kwargs):
        try:
            return real(*args, **kwargs)
        finally:
            ended[0] += 1

    monkeypatch.setattr(node, "_prove_membership", counted)
    return ended


def _lease_stays_ended(node: Node, rounds: list[int], more: int = 2) -> None:
    """The lease ends, and stays ended through `more` whole rounds of the lease thread that
    began after it ended."""
    __tracebackhide__ = True
    wait_until(lambda: not node.lease.valid(), node.session.timeout * LEASE_FRACTION + 5,
               message=lambda: f"lease remaining {node.lease.remaining():.2f}s")
    seen = rounds[0] + 1  # the round under way (if one is) began before
    wait_until(lambda: rounds[0] >= seen + more, 10)
    assert not node.lease.valid(), f"lease renewed: {node.lease.remaining():.2f}s left"


def _runners(node: Node) -> list:
    with node.runtime._lock:
        return list(node.runtime._runners.values())


def _pause(node: Node, task: str, paused: bool) -> None:
    node.overrides.update(lambda d: update_task(d, node.seed_tasks(), task, {"paused": paused}))


# -- the lease and ctx.stopping ------------------------------------------------------------

def test_handlers_stop_on_the_lease_alone_when_no_thread_of_the_node_runs(
        zk_hosts, zk_root, nodes, record) -> None:
    """A frozen node wakes with its session gone and its threads behind: only `ctx.stopping`
    reading the lease stops the handlers in time. Here the controller and the lease thread
    are stopped outright, so nothing ever calls revoke."""
    node = start(nodes, make_config(zk_hosts, zk_root, RECORD_TASK), "a")
    wait_until(lambda: running(node) == SLOTS, 15)
    runners = _runners(node)
    node._stop.set()  # ends the controller and lease loops; ignores state callbacks
    wait_until(lambda: sum(r["e"] == "stop" for r in records(record)) == 3,
               node.session.timeout * LEASE_FRACTION + 5,
               message=lambda: f"lease remaining {node.lease.remaining():.2f}s")
    assert not node.lease.valid()
    assert all(r.stop_requested_at is None for r in runners)  # no revoke did it


def _use_works(works: Path, module: str, source: str,
               monkeypatch: pytest.MonkeyPatch) -> None:
    """Nodes started by `start()` in this test discover their handlers in `works`."""
    works.mkdir()
    (works / "__init__.py").write_text("")
    (works / f"{module}.py").write_text(source)
    monkeypatch.setattr(test_node, "RECORD_WORKS", works)


# Watches only `ctx.stop_event` (the documented Event), never `ctx.stopping`: it stops only
# when the node sets the event.
WAITER = """
def RunWaiter(ctx):
    while not ctx.stop_event.wait(0.05):
        pass
"""


def test_the_lease_thread_revokes_every_slot_when_the_lease_ends(
        tmp_path, zk_hosts, zk_root, nodes, record, monkeypatch) -> None:
    _use_works(tmp_path / "works", "waiter", WAITER, monkeypatch)
    task = '[[task]]\nname = "w"\nworkName = "waiter"\nworkerNum = 2\n'
    node = start(nodes, make_config(zk_hosts, zk_root, task), "a")
    wait_until(lambda: running(node) == {"w/0", "w/1"}, 15)
    runners = _runners(node)
    _freeze_controller(node, monkeypatch)
    _stop_renewals(node, monkeypatch)
    wait_until(lambda: not any(r.alive for r in runners),
               node.session.timeout * LEASE_FRACTION + 5,
               message=lambda: str(node.node_view()))
    assert all(r.stop_requested_at is not None for r in runners)


def test_a_lost_session_stops_every_slot_and_ends_the_lease_at_once(
        zk_hosts, zk_root, nodes, record, monkeypatch) -> None:
    node = start(nodes, make_config(zk_hosts, zk_root, RECORD_TASK), "a")
    wait_until(lambda: running(node) == SLOTS, 15)
    runners = _runners(node)
    # Only the LOST reaction may act: no controller pass, renewal or lease-thread revoke.
    _freeze_controller(node, monkeypatch)
    _stop_renewals(node, monkeypatch)
    monkeypatch.setattr(node, "_lease_transition", lambda was_valid: was_valid)
    assert node.lease.valid()
    node._on_state(KazooState.LOST)  # what kazoo calls when the session expired
    assert not node.lease.valid()
    assert all(r.stop_requested_at is not None for r in runners)


def test_the_lease_is_renewed_only_by_our_own_member_znode(
        zk: KazooClient, zk_hosts, zk_root, nodes, record, monkeypatch) -> None:
    """A znode at our member path that another session created (ours was deleted and the
    name taken) proves nothing about our session: the lease must end."""
    node = start(nodes, make_config(zk_hosts, zk_root, RECORD_TASK), "a")
    wait_until(lambda: running(node) == SLOTS, 15)
    _freeze_controller(node, monkeypatch)  # it would rejoin on the deletion's watch
    rounds = _count_lease_rounds(node, monkeypatch)
    path = node.paths.node(node._member_child or "")
    data, _ = zk.get(path)
    tx = zk.transaction()  # in one: no look of the lease thread can fall in between
    tx.delete(path)
    tx.create(path, data, ephemeral=True)
    assert not any(isinstance(r, Exception) for r in tx.commit())
    # Ended, and not renewed by the syncs that follow (our session still lives).
    _lease_stays_ended(node, rounds)
    wait_until(lambda: not node.runtime.running_slots(), 5)


def test_a_failed_look_at_the_member_znode_is_made_again(
        zk: KazooClient, zk_hosts, zk_root, nodes, record, monkeypatch) -> None:
    """A look at our member znode that failed (the connection dropped before the reply)
    proves nothing: the lease thread looks again at its next round, and a deletion after
    it ends the lease."""
    node = start(nodes, make_config(zk_hosts, zk_root, RECORD_TASK), "a")
    wait_until(lambda: running(node) == SLOTS, 15)
    _freeze_controller(node, monkeypatch)  # it would rejoin on the deletion's watch
    rounds = _count_lease_rounds(node, monkeypatch)
    failed: list[str] = []
    real_exists = node.client.exists_async

    def exists_async(path: str, watch=None):
        if threading.current_thread().name == "xc-lease" and not failed:
            failed.append(path)
            raise ConnectionLoss()  # as when the connection drops before the reply
        return real_exists(path, watch=watch)

    monkeypatch.setattr(node.client, "exists_async", exists_async)
    path = node.paths.node(node._member_child or "")
    wait_until(lambda: failed, 10)
    zk.delete(path)
    _lease_stays_ended(node, rounds)


def test_a_deletion_after_a_reconnect_ends_the_lease(
        tmp_path, zk_root, nodes, record, monkeypatch, local_zookeeper) -> None:
    """After a reconnect on the same session (ZooKeeper restarted), a deletion of our member
    znode ends the lease. kazoo drops every watch on a connection loss and sets none again:
    a lease that relied on a watch there would never notice."""
    with ZooKeeperServer(data_dir=tmp_path / "zk") as server:
        # 8 s: the session outlives the restart (see test_node's restart test).
        node = start(nodes, make_config(server.hosts, zk_root, RECORD_TASK,
                                        session_timeout=8.0), "a")
        wait_until(lambda: running(node) == SLOTS, 15)
        session = node.client.client_id[0]
        _freeze_controller(node, monkeypatch)  # it would rejoin on its reconnect pass
        rounds = _count_lease_rounds(node, monkeypatch)
        states: list[str] = []
        node.client.add_listener(states.append)
        server.restart()
        wait_until(lambda: KazooState.SUSPENDED in states and node.client.connected, 20,
                   message=lambda: f"states {states}")
        seen = rounds[0] + 1  # a round that began after the reconnect, and renewed
        wait_until(lambda: rounds[0] > seen and node.lease.valid(), 20,
                   message=lambda: str(node.node_view()))
        assert node.client.client_id[0] == session
        other = KazooClient(hosts=server.hosts, timeout=10)
        other.start(timeout=10)
        try:
            other.delete(node.paths.node(node._member_child or ""))
        finally:
            other.stop()
            other.close()
        _lease_stays_ended(node, rounds)
        node.stop(timeout=5)


def test_a_sync_on_a_later_session_does_not_renew_the_lease(
        zk_hosts, zk_root, nodes, record, monkeypatch) -> None:
    """The lease proves the session our member znode is of. Once that session expired,
    kazoo makes a new one, whose syncs succeed: they must not renew the lease."""
    node = start(nodes, make_config(zk_hosts, zk_root, RECORD_TASK), "a")
    wait_until(lambda: running(node) == SLOTS, 15)
    _freeze_controller(node, monkeypatch)  # it would join again under the new session
    rounds = _count_lease_rounds(node, monkeypatch)
    expire_session(node.client, zk_hosts)
    _lease_stays_ended(node, rounds)
    wait_until(lambda: not node.runtime.running_slots(), 5)


def test_a_renewal_goes_behind_a_sync_and_counts_only_once_the_sync_went_through(
        zk_hosts, zk_root, nodes, record, monkeypatch) -> None:
    """A server cut off from the quorum still answers reads while our session expires: the
    look at our member znode goes behind a sync (sent together: one round trip), and a
    round whose sync failed renews nothing, whatever the look said."""
    node = start(nodes, make_config(zk_hosts, zk_root, RECORD_TASK), "a")
    wait_until(lambda: running(node) == SLOTS, 15)
    _freeze_controller(node, monkeypatch)
    rounds = _count_lease_rounds(node, monkeypatch)
    sent: list[str] = []
    real_call = node.client._call

    def call(request, async_object):
        if threading.current_thread().name == "xc-lease":
            sent.append(type(request).__name__)
        return real_call(request, async_object)

    monkeypatch.setattr(node.client, "_call", call)
    wait_until(lambda: len(sent) >= 4, 10)
    assert sent[:4] == ["Sync", "Exists", "Sync", "Exists"], sent

    def failed_sync(path: str):  # as when the connection drops right after the sync
        result = node.client.handler.async_result()
        result.set_exception(ConnectionLoss())
        return result

    monkeypatch.setattr(node.client, "sync_async", failed_sync)
    _lease_stays_ended(node, rounds)


def test_the_lease_counts_from_when_the_renewing_request_was_sent(
        zk_hosts, zk_root, nodes, record, monkeypatch) -> None:
    """The server heard from us no earlier than the request went out: a reply that took a
    second must not stretch the lease by that second."""
    node = start(nodes, make_config(zk_hosts, zk_root, RECORD_TASK), "a")
    wait_until(lambda: running(node) == SLOTS, 15)
    lease = node.lease
    skew = [0.0]
    base = lease._clock
    monkeypatch.setattr(lease, "_clock", lambda: base() + skew[0])
    # Every request is slow until one renews (a round whose sync timed out under load
    # renews nothing, and the next one's is the one to check).
    slow: list[float] = []  # lease time just before each slow request went out
    ends: list[float] = []  # lease deadline right after the first renewal among them
    real_sync, real_renew = node.client.sync_async, lease.renew

    def sync_async(path: str):
        if threading.current_thread().name == "xc-lease" and not ends:
            slow.append(lease.now())
            skew[0] += 1.0  # the reply comes a second after this request was sent
        return real_sync(path)

    def renew(sent_at: float) -> None:
        real_renew(sent_at)
        if slow and not ends:
            ends.append(lease.now() + lease.remaining())

    monkeypatch.setattr(node.client, "sync_async", sync_async)
    monkeypatch.setattr(lease, "renew", renew)
    wait_until(lambda: ends, 10)
    assert ends[0] <= slow[-1] + node.session.timeout * LEASE_FRACTION + 1e-6, \
        f"lease ends {ends[0] - slow[-1]:.3f}s after the request was sent"


# -- owner znodes ------------------------------------------------------------------------

def _stuck_on_a_awaited_by_b(nodes: list[Node], zk_hosts: str, zk_root: str,
                            record: Path) -> tuple[Node, Node, str, int]:
    """a runs a handler that ignores stops; b joins, gets the slot and waits for a's owner
    znode. Returns a, b, the owner znode's path and a's session id."""
    config = make_config(zk_hosts, zk_root, STUBBORN)
    a = start(nodes, config, "a")
    wait_until(lambda: any(r["e"] == "start" for r in records(record)), 15)
    b = start(nodes, config, "b")  # first in the dealing order: the slot moves to b
    wait_until(lambda: [s.state for s in b.runtime.statuses()] == ["waiting"], 10)
    return a, b, Paths(zk_root, "it").owner("s", 0), a.client.client_id[0]


def test_a_runner_that_never_got_its_slot_leaves_the_owners_znode_alone(
        zk: KazooClient, zk_hosts, zk_root, nodes, record) -> None:
    _, b, owner, a_session = _stuck_on_a_awaited_by_b(nodes, zk_hosts, zk_root, record)
    _pause(b, "s", True)  # b gives up waiting: its runner ends without ever owning
    wait_until(lambda: not b.runtime.running_slots(), 10)
    try:
        stat = zk.exists(owner)
        assert stat is not None and stat.ephemeralOwner == a_session
    finally:
        (record.parent / "release").write_text("go")


def _runtime(client: KazooClient, root: str) -> Runtime:
    task_registry = discover(test_node.RECORD_WORKS)
    return Runtime(node="a", client=client, paths=Paths(root, "it"),
                   lease=Lease(lambda: 2.0), registry=task_registry,
                   session_id=lambda: client.client_id[0], on_change=lambda: None)


def test_orphaned_owner_znodes_are_deleted_only_when_our_session_holds_them(
        zk: KazooClient, zk_hosts, zk_root) -> None:
    """An orphan is a slot whose runner ended while disconnected, so its owner znode may be
    ours (delete it, or the next owner waits for our session to end) or, after our session
    expired, already the next owner's (which must never be deleted)."""
    paths = Paths(zk_root, "it")
    other = KazooClient(hosts=zk_hosts, timeout=10)
    other.start(timeout=10)
    try:
        runtime = _runtime(zk, zk_root)
        zk.create(paths.owner("r", 0), b"", ephemeral=True, makepath=True)
        other.create(paths.owner("r", 1), b"", ephemeral=True, makepath=True)
        runtime._orphans |= {paths.owner("r", i): None for i in (0, 1)}
        runtime.release_orphans()
        assert zk.exists(paths.owner("r", 0)) is None
        stat = zk.exists(paths.owner("r", 1))
        assert stat is not None and stat.ephemeralOwner == other.client_id[0]
        assert not runtime.has_orphans()
    finally:
        other.stop()
        other.close()


def test_an_orphan_recorded_again_while_the_sweep_looks_is_swept_next_time(
        zk: KazooClient, zk_root) -> None:
    """Found by review: the sweep dropped a record after its look even when a runner had
    recorded the same znode again meanwhile (another znode of ours, another fence), so
    that znode stayed for our session's life."""
    paths = Paths(zk_root, "it")
    runtime = _runtime(zk, zk_root)
    path = paths.owner("r", 0)
    zk.create(path, b"", ephemeral=True, makepath=True)
    ours = zk.exists(path)
    assert ours is not None
    runtime._orphans[path] = ours.czxid - 1  # an older znode of that path, long gone
    real = zk.exists_async

    def recorded_meanwhile(p, *args, **kwargs):  # a runner ends while the sweep looks
        with runtime._lock:
            runtime._orphan(path, ours.czxid)
        return real(p, *args, **kwargs)
    zk.exists_async = recorded_meanwhile
    try:
        runtime.release_orphans()  # the older fence: not that znode
    finally:
        del zk.exists_async
    assert zk.exists(path) is not None and runtime.has_orphans()
    runtime.release_orphans()
    assert zk.exists(path) is None and not runtime.has_orphans()


def test_a_reassigned_slot_restarts_only_after_its_old_run_ended(
        zk: KazooClient, zk_hosts, zk_root, nodes, record) -> None:
    """Revoke before assign on one node: a slot taken away and given back while its old
    run still ignores the stop must not get a second run beside it (on one node the owner
    znode cannot tell the two runs apart: both are the node's session)."""
    node = start(nodes, make_config(zk_hosts, zk_root, STUBBORN), "a")
    wait_until(lambda: any(r["e"] == "start" for r in records(record)), 15)
    _pause(node, "s", True)
    wait_until(lambda: [s.state for s in node.runtime.statuses()] == ["stuck"], 10)
    generation = node.generation or 0
    _pause(node, "s", False)
    # Given back: let the controller make a few passes with the slot in its plan.
    passes = node.passes
    problems = observe_until(
        lambda: (node.generation or 0) > generation and node.passes >= passes + 3, 15,
        check=lambda: None if sum(r["e"] == "start" for r in records(record)) == 1
        else "a second run started beside the stuck one")
    assert problems == []
    (record.parent / "release").write_text("go")
    wait_until(lambda: sum(r["e"] == "start" for r in records(record)) == 2, 15)


def test_a_node_stopping_with_a_stuck_slot_keeps_its_session_and_owner_znode(
        zk: KazooClient, zk_hosts, zk_root, nodes, record) -> None:
    a, b, owner, a_session = _stuck_on_a_awaited_by_b(nodes, zk_hosts, zk_root, record)
    try:
        assert a.stop(timeout=1.0) is False  # stuck
        stat = zk.exists(owner)
        assert stat is not None and stat.ephemeralOwner == a_session
        # It left: its name is free (a restart joins) while the stuck slot keeps its znode.
        assert zk.exists(Paths(zk_root, "it").name_claim("a")) is None
        assert [s.state for s in b.runtime.statuses()] == ["waiting"]
    finally:
        (record.parent / "release").write_text("go")
    wait_until(lambda: running(b) == {"s/0"}, 15)


def test_a_slow_slot_of_a_leaving_node_does_not_keep_its_fast_slots_taken(
        zk: KazooClient, zk_hosts, zk_root, nodes, record) -> None:
    """Found by review: the leaving node's slots went with the session's close, which came
    only once the slowest had ended. Past a moment, each slot gives its znode back itself:
    the fast one's goes at once while the slow one keeps its own."""
    paths = Paths(zk_root, "it")
    tasks = STUBBORN.replace("stop_timeout = 0.5", "stop_timeout = 30") + RECORD_TASK
    a = start(nodes, make_config(zk_hosts, zk_root, tasks), "a")
    wait_until(lambda: running(a) == {"s/0", "r/0", "r/1", "r/2"}, 15)
    stopper = threading.Thread(target=a.stop, kwargs={"timeout": 30.0}, name="test-stop")
    stopper.start()
    try:
        wait_until(lambda: all(zk.exists(paths.owner("r", i)) is None for i in range(3)), 5)
        assert zk.exists(paths.owner("s", 0)).ephemeralOwner == a.client.client_id[0]
        assert stopper.is_alive()  # the slow slot still winds down
    finally:
        (record.parent / "release").write_text("go")
        stopper.join(30)
    assert not stopper.is_alive() and zk.exists(paths.owner("s", 0)) is None


# Ignores every stop; on SIGTERM it waits (up to 3 s) for its own program to have seen the
# SIGTERM too, as a handler cleaning up after itself would. The program, a shell, records
# the SIGTERM in a file and exits: it never gets to if only SIGKILL reaches it.
TRAPPER = """
import os, signal, subprocess, time

def RunTrapper(ctx):
    term = os.environ["XCONSUMER_TEST_RELEASE"] + "-term"

    def on_term(signum, frame):
        end = time.monotonic() + 3.0
        while not os.path.exists(term) and time.monotonic() < end:
            time.sleep(0.02)
        os._exit(0)

    signal.signal(signal.SIGTERM, on_term)
    subprocess.Popen(["sh", "-c", f'trap "echo term > {term}; exit 0" TERM; '
                      f'touch {term}-started; while :; do sleep 0.05; done'])
    while True:
        time.sleep(0.05)
"""


def test_sigterm_reaches_every_process_of_an_isolated_handler(
        zk: KazooClient, tmp_path, zk_hosts, zk_root, nodes, record, monkeypatch) -> None:
    """Terminating an isolated handler signals its whole session, so the programs it
    started get their SIGTERM (and a chance to clean up) before the SIGKILL sweep."""
    _use_works(tmp_path / "works", "trapper", TRAPPER, monkeypatch)
    task = ('[[task]]\nname = "t"\nworkName = "trapper"\nworkerNum = 1\n'
            'stop_timeout = 0.5\nisolation = "process"\n')
    node = start(nodes, make_config(zk_hosts, zk_root, task), "a")
    term = Path(f"{record.parent / 'release'}-term")
    wait_until(lambda: Path(f"{term}-started").exists(), 30)
    owner = Paths(zk_root, "it").owner("t", 0)
    _pause(node, "t", True)
    wait_until(lambda: zk.exists(owner) is None, 20, message=lambda: str(node.node_view()))
    assert term.exists() and term.read_text().strip() == "term"


# -- corrupt assignment -----------------------------------------------------------------

def test_a_follower_runs_its_last_valid_plan_pass_after_pass_while_the_assignment_is_corrupt(
        zk: KazooClient, zk_hosts, zk_root, nodes, record, monkeypatch) -> None:
    """Unreadable is not empty: a follower that took a corrupt assignment for "nothing for
    me" would stop every slot until the leader repaired it. The leader's controller is
    frozen so the corruption lasts while the follower makes several passes over it."""
    config = make_config(zk_hosts, zk_root, RECORD_TASK)
    a = start(nodes, config, "a")
    b = start(nodes, config, "b")
    wait_until(lambda: running(a) | running(b) == SLOTS and running(b), 20)
    _freeze_controller(a, monkeypatch)
    mine = {s.slot: s.fence for s in b.runtime.statuses() if s.state == "running"}
    zk.set(Paths(zk_root, "it").assignment, b'{"nodes": []}')
    # A follower reads the document only without a plan it can use: spoil its plan too.
    zk.set(Paths(zk_root, "it").plan("b"), b'{"generation": 1}')
    passes = b.passes

    def same_slots() -> str | None:
        now = {s.slot: s.fence for s in b.runtime.statuses() if s.state == "running"}
        return None if now == mine else f"follower runs {now}, ran {mine}"

    problems = observe_until(
        lambda: b.passes >= passes + 3 and b.node_view()["corrupt"], 15, check=same_slots)
    assert problems == []


# -- the leader's publish ------------------------------------------------------------------

@pytest.mark.parametrize("memo", [False, True], ids=["read", "remembered"])
def test_a_publish_based_on_a_stale_read_is_refused(zk: KazooClient, zk_hosts, zk_root, nodes,
                                                    record, monkeypatch, memo: bool) -> None:
    """Two writers must not interleave silently: another write between the leader's read
    and its publish makes the publish fail (and re-read), never overwrite. The same when
    the leader's read was a stat of the document it remembers (leader.DocMemo)."""
    config = make_config(zk_hosts, zk_root, RECORD_TASK)
    node = start(nodes, config, "a")
    wait_until(lambda: running(node) == SLOTS, 15)
    _freeze_controller(node, monkeypatch)
    paths = Paths(zk_root, "it")
    from xconsumer import leader as leader_module

    real_read = leader_module.read_assignment_stat

    def read_then_someone_writes(client, paths_, watch=None, memo=None, ahead=None):
        seen = real_read(client, paths_, watch=watch, memo=memo, ahead=ahead)
        raw, _ = zk.get(paths.assignment)
        zk.set(paths.assignment, raw)  # the other writer: same bytes, next version
        return seen

    remembered = DocMemo()
    if memo:
        real_read(zk, paths, memo=remembered)  # as if this node had read it last
    _, version = read_assignment(zk, paths)
    monkeypatch.setattr(leader_module, "read_assignment_stat", read_then_someone_writes)
    result = publish(node.client, paths, my_child=node._member_child or "", leader="a2",
                     members=read_members(zk, paths), tasks=effective_tasks(config.tasks, {}),
                     strategy="round_robin", leader_works=True,
                     memo=remembered if memo else None)
    assert result is None
    assert zk.exists(paths.assignment).version == version + 1  # only the other write


def test_a_deposed_leader_whose_session_lives_cannot_publish(
        zk: KazooClient, zk_hosts, zk_root, nodes, record, monkeypatch) -> None:
    """The leader's member znode is gone (deleted, or it lost the election) while its session
    and connection are fine: its publish must be refused by the fence, whatever it read."""
    config = make_config(zk_hosts, zk_root, RECORD_TASK)
    node = start(nodes, config, "a")
    wait_until(lambda: running(node) == SLOTS, 15)
    _freeze_controller(node, monkeypatch)
    paths = Paths(zk_root, "it")
    child = node._member_child or ""
    members = read_members(zk, paths)
    zk.delete(paths.node(child))
    before = read_assignment(zk, paths)
    result = publish(node.client, paths, my_child=child, leader="a", members=members,
                     tasks=effective_tasks(config.tasks, {}), strategy="round_robin",
                     leader_works=True, fresh=True, drained=["a"])
    assert result is None
    assert read_assignment(zk, paths) == before


def test_a_publish_fenced_by_no_member_znode_is_never_sent(
        zk: KazooClient, zk_hosts, zk_root, nodes, record, monkeypatch) -> None:
    """Found while testing takeovers: an empty member child made the fence a check of
    `nodes/` itself (ZooKeeper takes the trailing slash for the container), which always
    passes. Such a publish is refused before it is sent."""
    config = make_config(zk_hosts, zk_root, RECORD_TASK)
    node = start(nodes, config, "a")
    wait_until(lambda: running(node) == SLOTS, 15)
    _freeze_controller(node, monkeypatch)
    paths = Paths(zk_root, "it")
    before = read_assignment(zk, paths)
    result = publish(node.client, paths, my_child="", leader="a",
                     members=read_members(zk, paths), tasks=effective_tasks(config.tasks, {}),
                     strategy="round_robin", leader_works=True, fresh=True, drained=["a"])
    assert result is None
    assert read_assignment(zk, paths) == before


def test_a_leader_stopping_mid_pass_publishes_behind_its_own_member_znode(
        zk: KazooClient, zk_hosts, zk_root, nodes, record, monkeypatch) -> None:
    """stop() clears the node's member child while a pass may be under way: that pass's
    publish must still be fenced by the member znode its listing put first (deleted by the
    stop, so it is refused), not by whatever the node holds by then. A stopping leader's
    last plans, fenced by nothing, overwrote its successor's."""
    config = make_config(zk_hosts, zk_root, RECORD_TASK)
    a = start(nodes, config, "a")
    wait_until(lambda: running(a) == SLOTS, 15)
    paths = Paths(zk_root, "it")
    child = a._member_child
    calls: list[tuple[str, object]] = []
    real_publish, real_lead = node_module.publish, a._lead

    def publish_(*args, **kwargs):
        result = real_publish(*args, **kwargs)
        # Only the publish that deals b in: an earlier pass of a's (a slot's wake-up) has
        # nothing to write, and its None would pass the check below without the stop.
        if kwargs["leader"] == "a" and "b" in {m.name for m in kwargs["members"]}:
            calls.append((kwargs["my_child"], result))
        return result

    def lead(live, *args):  # the stop, between the listing that has b and the publish
        if "b" in {m.name for m in live}:
            a._stop.set()
            a._member_child = None
            zk.delete(paths.node(child))
            monkeypatch.setattr(a, "_lead", real_lead)
        return real_lead(live, *args)
    monkeypatch.setattr(node_module, "publish", publish_)
    monkeypatch.setattr(a, "_lead", lead)
    before = read_assignment(zk, paths)[0]
    start(nodes, config, "b")  # a join: a's pass deals b in, so its publish writes
    wait_until(lambda: calls, 15)
    # Refused (None), though the plan changed: nothing of a's landed after its znode went.
    assert calls == [(child, None)]
    after = read_assignment(zk, paths)[0]
    assert after == before or after["leader"] == "b", after
