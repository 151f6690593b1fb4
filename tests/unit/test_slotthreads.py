"""The pool of slot threads: a slot's thread looks like a thread of its own to its runner
(started, alive until its slot ends, joinable), whichever pooled thread runs it."""

from __future__ import annotations

import contextvars
import random
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.util import wait_until
from xconsumer.slotthreads import IDLE_NAME, PrestartBudget, SlotThread, SlotThreads


def pool_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("xc-slot")}


@pytest.fixture
def pool():
    before = pool_threads()
    threads = SlotThreads()
    yield threads
    threads.close()
    threads.join(5)
    wait_until(lambda: pool_threads() <= before, 5,
               message=lambda: f"threads left: {sorted(t.name for t in pool_threads())}")


def test_a_slot_thread_is_alive_until_its_slot_ends_and_named_after_it(pool):
    release, seen = threading.Event(), []

    def target() -> None:
        seen.append((threading.current_thread().name, threading.get_ident()))
        release.wait(5)

    job = SlotThread("xc-slot-t-0", target)
    assert job.ident is None and not job.is_alive()
    with pytest.raises(RuntimeError):
        job.join(0)
    pool.start(job)
    wait_until(lambda: seen, 5)
    assert job.is_alive() and seen == [("xc-slot-t-0", job.ident)]
    job.join(0.05)
    assert job.is_alive()  # join timed out: the slot still runs
    release.set()
    job.join(5)
    assert not job.is_alive()


def test_an_ended_slots_thread_runs_the_next_slot_and_is_idle_between(pool):
    before = pool_threads()
    idents = []
    first = SlotThread("xc-slot-t-0", lambda: idents.append(threading.get_ident()))
    pool.start(first)
    first.join(5)
    wait_until(lambda: pool.idle() == 1, 5)
    assert [t.name for t in pool_threads() - before] == [IDLE_NAME]
    second = SlotThread("xc-slot-t-1", lambda: idents.append(threading.get_ident()))
    pool.start(second)
    second.join(5)
    assert len(idents) == 2 and idents[0] == idents[1] == second.ident


def test_prestarted_threads_take_the_slots_without_a_thread_started(pool):
    before = pool_threads()
    pool.prestart(3)
    wait_until(lambda: pool.idle() == 3, 5)
    threads = pool_threads() - before
    assert len(threads) == 3 and {t.name for t in threads} == {IDLE_NAME}
    jobs = [SlotThread(f"xc-slot-t-{i}", lambda: None) for i in range(3)]
    for job in jobs:
        pool.start(job)
    for job in jobs:
        job.join(5)
    assert {job.ident for job in jobs} == {t.ident for t in threads}
    wait_until(lambda: pool.idle() == 3, 5)
    pool.prestart(2)  # idle threads count towards it
    assert pool.idle() == 3 and pool_threads() - before == threads


def test_a_prestarted_thread_is_handed_no_slot_before_it_runs(monkeypatch):
    """A prestarted thread is listed idle by itself, once it runs: a slot started before
    then gets a thread of its own. Listed before it started (as first built), a slot handed
    to it in that gap had no thread if the start then failed (found by review)."""
    hold, held = threading.Event(), threading.Event()
    real, first = SlotThreads._take, []

    def late_take(self, worker):
        if not first:  # the prestarted thread's first look
            first.append(worker)
            held.set()
            hold.wait(5)
        return real(self, worker)

    monkeypatch.setattr(SlotThreads, "_take", late_take)
    before = pool_threads()
    pool = SlotThreads()
    pool.prestart(1)
    assert held.wait(5)
    prestarted = first[0].thread.ident
    a_ran, b_ran = threading.Event(), threading.Event()
    a = SlotThread("xc-slot-t-0", a_ran.set)
    try:
        pool.start(a)  # the prestarted thread has not looked yet: a gets a thread of its own
        assert a_ran.wait(5) and a.ident != prestarted
        a.join(5)
        hold.set()
        wait_until(lambda: pool.idle() == 2, 5)  # the prestarted thread, and a's
        b = SlotThread("xc-slot-t-1", b_ran.set)
        pool.start(b)
        assert b_ran.wait(5)
        b.join(5)
    finally:
        hold.set()
        pool.close()
        pool.join(5)
    wait_until(lambda: pool_threads() <= before, 5)


def test_a_closed_pool_prestarts_nothing():
    before = pool_threads()
    pool = SlotThreads()
    pool.close()
    pool.prestart(3)
    assert pool.idle() == 0 and pool_threads() <= before


def test_an_idle_thread_ends_after_the_idle_timeout():
    before = pool_threads()
    pool = SlotThreads(idle_timeout=0.05)
    job = SlotThread("xc-slot-t-0", lambda: None)
    pool.start(job)
    job.join(5)
    wait_until(lambda: pool.idle() == 0 and pool_threads() <= before, 5)
    later = SlotThread("xc-slot-t-1", lambda: None)  # a new thread, then
    pool.start(later)
    later.join(5)
    pool.close()
    pool.join(5)
    wait_until(lambda: pool_threads() <= before, 5)


