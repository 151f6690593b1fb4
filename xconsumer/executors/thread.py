"""The default executor: the handler loop runs in the slot's own thread.

Python threads cannot be killed, so stopping is cooperative (`ctx.stopping`, `ctx.sleep`);
a handler that ignores it past `stop_timeout` is reported stuck by the runtime and keeps
its owner znode, because returning here is what lets the runner release it.
"""

from __future__ import annotations

from typing import Any

from ..loop import Report, handler_loop


class ThreadExecutor:
    kind = "thread"

    def run(self, runner: Any, ctx: Any, handler: Any, report: Report) -> bool:
        return handler_loop(handler, ctx, runner.task, report)
