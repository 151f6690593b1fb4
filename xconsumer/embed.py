"""Run a node inside an existing Python application.

`xconsumer run` is one host among others: the CLI builds a `Consumer` too, so an application
that embeds xconsumer runs exactly the node the CLI runs, fails with the same one-line errors
and leaves the cluster the same way. What differs is who owns the process: an embedding
application has its own main thread, signal handlers and logging, so a `Consumer` installs
none of them unless asked (`log_level=`), and offers `request_stop()` and `serve_forever()`
for a host to wire to its own signals.

Handlers come from a works package found by reflection, exactly as for the CLI, or are
passed explicitly: a mapping keyed by function name, or a list of functions whose names are
the keys. Explicit handlers follow the discovery's naming and signature rules, so a handler
that discovery would refuse is refused here too, at `start()`, with one line.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from .config import Config, load_config, parse_config
from .errors import ConfigError, WorksError, ZooKeeperUnavailable
from .logs import kazoo_connecting, setup_logging
from .works import (
    HOOKS,
    PREFIX,
    Handler,
    WorksRegistry,
    candidate_names,
    discover,
    hook_prefix,
    make_handler,
)

if TYPE_CHECKING:
    from .node import Node

__all__ = ["Consumer", "SlotKey", "build_registry", "default_works_dir"]

# Hooks (`Keys<Name>`, `Assign<Name>`, `Revoke<Name>`) share the handlers' mapping.
_PREFIXES = (PREFIX, *HOOKS)

ConfigSource = Config | str | os.PathLike[str]
Handlers = Mapping[str, Callable[..., Any]] | Iterable[Callable[..., Any]]


class SlotKey(NamedTuple):
    """A slot as the host application sees it: which task, which index, and a keyed task's
    key (None otherwise)."""

    task: str
    index: int
    key: str | None = None


# -- explicit handlers -------------------------------------------------------------------------
def _valid_name(name: object) -> bool:
    if not isinstance(name, str):
        return False
    return (name.startswith(PREFIX) and len(name) > len(PREFIX)) or hook_prefix(name) is not None


def _explicit_handler(name: object, func: object) -> Handler:
    """Discovery's own checks (`make_handler`), located by module and qualified name since
    the function was handed in rather than found in a file."""
    if not _valid_name(name):
        raise WorksError(
            f"handler name {name!r} must be {', '.join(_PREFIXES[:-1])} or {_PREFIXES[-1]} "
            f"followed by the work name, e.g. 'RunIngestOrders' for workName 'ingestOrders'")
    assert isinstance(name, str)
    if not callable(func):
        raise WorksError(f"handler {name} is not callable (got {type(func).__name__})")
    target = getattr(func, "__func__", func)
    module = getattr(target, "__module__", None) or "?"
    qual = getattr(target, "__qualname__", None) or name
    return make_handler(name, func, module, qual)


def _named(handlers: Handlers) -> list[tuple[object, object]]:
    if isinstance(handlers, Mapping):
        return list(handlers.items())
    if isinstance(handlers, str | bytes) or not isinstance(handlers, Iterable):
        raise WorksError(f"handlers must be a mapping {{'RunX': function}} or a list of "
                         f"functions named Run<WorkName>, got {type(handlers).__name__}")
    named: list[tuple[object, object]] = []
    for func in handlers:
        name = getattr(func, "__name__", None)
        if not isinstance(name, str):
            raise WorksError(f"cannot tell the name of handler {func!r}: pass handlers as a "
                             f"mapping {{'RunX': function}} instead")
        named.append((name, func))
    return named


class ExplicitRegistry(WorksRegistry):
    """Handlers handed to a `Consumer` rather than discovered in a works package.

    There is no package: nothing for a process-isolated slot's child to import (the
    consumer refuses such tasks at start) and no user strategies to look up."""

    def __init__(self, handlers: Mapping[str, Handler]) -> None:
        super().__init__(handlers, Path("<handlers>"))

    def resolve(self, work_name: str) -> Handler:
        """Same lookup; the message names the handlers given, not a package to look in."""
        try:
            return super().resolve(work_name)
        except WorksError:
            names = candidate_names(work_name)
        alt = f" (or {names[1]})" if len(names) > 1 else ""
        raise WorksError(
            f"no handler for workName {work_name!r}: expected a function {names[0]}{alt} "
            f"among the handlers given; given: {', '.join(self.names()) or 'none'}")

    def __repr__(self) -> str:
        return f"ExplicitRegistry(handlers={self.names()})"


def build_registry(handlers: Handlers) -> WorksRegistry:
    """Checks explicit handlers with discovery's rules, so they fail where discovered ones
    would: at start-up, with one line naming the handler."""
    found: dict[str, Handler] = {}
    for name, func in _named(handlers):
        handler = _explicit_handler(name, func)
        previous = found.get(handler.name)
        if previous is not None and previous.func is not func:
            raise WorksError(f"handler {handler.name} is given twice: {previous.origin} and "
                             f"{handler.origin}")
        found[handler.name] = handler
    return ExplicitRegistry(found)


# -- config and works --------------------------------------------------------------------------
def default_works_dir(config_path: str | os.PathLike[str] | None) -> Path:
    """The CLI's rule, kept for embedders: `works/` beside the config file, else ./works."""
    if config_path is not None:
        beside = Path(config_path).resolve().parent / "works"
        if beside.is_dir():
            return beside
    return Path("works")


