"""How a slot's handler runs: one family of interchangeable executors behind one interface.

The slot runner (`slot.py`) owns the owner znode, the fence and the bookkeeping; an
executor only runs the handler loop until the slot must stop and says whether a once-slot
completed. The runner never branches on the kind: it asks `executor_for(task, handler)`.

- `thread` (default): the handler loop in the slot's own thread; stopping is cooperative.
- `process` (`isolation = "process"`): a child process leading its own session, so the
  handler and every program it started can be terminated, then killed.
- `container` (`image = "..."`, which implies `isolation = "container"`): each run is a
  Docker container, stopped and removed before the slot lets go (see container.py).
- `asyncio` (picked for an `async def` handler of a thread task): the slot's loop runs on
  the node's event loop and a stop cancels the coroutine (see coroutine.py).

An executor must not return while anything it started for the slot may still run: the
runner releases the owner znode as soon as `run()` returns.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from ..loop import Report

if TYPE_CHECKING:
    from ..slot import SlotContext, SlotRunner


class Executor(Protocol):
    kind: str

    def run(self, runner: SlotRunner, ctx: SlotContext, handler: Any, report: Report
            ) -> bool:
        """Run until the slot must stop; True when a once-slot completed."""
        ...


def executor_for(task: Any, handler: Any = None) -> Executor:
    """The executor of `task`; a coroutine handler (`async def`) in a thread task runs on the
    node's event loop instead of a thread of its own (the `asyncio` kind)."""
    kind = getattr(task, "isolation", "thread")
    if kind == "thread" and handler is not None and getattr(handler, "is_coroutine", False):
        kind = "asyncio"
    try:
        return _EXECUTORS[kind]()
    except KeyError:
        raise ValueError(f"unknown executor {kind!r} (known: {', '.join(_EXECUTORS)})") from None


def _thread() -> Executor:
    from .thread import ThreadExecutor

    return ThreadExecutor()


def _process() -> Executor:
    from .process import ProcessExecutor

    return ProcessExecutor()


def _container() -> Executor:
    from .container import ContainerExecutor

    return ContainerExecutor()


def _asyncio() -> Executor:
    from .coroutine import CoroutineExecutor

    return CoroutineExecutor()


_EXECUTORS = {"thread": _thread, "process": _process, "container": _container,
              "asyncio": _asyncio}


def register(kind: str, factory: Any) -> None:
    """Add an executor kind (a module of this package registers itself on import)."""
    _EXECUTORS[kind] = factory
