"""The batch callbacks' bookkeeping without ZooKeeper: which slots a change assigns and
revokes, when a revoke is due, and that a hung callback is waited for only once."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from xconsumer.assignment import Slot
from xconsumer.callbacks import BatchCallbacks
from xconsumer.config import TaskConfig
from xconsumer.events import EventLog
from xconsumer.works import WorksRegistry

calls: list[tuple[str, str, list[int]]] = []


def _hooks(work: str) -> dict[str, Any]:
    return {f"Assign{work}": lambda ctx, slots: calls.append(("assign", ctx.task,
                                                             [s.index for s in slots])),
            f"Revoke{work}": lambda ctx, slots: calls.append(("revoke", ctx.task,
                                                             [s.index for s in slots]))}


REGISTRY = WorksRegistry({**_hooks("A"), **_hooks("B")}, Path("works"))
A = TaskConfig(name="t", work_name="A", worker_num=3)
B = TaskConfig(name="u", work_name="B", worker_num=2)


def names(batch: list[Any]) -> list[tuple[str, str, list[int]]]:
    return [(c.kind, c.ctx.task, [s.index for s in c.slots]) for c in batch]


def test_gained_slots_are_assigned_in_one_call_per_task_sorted() -> None:
    cb = BatchCallbacks(node="n", registry=REGISTRY)
    starting = {Slot("t", 2): A, Slot("t", 0): A, Slot("u", 1): B}
    revokes, assigns = cb.plan(dict(starting), lambda s: False, starting, 1)
    assert revokes == [] and names(assigns) == [("Assign", "t", [0, 2]), ("Assign", "u", [1])]
    # A runner that restarts while the slot stays held: no new call.
    assert cb.plan(dict(starting), lambda s: False, {Slot("t", 0): A}, 2) == ([], [])


def test_a_revoke_waits_for_every_runner_of_its_batch() -> None:
    cb = BatchCallbacks(node="n", registry=REGISTRY)
    held = {Slot("t", i): A for i in range(3)}
    cb.plan(held, lambda s: False, held, 1)
    alive = {Slot("t", 1), Slot("t", 2)}
    assert cb.plan({Slot("t", 0): A}, alive.__contains__, {}, 2) == ([], [])
    alive.discard(Slot("t", 1))
    assert cb.plan({Slot("t", 0): A}, alive.__contains__, {}, 3) == ([], [])
    alive.clear()
    revokes, _ = cb.plan({Slot("t", 0): A}, alive.__contains__, {}, 4)
    assert names(revokes) == [("Revoke", "t", [1, 2])]


def test_a_slot_back_before_its_batch_is_due_is_revoked_alone_then_assigned() -> None:
    cb = BatchCallbacks(node="n", registry=REGISTRY)
    held = {Slot("t", 1): A, Slot("t", 2): A}
    cb.plan(held, lambda s: False, held, 1)
    cb.plan({}, lambda s: True, {}, 2)  # both revoked, both still stopping
    back = {Slot("t", 1): A}
    revokes, assigns = cb.plan(back, lambda s: s == Slot("t", 2), back, 3)
    assert names(revokes) == [("Revoke", "t", [1])]
    assert names(assigns) == [("Assign", "t", [1])]
    revokes, _ = cb.plan(back, lambda s: False, {}, 4)
    assert names(revokes) == [("Revoke", "t", [2])]


def test_a_changed_work_name_revokes_under_the_old_and_assigns_under_the_new() -> None:
    cb = BatchCallbacks(node="n", registry=REGISTRY)
    cb.plan({Slot("t", 0): A}, lambda s: False, {Slot("t", 0): A}, 1)
    now_b = TaskConfig(name="t", work_name="B", worker_num=3)
    revokes, assigns = cb.plan({Slot("t", 0): now_b}, lambda s: False,
                               {Slot("t", 0): now_b}, 2)
    assert [c.hook.name for c in revokes] == ["RevokeA"]
    assert [c.hook.name for c in assigns] == ["AssignB"]


def test_shutdown_revokes_everything_held_except_what_still_runs() -> None:
    cb = BatchCallbacks(node="n", registry=REGISTRY)
    held = {Slot("t", 0): A, Slot("t", 1): A, Slot("u", 0): B}
    cb.plan(held, lambda s: False, held, 1)
    final = cb.release_all(lambda s: s == Slot("t", 1), 1)
    assert names(final) == [("Revoke", "t", [0]), ("Revoke", "u", [0])]


def test_a_hung_assign_is_waited_for_once_and_reported() -> None:
    release = threading.Event()
    registry = WorksRegistry({"AssignH": lambda ctx, slots: release.wait(10)}, Path("works"))
    events = EventLog()
    cb = BatchCallbacks(node="n", registry=registry, events=events, timeout=0.2)
    task = TaskConfig(name="h", work_name="H", worker_num=2)
    try:
        for generation, slot in enumerate((Slot("h", 0), Slot("h", 1)), start=1):
            _, assigns = cb.plan({slot: task}, lambda s: False, {slot: task}, generation)
            cb.dispatch([], assigns)
        timeouts = [e for e in events.since(0) if e["kind"] == "callback_timeout"]
        assert len(timeouts) == 1 and timeouts[0]["slots"] == [0]
    finally:
        release.set()
        assert cb.stop(timeout=5)
