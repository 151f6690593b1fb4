"""What a hand edit, an older version or a hostile client can leave in ZooKeeper must never
wedge the cluster, restart what need not restart, or run a slot twice. Real ZooKeeper, real
in-process nodes; each test reproduces a defect found by writing into the znodes."""

from __future__ import annotations

import threading
import time

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import KazooException

from tests.cluster import RECORD_WORKS
from tests.conftest import _client
from tests.integration.test_guards import _freeze_controller
from tests.integration.test_node import RECORD_TASK, make_config, records, running, start
from tests.util import wait_until
from xconsumer import node as node_module
from xconsumer.assignment import Slot
from xconsumer.codecs import Corrupt, decode_overrides
from xconsumer.config import TaskConfig, parse_config
from xconsumer.errors import ConfigError
from xconsumer.leader import read_assignment, valid_doc
from xconsumer.lease import Lease
from xconsumer.overrides import OverrideError, update_task
from xconsumer.paths import Paths
from xconsumer.runtime import Runtime
from xconsumer.works import discover
from xconsumer.zk import dumps
from xconsumer.zkserver import ZooKeeperServer

SLOTS = {"r/0", "r/1", "r/2"}


def fences(node) -> dict[str, int]:
    return {f"{s.task}/{s.slot}": s.fence for s in node.runtime.statuses()
            if s.state == "running"}


def generation(zk: KazooClient, paths: Paths) -> int | None:
    doc = valid_doc(read_assignment(zk, paths)[0])
    return doc["generation"] if doc else None


@pytest.fixture
def pair(zk_hosts, zk_root, nodes, record):
    config = make_config(zk_hosts, zk_root, RECORD_TASK)
    a = start(nodes, config, "a")
    b = start(nodes, config, "b")
    # Both must hold slots (b, the first follower, two of them): a converged pair, not the
    # leader alone before it saw b join.
    wait_until(lambda: running(a) | running(b) == SLOTS and not running(a) & running(b)
               and running(a) and running(b), 20)
    return a, b


@pytest.mark.parametrize("data", [
    b'{"nodes": "x", "generation": "y"}', b'{"nodes": []}', b'{"nodes":{"a":{"r":["x"]}}}',
    b"not json",
])
def test_a_corrupt_assignment_is_repaired_above_every_generation_without_restarts(
        zk: KazooClient, zk_root, pair, data: bytes) -> None:
    a, b = pair
    paths = Paths(zk_root, "it")
    for n in (4, 3, 4, 3):  # a few generations, so a reset to 1 would show
        a.overrides.update(lambda d, n=n: update_task(d, a.seed_tasks(), "r", {"workerNum": n}))
        wait_until(lambda n=n: len(running(a) | running(b)) == n, 10)
    assert (generation(zk, paths) or 0) >= 5
    wait_until(lambda: running(a) | running(b) == SLOTS, 10)
    before, kept = generation(zk, paths), {**fences(a), **fences(b)}
    events_before = b.events.last_seq
    import time

    since = time.time()
    zk.set(paths.assignment, data)
    wait_until(lambda: (generation(zk, paths) or 0) > before, 10)
    # Both have gone through a pass since the repair (the fences below are the kept ones
    # before it, too: without this the checks would run before anything could move).
    pa, pb = a.passes, b.passes
    a._kick("test")
    b._kick("test")
    wait_until(lambda: a.passes > pa + 1 and b.passes > pb + 1, 10)
    # Nothing moved and nothing restarted: every slot keeps its fence.
    wait_until(lambda: {**fences(a), **fences(b)} == kept, 10)
    views = [a.cluster_view(), b.node_view()]
    assert views[0]["generation"] > before
    rebalances = [e for e in b.events.since(events_before) if e["kind"] == "rebalance"]
    assert all(e["moved"] == 0 for e in rebalances), rebalances
    assert not any(r["e"] == "stop" and r["t"] > since for r in records_of(a))


def records_of(node) -> list[dict]:
    import os
    from pathlib import Path

    return records(Path(os.environ["XCONSUMER_TEST_RECORD"]))


