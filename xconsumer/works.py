"""Finds the user's handlers in the `works/` package by reflection.

Users never register handlers: a task's `workName` is turned into a handler name (`test01` ->
`RunTest01`), and the handler is looked up among the module functions and `Work` methods of
the package. Hooks are found the same way, by prefix: `Keys<Name>()` (a keyed task's slot
provider), `Assign<Name>(ctx, slots)` and `Revoke<Name>(ctx, slots)` (batch callbacks). They
live in the same mapping as the handlers, but are never runnable: a node that only has
`AssignX` cannot run the slots of X.

Everything is discovered and checked once at start-up, so a typo, a duplicate or a module
that does not import fails the node immediately with a message pointing at the file,
instead of failing a slot at 3 a.m.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import pkgutil
import sys
import threading
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType, ModuleType
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from loguru import logger

from xconsumer.errors import WorksError

if TYPE_CHECKING:
    from loguru import Logger

PACKAGE = "works"
PREFIX = "Run"
WORK_CLASS = "Work"
# Hook prefix -> the positional arguments the hook is called with.
HOOKS: dict[str, tuple[str, ...]] = {"Keys": (), "Assign": ("ctx", "slots"),
                                     "Revoke": ("ctx", "slots")}


@runtime_checkable
class SlotContextProtocol(Protocol):
    """What a handler receives as `ctx`; declared here so users can annotate without importing
    the runtime's concrete class (which drags in ZooKeeper)."""

    task: str
    slot: int
    node: str
    generation: int
    fence: int
    stop_event: threading.Event
    logger: Logger

    @property
    def stopping(self) -> bool: ...

    def sleep(self, seconds: float) -> bool: ...


def candidate_names(work_name: str, prefix: str = PREFIX) -> tuple[str, ...]:
    """Both spellings are accepted because Go-style `RunTest01` is the convention, yet a user
    who literally writes `Run` + workName should not be punished for it."""
    if not work_name:
        raise WorksError("workName must not be empty")
    preferred = prefix + work_name[0].upper() + work_name[1:]
    exact = prefix + work_name
    return (preferred,) if exact == preferred else (preferred, exact)


def _is_handler_name(name: str) -> bool:
    return name.startswith(PREFIX) and len(name) > len(PREFIX)


def hook_prefix(name: str) -> str | None:
    """The hook kind a name spells (`AssignOrders` -> "Assign"), None for anything else."""
    for prefix in HOOKS:
        if name.startswith(prefix) and len(name) > len(prefix):
            return prefix
    return None


def _is_hook(name: str, obj: Any) -> bool:
    """Classes are left out: a `KeysView` or an `Assignment` class imported into a works
    module is not a hook, and calling it as one would fail the node at start-up."""
    return hook_prefix(name) is not None and callable(obj) and not inspect.isclass(obj)


@dataclass(frozen=True)
class Handler:
    """A resolved handler; hides whether the user wrote `RunX(ctx)` or a Go-style `RunX()`.

    A hook is a Handler too, called with its own arguments: `Keys<Name>()` with none,
    `Assign<Name>(ctx, slots)` and `Revoke<Name>(ctx, slots)` with two; its signature was
    checked against them when it was found, so the call itself cannot fail on arity."""

    name: str
    func: Callable[..., Any]
    takes_ctx: bool
    origin: str

    def __call__(self, *args: Any) -> Any:
        if not self.takes_ctx:
            return self.func()
        return self.func(*args) if self.is_hook else self.func(args[0])

    @property
    def is_hook(self) -> bool:
        return hook_prefix(self.name) is not None and not _is_handler_name(self.name)

    @property
    def is_coroutine(self) -> bool:
        """`async def RunX(ctx)`: calling it only makes a coroutine, which must run on an
        event loop (see executors/coroutine.py), never be dropped unawaited by a thread."""
        return inspect.iscoroutinefunction(getattr(self.func, "__func__", self.func))


