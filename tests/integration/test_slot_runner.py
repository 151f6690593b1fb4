"""One slot runner against a real ZooKeeper: the owner-znode handshake's corner cases."""

from __future__ import annotations

import threading
from typing import Any

from kazoo.client import KazooClient
from kazoo.handlers.threading import KazooTimeoutError

from tests.cluster import RECORD_WORKS
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
