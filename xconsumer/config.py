"""Loading and validating `app.toml`, plus environment and command-line overrides.

Everything is checked here, up front, so the rest of the package can trust a `Config` and a
typo surfaces as a one-line message naming the file, the key and what is allowed, instead of
as a confusing failure minutes later inside a ZooKeeper callback.

Every key is snake_case except the task keys `workName` and `workerNum`, which are accepted
only in camelCase (the spelling of the task format); `worker_num` gets a did-you-mean.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, NoReturn

try:
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python < 3.11
    import tomli as tomllib  # type: ignore[no-redef]

from .errors import ConfigError
from .paths import slot_index

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_TASK_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_WORK_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ZK_HOST_RE = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[^\s:/,\[\]]+)(?::(\d{1,5}))?")
_BARE_KEY_RE = re.compile(r"[A-Za-z0-9_-]+")
_TOML_POS_RE = re.compile(
    r"^(?P<msg>.*) \(at (?:line (?P<line>\d+), column (?P<col>\d+)|end of document)\)$"
)

MAX_WORKER_NUM = 100_000
# Slots in the whole cluster: the default keeps a node's thread count bearable even when few
# nodes share them; the hard limit keeps the assignment document far below the 1 MB znode
# limit (100,000 slots compress to 50-210 KB depending on the number of nodes).
DEFAULT_MAX_SLOTS = 10_000
MAX_SLOTS_LIMIT = 100_000
# The built-ins; a node adds its works package's strategies and installed entry points
# (xconsumer.strategies.user) once it knows them.
DEFAULT_STRATEGIES: tuple[str, ...] = ("balanced", "round_robin", "sticky", "consistent_hash")
TASK_MODES: tuple[str, ...] = ("loop", "once")
TASK_ISOLATION: tuple[str, ...] = ("thread", "process", "container")
MAX_EVENTS = 100_000
DEFAULT_BREAKER_COOLDOWN = 30.0
MAX_BREAKER_FAILURES = 1_000_000
DEFAULT_KEYS_INTERVAL = 30.0
MIN_KEYS_INTERVAL = 0.1  # each call wakes the leader's controller for a pass
MAX_PARAMS_BYTES = 64 * 1024
# JSON read from ZooKeeper or HTTP nests at most this deep, and a value a user gives (a
# params entry, a checkpoint) at most MAX_VALUE_DEPTH, which leaves room for the documents
# it travels in. Deeper data decodes (json.loads allows ~1,000 levels) but then costs the
# recursive parts of Python (copy.deepcopy, the JSON encoder) more frames than they have:
# found when a params entry 600 levels deep stopped every publish and every API request.
MAX_JSON_DEPTH = 32
MAX_VALUE_DEPTH = 16
# A node's weight: bounded so that the ratio of two weights stays a small number (the
# strategies count turns and ring points by it; 1e-309 against 1 overflowed).
MIN_WEIGHT = 0.001
MAX_WEIGHT = 1000.0


def clamp_weight(weight: float) -> float:
    """A weight above 0 out of MIN_WEIGHT..MAX_WEIGHT counts as the nearest bound."""
    return min(MAX_WEIGHT, max(MIN_WEIGHT, weight))


def nested_deeper_than(value: Any, limit: int) -> bool:
    """Whether JSON-like `value` (dicts, lists, scalars) has containers nested more than
    `limit` deep; iterative, so the data it is asked about cannot exhaust the stack."""
    stack = [(value, 1)]
    pop, push = stack.pop, stack.append
    while stack:
        item, depth = pop()
        if not isinstance(item, dict | list | tuple):
            continue
        if depth > limit:
            return True
        for child in (item.values() if isinstance(item, dict) else item):
            if isinstance(child, dict | list | tuple):
                push((child, depth + 1))
    return False


@dataclass(frozen=True)
class ClusterConfig:
    name: str = "default"


@dataclass(frozen=True)
class ZooKeeperConfig:
    """Where ZooKeeper is and how to talk to it.

    `auth` ("user:password") makes the node authenticate with the digest scheme and create
    the cluster's znodes with an ACL that gives every permission to that identity only (plus
    read to everyone when `acl_read_world`), so a stray client cannot rewrite the assignment.
    The TLS files are passed to kazoo as they are; they are checked to exist when `use_tls`.
    """

    hosts: str = "127.0.0.1:2181"
    session_timeout: float = 10.0
    root: str = "/xconsumer"
    connect_timeout: float = 15.0
    auth: str | None = None
    acl_read_world: bool = True
    use_tls: bool = False
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_verify: bool = True


@dataclass(frozen=True)
class AdminConfig:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None
    events: int = 200  # how many recent events the node keeps in memory for the API
    # Extra Host header values the admin API answers to (name = any port, or name:port);
    # anything else is refused, which is what stops DNS rebinding.
    allowed_hosts: tuple[str, ...] = ()
    # The URL other nodes, the CLI and the dashboard should use to reach this node's admin
    # API, when the bound address is not it (a container's published port, a proxy).
    advertise_url: str | None = None


@dataclass(frozen=True)
class NodeConfig:
    name: str | None = None
    works: tuple[str, ...] | None = None
    leader_works: bool = True
    reconcile_interval: float = 5.0
    weight: float = 1.0  # relative capacity: a node of weight 2 gets about twice the slots


@dataclass(frozen=True)
class AssignmentConfig:
    """How the leader plans, and how it rides out churn.

    `rejoin_grace`: seconds the leader keeps the slots of a node that vanished without leaving
    gracefully, in case it comes back (a flapping node then gets its slots back instead of
    causing two rebalances). `debounce`: seconds the leader waits after a membership change
    for more changes before publishing, so a rolling restart is one rebalance, not many.
    `strategy_timeout`: seconds a user strategy may take before the leader uses round robin
    instead. `hash_load_factor`: how far above its fair share `consistent_hash` may load a
    node (1.25: at most ceil(share x 1.25) slots). `formation_window`: seconds the leader of a
    cluster with no assignment for any live node waits before its first publish, so nodes
    started together get round robin's deal rather than a series of incremental moves
    (Kafka's group.initial.rebalance.delay.ms); 0 disables it (see `formation`).
    """

    strategy: str = "balanced"
    rejoin_grace: float = 0.0
    debounce: float = 0.0
    max_slots: int = DEFAULT_MAX_SLOTS
    strategy_timeout: float = 2.0
    hash_load_factor: float = 1.25
    formation_window: float = 1.0


@dataclass(frozen=True)
class TaskConfig:
    """One `[[task]]`: run `worker_num` copies of the handler `work_name` across the cluster.

    The same shape travels through ZooKeeper (runtime overrides), hence `to_dict`/`from_dict`
    with the exact TOML keys: one vocabulary for the file, the znodes and the admin API.
    """

    name: str
    work_name: str
    worker_num: int
    mode: str = "loop"
    interval: float = 1.0
    stop_timeout: float = 10.0
    retry_backoff: float = 1.0
    retry_backoff_max: float = 30.0
    max_per_node: int | None = None
    isolation: str = "thread"
    run_timeout: float | None = None
    breaker_failures: int | None = None
    breaker_cooldown: float = DEFAULT_BREAKER_COOLDOWN
    # A container task (isolation "container", implied by `image`): each slot runs `image`
    # through the Docker engine. `env` is kept as sorted pairs so the task stays hashable.
    image: str | None = None
    command: tuple[str, ...] | None = None
    env: tuple[tuple[str, str], ...] | None = None
    # Per-slot parameters: (slot id, JSON text) pairs, sorted; a slot id is an index, or a
    # key for a keyed task. JSON text keeps the task hashable whatever the values are.
    params: tuple[tuple[str, str], ...] | None = None
    # A keyed task takes its slots from `Keys<keys>()` in works/ instead of workerNum: the
    # leader calls it every `keys_interval` seconds and publishes the keys (see keys.py).
    keys: str | None = None
    keys_interval: float = DEFAULT_KEYS_INTERVAL
    # Internal, never a TOML key: the key of the one slot this definition was handed to a
    # slot runner for (see codecs.plan_slots), so a slot whose key changed is restarted.
    slot_key: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The TOML keys; optional keys still at their default are left out, so the documents
        of existing clusters do not change (and older nodes can still read them)."""
        out = {key: getattr(self, attr) for key, (attr, _) in _TASK_FIELDS.items()}
        # JSON's shapes, so a table read back from a znode compares equal to this one.
        out["command"] = None if self.command is None else list(self.command)
        out["env"] = None if self.env is None else dict(self.env)
        out["params"] = (None if self.params is None
                         else {k: json.loads(v) for k, v in self.params})
        if self.keys is not None:
            del out["workerNum"]  # the provider's keys decide it (published beside the table)
        for key, default in _TASK_OMITTED.items():
            if out[key] == default:
                del out[key]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "task") -> TaskConfig:
        """Validate like the loader does, because znode data can be edited by hand too."""
        return _parse_task(data, where)


