"""Fenced checkpoints against a real ZooKeeper: what lands, what is refused, and why."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from kazoo.client import KazooClient

from tests.util import wait_until
from xconsumer import CheckpointError, OwnershipLost
from xconsumer.assignment import Slot
from xconsumer.checkpoint import MAX_CHECKPOINT_BYTES, SlotCheckpoint
from xconsumer.config import TaskConfig
from xconsumer.lease import Lease
from xconsumer.paths import Paths
from xconsumer.slot import SlotRunner
from xconsumer.works import discover

WORKS = Path(__file__).resolve().parents[1] / "checkpoint_works"
TASK = TaskConfig(name="c", work_name="counter", worker_num=1)


def _lease(zk: KazooClient, paths: Paths, name: str) -> Lease:
    lease = Lease(lambda: 30.0)
    lease.renew(lease.now())
    lease.member = zk.create(paths.node_prefix, b"{}", ephemeral=True, sequence=True,
                             makepath=True)
    return lease


def _runner(zk: KazooClient, paths: Paths, lease: Lease, node: str,
            task: TaskConfig = TASK) -> SlotRunner:
    return SlotRunner(slot=Slot(task.name, 0), task=task, generation=1, node=node, client=zk,
                      paths=paths, lease=lease, registry=discover(WORKS),
                      session_id=lambda: zk.client_id[0] if zk.client_id else None,
                      on_exit=lambda _r: None, retry_wait=0.01)


def _events(record: Path) -> list[dict[str, Any]]:
    if not record.exists():
        return []
    return [json.loads(line) for line in record.read_text().splitlines() if line]


def _store(zk: KazooClient, paths: Paths, *, member: str | None, owner_version: int = 0,
           fence: int | None = None) -> tuple[SlotCheckpoint, list[str]]:
    lost: list[str] = []
    zk.ensure_path(paths.owner_task("c"))
    if fence is None:  # the real one: the czxid of the slot's owner znode
        stat = zk.exists(paths.owner("c", 0))
        fence = stat.czxid if stat is not None else 1
    store = SlotCheckpoint(client=zk, path=paths.checkpoint("c", "0"), member=member,
                           owner=paths.owner("c", 0), owner_version=lambda: owner_version,
                           fence=fence, node="a", lost=lost.append,
                           retry_wait=0.01)
    return store, lost


def _successor_start(zk: KazooClient, paths: Paths, record: Path, task: TaskConfig,
                     timeout: float) -> dict[str, Any]:
    """Node b takes the slot, starts, and is stopped again: what its handler resumed from."""
    second = _runner(zk, paths, _lease(zk, paths, "b"), "b", task)
    second.start()
    assert wait_until(lambda: any(e["event"] == "start" and e["node"] == "b"
                                  for e in _events(record)), timeout)
    second.request_stop("test")
    second.thread.join(timeout)
    return next(e for e in _events(record) if e["event"] == "start" and e["node"] == "b")


def _owned(zk: KazooClient, paths: Paths) -> str:
    """A member znode and the slot's owner znode, as a node holding slot c/0 has them."""
    member = zk.create(paths.node_prefix, b"{}", ephemeral=True, sequence=True, makepath=True)
    zk.create(paths.owner("c", 0), b"{}", ephemeral=True, makepath=True)
    return member


def test_a_new_owner_resumes_from_the_last_commit(zk: KazooClient, zk_root, record):
    paths = Paths(zk_root, "it")
    first = _runner(zk, paths, _lease(zk, paths, "a"), "a")
    first.start()
    assert wait_until(lambda: sum(e["event"] == "commit" for e in _events(record)) >= 5, 10)
    first.request_stop("test")
    first.thread.join(10)
    last = max(e["value"] for e in _events(record) if e["event"] == "commit")
    start = _successor_start(zk, paths, record, TASK, 10)
    assert start["value"] == last
    assert start["fence"] > next(e["fence"] for e in _events(record) if e["node"] == "a")


def test_a_commit_after_the_member_znode_is_gone_is_refused(zk: KazooClient, zk_root):
    """A frozen node that wakes after its session expired: its member znode is gone."""
    paths = Paths(zk_root, "it")
    member = _owned(zk, paths)
    store, lost = _store(zk, paths, member=member)
    store.commit(1)
    zk.delete(member)
    with pytest.raises(OwnershipLost, match="member znode is gone"):
        store.commit(2)
    assert lost and store.value() == 1
    assert json.loads(zk.get(paths.checkpoint("c", "0"))[0])["value"] == 1


def test_a_deposed_owner_cannot_commit_over_its_successor(zk: KazooClient, zk_root):
    """The owner znode was replaced (deleted by hand, recreated by another node at the same
    version 0): the successor's read bumped the checkpoint, so the old owner's commit fails
    even though every znode it checks still exists."""
    paths = Paths(zk_root, "it")
    member = _owned(zk, paths)
    old, lost = _store(zk, paths, member=member)
    old.commit("old-1")
    zk.delete(paths.owner("c", 0))
    zk.create(paths.owner("c", 0), b"{}", ephemeral=True)
    new, _ = _store(zk, paths, member=member)
    assert new.value() == "old-1"
    with pytest.raises(OwnershipLost, match="written or reset by someone else"):
        old.commit("old-2")
    new.commit("new-1")
    assert json.loads(zk.get(paths.checkpoint("c", "0"))[0])["value"] == "new-1"
    assert lost


