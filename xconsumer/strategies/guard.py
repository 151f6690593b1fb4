"""The one place the leader calls a strategy: user code runs bounded, checked, replaceable.

A user strategy is code the leader cannot trust the way it trusts the built-ins: it may
raise, return a plan that breaks the cluster's guarantees, or never return. None of that
may stop the cluster from being scheduled, so a user strategy runs

- in a worker thread, waited for at most `[assignment] strategy_timeout` seconds: a
  strategy that never returns blocks the leader's controller for that long, once. Python
  cannot kill a thread, so a timed-out call is abandoned (a daemon thread, it does not keep
  the process alive); while it still runs no second call of that strategy is started, and
  every pass falls back at once. Since a strategy is pure, the abandoned call's result is
  simply dropped if it ever comes;
- on copies of its inputs, and its plan is checked in full (`validate.validate_plan`).

When it raises, times out or returns an invalid plan, the plan of `round_robin` (the
default) is used instead and the failure is returned as one line, for the caller to make
loud (log, event, metric, node view). Built-in strategies are called directly: their
property tests are their guard, and a large plan must not be cut short by a timeout.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from loguru import logger

from .base import Layout, Member, Plan, Strategy, TaskLike, _layout, dealing_order
from .round_robin import round_robin
from .validate import summary, validate_plan

DEFAULT_TIMEOUT = 2.0
FALLBACK = "round_robin"

Outcome = tuple[Plan, str | None]


class StrategyRunner:
    """Calls strategies by name for one leader, user strategies guarded.

    `strategies`: every strategy this node knows (built-ins and user ones); `user`: the
    names to guard. `on_result(name, error)` is told the outcome of every call (error None:
    the strategy's own plan was used), on the calling thread.
    """

    def __init__(self, strategies: Mapping[str, Strategy] | None = None,
                 user: Collection[str] = (), *, timeout: float = DEFAULT_TIMEOUT,
                 on_result: Callable[[str, str | None], None] | None = None) -> None:
        if strategies is None:
            from . import STRATEGIES  # the package imports this module, not the reverse

            strategies = STRATEGIES
        self.strategies = dict(strategies)
        self.user = frozenset(user)
        self.timeout = timeout
        self.on_result = on_result
        self._abandoned: dict[str, threading.Thread] = {}  # timed-out calls, by name

    def run(self, name: str, tasks: Sequence[TaskLike], members: Sequence[Member], *,
            leader: str | None, leader_works: bool = True,
            previous: Layout | None = None) -> Outcome:
        """The plan of strategy `name`, or round robin's and why."""
        strategy = self.strategies.get(name)
        if strategy is None:
            known = ", ".join(sorted(self.strategies))
            plan, error = None, f"unknown assignment strategy {name!r} (known: {known})"
        elif name not in self.user:
            plan, error = strategy(tasks, members, leader=leader, leader_works=leader_works,
                                   previous=previous), None
        else:
            # The previous plan may be the leader's remembered one (leader.DocMemo), used
            # again next pass: user code gets lists of its own.
            plan, error = self._guarded(name, strategy, tuple(tasks), tuple(members),
                                        leader=leader, leader_works=leader_works,
                                        previous=None if previous is None else {
                                            n: list(s) for n, s in _layout(previous).items()})
        if error is not None:
            error = f"{error}; using {FALLBACK} instead"
            plan = round_robin(tasks, members, leader=leader, leader_works=leader_works)
        if self.on_result is not None:
            self.on_result(name, error)
        assert plan is not None
        return plan, error

    def running(self, name: str) -> bool:
        """Whether an abandoned (timed-out) call of `name` is still running."""
        thread = self._abandoned.get(name)
        return thread is not None and thread.is_alive()

    def _guarded(self, name: str, strategy: Strategy, tasks: tuple[TaskLike, ...],
                 members: tuple[Member, ...], *, leader: str | None, leader_works: bool,
                 previous: Layout | None) -> tuple[Plan | None, str | None]:
        label = f"strategy {name!r}"
        if self.running(name):
            # The text does not change from pass to pass, so the caller reports it once.
            return None, (f"{label} is still running a call that timed out (a thread "
                          "cannot be stopped); not calling it again until that call ends")
        self._abandoned.pop(name, None)
        box: dict[str, Any] = {}

        def call() -> None:
            try:
                box["plan"] = strategy(tasks, members, leader=leader,
                                       leader_works=leader_works, previous=previous)
            except BaseException as exc:  # noqa: BLE001 - reported, whatever it is
                box["error"] = exc

        thread = threading.Thread(target=call, name=f"strategy-{name}", daemon=True)
        thread.start()
        thread.join(self.timeout)
        if thread.is_alive():
            self._abandoned[name] = thread
            logger.warning("{} abandoned after {:g} s; its thread runs on until it returns",
                           label, self.timeout)
            return None, (f"{label} did not return within {self.timeout:g} s "
                          "([assignment] strategy_timeout)")
        if "error" in box:
            exc = box["error"]
            return None, f"{label} raised {type(exc).__name__}: {exc}"
        plan = box.get("plan")
        problems = validate_plan(plan, tasks, members, leader, leader_works)
        if problems:
            return None, f"{label} returned an invalid plan: {summary(problems)}"
        assert isinstance(plan, Plan)
        return _normalized(plan, members, leader, leader_works), None


def _normalized(plan: Plan, members: Sequence[Member], leader: str | None,
                leader_works: bool) -> Plan:
    """The plan as the built-ins shape it: tuples, and no empty entries for names that take
    no work (a valid plan may list them; the published document should not)."""
    working = {m.name for m in dealing_order(members, leader, leader_works=leader_works)}
    return Plan({n: tuple(s) for n, s in plan.nodes.items() if s or n in working},
                tuple(plan.unassigned))


_DEFAULT = StrategyRunner()


def run_strategy(name: str, tasks: Sequence[TaskLike], members: Sequence[Member], *,
                 leader: str | None, leader_works: bool = True, previous: Layout | None = None,
                 runner: StrategyRunner | None = None) -> Outcome:
    """`runner.run(...)`, with the built-ins alone when no runner is given."""
    return (runner or _DEFAULT).run(name, tasks, members, leader=leader,
                                    leader_works=leader_works, previous=previous)