@dataclass(frozen=True)
class Config:
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    zookeeper: ZooKeeperConfig = field(default_factory=ZooKeeperConfig)
    admin: AdminConfig = field(default_factory=AdminConfig)
    node: NodeConfig = field(default_factory=NodeConfig)
    assignment: AssignmentConfig = field(default_factory=AssignmentConfig)
    tasks: tuple[TaskConfig, ...] = ()
    source: str = "<defaults>"

    def task(self, name: str) -> TaskConfig | None:
        return next((t for t in self.tasks if t.name == name), None)


ENV_VARS: dict[str, tuple[str, str]] = {
    "XCONSUMER_ZK": ("zookeeper", "hosts"),
    "XCONSUMER_ZK_AUTH": ("zookeeper", "auth"),
    "XCONSUMER_NAME": ("node", "name"),
    "XCONSUMER_ADMIN_PORT": ("admin", "port"),
    "XCONSUMER_ADMIN_HOST": ("admin", "host"),
    "XCONSUMER_ADMIN_TOKEN": ("admin", "token"),
    "XCONSUMER_ADMIN_ALLOWED_HOSTS": ("admin", "allowed_hosts"),
    "XCONSUMER_ADMIN_ADVERTISE_URL": ("admin", "advertise_url"),
    "XCONSUMER_CLUSTER": ("cluster", "name"),
}

