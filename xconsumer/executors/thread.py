"""The default executor: the handler loop runs in the slot's own thread.

Python threads cannot be killed, so stopping is cooperative (`ctx.stopping`, `ctx.sleep`);
a handler that ignores it past `stop_timeout` is reported stuck by the runtime and keeps
its owner znode, because returning here is what lets the runner release it. The same holds
for `run_timeout`: each run gets a view of the context that turns `stopping` at the run's
deadline; a run that still does not return holds the slot and is reported stuck.
"""

from __future__ import annotations

from typing import Any

from ..loop import Report, handler_loop


class _LiveTask:
    """The runner's current task, read at each use: the runtime replaces `runner.task` when
    interval, backoff, run_timeout or breaker keys change, and the loop must see that."""

    def __init__(self, runner: Any) -> None:
        self._runner = runner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._runner.task, name)


class ThreadExecutor:
    kind = "thread"

    def run(self, runner: Any, ctx: Any, handler: Any, report: Report) -> bool:
        return handler_loop(handler, ctx, _LiveTask(runner), report, breaker=runner.breaker)