def test_each_slot_runs_in_a_fresh_context_and_a_failure_keeps_the_thread(pool):
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="fresh")
    seen = []

    def dirty() -> None:
        var.set("dirty")
        raise ValueError("boom")

    failing = SlotThread("xc-slot-t-0", dirty)
    pool.start(failing)
    failing.join(5)
    assert not failing.is_alive()
    after = SlotThread("xc-slot-t-1", lambda: seen.append(var.get()))
    pool.start(after)
    after.join(5)
    assert seen == ["fresh"] and after.ident == failing.ident


def test_close_joins_idle_threads_leaves_a_running_slot_and_refuses_new_ones():
    before = pool_threads()
    pool = SlotThreads()
    done = SlotThread("xc-slot-t-5", lambda: None)  # leaves an idle thread
    pool.start(done)
    done.join(5)
    beside = SlotThread("xc-slot-t-6", lambda: release_beside.wait(10))
    release_beside = threading.Event()
    pool.start(beside)  # takes the idle thread...
    release_beside.set()
    beside.join(5)  # ...and leaves it idle again
    release, running = threading.Event(), threading.Event()
    stuck = SlotThread("xc-slot-t-0", lambda: (running.set(), release.wait(10)))
    pool.start(stuck)
    assert running.wait(5)
    pool.close()
    pool.join(0.5)  # returns without waiting for the running slot
    assert stuck.is_alive()
    assert [t.name for t in pool_threads() - before] == ["xc-slot-t-0"]
    with pytest.raises(RuntimeError):
        pool.start(SlotThread("xc-slot-t-1", lambda: None))
    release.set()
    stuck.join(5)
    wait_until(lambda: pool_threads() <= before, 5)  # its thread ends with the slot


def _idle_list_faults(pool: SlotThreads) -> list[str]:
    """A thread on the idle list has no slot, given or running."""
    with pool._lock:
        return [f"{worker.thread.name}: job {worker.job}, running {worker.running}"
                for worker in pool._idle if worker.job is not None or worker.running]


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.floats(0, 0.003)), min_size=1, max_size=40),
       st.sampled_from([0.0, 0.001, 30.0]))
def test_every_slot_runs_once_whatever_the_order_of_starts_ends_and_timeouts(
        jobs, idle_timeout):
    """Starts from several threads at once, slots of random length, idle timeouts racing
    with the starts: every slot runs exactly once, is alive until it has, and after close
    no thread is left."""
    before = pool_threads()
    pool = SlotThreads(idle_timeout=idle_timeout)
    runs: list[int] = []
    faults: list[str] = []
    lock = threading.Lock()
    made = []
    for i, (_, length) in enumerate(jobs):
        def target(i: int = i, length: float = length) -> None:
            with lock:
                runs.append(i)
            threading.Event().wait(length)
        made.append(SlotThread(f"xc-slot-t-{i}", target))
    starters = []
    for k in range(4):
        mine = [job for job, (who, _) in zip(made, jobs, strict=True) if who == k]

        def start_all(mine: list[SlotThread] = mine) -> None:
            for job in mine:
                threading.Event().wait(random.random() * 0.002)
                pool.start(job)
                faults.extend(_idle_list_faults(pool))
        starters.append(threading.Thread(target=start_all, name=f"test-starter-{k}"))
    for starter in starters:
        starter.start()
    for starter in starters:
        starter.join(10)
    for job in made:
        job.join(10)
        assert not job.is_alive()
    pool.close()
    pool.join(5)
    assert sorted(runs) == list(range(len(jobs))) and faults == []
    wait_until(lambda: pool_threads() <= before, 5)


def test_the_prestart_budget_grants_at_most_its_limit_in_any_window():
    budget = PrestartBudget(limit=10, window=30)
    assert [budget.take(n) for n in (4, 0, 5, 3, 1, -2)] == [4, 0, 5, 1, 0, 0]


def test_the_prestart_budget_is_spent_again_once_the_window_has_passed():
    now = [100.0]
    budget = PrestartBudget(limit=3, window=30, clock=lambda: now[0])
    assert budget.take(2) == 2
    now[0] = 110.0
    assert budget.take(5) == 1
    now[0] = 129.9
    assert budget.take(1) == 0  # the first grant is 29.9 s old
    now[0] = 130.0
    assert budget.take(5) == 2  # it has left the window; the second has not
    now[0] = 140.0
    assert budget.take(5) == 1  # the second left too; the third (2, at 130) counts


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=-3, max_value=40), max_size=30),
       st.integers(min_value=0, max_value=64))
def test_the_prestart_budget_never_grants_more_than_asked_or_than_its_limit(wants, limit):
    budget = PrestartBudget(limit=limit, window=3600)
    granted = [budget.take(w) for w in wants]
    assert all(0 <= g <= max(w, 0) for g, w in zip(granted, wants, strict=True))
    assert sum(granted) == min(limit, sum(max(w, 0) for w in wants))  # greedy, in order