def test_a_follower_keeps_its_last_plan_while_the_assignment_is_corrupt(
        zk: KazooClient, zk_root, pair, monkeypatch) -> None:
    a, b = pair
    paths = Paths(zk_root, "it")
    mine = fences(b)
    # Write garbage and see the follower read it before the leader repairs it: stop the
    # leader's controller first so the window is as long as we need (and wait for a pass
    # already under way, which could repair the garbage or rewrite b's plan).
    _freeze_controller(a, monkeypatch)
    zk.set(paths.assignment, b'{"nodes": []}')
    # A follower runs from its own plan and reads the document only without a usable one:
    # make its plan corrupt too, so it falls back to the (corrupt) document.
    zk.set(paths.plan("b"), b'{"generation": 1, "slots": "x"}')
    b._kick("test")
    wait_until(lambda: {c["kind"] for c in b.node_view()["corrupt"]} == {"assignment", "plan"},
               10)
    assert fences(b) == mine  # still running its last valid plan
    assert isinstance(read_assignment(zk, paths)[0], Corrupt)
    view = b.cluster_view()  # answers, names the znode
    assert [c["znode"] for c in view["corrupt"]] == [paths.assignment]
    assert b.metrics.corrupt.labels("assignment")._value.get() == 1


def test_corrupt_overrides_keep_the_last_valid_ones_until_a_write_repairs_them(
        zk: KazooClient, zk_root, pair) -> None:
    a, b = pair
    paths = Paths(zk_root, "it")
    b.overrides.update(lambda d: update_task(d, b.seed_tasks(), "r", {"workerNum": 5}))
    five = {f"r/{i}" for i in range(5)}
    wait_until(lambda: running(a) | running(b) == five, 15)
    # The last two found in review: 600 levels deep decoded, then broke copy.deepcopy in
    # every publish and API call; NaN is not JSON to any strict reader.
    for garbage in (b'"not json"', b"[1,2]", b"{{{", b'{"tasks": {"r": {"workerNum": -4}}}',
                    b'{"tasks": {"r": {"junk": ' + b"[" * 600 + b"]" * 600 + b"}}}",
                    b'{"tasks": {"r": {"interval": NaN}}}'):
        gen = generation(zk, paths)
        # This round's own error (each garbage has its own): `corrupt` stays set from the
        # round before, so a wait on it alone would not wait for the leader to read this one.
        expected = decode_overrides(garbage, paths.overrides)
        assert isinstance(expected, Corrupt)
        passes = a.passes
        zk.set(paths.overrides, garbage)
        want = expected.to_dict()
        wait_until(lambda want=want: want in a.node_view()["corrupt"], 10,
                   message=lambda: str(a.node_view()["corrupt"]))
        wait_until(lambda p=passes: a.passes >= p + 2, 10)  # and a pass after that read
        from xconsumer.view import tasks_table

        tasks = tasks_table(a.client, a.paths, a.assignment, a.seed_tasks(), a.overrides)
        assert [t["workerNum"] for t in tasks["tasks"]] == [5]
        assert tasks["corrupt"][0]["kind"] == "overrides"
        # A fresh process (the CLI, a new leader) shows the published table, not app.toml.
        fresh = tasks_table(zk, paths, a.assignment, a.seed_tasks())
        assert [t["workerNum"] for t in fresh["tasks"]] == [5]
        assert generation(zk, paths) == gen and running(a) | running(b) == five
    b.overrides.update(lambda d: update_task(d, b.seed_tasks(), "r", {"workerNum": 4}))
    wait_until(lambda: running(a) | running(b) == {f"r/{i}" for i in range(4)}, 15)
    wait_until(lambda: a.overrides.corrupt is None and not a.node_view()["corrupt"], 10)


def test_election_follows_the_znode_names_and_a_node_repairs_its_member_data(
        zk: KazooClient, zk_root, zk_hosts, pair, nodes) -> None:
    a, b = pair
    paths = Paths(zk_root, "it")
    path = paths.node(a.node_view()["znode"])
    zk.set(path, b'{"id":"zz","handlers":5}')
    c = start(nodes, make_config(zk_hosts, zk_root, RECORD_TASK), "c")  # reads it fresh
    wait_until(lambda: c.leader == "a" and b.leader == "a", 10)
    wait_until(lambda: zk.get(path)[0] and b'"id":"a"' in zk.get(path)[0], 10)
    wait_until(lambda: running(a) | running(b) | running(c) == SLOTS, 15)
    assert a.is_leader and not b.is_leader and not c.is_leader
    assert any(e["kind"] == "member_repaired" for e in a.events.since(0))