def _is_toml_text(source: object) -> bool:
    return isinstance(source, str) and "\n" in source


def _with_overrides(config: Config, overrides: Mapping[str, Any]) -> Config:
    """A `Config` object was already validated; options only replace fields."""
    sections: dict[str, dict[str, Any]] = {}
    for dotted, value in overrides.items():
        if value is not None:
            section, _, key = dotted.partition(".")
            sections.setdefault(section, {})[key] = value
    return dataclasses.replace(config, **{
        section: dataclasses.replace(getattr(config, section), **values)
        for section, values in sections.items()})


class Consumer:
    """One xconsumer node inside the calling process.

    Cheap to build: nothing is read, imported or connected until `start()`, which raises
    `ConfigError`, `WorksError`, `ZooKeeperUnavailable` or `NodeNameInUse` (all
    `XConsumerError`, with a one-line message) and otherwise returns once the node has
    joined the cluster. A consumer starts once; after `stop()` build a new one.

    `config`: a `Config`, a path to app.toml, or TOML text (any string with a newline).
    `works`: the works package directory (default: `works/` beside the config file, else
    ./works), or `handlers`: a mapping `{"RunX": func}` or a list of functions named
    `Run<WorkName>` (hooks `Keys<Name>`, `Assign<Name>`, `Revoke<Name>` too); not both.
    `name`, `zk`, `admin_host`, `admin_port`: like the CLI's `--name`, `--zk`,
    `--admin-host`, `--admin-port`. `admin`: serve the admin HTTP API (None: as `[admin]
    enabled` says). `log_level`: install xconsumer's stderr sink and stdlib bridge at that
    level (None: leave the application's logging alone). `env`: the environment the
    `XCONSUMER_*` variables are read from (default `os.environ`).
    """

    def __init__(self, config: ConfigSource, *, works: str | os.PathLike[str] | None = None,
                 handlers: Handlers | None = None, name: str | None = None,
                 zk: str | None = None, admin: bool | None = None,
                 admin_host: str | None = None, admin_port: int | None = None,
                 log_level: str | None = None, env: Mapping[str, str] | None = None) -> None:
        if works is not None and handlers is not None:
            raise TypeError("give works= (a package to search) or handlers= (explicit "
                            "functions), not both")
        if not isinstance(config, Config | str | os.PathLike):
            raise TypeError(f"config must be a Config, a path or TOML text, "
                            f"got {type(config).__name__}")
        self._source = config
        self._works = works
        self._handlers = handlers
        self._overrides: dict[str, Any] = {
            "zookeeper.hosts": zk, "node.name": name, "admin.host": admin_host,
            "admin.port": admin_port, "admin.enabled": admin}
        self._log_level = log_level
        self._env = env
        self._requested_name = name
        self._node: Node | None = None
        self._lifecycle = threading.Lock()  # start and stop never overlap
        self._started = False
        self._stop_requested = False  # a plain flag: set from signal handlers, see below
        self._stopped = threading.Event()
        self._clean = True

    # -- preparing ---------------------------------------------------------------------------
    def _load(self, strategies: Iterable[str] | None) -> Config:
        source = self._source
        names = None if strategies is None else list(strategies)
        if isinstance(source, Config):
            config = _with_overrides(source, self._overrides)
            strategy = config.assignment.strategy
            if names is not None and strategy not in names:
                raise ConfigError(f"{config.source}: [assignment] strategy must be one of "
                                  f"{', '.join(map(repr, sorted(names)))}, got {strategy!r}")
            return config
        if _is_toml_text(source):
            return parse_config(str(source), source="<config text>", env=self._env,
                                overrides=self._overrides, strategies=names)
        return load_config(source, env=self._env, overrides=self._overrides,
                           strategies=names)

    def _registry(self) -> WorksRegistry:
        if self._handlers is not None:
            return build_registry(self._handlers)
        if self._works is not None:
            return discover(Path(self._works))
        path = (None if isinstance(self._source, Config) or _is_toml_text(self._source)
                else self._source)
        assert not isinstance(path, Config)
        return discover(default_works_dir(path))

    def _prepare(self) -> tuple[Config, WorksRegistry]:
        """The CLI's order of checks, so the first problem reported is the same one."""
        from .node import validate_works
        from .strategies import is_container_task
        from .strategies.user import strategy_names

        config = self._load(None)
        registry = self._registry()
        validate_works(config, registry)
        known = strategy_names(registry)
        if config.assignment.strategy not in known:
            self._load(known)  # raises the one-line error, naming where the name was set
        if isinstance(registry, ExplicitRegistry):
            for i, task in enumerate(config.tasks):
                if task.isolation == "process" and not is_container_task(task):
                    raise ConfigError(
                        f"{config.source}: task[{i}] (name {task.name!r}) has isolation = "
                        f"\"process\": its child process imports its handler from a works "
                        f"package, and handlers given explicitly exist only in this process "
                        f"(pass works= instead)")
        return config, registry

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, timeout: float | None = None) -> Consumer:
        """Join the cluster; returns once this node's member znode exists.

        `timeout`: seconds to wait for ZooKeeper (default `[zookeeper] connect_timeout`)."""
        from .node import Node

        with self._lifecycle:
            if self._started or self._stop_requested:
                raise RuntimeError("a Consumer starts once; build a new one to start again")
            self._started = True
            if self._log_level is not None:
                setup_logging(self._log_level)
            try:
                config, registry = self._prepare()
            except BaseException:
                self._stopped.set()
                raise
            if timeout is not None:
                config = dataclasses.replace(config, zookeeper=dataclasses.replace(
                    config.zookeeper, connect_timeout=timeout))
            node = Node(config, registry, admin_factory=_admin_server)
            self._node = node
            try:
                with kazoo_connecting():
                    node.start()
            except ZooKeeperUnavailable:
                self._stopped.set()  # the node closed its client and admin server itself
                raise
            except BaseException:
                # Joined part way (a name in use, a ZooKeeper error after connecting):
                # leave nothing behind in a process that goes on living.
                node.stop(timeout=self._default_stop_timeout())
                self._stopped.set()
                raise
        return self

    def stop(self, timeout: float | None = None) -> bool:
        """Leave the cluster gracefully; True if every slot stopped within `timeout`.

        Default timeout: the longest task `stop_timeout` plus 5 s (at least 5 s). A slot
        whose handler ignores the stop is left running and keeps its owner znode (the
        session is left to expire), so no other node starts it meanwhile; False then."""
        self._stop_requested = True
        limit = self._default_stop_timeout() if timeout is None else timeout
        if not self._lifecycle.acquire(timeout=max(limit, 0.0) + 30.0):
            return False  # a start still connecting; its caller gets the node
        try:
            if self._stopped.is_set():
                return self._clean
            node = self._node
            if node is not None:
                self._clean = node.stop(timeout=limit)
            self._stopped.set()
            return self._clean
        finally:
            self._lifecycle.release()

    def request_stop(self) -> None:
        """Ask `serve_forever()` (or a `wait_for_stop_request()` loop) to stop the node.

        Only sets a flag: safe in a signal handler, where taking a lock the interrupted
        main thread may hold (as `Event.set` does) could deadlock."""
        self._stop_requested = True

    @property
    def stop_requested(self) -> bool:
        return self._stop_requested

    def wait_for_stop_request(self, timeout: float) -> bool:
        """True once `request_stop()` or `stop()` was called; False after `timeout`.

        Polls the flag rather than waiting on an event a signal handler would set (see
        `request_stop`)."""
        deadline = time.monotonic() + timeout
        while not self._stop_requested:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._stopped.wait(min(0.1, remaining))
        return True

    def wait_until_stopped(self, timeout: float) -> bool:
        """True once `stop()` has finished (or `start()` failed); False after `timeout`."""
        return self._stopped.wait(timeout)

    def serve_forever(self, stop_timeout: float | None = None) -> bool:
        """Block the calling thread until a stop is requested, then stop; `stop()`'s result.

        For a host whose main thread has nothing else to do; the host installs its own
        signal handlers and calls `request_stop()` from them."""
        while not self.wait_for_stop_request(1.0):
            pass
        return self.stop(stop_timeout)

    def _default_stop_timeout(self) -> float:
        node = self._node
        tasks = node.config.tasks if node is not None else ()
        return max(5.0, max((t.stop_timeout for t in tasks), default=0.0) + 5.0)

    def __enter__(self) -> Consumer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- read-only views for the host --------------------------------------------------------
    @property
    def name(self) -> str | None:
        """This node's name; before `start()`, only the one asked for (if any)."""
        return self._node.name if self._node is not None else self._requested_name

    @property
    def running(self) -> bool:
        """Started and not stopping: the node is in (or rejoining) the cluster."""
        from .node import RunState

        return self._node is not None and self._node.state is RunState.STARTED

    @property
    def is_leader(self) -> bool:
        return self._node is not None and self.running and self._node.is_leader

    @property
    def leader(self) -> str | None:
        return self._node.leader if self._node is not None else None

    @property
    def generation(self) -> int | None:
        return self._node.generation if self._node is not None else None

    @property
    def admin_url(self) -> str | None:
        admin = self._node.admin if self._node is not None else None
        return admin.url if admin is not None and self.running else None

    def assigned_slots(self) -> list[SlotKey]:
        """What the leader's current assignment gives this node (running or not yet)."""
        node = self._node
        if node is None or not self.running:
            return []
        return sorted(SlotKey(s.task, s.index, t.slot_key) for s, t in node.assigned().items())

    def running_slots(self) -> list[SlotKey]:
        """Slots whose handler runs here now (owner znode held, not stopping)."""
        node = self._node
        if node is None:
            return []
        return [SlotKey(r.slot.task, r.slot.index, r.task.slot_key)
                for r in node.runtime.runners() if r.status().state == "running"]

    def status(self) -> dict[str, Any]:
        """The node's own view, as `GET /api/node` serves it (slots with their state, fence,
        runs and failures; leader; generation; connection and lease)."""
        if self._node is None:
            return {"id": self.name, "state": "new"}
        return self._node.node_view()

    def __repr__(self) -> str:
        state = self._node.state.value if self._node is not None else "new"
        return f"Consumer(name={self.name!r}, state={state!r})"


def _admin_server(node: Node) -> Any:
    """Imported on demand: Flask is only loaded by nodes that serve the admin API."""
    from .admin import AdminServer, create_app

    return AdminServer(create_app(node), host=node.config.admin.host,
                       port=node.config.admin.port)