class WorksRegistry:
    """All handlers of one works package, keyed by handler name.

    `modules` are the package's modules as discovery imported them: user strategies (see
    `xconsumer.strategies.user`) are looked up there, so the package is imported once.
    """

    def __init__(self, handlers: Mapping[str, Handler | Callable[..., Any]], path: Path,
                 modules: tuple[ModuleType, ...] = ()) -> None:
        # Plain functions are welcome (an embedding application passes its own): they get
        # the same signature checks as discovered ones, so a bad hook fails here too.
        self.handlers: Mapping[str, Handler] = MappingProxyType({
            name: h if isinstance(h, Handler) else make_handler(name, h)
            for name, h in handlers.items()})
        self.path = path
        self.modules = modules

    def names(self) -> list[str]:
        """The runnable handlers (what a node advertises it can run); hooks are not."""
        return sorted(n for n, h in self.handlers.items() if not h.is_hook)

    def hook_names(self) -> list[str]:
        return sorted(n for n, h in self.handlers.items() if h.is_hook)

    def hook(self, prefix: str, name: str) -> Handler | None:
        """`prefix + name` in either spelling `candidate_names` accepts (`AssignOrders` or
        `Assignorders` for "orders"); None when the user wrote no such hook (they are all
        optional)."""
        if prefix not in HOOKS:
            raise ValueError(f"unknown hook prefix {prefix!r} (known: {', '.join(HOOKS)})")
        for candidate in candidate_names(name, prefix):
            found = self.handlers.get(candidate)
            if found is not None:
                return found
        return None

    def has(self, work_name: str) -> bool:
        return any(name in self.handlers for name in candidate_names(work_name))

    def resolve(self, work_name: str) -> Handler:
        """Fails with the list of what does exist, since the usual cause is a typo."""
        names = candidate_names(work_name)
        for name in names:
            if name in self.handlers:
                return self.handlers[name]
        alt = f" (or {names[1]})" if len(names) > 1 else ""
        found = ", ".join(self.names()) or "none"
        raise WorksError(
            f"no handler for workName {work_name!r}: expected a function {names[0]}{alt} "
            f"in a module of {self.path.name}/ or a method of its {WORK_CLASS} class; "
            f"found: {found}"
        )

    def __repr__(self) -> str:
        return (f"WorksRegistry(path={str(self.path)!r}, handlers={self.names()}, "
                f"hooks={self.hook_names()})")


@dataclass
class _Found:
    key: object  # identity of the underlying function: re-exports are not duplicates
    file: str
    qual: str
    func: Callable[..., Any]


def _line(func: Callable[..., Any]) -> int | str:
    """The line a handler is defined on, so a duplicate can be found without searching."""
    code = getattr(getattr(func, "__func__", func), "__code__", None)
    return code.co_firstlineno if code is not None else "?"