def test_a_persistent_owner_znode_is_reported_as_blocked(zk: KazooClient, zk_root, zk_hosts,
                                                         nodes, record) -> None:
    paths = Paths(zk_root, "it")
    zk.create(paths.owner("r", 1), b"by hand", makepath=True)
    node = start(nodes, make_config(zk_hosts, zk_root, RECORD_TASK), "a")
    wait_until(lambda: running(node) == {"r/0", "r/2"}, 15)
    wait_until(lambda: [s.state for s in node.runtime.statuses() if s.slot == 1] == ["blocked"],
               10)
    assert any(e["kind"] == "slot_blocked" for e in node.events.since(0))
    node.refresh_metrics()
    assert node.metrics.blocked._value.get() == 1
    assert any(c["znode"] == paths.owner("r", 1) for c in node.cluster_view()["corrupt"])
    zk.delete(paths.owner("r", 1))
    wait_until(lambda: running(node) == SLOTS, 10)


def test_a_removed_once_task_runs_again_when_added_back(zk: KazooClient, zk_root, zk_hosts,
                                                        nodes, record) -> None:
    once = '[[task]]\nname = "o"\nworkName = "once"\nworkerNum = 2\nmode = "once"\n'
    node = start(nodes, make_config(zk_hosts, zk_root, once), "a")
    paths = Paths(zk_root, "it")
    starts = lambda: [r for r in records(record) if r["e"] == "start"]  # noqa: E731
    wait_until(lambda: len(zk.get_children(f"{paths.done}/o")) == 2 if zk.exists(
        f"{paths.done}/o") else False, 15)
    from xconsumer.overrides import add_task, remove_task

    node.overrides.update(lambda d: remove_task(d, node.seed_tasks(), "o"))
    wait_until(lambda: zk.exists(f"{paths.done}/o") is None
               and zk.exists(paths.owner_task("o")) is None, 10)
    node.overrides.update(lambda d: add_task(
        d, node.seed_tasks(), {"name": "o", "workName": "once", "workerNum": 2, "mode": "once"},
        lambda _w: True))
    wait_until(lambda: len(starts()) == 4, 15)


def test_the_total_slot_count_is_capped_everywhere(zk_hosts, zk_root, nodes, record) -> None:
    with pytest.raises(ConfigError, match="max_slots"):
        parse_config('[assignment]\nmax_slots = 5\n' + RECORD_TASK.replace("3", "6"), env={})
    config = make_config(zk_hosts, zk_root, "[assignment]\nmax_slots = 4\n" + RECORD_TASK)
    node = start(nodes, config, "a")
    wait_until(lambda: running(node) == SLOTS, 15)
    with pytest.raises(OverrideError, match="limit of 4"):
        node.overrides.update(lambda d: update_task(d, node.seed_tasks(), "r", {"workerNum": 5},
                                                    max_slots=4))
    # A table over the limit that still gets in (hand edit): scheduled up to it, loudly.
    node.client.create(node.paths.overrides, dumps({"tasks": {"r": {"workerNum": 9}}}))
    wait_until(lambda: running(node) == {f"r/{i}" for i in range(4)}, 10)
    assert "over the cluster's limit" in (node.node_view()["publish_error"] or "")
    assert any(e["kind"] == "publish_failed" for e in node.events.since(0))