def test_a_commit_without_the_owner_znode_is_refused(zk: KazooClient, zk_root):
    paths = Paths(zk_root, "it")
    member = zk.create(paths.node_prefix, b"{}", ephemeral=True, sequence=True, makepath=True)
    store, _ = _store(zk, paths, member=member)
    with pytest.raises(OwnershipLost):
        store.commit(1)  # no owner znode at all: nobody may write


def test_a_reset_refuses_the_running_owners_next_commit(zk: KazooClient, zk_root):
    paths = Paths(zk_root, "it")
    member = _owned(zk, paths)
    store, _ = _store(zk, paths, member=member)
    store.commit(5)
    zk.delete(paths.checkpoint("c", "0"))
    with pytest.raises(OwnershipLost):
        store.commit(6)
    again, _ = _store(zk, paths, member=member)
    assert again.value() is None


@pytest.mark.parametrize("value, message", [
    ({"x": object()}, "not JSON"),
    (float("nan"), "not JSON"),
    ("x" * MAX_CHECKPOINT_BYTES, "over the 65536-byte limit"),
    ([[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]], "nested deeper than 16 levels"),  # 17 deep
])
def test_values_that_cannot_be_stored_get_a_clear_error(zk: KazooClient, zk_root, value,
                                                         message):
    paths = Paths(zk_root, "it")
    member = _owned(zk, paths)
    store, lost = _store(zk, paths, member=member)
    store.commit("kept")
    with pytest.raises(CheckpointError, match=message):
        store.commit(value)
    assert store.value() == "kept" and not lost


@pytest.mark.parametrize("raw", [b"", b"not json", b"[1]", b'{"fence": 1}',
                                 b'{"value": 1, "fence": "x"}', b'{"value": NaN}',
                                 b'{"value": ' + b"[" * 600 + b"]" * 600 + b"}"])
def test_a_corrupt_checkpoint_is_never_read_as_none(zk: KazooClient, zk_root, raw):
    """Reading hand-edited garbage as "no checkpoint" would restart the work from zero."""
    paths = Paths(zk_root, "it")
    member = _owned(zk, paths)
    zk.create(paths.checkpoint("c", "0"), raw, makepath=True)
    store, _ = _store(zk, paths, member=member)
    with pytest.raises(CheckpointError, match="checkpoint znode .* is corrupt"):
        store.value()


def test_a_process_isolated_slot_commits_through_its_node(zk: KazooClient, zk_root, record):
    """The child has no ZooKeeper session: its node commits for it, with the same checks."""
    paths = Paths(zk_root, "it")
    task = TaskConfig(name="c", work_name="counter", worker_num=1, isolation="process",
                      params=(("0", '"p0"'),))
    first = _runner(zk, paths, _lease(zk, paths, "a"), "a", task)
    first.start()
    assert wait_until(lambda: sum(e["event"] == "commit" for e in _events(record)) >= 3, 30)
    first.request_stop("test")
    first.thread.join(20)
    assert not first.thread.is_alive()
    last = max(e["value"] for e in _events(record) if e["event"] == "commit")
    stored = json.loads(zk.get(paths.checkpoint("c", "0"))[0])
    assert stored["value"] == last and stored["node"] == "a"
    start = _successor_start(zk, paths, record, task, 30)
    assert start["value"] == last and start["param"] == "p0"


class _LostReply:
    """A transaction whose reply never comes (connection loss after sending)."""

    def __init__(self, apply: Any = None) -> None:
        self._apply = apply

    def get(self, timeout: float | None = None) -> Any:
        from kazoo.exceptions import ConnectionLoss

        if self._apply is not None:
            self._apply()
        raise ConnectionLoss("reply lost")


@pytest.mark.parametrize("landed", [True, False])
def test_a_lost_reply_is_resolved_by_reading_back(zk: KazooClient, zk_root, monkeypatch,
                                                  landed):
    """Applied or not, the commit's outcome is read back: landed, or refused when someone
    else wrote meanwhile; never reported landed on a guess."""
    paths = Paths(zk_root, "it")
    member = _owned(zk, paths)
    store, lost = _store(zk, paths, member=member)
    store.commit(1)
    path = paths.checkpoint("c", "0")
    real = zk.transaction

    def transaction() -> Any:
        tx = real()
        commit = tx.commit_async

        def lost_reply() -> Any:
            if landed:
                return _LostReply(lambda: commit().get(10))
            # Not applied, and another writer moves the checkpoint meanwhile.
            return _LostReply(lambda: zk.set(path, b'{"value": "other", "fence": 9}'))
        tx.commit_async = lost_reply
        return tx

    monkeypatch.setattr(zk, "transaction", transaction)
    if landed:
        store.commit(2)
        monkeypatch.undo()
        assert json.loads(zk.get(path)[0])["value"] == 2 and not lost
        store.commit(3)  # the version it read back is right: the next commit lands
        assert json.loads(zk.get(path)[0])["value"] == 3
    else:
        with pytest.raises(OwnershipLost, match="written by someone else"):
            store.commit(2)
        monkeypatch.undo()
        assert json.loads(zk.get(path)[0])["value"] == "other" and lost


