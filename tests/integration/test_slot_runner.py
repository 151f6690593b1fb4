"""One slot runner against a real ZooKeeper: the owner-znode handshake's corner cases."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from kazoo.client import KazooClient
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.protocol.connection import _CONNECTION_DROP

from tests.cluster import RECORD_WORKS
from tests.util import wait_until
from xconsumer.assignment import Slot
from xconsumer.config import TaskConfig
from xconsumer.lease import Lease
from xconsumer.paths import Paths
from xconsumer.runtime import Runtime
from xconsumer.slot import SlotRunner
from xconsumer.works import discover

STUBBORN = TaskConfig(name="s", work_name="stubborn", worker_num=1)


def runner(zk: KazooClient, root: str, task: TaskConfig, index: int = 0,
           **options: Any) -> SlotRunner:
    lease = Lease(lambda: 30.0)
    lease.renew(lease.now())
    kwargs: dict[str, Any] = {
        "session_id": lambda: zk.client_id[0] if zk.client_id else None, **options}
    return SlotRunner(slot=Slot(task.name, index), task=task, generation=1, node="a",
                      client=zk, paths=Paths(root, "it"), lease=lease,
                      registry=discover(RECORD_WORKS), on_exit=lambda _r: None,
                      retry_wait=0.01, **kwargs)


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


def test_a_revoked_slot_is_released_with_the_stat_sent_at_its_stop(
        zk: KazooClient, zk_root, monkeypatch, tmp_path) -> None:
    """Where a slot moves, its release is a delete alone: the stat that fences it (the owner
    znode's czxid) is sent when the runtime tells the slot to stop, while the handler winds
    down, not after the handler returned."""
    release = tmp_path / "release"
    monkeypatch.setenv("XCONSUMER_TEST_RELEASE", str(release))
    paths = Paths(zk_root, "it")
    path = paths.owner("s", 0)
    lease = Lease(lambda: 30.0)
    lease.renew(lease.now())
    runtime = Runtime(node="a", client=zk, paths=paths, lease=lease,
                      registry=discover(RECORD_WORKS),
                      session_id=lambda: zk.client_id[0], on_change=lambda: None)
    runtime.apply({Slot("s", 0): STUBBORN}, 1)
    wait_until(lambda: [r.state for r in runtime.runners()] == ["running"], 10)
    asked: list[bool] = []  # one entry per stat of the owner znode: was the handler done?
    real = zk.exists_async

    def counting(p: str, watch: Any = None) -> Any:
        if p == path:
            asked.append(release.exists())
        return real(p, watch=watch)

    monkeypatch.setattr(zk, "exists_async", counting)
    runtime.apply({}, 2)
    assert asked == [False]  # sent with the stop, the handler still running
    release.write_text("go")
    wait_until(lambda: not runtime.running_slots(), 10)  # released: the thread has ended
    assert asked == [False]  # the release asked nothing more
    monkeypatch.undo()
    assert zk.exists(path) is None


@pytest.mark.parametrize("told", ["by_its_watch", "by_a_dropped_connection",
                                  "by_a_new_session"])
def test_a_stat_sent_ahead_fences_the_release_only_while_it_stands(
        zk: KazooClient, zk_hosts, zk_root, monkeypatch, tmp_path, told: str) -> None:
    """The stat sent at the stop stands for our owner znode at the release only while nothing
    could have changed it unseen. Here the znode is deleted by hand and the slot's next owner
    makes its own, and the release must leave that one alone, whether the change was told by
    the stat's watch, or never told: the connection dropped (kazoo drops its watches then,
    and a change made while cut off is never told), or our session changed. A fresh znode is
    at version 0 like ours: only the czxid tells them apart."""
    release = tmp_path / "release"
    monkeypatch.setenv("XCONSUMER_TEST_RELEASE", str(release))
    lease = Lease(lambda: 30.0)
    runtime = Runtime(node="a", client=zk, paths=Paths(zk_root, "it"), lease=lease,
                      registry=discover(RECORD_WORKS),
                      session_id=lambda: zk.client_id[0], on_change=lambda: None)
    session = [0]
    r = runner(zk, zk_root, STUBBORN, link_epoch=runtime._link_epoch,
               session_id=lambda: session[0] or zk.client_id[0])
    path = r.owner_path
    other = KazooClient(hosts=zk_hosts, timeout=10)
    other.start(timeout=10)
    try:
        r.start()
        wait_until(lambda: r.state == "running", 10)
        if told != "by_its_watch":
            # The change is not told by the watch: its event is still on its way.
            monkeypatch.setattr(r, "_ahead_watch", lambda _event: None)
        r.signal_stop()
        r.stat_ahead()
        wait_until(lambda: r._ahead is not None and r._ahead.ready(), 10)
        zk.delete(path)
        other.create(path, b'{"node": "b"}', ephemeral=True)
        if told == "by_its_watch":
            wait_until(lambda: r._ahead_changed, 10)
        elif told == "by_a_dropped_connection":
            epoch = runtime._link_epoch()
            zk._call(_CONNECTION_DROP, zk.handler.async_result())
            wait_until(lambda: runtime._link_epoch() >= epoch + 2 and zk.connected, 10)
        else:
            session[0] = other.client_id[0] + 1
        release.write_text("go")
        r.thread.join(10)
        assert not r.thread.is_alive()
        stat = zk.exists(path)
        assert stat is not None and stat.ephemeralOwner == other.client_id[0]
    finally:
        other.stop()
        other.close()