def test_the_controller_does_not_spin_while_zookeeper_is_unreachable(
        tmp_path, zk_root, nodes, record, local_zookeeper) -> None:
    with ZooKeeperServer(data_dir=tmp_path / "zk") as server:
        config = make_config(server.hosts, zk_root,
                             "[assignment]\nrejoin_grace = 30\ndebounce = 0.2\n" + RECORD_TASK)
        a = start(nodes, config, "a")
        b = start(nodes, config, "b")
        wait_until(lambda: running(a) | running(b) == SLOTS, 15)
        b.stop(timeout=5)  # not graceful for the damper's clock: sets a wake-up
        b.client.stop()
        server.stop()
        try:
            wait_until(lambda: not a.client.connected, 10)
            before = a.passes
            done = threading.Event()
            wait_until(lambda: done.wait(0.05) or a.lease.remaining() < -1.0, 10)
            assert a.passes - before < 20, f"{a.passes - before} passes while disconnected"
        finally:
            server.start()
        wait_until(lambda: a.client.connected, 20)
        # Stopped while its server still runs: a node outliving it kept reconnecting (and
        # its slots claiming) through the rest of the suite.
        assert a.stop(timeout=5)
        assert not [t.name for t in a._threads if t.is_alive()]


def test_a_slot_still_claiming_when_zookeeper_went_away_stops_at_once(
        tmp_path, zk_root, local_zookeeper) -> None:
    """Found by the suite (a node outliving its test's server): a slot thread waiting for
    ZooKeeper to answer its claim ended only when the call timed out (10 s), past the stop
    deadline, so the node took it for a stuck handler, kept its session and never stopped
    its client. A claim's request is given up at the stop."""
    with ZooKeeperServer(data_dir=tmp_path / "zk") as server:
        client = _client(server.hosts)
        client.start()
        try:
            lease = Lease(lambda: 600.0)
            lease.renew(lease.now())
            session = client.client_id[0]
            rt = Runtime(node="a", client=client, paths=Paths(zk_root, "it"), lease=lease,
                         registry=discover(RECORD_WORKS),
                         session_id=lambda: session, on_change=lambda: None)
            server.stop()
            wait_until(lambda: not client.connected, 10)
            rt.apply({Slot("r", 0): TaskConfig(name="r", work_name="record", worker_num=1)}, 1)
            wait_until(lambda: [r.state for r in rt.runners()] == ["waiting"], 10)
            stuck = rt.stop_all(time.monotonic() + 3.0)
            assert stuck == [] and not any(r.alive for r in rt.runners())
            assert [r.acquired for r in rt.runners()] == [False]
            rt.threads.join(3.0)
            # The create given up was still queued: sent once ZooKeeper is back, its znode
            # is the orphan sweep's (and would go with the session's close anyway).
            server.start()
            wait_until(lambda: client.connected, 20)
            owner = Paths(zk_root, "it").owner("r", 0)

            def swept() -> bool:
                rt.release_orphans()
                try:
                    return client.exists(owner) is None
                except KazooException:  # the connection, just back, may drop once more
                    return False

            wait_until(swept, 10)
            # Nothing of the claim was sent again after the stop. Found by a CI failure:
            # kazoo's makepath sent the create once more from its own callback, after the
            # queued create's NoNodeError, so it could land after the sweep had looked and
            # stay for good; the parent it made first says it was sent, in either order.
            owner_task = Paths(zk_root, "it").owner_task("r")
            for _ in range(20):  # round trips of the session, behind anything sent before
                client.sync(zk_root)
                assert client.exists(owner_task) is None
            assert client.exists(owner) is None
        finally:
            client.stop()
            client.close()


def test_a_stop_is_not_held_for_ever_by_a_membership_call(
        zk: KazooClient, zk_hosts, zk_root, nodes, record) -> None:
    """Found when the suite hung: the controller's name-claim check, under the member
    lock, waited on a connection to a server that had gone for good, and stop() waited
    for the lock. A call under it that never returns no longer keeps stop() from ending
    within its timeout (and the claim's calls are bounded too)."""
    a = start(nodes, make_config(zk_hosts, zk_root, RECORD_TASK), "a")
    wait_until(lambda: running(a) == SLOTS, 15)
    a._member_lock.acquire()  # a call under it that never returns
    outcome: list[bool] = []
    stopper = threading.Thread(target=lambda: outcome.append(a.stop(timeout=4)),
                               name="test-stopper", daemon=True)
    stopper.start()
    try:
        wait_until(lambda: outcome, 20)
    finally:
        a._member_lock.release()
        stopper.join(30)
    # It left, within its deadline, and every slot ended (none reported stuck).
    assert outcome == [True] and a.state is node_module.RunState.STOPPED
    assert zk.get_children(Paths(zk_root, "it").nodes) == []