class _Discovery:
    def __init__(self, works_dir: Path) -> None:
        self.dir = works_dir
        self.found: dict[str, _Found] = {}
        self.seen_classes: set[int] = set()

    def inside(self, filename: str) -> bool:
        return Path(filename).resolve().is_relative_to(self.dir)

    def rel(self, filename: str | None) -> str:
        """Paths relative to the works dir keep messages short and identical on every host."""
        if not filename:
            return "?"
        path = Path(filename).resolve()
        if not path.is_relative_to(self.dir):
            return str(path)
        return f"{self.dir.name}/{path.relative_to(self.dir).as_posix()}"

    def import_error(self, modname: str, origin: str | None, exc: BaseException) -> WorksError:
        """Points at the user's line, not at importlib internals, whatever the exception."""
        where: tuple[str | None, int | None] = (None, None)
        if isinstance(exc, SyntaxError):
            where = (exc.filename, exc.lineno)
        else:
            for frame in traceback.extract_tb(exc.__traceback__):
                if self.inside(frame.filename):
                    where = (frame.filename, frame.lineno)
        module_file = self.rel(origin) if origin else modname
        detail = ""
        if where[0] is not None:
            fail_file = self.rel(where[0])
            line = f"line {where[1]}" if where[1] is not None else "unknown line"
            detail = f" ({line})" if fail_file == module_file else f" ({fail_file} {line})"
        cause = f"{type(exc).__name__}: {exc}"
        return WorksError(f"cannot import {module_file}{detail}: {cause}")

    def import_module(self, modname: str) -> ModuleType:
        spec = importlib.util.find_spec(modname)
        origin = spec.origin if spec else None
        try:
            return importlib.import_module(modname)
        except (Exception, SystemExit) as exc:
            raise self.import_error(modname, origin, exc) from exc

    def modules(self, package: ModuleType) -> Iterator[ModuleType]:
        """One level of `pkgutil.iter_modules`, recursing into sub-packages; sorted so that
        duplicate errors name the files in a stable order."""
        yield package
        infos = sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name)
        for info in infos:
            if info.name == "__main__":
                continue  # importing it would run the package as a script
            module = self.import_module(f"{package.__name__}.{info.name}")
            if info.ispkg:
                yield from self.modules(module)
            else:
                yield module

    def scan(self, module: ModuleType) -> None:
        file = self.rel(getattr(module, "__file__", None))
        for name, obj in list(vars(module).items()):
            if self.defined_elsewhere(obj, module):
                continue
            if name == WORK_CLASS and inspect.isclass(obj):
                self.scan_work(obj, file)
            elif (_is_handler_name(name) and callable(obj)) or _is_hook(name, obj):
                self.add(name, obj, file, name)

    def scan_work(self, cls: type, file: str) -> None:
        if id(cls) in self.seen_classes:
            return
        self.seen_classes.add(id(cls))
        try:
            instance = cls()
        except Exception as exc:
            raise WorksError(
                f"cannot instantiate {WORK_CLASS} in {file}: {type(exc).__name__}: {exc} "
                f"(it is created once, with no arguments)"
            ) from exc
        for name in dir(cls):
            if not _is_handler_name(name) and hook_prefix(name) is None:
                continue
            method = getattr(instance, name)
            if (_is_handler_name(name) and callable(method)) or _is_hook(name, method):
                self.add(name, method, file, f"{WORK_CLASS}.{name}")

    @staticmethod
    def defined_elsewhere(obj: Any, module: ModuleType) -> bool:
        """A `from works.a import RunX` in `__init__` is the same handler, found at home."""
        home = getattr(obj, "__module__", None)
        if not isinstance(home, str) or home == module.__name__:
            return False
        return home == PACKAGE or home.startswith(PACKAGE + ".")

    def add(self, name: str, func: Callable[..., Any], file: str, qual: str) -> None:
        key = getattr(func, "__func__", func)
        previous = self.found.get(name)
        if previous is not None:
            if previous.key is key:
                return
            raise WorksError(
                f"handler {name} is defined twice: {previous.file}:{_line(previous.func)} "
                f"({previous.qual}) and {file}:{_line(func)} ({qual})"
            )
        self.found[name] = _Found(key, file, qual, func)

    def handler(self, name: str, found: _Found) -> Handler:
        return make_handler(name, found.func, found.file, found.qual)


def make_handler(name: str, func: Callable[..., Any], file: str = "?",
                 qual: str | None = None) -> Handler:
    """A Handler for `func` under `name`, its signature checked for what `name` is (a
    handler, or which hook), so a mistake fails at start-up with where it is."""
    qual = qual or name
    prefix = None if _is_handler_name(name) else hook_prefix(name)
    if prefix is None:
        takes = _takes_ctx(func, f"{qual} in {file}")
    else:
        _check_hook(func, HOOKS[prefix], f"{qual} in {file}:{_line(func)}")
        takes = bool(HOOKS[prefix])
    return Handler(name=name, func=func, takes_ctx=takes, origin=f"{file}:{qual}")