Check = Callable[[Any, str], Any]


# --- value checks: each takes (value, label) and returns the typed value or raises ---------


def _show(value: Any) -> str:
    """A short single-line rendering; repr() escapes newlines, and long values are cut."""
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "nothing"}[value]  # TOML's words
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _key(key: Any) -> str:
    text = str(key)
    return text if _BARE_KEY_RE.fullmatch(text) else repr(text)


def _fail(label: str, problem: str, value: Any) -> NoReturn:
    raise ConfigError(f"{label} {problem}, got {_show(value)}")


def _suggest(key: str, known: Collection[str]) -> str:
    """Did-you-mean that also catches snake/camel mix-ups such as worker_num -> workerNum."""
    norm = {k.lower().replace("_", ""): k for k in known}
    hit = norm.get(key.lower().replace("_", "").replace("-", ""))
    if hit is None:
        close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
        hit = close[0] if close else None
    return f"; did you mean {hit}?" if hit else ""


def _number(minimum: float, *, inclusive: bool, unit: str = "seconds",
            maximum: float = math.inf) -> Check:
    op = ">=" if inclusive else ">"
    what = (f"a number {op} {minimum:g}" if maximum == math.inf
            else f"a number {minimum:g}..{maximum:g}") + (f" ({unit})" if unit else "")

    def check(value: Any, label: str) -> float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        try:
            number = float(value) if ok else math.nan
        except OverflowError:
            number = math.inf
        if (not math.isfinite(number) or number < minimum or number > maximum
                or (number == minimum and not inclusive)):
            _fail(label, f"must be {what}", value)
        return number

    return check


def _rule(test: Callable[[Any], object], what: str) -> Check:
    """A check for values that are kept as they are once `test` accepts them."""

    def check(value: Any, label: str) -> Any:
        if not test(value):
            _fail(label, f"must be {what}", value)
        return value

    return check


def _pattern(regex: re.Pattern[str], what: str) -> Check:
    return _rule(lambda v: isinstance(v, str) and regex.fullmatch(v), what)


def _is_int(value: Any) -> bool:
    """bool is an int subclass in Python, but `workerNum = true` is a typo, not a 1."""
    return isinstance(value, int) and not isinstance(value, bool)


def _znode_path_ok(value: Any) -> bool:
    if not isinstance(value, str) or not value.startswith("/") or value == "/":
        return False
    parts = value[1:].split("/")
    return all(p and p not in (".", "..") and not any(c.isspace() for c in p) for p in parts)


_NAME_RULE = "{} letters, digits, '_', '.' or '-', starting with a letter or digit"
_cluster_name = _pattern(_NAME_RE, _NAME_RULE.format("1-64"))
_task_name = _pattern(_TASK_NAME_RE, _NAME_RULE.format("1-128"))
_work_name = _pattern(_WORK_NAME_RE, "a Python identifier such as 'test01' (letters, digits, '_')")
_mode = _pattern(re.compile("|".join(TASK_MODES)), "'loop' (repeat) or 'once' (run to the end)")
_host = _pattern(re.compile(r"\S+"), "a non-empty host name or IP address")
_bool = _rule(lambda v: isinstance(v, bool), "true or false")
_port = _rule(lambda v: _is_int(v) and 0 <= v <= 65535, "an integer 0..65535 (0 = any free port)")
_zk_root = _rule(_znode_path_ok, "an absolute znode path such as '/xconsumer' (not '/', no "
                 "trailing slash, no empty, '.' or '..' segments)")


def _node_name(value: Any, label: str) -> str | None:
    """An empty name means "pick one at run time": TOML has no null to say so."""
    return None if value == "" else _cluster_name(value, label)


def _optional_string(what: str) -> Check:
    """A string where empty means "not set": TOML has no null to say so."""

    def check(value: Any, label: str) -> str | None:
        if not isinstance(value, str):
            _fail(label, f"must be a string (empty for {what})", value)
        return value or None

    return check


_token = _optional_string("no token")
_tls_file = _optional_string("none")