def _rejoin_held(zk: KazooClient, zk_root: str, zk_hosts: str, nodes: list,
                 monkeypatch: pytest.MonkeyPatch) -> tuple:
    """Node a, its member znode deleted, and the rejoin that follows held inside
    `register` until the returned `release` is set (`entered` once it is there)."""
    node = start(nodes, make_config(zk_hosts, zk_root, RECORD_TASK), "a")
    wait_until(lambda: running(node) == SLOTS, 15)
    entered, release = threading.Event(), threading.Event()
    real = node_module.register

    def slow_register(*args, **kwargs):
        entered.set()
        release.wait(20)
        return real(*args, **kwargs)
    monkeypatch.setattr(node_module, "register", slow_register)
    paths = Paths(zk_root, "it")
    zk.delete(paths.node(node.node_view()["znode"]))  # the node must rejoin
    assert entered.wait(10)
    return node, paths, release


def test_a_rejoin_that_ends_after_the_stop_gave_up_on_it_leaves_at_once(
        zk: KazooClient, zk_root, zk_hosts, nodes, record, monkeypatch) -> None:
    """stop() waits for a rejoin in flight only so long; one that ends later (a slow
    ZooKeeper) leaves at once, or the node stays a member while its session lives on (as
    it does past a stop when slots are stuck: kept here by not closing it)."""
    monkeypatch.setattr(node_module, "stop_client", lambda client: None)
    node, paths, release = _rejoin_held(zk, zk_root, zk_hosts, nodes, monkeypatch)
    try:
        node.stop(timeout=2)  # gives up on the rejoin's lock after 1 s
        release.set()
        wait_until(lambda: zk.get_children(paths.nodes) == []
                   and zk.exists(paths.name_claim("a")) is None, 10)
    finally:
        release.set()
        node.client.stop()


def test_a_member_znode_name_taken_by_another_session_makes_the_node_join_again(
        zk: KazooClient, zk_root, zk_hosts, nodes, record) -> None:
    """Found by review: nodes/ deleted and made again gives member names out again, and
    another session may get ours. The listing still shows "our" name; the lease thread
    sees the znode is another session's, and the node joins again under a new name
    (before, it went on believing it, its lease invalid for good)."""
    a = start(nodes, make_config(zk_hosts, zk_root, RECORD_TASK), "a")
    wait_until(lambda: running(a) == SLOTS, 15)
    paths = Paths(zk_root, "it")
    old = a._member_child
    tx = zk.transaction()
    tx.delete(paths.node(old))
    tx.create(paths.node(old), b"\x00not ours", ephemeral=True)
    assert not any(isinstance(r, Exception) for r in tx.commit())
    # Ours again under a new name; the stranger (corrupt) is passed over once it is old.
    wait_until(lambda: a._member_child not in (None, old) and running(a) == SLOTS, 20)
    assert zk.get(paths.node(old))[0] == b"\x00not ours"  # never written over


def test_a_shutdown_never_races_a_rejoin(zk: KazooClient, zk_root, zk_hosts, nodes, record,
                                        monkeypatch) -> None:
    node, paths, release = _rejoin_held(zk, zk_root, zk_hosts, nodes, monkeypatch)
    stopper = threading.Thread(target=node.stop, kwargs={"timeout": 10}, name="t-stop")
    stopper.start()
    release.set()
    stopper.join(15)
    assert not stopper.is_alive()
    # The leave covered the rejoined znode: nothing left, and the leave reads as graceful.
    assert zk.get_children(paths.nodes) == []
    assert zk.exists(paths.left_marker("a")) is not None


