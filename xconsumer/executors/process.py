"""`isolation = "process"`: the handler loop in a child process that can be killed.

The mechanics (a child leading its own session, signals to every process of it, the
release wait, the watcher that outlives the child) live in `xconsumer.isolation`.
"""

from __future__ import annotations

from typing import Any

from ..loop import Report


class ProcessExecutor:
    kind = "process"

    def run(self, runner: Any, ctx: Any, handler: Any, report: Report) -> bool:
        from ..isolation import run_isolated

        return run_isolated(runner, ctx, report)