def _zk_auth(value: Any, label: str) -> str | None:
    """Digest credentials. The message never shows the value: it may hold a password."""
    if not isinstance(value, str):
        raise ConfigError(f"{label} must be a string 'user:password' (empty for no "
                          f"authentication), got a value of type {type(value).__name__}")
    if not value:
        return None
    user, colon, password = value.partition(":")
    if not (colon and user and password):
        problem = "no ':'" if not colon else "an empty user" if not user else "an empty password"
        raise ConfigError(f"{label} must be 'user:password' (digest credentials, both parts "
                          f"non-empty), got a value with {problem}")
    return value


def _zk_hosts(value: Any, label: str) -> str:
    """Checked here because kazoo only says "bad hostname" once it is already connecting.

    Spaces around commas are dropped: kazoo would otherwise keep them in the host name.
    """
    problem = "must be 'host:port[,host:port...][/chroot]' such as '127.0.0.1:2181'"
    if not isinstance(value, str):
        _fail(label, problem, value)
    host_part, slash, chroot = value.partition("/")
    entries = [e.strip() for e in host_part.split(",")]
    for entry in entries:
        match = _ZK_HOST_RE.fullmatch(entry)
        if match is None or (match.group(2) is not None and not 0 < int(match.group(2)) < 65536):
            _fail(label, problem, value)
    if slash and not _znode_path_ok("/" + chroot):
        _fail(label, problem + " (chroot must be a valid znode path)", value)
    return ",".join(entries) + slash + chroot


def _works(value: Any, label: str) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not all(isinstance(w, str) and w for w in value):
        _fail(label, "must be a list of non-empty workName strings", value)
    return tuple(value)


_HOST_PORT_RE = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[^\s:/,@\[\]]+)(?::(\d{1,5}))?")


def _allowed_hosts(value: Any, label: str) -> tuple[str, ...]:
    def ok(entry: Any) -> bool:
        match = isinstance(entry, str) and _HOST_PORT_RE.fullmatch(entry)
        return bool(match) and (match.group(2) is None or 0 < int(match.group(2)) < 65536)

    if not isinstance(value, list | tuple) or not all(ok(h) for h in value):
        _fail(label, "must be a list of host names or host:port strings such as "
              "['admin.example.com', 'proxy:8080']", value)
    return tuple(value)


_URL_RE = re.compile(r"https?://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:\d{1,5})?(/[^\s?#]*)?")


def _advertise_url(value: Any, label: str) -> str | None:
    """Checked because a bad value would only show up as dead links on the dashboard."""
    if not isinstance(value, str) or (value and not _URL_RE.fullmatch(value)):
        _fail(label, "must be an http:// or https:// URL such as 'http://node1.example:8001' "
              "(empty for the bound address)", value)
    match = _URL_RE.fullmatch(value)
    if match and match.group(2) and not 0 < int(match.group(2)[1:]) < 65536:
        _fail(label, "must have a port 1..65535", value)
    return value.rstrip("/") or None


_positive = _number(0.0, inclusive=False)
_non_negative = _number(0.0, inclusive=True)
_events = _rule(lambda v: _is_int(v) and 1 <= v <= MAX_EVENTS,
                f"an integer 1..{MAX_EVENTS} (events kept in memory)")
# Section -> key -> check; the key order is the order "known: ..." lists them in.
_SECTIONS: dict[str, dict[str, Check]] = {
    "cluster": {"name": _cluster_name},
    "zookeeper": {"hosts": _zk_hosts, "session_timeout": _number(1.0, inclusive=True),
                  "root": _zk_root, "connect_timeout": _positive, "auth": _zk_auth,
                  "acl_read_world": _bool, "use_tls": _bool, "tls_ca": _tls_file,
                  "tls_cert": _tls_file, "tls_key": _tls_file, "tls_verify": _bool},
    "admin": {"enabled": _bool, "host": _host, "port": _port, "token": _token,
              "events": _events, "allowed_hosts": _allowed_hosts,
              "advertise_url": _advertise_url},
    "node": {"name": _node_name, "works": _works, "leader_works": _bool,
             "reconcile_interval": _positive,
             "weight": _number(MIN_WEIGHT, inclusive=True, maximum=MAX_WEIGHT,
                               unit="relative capacity, default 1")},
    "assignment": {"strategy": _pattern(re.compile(r".+"), "a non-empty strategy name"),
                   "rejoin_grace": _non_negative, "debounce": _non_negative,
                   "max_slots": _rule(lambda v: _is_int(v) and 1 <= v <= MAX_SLOTS_LIMIT,
                                      f"an integer 1..{MAX_SLOTS_LIMIT} (slots in the whole "
                                      "cluster)"),
                   "strategy_timeout": _positive,
                   "hash_load_factor": _number(1.0, inclusive=True,
                                               unit="a node's most slots over its fair share"),
                   "formation_window": _non_negative},
}
_SECTION_TYPES: dict[str, Any] = {f.name: f.default_factory for f in fields(Config)
                                  if f.name in _SECTIONS}