def _check_hook(func: Callable[..., Any], args: tuple[str, ...], where: str) -> None:
    """A hook is called with exactly `args`: it must accept that many positional arguments
    and require no more."""
    params = _signature(func)
    if params is None:
        return
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    empty = inspect.Parameter.empty
    required = [p for p in params if p.kind in positional and p.default is empty]
    kw_only = [p.name for p in params if p.kind is p.KEYWORD_ONLY and p.default is empty]
    accepts = (len([p for p in params if p.kind in positional]) >= len(args)
               or any(p.kind is p.VAR_POSITIONAL for p in params))
    if len(required) > len(args) or not accepts or kw_only:
        wanted = f"two arguments ({', '.join(args)})" if args else "no arguments"
        raise WorksError(f"{where} must take {wanted}: it is called with exactly those")


def _signature(func: Callable[..., Any]) -> list[inspect.Parameter] | None:
    try:
        return list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError):
        return None  # builtins without a signature: assume the documented form


def _takes_ctx(func: Callable[..., Any], where: str) -> bool:
    """Decided once here so a bad signature fails at start-up, not in every slot."""
    params = _signature(func)
    if params is None:
        return True  # builtins without a signature: assume the documented (ctx) form
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    empty = inspect.Parameter.empty
    required = [p for p in params if p.kind in positional and p.default is empty]
    if len(required) > 1:
        raise WorksError(
            f"{where} takes {len(required)} required arguments; a handler takes one (ctx) or none"
        )
    kw_only = [p.name for p in params if p.kind is p.KEYWORD_ONLY and p.default is empty]
    if kw_only:
        raise WorksError(
            f"{where} has required keyword-only argument(s) {', '.join(kw_only)}; "
            f"a handler takes one (ctx) or none"
        )
    return any(p.kind in positional or p.kind is p.VAR_POSITIONAL for p in params)


def _purge_foreign_package(works_dir: Path) -> None:
    """Tests (and reloads) discover several works dirs in one process; a cached `works` from
    another directory would silently serve the wrong handlers."""
    current = sys.modules.get(PACKAGE)
    if current is None:
        return
    paths = [Path(p).resolve() for p in getattr(current, "__path__", [])]
    if works_dir in paths:
        return
    for name in [n for n in sys.modules if n == PACKAGE or n.startswith(PACKAGE + ".")]:
        del sys.modules[name]


def _load_package(works_dir: Path, discovery: _Discovery) -> ModuleType:
    parent = str(works_dir.parent)
    if parent not in sys.path:
        sys.path.insert(0, parent)  # so handlers can `from works.helpers import x`
    _purge_foreign_package(works_dir)
    importlib.invalidate_caches()
    if PACKAGE in sys.modules:
        return sys.modules[PACKAGE]
    # Loaded from its file rather than by sys.path lookup: an older parent dir earlier on
    # sys.path, or a dir not literally named `works`, must not change which package we get.
    init = works_dir / "__init__.py"
    spec = importlib.util.spec_from_file_location(
        PACKAGE, init, submodule_search_locations=[str(works_dir)]
    )
    if spec is None or spec.loader is None:
        raise WorksError(f"cannot load {init} as a package")
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACKAGE] = module
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:
        del sys.modules[PACKAGE]
        raise discovery.import_error(PACKAGE, str(init), exc) from exc
    return module


def discover(works_dir: str | Path | None = None) -> WorksRegistry:
    """Imports the whole package eagerly: import errors and bad handlers surface at start-up,
    and a node never advertises a task it could not run."""
    path = Path(works_dir if works_dir is not None else PACKAGE).resolve()
    if not path.is_dir():
        raise WorksError(
            f"works directory {path} does not exist; create it as a Python package "
            f"(with an __init__.py) holding your Run... handlers, next to app.toml"
        )
    if not (path / "__init__.py").is_file():
        raise WorksError(
            f"{path} has no __init__.py; add an empty one so it can be imported as `works`"
        )
    discovery = _Discovery(path)
    package = _load_package(path, discovery)
    modules: list[ModuleType] = []
    for module in discovery.modules(package):
        discovery.scan(module)
        modules.append(module)
    handlers = {name: discovery.handler(name, f) for name, f in discovery.found.items()}
    logger.debug("discovered {} handler(s) and hook(s) in {}: {}", len(handlers), path,
                 sorted(handlers))
    return WorksRegistry(handlers, path, tuple(modules))
