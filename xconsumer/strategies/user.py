"""Strategies users bring: classes in the `works/` package, and installed entry points.

Like handlers, user strategies are found, not registered: a class in any module of
`works/` that subclasses `xconsumer.strategies.Strategy` and has a `name` is the strategy
of that name; an installed distribution can also offer one under the entry-point group
`xconsumer.strategies` (the entry point's name is the strategy's name, its object a
Strategy class or a function with the strategy signature). Both are found when the node
starts, so an unknown `[assignment] strategy`, a duplicate name or a class that cannot be
created fails the start with a one-line message, never a leader at 3 a.m.

Entry points are only listed (names) until one is the configured strategy: a broken plugin
that nobody uses must not stop every node.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any

from ..errors import ConfigError, WorksError
from ..works import WorksRegistry
from .base import Strategy
from .consistent_hash import DEFAULT_LOAD_FACTOR, ConsistentHash
from .guard import StrategyRunner

ENTRY_POINT_GROUP = "xconsumer.strategies"


@dataclass(frozen=True)
class UserStrategy:
    """A strategy found in user code, with where it came from for messages."""

    name: str
    strategy: Strategy
    origin: str


def _builtins() -> Mapping[str, Strategy]:
    from . import STRATEGIES  # the package imports this module's users, not the reverse

    return STRATEGIES


def _origin(cls: type, base: Path) -> str:
    """`works/file.py:line (Class)`: relative to the works dir, so messages are the same on
    every host, as handler messages are."""
    try:
        line: int | str = inspect.getsourcelines(cls)[1]
    except (OSError, TypeError):
        line = "?"
    source = inspect.getsourcefile(cls)
    file = Path(source).resolve() if source else None
    if file is None:
        where = cls.__module__
    elif file.is_relative_to(base):
        where = f"{base.name}/{file.relative_to(base).as_posix()}"
    else:
        where = str(file)
    return f"{where}:{line} ({cls.__name__})"


def _is_strategy_class(obj: Any) -> bool:
    return inspect.isclass(obj) and obj is not Strategy and Strategy in obj.__mro__


def _create(cls: type, origin: str) -> Strategy:
    """Created once, with no arguments, like the `Work` class of handlers."""
    try:
        instance = cls()
    except Exception as exc:
        raise WorksError(f"cannot create strategy {origin}: {type(exc).__name__}: {exc} "
                         "(a strategy class is created once, with no arguments)") from exc
    if not callable(instance):
        raise WorksError(f"strategy {origin} has no __call__(tasks, members, *, leader, "
                         "leader_works, previous) -> Plan")
    return instance


def works_strategies(registry: WorksRegistry) -> dict[str, UserStrategy]:
    """Every strategy class of the works package, by name.

    A Strategy subclass without a `name` is a base for others and is skipped. A name that
    is also a built-in's, or that two classes claim, is an error naming both places.
    """
    classes: dict[str, tuple[type, str]] = {}
    seen: set[int] = set()
    builtins = _builtins()
    for module in getattr(registry, "modules", ()):
        for obj in list(vars(module).values()):
            if not _is_strategy_class(obj) or id(obj) in seen:
                continue
            seen.add(id(obj))
            name = getattr(obj, "name", None)
            if name is None:
                continue
            origin = _origin(obj, registry.path)
            if not isinstance(name, str) or not name.strip():
                raise WorksError(f"strategy {origin}: `name` must be a non-empty string, "
                                 f"got {name!r}")
            if name in builtins:
                raise WorksError(f"strategy {origin} is named {name!r}, like a built-in "
                                 "strategy: choose another name")
            if name in classes:
                raise WorksError(f"strategy {name!r} is defined twice: {classes[name][1]} "
                                 f"and {origin}")
            classes[name] = (obj, origin)
    # Created only once every name is known to be unique: a duplicate is reported as such,
    # not as whatever the first class's constructor does.
    return {name: UserStrategy(name, _create(cls, origin), origin)
            for name, (cls, origin) in classes.items()}


def _entry_points() -> dict[str, EntryPoint]:
    """The group's entry points by name; the first of a name wins (as importlib's order)."""
    out: dict[str, EntryPoint] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        out.setdefault(ep.name, ep)
    return out


def strategy_names(registry: WorksRegistry | None) -> list[str]:
    """Every name `[assignment] strategy` may take on this node: built-ins, the works
    package's strategies and installed entry points (listed, not loaded)."""
    names = set(_builtins())
    if registry is not None:
        names |= set(works_strategies(registry))
    names |= set(_entry_points())
    return sorted(names)


def _load_entry_point(ep: EntryPoint) -> UserStrategy:
    origin = f"entry point {ep.name} = {ep.value} ({ENTRY_POINT_GROUP})"
    try:
        obj = ep.load()
    except Exception as exc:
        raise WorksError(f"cannot load strategy {origin}: {type(exc).__name__}: {exc}") from exc
    if _is_strategy_class(obj):
        return UserStrategy(ep.name, _create(obj, origin), origin)
    if inspect.isclass(obj) or not callable(obj):
        raise WorksError(f"strategy {origin} is neither a Strategy subclass nor a function")
    return UserStrategy(ep.name, obj, origin)


def available_strategies(registry: WorksRegistry | None, wanted: str, *,
                         hash_load_factor: float = DEFAULT_LOAD_FACTOR
                         ) -> tuple[dict[str, Strategy], frozenset[str]]:
    """The strategies a node can call, and which of them are user code (to be guarded).

    Built-ins (consistent_hash with the configured load factor), every strategy of the
    works package, and `wanted` when it names an entry point. A works class shadows an
    entry point of the same name: the project's own code is the more specific choice.
    """
    table: dict[str, Strategy] = dict(_builtins())
    table["consistent_hash"] = ConsistentHash(hash_load_factor)
    user: dict[str, UserStrategy] = works_strategies(registry) if registry is not None else {}
    if wanted not in table and wanted not in user:
        ep = _entry_points().get(wanted)
        if ep is not None:
            user[wanted] = _load_entry_point(ep)
    table.update({name: u.strategy for name, u in user.items()})
    return table, frozenset(user)


def unknown_strategy(name: str, known: Iterable[str]) -> str:
    """The message for a name that is none of `known` (used where no config label exists)."""
    return (f"unknown assignment strategy {name!r} (known: {', '.join(sorted(known))}); a "
            f"user strategy is a class in works/ subclassing xconsumer.strategies.Strategy "
            f"with name = {name!r}, or an entry point in the {ENTRY_POINT_GROUP!r} group")


def runner_for(registry: WorksRegistry | None, strategy: str, *, timeout: float,
               hash_load_factor: float, source: str = "<config>",
               on_result: Callable[[str, str | None], None] | None = None) -> StrategyRunner:
    """The runner a node plans with: its known strategies, user ones guarded.

    Fails (ConfigError) when `strategy` is none of them, so a node embedded without the
    CLI (which says where the name came from) still refuses to start with it.
    """
    table, user = available_strategies(registry, strategy, hash_load_factor=hash_load_factor)
    if strategy not in table:
        raise ConfigError(f"{source}: [assignment] strategy: "
                          f"{unknown_strategy(strategy, strategy_names(registry))}")
    return StrategyRunner(table, user, timeout=timeout, on_result=on_result)