def test_a_crash_and_a_graceful_leave_read_differently(zk_hosts, zk_root, nodes, record,
                                                       ) -> None:
    config = make_config(zk_hosts, zk_root, RECORD_TASK)
    a = start(nodes, config, "a")
    b = start(nodes, config, "b")
    c = start(nodes, config, "c")
    # The leader reads every member; a follower only the leader, the member after it and
    # itself (read_members): here that is everyone too.
    wait_until(lambda: a._member_names == ["a", "b", "c"]
               and c._member_names == ["a", "b", "c"], 10)
    b.stop(timeout=5)
    wait_until(lambda: any(e["kind"] == "node_left" for e in a.events.since(0)), 10)
    # A crash: the session goes without a leave.
    c_client = c.client
    c._stop.set()
    c.runtime.revoke_all("test crash")
    c_client.stop()
    wait_until(lambda: any(e["kind"] == "node_lost" and e["node"] == "c"
                           for e in a.events.since(0)), 10, message=lambda: str(a.events.since(0)))
    left = [e for e in a.events.since(0) if e.get("node") == "b"]
    assert [e["kind"] for e in left if e["kind"] in ("node_left", "node_lost")] == ["node_left"]


# -- found by the adversarial review ------------------------------------------------------------

def test_a_child_under_a_left_marker_never_stops_the_leader(zk: KazooClient, zk_root, pair):
    a, b = pair
    paths = Paths(zk_root, "it")
    zk.create(f"{paths.left_marker('ghost')}/x", b"", makepath=True)
    a._markers_seen["ghost"] = 0.0  # long seen: due for the sweep on the next pass
    a.overrides.update(lambda d: update_task(d, a.seed_tasks(), "r", {"workerNum": 5}))
    wait_until(lambda: running(a) | running(b) == {f"r/{i}" for i in range(5)}, 10)
    wait_until(lambda: zk.exists(paths.left_marker("ghost")) is None, 10)


def test_a_generation_written_at_the_cap_does_not_make_the_leader_loop(
        zk: KazooClient, zk_root, pair) -> None:
    from xconsumer.codecs import MAX_GENERATION

    a, b = pair
    paths = Paths(zk_root, "it")
    doc = valid_doc(read_assignment(zk, paths)[0])
    zk.set(paths.assignment, dumps({**doc, "generation": MAX_GENERATION, "nodes": {}}))
    wait_until(lambda: running(a) | running(b) == SLOTS
               and generation(zk, paths) == MAX_GENERATION
               and len(valid_doc(read_assignment(zk, paths)[0])["nodes"]) == 2, 10)
    version = zk.exists(paths.assignment).version
    pa, pb = a.passes, b.passes  # (counts since the start: compare with now, not with 0)
    for _ in range(3):
        a._kick("test")
        b._kick("test")
        wait_until(lambda pa=pa, pb=pb: a.passes > pa and b.passes > pb, 10)
        pa, pb = a.passes, b.passes
    assert zk.exists(paths.assignment).version - version <= 1


def test_corrupt_overrides_in_a_process_that_never_read_them_valid(
        zk: KazooClient, zk_root, zk_hosts, nodes, record) -> None:
    """A restarted leader, and a write through a node that never read the overrides, keep
    the runtime changes the published table holds."""
    tasks = RECORD_TASK + '[[task]]\nname = "s"\nworkName = "record"\nworkerNum = 1\n'
    config = make_config(zk_hosts, zk_root, tasks)
    a = start(nodes, config, "a")
    wait_until(lambda: running(a) == SLOTS | {"s/0"}, 15)
    a.overrides.update(lambda d: update_task(d, a.seed_tasks(), "r", {"paused": True}))
    wait_until(lambda: running(a) == {"s/0"}, 10)
    a.stop(timeout=5)
    paths = Paths(zk_root, "it")
    zk.set(paths.overrides, b"garbage")
    a2 = start(nodes, config, "a2")  # a fresh leader: never read the overrides valid
    b = start(nodes, config, "b")
    wait_until(lambda: running(a2) | running(b) == {"s/0"}
               and not running(a2) & running(b), 15)
    # A write through b (a follower, never read them either) keeps r paused.
    b.overrides.update(lambda d: update_task(d, b.seed_tasks(), "s", {"workerNum": 2}))
    wait_until(lambda: running(a2) | running(b) == {"s/0", "s/1"}, 15)
    assert b.overrides.corrupt is None