_TOP_LEVEL = (*_SECTIONS, "task")


def _worker_num(value: Any, label: str) -> int:
    if not _is_int(value) or value < 0:
        _fail(label, "must be a non-negative integer", value)
    if value > MAX_WORKER_NUM:
        _fail(label, f"must be at most {MAX_WORKER_NUM}", value)
    return int(value)


def _max_per_node(value: Any, label: str) -> int | None:
    """None (JSON null, from the API or a znode) means no limit; TOML just leaves it out."""
    if value is None:
        return None
    if not _is_int(value) or value < 1:
        _fail(label, "must be an integer >= 1 (most slots of this task on one node)", value)
    return int(value)


_isolation = _pattern(re.compile("|".join(TASK_ISOLATION)),
                      "'thread' (in the node process) or 'process' (a child process that is "
                      "terminated if it does not stop within stop_timeout), or 'container' "
                      "(with image: a Docker container per slot)")
_image = _pattern(re.compile(r"[^\s]+"), "a non-empty image reference such as "
                  "'debian:bookworm-slim' (no spaces)")


def _optional_image(value: Any, label: str) -> str | None:
    """None (JSON null, from the API) turns a container task back into a handler task."""
    return None if value is None else _image(value, label)


# Set by the node for every container: a task's env may not shadow them.
CONTAINER_ENV = ("XCONSUMER_TASK", "XCONSUMER_SLOT", "XCONSUMER_FENCE", "XCONSUMER_NODE",
                 "XCONSUMER_GENERATION")
_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _command(value: Any, label: str) -> tuple[str, ...] | None:
    """None (JSON null) means the image's own command; TOML just leaves it out."""
    if value is None:
        return None
    if not isinstance(value, list | tuple) or not value or not all(
            isinstance(v, str) for v in value):
        _fail(label, "must be a non-empty list of strings such as ['sh', '-c', 'work']", value)
    return tuple(value)


