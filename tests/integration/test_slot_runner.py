"""One slot runner against a real ZooKeeper: the owner-znode handshake's corner cases."""

from __future__ import annotations

import threading
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import ConnectionLoss
from kazoo.handlers.threading import KazooTimeoutError

from tests.cluster import RECORD_WORKS
from tests.integration.test_guards import _runtime
from tests.util import wait_until
from xconsumer.assignment import Slot
from xconsumer.config import TaskConfig
from xconsumer.lease import Lease
from xconsumer.paths import Paths
from xconsumer.slot import SlotRunner
from xconsumer.works import discover


def runner(zk: KazooClient, root: str, task: TaskConfig, index: int = 0) -> SlotRunner:
    lease = Lease(lambda: 30.0)
    lease.renew(lease.now())
    return SlotRunner(slot=Slot(task.name, index), task=task, generation=1, node="a",
                      client=zk, paths=Paths(root, "it"), lease=lease,
                      registry=discover(RECORD_WORKS),
                      session_id=lambda: zk.client_id[0] if zk.client_id else None,
                      on_exit=lambda _r: None, retry_wait=0.01)


class _Unanswered:
    """What a request queued behind a dead connection gives: no answer in time."""

    def get(self, timeout: float | None = None) -> Any:
        raise KazooTimeoutError("no answer")


def test_a_once_slot_stopped_before_its_marker_was_read_is_not_done(zk: KazooClient, zk_root,
                                                                    record, monkeypatch):
    """Defect: the marker check answered "done" when stopping, so a connection blip then a
    lease end left the slot `done` with no marker and no run, for as long as it stayed
    assigned."""
    task = TaskConfig(name="o", work_name="once", worker_num=1, mode="once")
    paths = Paths(zk_root, "it")
    done_path = paths.done_marker("o", 0)
    real = zk.exists_async
    asked = threading.Event()

    def exists_async(path: str, watch: Any = None) -> Any:
        if path == done_path:
            asked.set()
            return _Unanswered()
        return real(path, watch=watch)

    monkeypatch.setattr(zk, "exists_async", exists_async)
    r = runner(zk, zk_root, task)
    r.start()
    assert asked.wait(10)
    r.request_stop("lease ended")
    r.thread.join(10)
    assert not r.thread.is_alive()
    monkeypatch.undo()
    assert r.state == "stopped" and r.runs == 0
    assert zk.exists(done_path) is None


def test_waiting_on_another_owner_registers_one_watcher(zk: KazooClient, zk_hosts, zk_root,
                                                        record):
    """Defect: every retry while another node held the slot added a new watcher lambda,
    kept by kazoo until the znode changed."""
    other = KazooClient(hosts=zk_hosts, timeout=10)
    other.start(timeout=10)
    try:
        paths = Paths(zk_root, "it")
        path = paths.owner("r", 0)
        other.create(path, b'{"node": "b"}', ephemeral=True, makepath=True)
        task = TaskConfig(name="r", work_name="record", worker_num=1)
        r = runner(zk, zk_root, task)
        r.start()
        calls = {"n": 0}
        real = zk.exists_async

        def counting(p: str, watch: Any = None) -> Any:
            if p == path:
                calls["n"] += 1
            return real(p, watch=watch)

        zk.exists_async = counting  # type: ignore[method-assign]
        try:
            wait_until(lambda: calls["n"] >= 10, 20)  # ten waits of 0.05 s each
            assert len(zk._data_watchers[path]) == 1
        finally:
            del zk.exists_async
        other.delete(path)  # the holder leaves: the runner claims the slot
        wait_until(lambda: r.state == "running", 10)
        r.request_stop("test over")
        r.thread.join(10)
    finally:
        other.stop()
        other.close()


def _sent(zk: KazooClient, monkeypatch) -> list[tuple[str, str]]:
    """The requests `zk` queues for the wire, in order: (kind, path)."""
    sent: list[tuple[str, str]] = []
    real = zk._call

    def call(request: Any, async_object: Any) -> Any:
        sent.append((type(request).__name__, getattr(request, "path", "")))
        return real(request, async_object)
    monkeypatch.setattr(zk, "_call", call)
    return sent


def test_a_look_that_may_follow_a_lost_create_goes_behind_a_sync(zk: KazooClient, zk_root,
                                                                 record, monkeypatch):
    """A runner (or an orphan record) without a fence may hold a znode whose create's answer
    was lost, and after a lost answer the client may be on a server of the ensemble that
    has not applied that create yet: a plain exists could say "no node", the runner forget
    the znode, and the znode appear later, held for the session's life. Each such look
    goes behind a sync; a fenced one (the client saw its znode) does not need it."""
    task = TaskConfig(name="r", work_name="record", worker_num=2)
    lost, fenced = runner(zk, zk_root, task, 0), runner(zk, zk_root, task, 1)
    for r in (lost, fenced):
        zk.create(r.owner_path, b"", ephemeral=True, makepath=True)
        r.may_hold_owner = True
    stat = zk.exists(fenced.owner_path)
    assert stat is not None
    fenced.fence = stat.czxid
    sent = _sent(zk, monkeypatch)
    rt = _runtime(zk, zk_root)
    sweep = [lambda: (lost._release(), fenced._release()),
             rt.release_orphans]  # the orphan sweep, likewise
    for look in sweep:
        sent.clear()
        look()
        looks = [(kind, path) for kind, path in sent if kind in ("Sync", "Exists")]
        assert zk.exists(lost.owner_path) is None and zk.exists(fenced.owner_path) is None
        assert looks == [("Sync", lost.owner_path), ("Exists", lost.owner_path),
                         ("Exists", fenced.owner_path)], looks
        for r in (lost, fenced):  # again, for the sweep
            zk.create(r.owner_path, b"", ephemeral=True)
        rt._orphans = {lost.owner_path: None,
                       fenced.owner_path: zk.exists(fenced.owner_path).czxid}


def test_a_look_whose_sync_failed_counts_for_nothing(zk: KazooClient, zk_root, record,
                                                     monkeypatch):
    """Found by review: a connection dropped between the sync and the exists fails the sync
    and may leave the exists to go alone on the next connection, to a server that may lag.
    Its "no node" must not let the runner (or the sweep) forget the znode: the look failed,
    and is tried again."""
    task = TaskConfig(name="r", work_name="record", worker_num=1)
    lost = runner(zk, zk_root, task)
    lost.may_hold_owner = True  # its create's answer was lost: no fence

    def dropped(path: str) -> Any:
        result = zk.handler.async_result()
        result.set_exception(ConnectionLoss())
        return result
    monkeypatch.setattr(zk, "sync_async", dropped)
    lost._release()
    assert lost.may_hold_owner  # still to be looked for
    rt = _runtime(zk, zk_root)
    rt._orphans = {lost.owner_path: None}
    rt.release_orphans()
    assert rt.has_orphans()
    monkeypatch.undo()
    lost._release()
    rt.release_orphans()
    assert not lost.may_hold_owner and not rt.has_orphans()