def test_an_earlier_owner_reading_for_the_first_time_after_its_successor_is_refused(
        zk: KazooClient, zk_root):
    """Found by review: the old owner's first touch of the checkpoint came after the new
    owner's read; its own bump made its version current and its commit landed."""
    paths = Paths(zk_root, "it")
    member = _owned(zk, paths)
    zk.create(paths.checkpoint("c", "0"), b'{"value": 41, "fence": 0}', makepath=True)
    old, lost = _store(zk, paths, member=member)  # fence of the first owner znode
    zk.delete(paths.owner("c", 0))
    zk.create(paths.owner("c", 0), b"{}", ephemeral=True)
    new, _ = _store(zk, paths, member=member)  # a later czxid: a larger fence
    assert new.value() == 41
    with pytest.raises(OwnershipLost, match="a newer owner"):
        old.commit(45)
    assert lost and json.loads(zk.get(paths.checkpoint("c", "0"))[0])["value"] == 41


def test_a_reset_keeps_versions_growing_so_a_stale_commit_cannot_undo_it(zk: KazooClient,
                                                                        zk_root):
    """Found by review: a reset that deleted the znode restarted its versions, and an old
    owner's stale version matched the recreated znode's again (ABA)."""
    from xconsumer.checkpoint import reset_checkpoints

    paths = Paths(zk_root, "it")
    member = _owned(zk, paths)
    old, lost = _store(zk, paths, member=member)
    old.commit(7)
    assert reset_checkpoints(zk, paths, "c") == 1
    new, _ = _store(zk, paths, member=member)
    assert new.value() is None
    new.commit(1)
    with pytest.raises(OwnershipLost):
        old.commit(8)
    assert json.loads(zk.get(paths.checkpoint("c", "0"))[0])["value"] == 1
    assert reset_checkpoints(zk, paths, "c", "0") == 1
    assert json.loads(zk.get(paths.checkpoint("c", "0"))[0])["value"] is None


def test_a_key_that_moves_to_another_index_waits_for_its_previous_runner(
        zk: KazooClient, zk_root, record, monkeypatch):
    """Found by review: keys a, b, c became b, c; c moved from index 2 to index 0 and its
    new runner started while the old one was still finishing c (owner znodes were per
    index). They are per key now, so the handover of a key is a handover like any other."""
    from dataclasses import replace

    from xconsumer.keys import stable_order
    from xconsumer.runtime import Runtime

    monkeypatch.setenv("XCONSUMER_TEST_STUBBORN", "50")  # ~0.5 s of commits after a stop,
    monkeypatch.setenv("XCONSUMER_TEST_STUBBORN_KEY", "c")  # for key c only
    paths = Paths(zk_root, "it")
    lease = _lease(zk, paths, "x")
    runtime = Runtime(node="x", client=zk, paths=paths, lease=lease, registry=discover(WORKS),
                      session_id=lambda: zk.client_id[0], on_change=lambda: None)
    base = TaskConfig(name="k", work_name="counter", worker_num=3, keys="shards")
    keys = ["a", "b", "c"]
    runtime.apply({Slot("k", i): replace(base, slot_key=key) for i, key in enumerate(keys)}, 1)
    events = lambda: _events(record)  # noqa: E731
    wait_until(lambda: sum(e["event"] == "commit" and e["key"] == "c" for e in events()) >= 3,
               10)
    moved = stable_order(keys, ["b", "c"])
    assert moved == ["c", "b"]
    desired = {Slot("k", i): replace(base, worker_num=2, slot_key=key)
               for i, key in enumerate(moved)}

    def c_started_at_0() -> bool:
        runtime.apply(desired, 2)  # what the controller does on every runner exit
        return any(e["event"] == "start" and e["key"] == "c" and e["slot"] == 0
                   for e in events())

    wait_until(c_started_at_0, 15)
    runtime.stop_all(time.monotonic() + 10)
    rows = events()
    old_end = next(i for i, e in enumerate(rows)
                   if e["event"] == "end" and e["key"] == "c" and e["slot"] == 2)
    new_start = next(i for i, e in enumerate(rows)
                     if e["event"] == "start" and e["key"] == "c" and e["slot"] == 0)
    assert old_end < new_start, "key c ran under two indices at once"
    start = rows[new_start]
    last = max(e["value"] for e in rows[:new_start] if e["event"] == "commit" and
               e.get("key") == "c")
    assert start["value"] == last  # its checkpoint followed the key