def _env(value: Any, label: str) -> tuple[tuple[str, str], ...] | None:
    """A table of strings; None (JSON null) means none. Sorted pairs: order never matters."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        _fail(label, "must be a table of strings such as { LEVEL = \"debug\" }", value)
    for key, item in value.items():
        if not isinstance(key, str) or not _ENV_NAME_RE.fullmatch(key):
            raise ConfigError(f"{label} has key {_show(key)}, which is not an environment "
                              "variable name (letters, digits, '_', not starting with a digit)")
        if key in CONTAINER_ENV:
            raise ConfigError(f"{label} may not set {key}: the node sets it for every container")
        if not isinstance(item, str):
            _fail(f"{label} {_key(key)}", "must be a string (write numbers as \"8\")", item)
    return tuple(sorted(value.items()))



_run_seconds = _number(0.0, inclusive=False, unit="seconds a single handler run may take; "
                       "leave out for no limit")


def _run_timeout(value: Any, label: str) -> float | None:
    """None (JSON null, from the API or a znode) means no limit; TOML just leaves it out."""
    return None if value is None else _run_seconds(value, label)


def _breaker_failures(value: Any, label: str) -> int | None:
    """None (JSON null) turns the breaker off; TOML just leaves the key out."""
    if value is None:
        return None
    if not _is_int(value) or not 1 <= value <= MAX_BREAKER_FAILURES:
        _fail(label, f"must be an integer 1..{MAX_BREAKER_FAILURES} (consecutive failures "
              "that open the slot's circuit breaker; leave out for no breaker)", value)
    return int(value)


def _params(value: Any, label: str) -> tuple[tuple[str, str], ...] | None:
    """A list indexed by slot (null entries: no parameter) or a table slot id -> value; any
    JSON value. None (JSON null, from the API) means no parameters."""
    if value is None:
        return None
    if isinstance(value, list | tuple):
        items = [(str(i), v) for i, v in enumerate(value) if v is not None]
    elif isinstance(value, Mapping):
        items = []
        for key, item in value.items():
            if not isinstance(key, str) or not key:
                raise ConfigError(f"{label} has key {_show(key)}: keys are slot indices "
                                  "(\"0\", \"1\", ...) or, for a keyed task, slot keys")
            items.append((key, item))
    else:
        _fail(label, "must be a list (one entry per slot) or a table { \"0\" = ... }", value)
    out = []
    for key, item in items:
        if nested_deeper_than(item, MAX_VALUE_DEPTH):
            raise ConfigError(f"{label} {_key(key)} is nested deeper than {MAX_VALUE_DEPTH} "
                              "levels; keep parameters small (a name or id per slot)")
        try:
            out.append((key, json.dumps(item, separators=(",", ":"), allow_nan=False,
                                        sort_keys=True)))
        except (TypeError, ValueError, RecursionError):
            raise ConfigError(f"{label} {_key(key)} is not a JSON value (strings, numbers, "
                              f"booleans, arrays, tables; no dates), got {_show(item)}") from None
    size = sum(len(k) + len(v) for k, v in out)
    if size > MAX_PARAMS_BYTES:
        raise ConfigError(f"{label} is {size} bytes as JSON, over the {MAX_PARAMS_BYTES}-byte "
                          "limit; keep parameters small (a name or id per slot)")
    return tuple(sorted(out))


def _check_params(task: TaskConfig, prefix: str) -> None:
    """Slot ids of a workerNum task's params must be indices (a keyed task's are keys)."""
    if task.params is None or task.keys is not None:
        return
    for key, _ in task.params:
        index = slot_index(key)
        if index is None or index >= MAX_WORKER_NUM:
            raise ConfigError(f"{prefix} params has key {key!r}, which is not a slot index "
                              f"(0..{MAX_WORKER_NUM - 1}); only a keyed task's params are "
                              "keyed by slot key")


def slot_param(task: Any, index: int, key: str | None = None) -> Any:
    """The parameter of slot `index` (or of `key`, for a keyed task), None when it has none."""
    params = getattr(task, "params", None)
    if not params:
        return None
    wanted = key if key is not None else str(index)
    for slot_id, text in params:
        if slot_id == wanted:
            return json.loads(text)
    return None


def _keys_provider(value: Any, label: str) -> str | None:
    """None (JSON null, from the API) makes it a workerNum task again."""
    return None if value is None else _work_name(value, label)



# TOML key -> (TaskConfig attribute, check); order is the to_dict order.
_TASK_FIELDS: dict[str, tuple[str, Check]] = {
    "name": ("name", _task_name),
    "workName": ("work_name", _work_name),
    "workerNum": ("worker_num", _worker_num),
    "mode": ("mode", _mode),
    "interval": ("interval", _non_negative),
    "stop_timeout": ("stop_timeout", _positive),
    "retry_backoff": ("retry_backoff", _positive),
    "retry_backoff_max": ("retry_backoff_max", _positive),
    "max_per_node": ("max_per_node", _max_per_node),
    "isolation": ("isolation", _isolation),
    "run_timeout": ("run_timeout", _run_timeout),
    "breaker_failures": ("breaker_failures", _breaker_failures),
    "breaker_cooldown": ("breaker_cooldown",
                         _number(0.0, inclusive=False, unit="seconds an open breaker waits "
                                 "before its trial run")),
    "image": ("image", _optional_image),
    "command": ("command", _command),
    "env": ("env", _env),
    "params": ("params", _params),
    "keys": ("keys", _keys_provider),
    "keys_interval": ("keys_interval", _number(MIN_KEYS_INTERVAL, inclusive=True,
                                               unit="seconds between two calls of the keys "
                                               "provider")),
}
# Optional keys that to_dict leaves out while they hold these defaults.
_TASK_OMITTED: dict[str, Any] = {"max_per_node": None, "isolation": "thread",
                                 "run_timeout": None, "breaker_failures": None,
                                 "breaker_cooldown": DEFAULT_BREAKER_COOLDOWN,
                                 "image": None, "command": None, "env": None,
                                 "params": None, "keys": None,
                                 "keys_interval": DEFAULT_KEYS_INTERVAL}
_TASK_REQUIRED = ("name", "workName")  # and workerNum or keys, see _keyed
TASK_KEYS: tuple[str, ...] = tuple(_TASK_FIELDS)  # every task key, for readers of znodes


def _keyed(data: Mapping[str, Any], kwargs: dict[str, Any], prefix: str) -> None:
    """A task's slots come from workerNum or from a keys provider, never both."""
    if kwargs.get("keys") is None:
        if "workerNum" not in data:
            raise ConfigError(f"{prefix} is missing required key workerNum (or keys, the "
                              "name of a Keys<Name>() provider in works/)")
        return
    if "workerNum" in data:
        raise ConfigError(f"{prefix} has both workerNum and keys: a keyed task has one slot "
                          f"per key Keys{kwargs['keys'][0].upper()}{kwargs['keys'][1:]}() "
                          "returns; leave workerNum out")
    if kwargs.get("image") is not None:
        raise ConfigError(f"{prefix} keys is not available for container tasks")
    kwargs["worker_num"] = 0  # until the leader has the keys


def _container_keys(kwargs: dict[str, Any], prefix: str) -> None:
    """`image` makes a container task (isolation "container" is implied, and written out so
    an older node never mistakes it for a handler task); command and env need it."""
    isolation = kwargs.get("isolation")
    if kwargs.get("image") is None:
        for key in ("command", "env"):
            if kwargs.get(key) is not None:
                raise ConfigError(f"{prefix} {key} is only for container tasks: set image too")
        if isolation == "container":
            raise ConfigError(f"{prefix} isolation 'container' needs image (the image each "
                              "slot runs)")
        return
    if isolation not in (None, "container"):
        raise ConfigError(f"{prefix} image makes a container task, but isolation is "
                          f"{isolation!r}: leave isolation out (or set it to 'container')")
    kwargs["isolation"] = "container"


def _parse_task(data: Any, prefix: str) -> TaskConfig:
    """`prefix` names the task in every message ("app.toml: task[2]" or "znode /x/tasks")."""
    if not isinstance(data, Mapping):
        _fail(prefix, "must be a table with name, workName and workerNum", data)
    if "name" in data:
        name = _task_name(data["name"], f"{prefix} name")
        if repr(name) not in prefix:  # "task 'x'" already names it: no "(name 'x')" again
            prefix = f"{prefix} (name {name!r})"
    for key in data:
        if key not in _TASK_FIELDS:
            raise ConfigError(f"{prefix} has unknown key {_key(key)} (known: "
                              f"{', '.join(_TASK_FIELDS)}{_suggest(str(key), _TASK_FIELDS)})")
    for key in _TASK_REQUIRED:
        if key not in data:
            raise ConfigError(f"{prefix} is missing required key {key}")
    kwargs = {attr: check(data[key], f"{prefix} {key}")
              for key, (attr, check) in _TASK_FIELDS.items() if key in data}
    _container_keys(kwargs, prefix)
    _keyed(data, kwargs, prefix)
    task = TaskConfig(**kwargs)
    _check_params(task, prefix)
    if task.retry_backoff_max < task.retry_backoff:
        given = "" if "retry_backoff_max" in data else " (the default)"
        raise ConfigError(f"{prefix} retry_backoff_max must be >= retry_backoff "
                          f"({task.retry_backoff:g}), got {task.retry_backoff_max:g}{given}")
    return task


# --- assembling a Config ----------------------------------------------------------------

_Raw = dict[str, dict[str, tuple[Any, str]]]  # section -> key -> (value, label for messages)


def _coerce(text: str, section: str, key: str, label: str) -> Any:
    """Turn an environment/flag string into the type the key needs; checks come later."""
    kind = next(f.type for f in fields(_SECTION_TYPES[section]) if f.name == key)
    if kind.startswith("tuple"):
        return [w.strip() for w in text.split(",") if w.strip()]
    if kind == "bool":
        flags = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}
        if text.strip().lower() in flags:
            return flags[text.strip().lower()]
        raise ConfigError(f"{label}={text!r} is not a boolean (true/false)")
    try:
        return int(text) if kind == "int" else float(text) if kind == "float" else text
    except ValueError:
        what = {"int": "an integer", "float": "a number"}[kind]
        what += " port (0..65535)" if key == "port" else ""
        raise ConfigError(f"{label}={text!r} is not {what}") from None


def _file_values(data: Mapping[str, Any], source: str) -> _Raw:
    raw: _Raw = {name: {} for name in _SECTIONS}
    for name, table in data.items():
        if name == "task":
            continue
        if name not in _SECTIONS:
            what = f"section [{_key(name)}]" if isinstance(table, dict) else \
                f"top-level key {_key(name)}"
            raise ConfigError(f"{source}: unknown {what} (known sections: "
                              f"{', '.join(_TOP_LEVEL)}{_suggest(name, _TOP_LEVEL)})")
        if not isinstance(table, dict):
            _fail(f"{source}: [{name}]", "must be a table", table)
        known = _SECTIONS[name]
        for key, value in table.items():
            if key not in known:
                raise ConfigError(f"{source}: unknown key [{name}] {_key(key)} (known: "
                                  f"{', '.join(known)}{_suggest(key, known)})")
            raw[name][key] = (value, f"{source}: [{name}] {key}")
    return raw


def _apply_overrides(raw: _Raw, env: Mapping[str, str], overrides: Mapping[str, Any]) -> None:
    for var, (section, key) in ENV_VARS.items():
        text = env.get(var)
        if text:  # an empty variable counts as unset, so it cannot silently drop a token
            raw[section][key] = (_coerce(text, section, key, var), f"{var} ({section}.{key})")
    for dotted, value in overrides.items():
        if value is None:
            continue
        section, _, key = dotted.partition(".")
        if key not in _SECTIONS.get(section, {}):
            known = [f"{s}.{k}" for s, keys in _SECTIONS.items() for k in keys]
            raise ConfigError(f"unknown override {dotted!r} (known: {', '.join(known)}"
                              f"{_suggest(dotted, known)})")
        label = f"override {dotted}"
        if isinstance(value, str):
            value = _coerce(value, section, key, label)
        raw[section][key] = (value, label)


def _tasks(data: Mapping[str, Any], source: str) -> tuple[TaskConfig, ...]:
    items = data.get("task", [])
    if not isinstance(items, list):
        shape = "a single table ([task])" if isinstance(items, dict) else _show(items)
        raise ConfigError(f"{source}: task must be an array of tables written as [[task]], "
                          f"got {shape}")
    tasks: list[TaskConfig] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(items):
        task = _parse_task(item, f"{source}: task[{index}]")
        if task.name in seen:
            raise ConfigError(f"{source}: duplicate task name {task.name!r} "
                              f"(task[{seen[task.name]}] and task[{index}])")
        seen[task.name] = index
        tasks.append(task)
    return tuple(tasks)


def _toml_error(source: str, text: str, exc: Exception) -> str:
    """Reword tomllib's "... (at line 4, column 9)" so the position comes first, as in
    compiler messages; "end of document" becomes the last line so editors can jump to it."""
    message = " ".join(str(exc).split())
    match = _TOML_POS_RE.match(message)
    if match is None:
        return f"{source}: invalid TOML: {message}"
    if match["line"]:
        line, column = match["line"], match["col"]
    else:
        column_at_end = len(text) - text.rfind("\n")
        line, column = str(text.count("\n") + 1), f"{column_at_end} (end of file)"
    return f"{source}: invalid TOML at line {line}, column {column}: {match['msg']}"


def _check_tls(zk: ZooKeeperConfig, raw: Mapping[str, tuple[Any, str]], source: str) -> None:
    """With TLS on, a missing file is reported now, naming the key and the path, instead of
    as an SSL error on every connection attempt. With TLS off the files are not used."""
    if not zk.use_tls:
        return
    for key in ("tls_ca", "tls_cert", "tls_key"):
        path = getattr(zk, key)
        if path is None:
            continue
        label = raw[key][1]
        if not Path(path).exists():
            raise ConfigError(f"{label} file {path} not found (cwd: {os.getcwd()})")
        if not Path(path).is_file():
            raise ConfigError(f"{label} {path} is not a file")
    if (zk.tls_cert is None) != (zk.tls_key is None):
        given, missing = ("tls_cert", "tls_key") if zk.tls_key is None else ("tls_key", "tls_cert")
        raise ConfigError(f"{raw[given][1]} is set but {missing} is not: a client certificate "
                          f"is only used together with its key")


def parse_config(text: str, *, source: str = "<string>", env: Mapping[str, str] | None = None,
                 overrides: Mapping[str, Any] | None = None,
                 strategies: Collection[str] | None = DEFAULT_STRATEGIES) -> Config:
    """Build a Config from TOML text; precedence is overrides > env > file > defaults.

    `strategies`: the names `[assignment] strategy` may take; None accepts any name, for
    callers that check it later against the strategies of a works package, or not at all
    (commands that never plan)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(_toml_error(source, text, exc)) from None
    raw = _file_values(data, source)
    _apply_overrides(raw, os.environ if env is None else env, overrides or {})
    sections: dict[str, Any] = {}
    for name, checks in _SECTIONS.items():
        kwargs = {key: checks[key](value, label) for key, (value, label) in raw[name].items()}
        sections[name] = _SECTION_TYPES[name](**kwargs)
    strategy = sections["assignment"].strategy
    if strategies is not None and strategy not in strategies:
        allowed = sorted(strategies)
        default = (strategy, f"{source}: [assignment] strategy (default)")
        value, label = raw["assignment"].get("strategy", default)
        raise ConfigError(f"{label} must be one of {', '.join(map(repr, allowed))}, "
                          f"got {_show(value)}{_suggest(strategy, allowed)}")
    _check_tls(sections["zookeeper"], raw["zookeeper"], source)
    tasks = _tasks(data, source)
    total, limit = sum(t.worker_num for t in tasks), sections["assignment"].max_slots
    if total > limit:
        raise ConfigError(f"{source}: the tasks ask for {total} slots in all (sum of "
                          f"workerNum), over [assignment] max_slots = {limit}: lower some "
                          f"workerNum, or raise max_slots (at most {MAX_SLOTS_LIMIT})")
    return Config(**sections, tasks=tasks, source=source)


def load_config(path: str | Path, *, env: Mapping[str, str] | None = None,
                overrides: Mapping[str, Any] | None = None,
                strategies: Collection[str] | None = DEFAULT_STRATEGIES) -> Config:
    """Read and validate `path`; every failure is a one-line ConfigError."""
    source = str(path)
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"config file {source} not found (cwd: {os.getcwd()})") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {source}: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8-sig")  # tolerate the BOM some Windows editors add
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{source}: not valid UTF-8 at byte {exc.start}") from None
    return parse_config(text, source=source, env=env, overrides=overrides, strategies=strategies)
