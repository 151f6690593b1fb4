"""Management commands (`tasks`, `scale`, `pause`, `resume`, `reset`, `drain`, `undrain`,
`rebalance`, `events`): through ZooKeeper (`--config`/`--zk`, no node needed) or through any
node's admin API (`--url`), with the same `--json` output either way."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from .config import Config
from .errors import XConsumerError
from .leader import read_assignment, valid_doc
from .overrides import drain_node
from .view import seed_from_doc, tasks_table

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_REQUEST = 2  # the cluster refused the request: bad value, unknown task/node, conflict
EXIT_UNREACHABLE = 3  # same code as ZooKeeperUnavailable: the cluster could not be reached

MANAGE_COMMANDS = ("tasks", "scale", "pause", "resume", "reset", "drain", "undrain",
                   "rebalance", "events", "checkpoints", "refresh-keys", "set")


# -- management commands ---------------------------------------------------------------------
# Each backend returns exactly what the admin API returns, so `--json` output is the same
# whether a command went through ZooKeeper or through a node.

class ApiError(XConsumerError):
    """A node's admin API refused a request or could not be reached."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class _HttpBackend:
    """Management through a node's admin API (`--url`); any node will do."""

    def __init__(self, url: str, token: str | None, timeout: float) -> None:
        # `node:8000` is what people type; the admin server only speaks plain HTTP anyway.
        from urllib.parse import urlsplit

        self.url = (url if "://" in url else f"http://{url}").rstrip("/")
        try:
            parts = urlsplit(self.url)
            valid = parts.scheme in ("http", "https") and bool(parts.hostname)
            _ = parts.port  # raises ValueError for a port that is not a number
        except ValueError:
            valid = False
        if not valid:
            raise ApiError(f"--url must look like http://host:port, got {url!r}", EXIT_REQUEST)
        self.token = token
        self.timeout = timeout

    def __enter__(self) -> _HttpBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def call(self, method: str, path: str, body: dict[str, Any] | None = None
             ) -> dict[str, Any]:
        import urllib.error
        import urllib.request

        url = self.url + path
        data = json.dumps(body if body is not None else {}).encode() if method != "GET" else None
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.token and method != "GET":
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as err:
            raise _http_error(err, url) from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise ApiError(f"cannot reach the admin API at {self.url}: {reason}",
                           EXIT_UNREACHABLE) from None
        try:
            payload = json.loads(raw)
        except ValueError:
            raise ApiError(f"{method} {url} did not answer JSON (is --url a node's admin "
                           "URL?)", EXIT_ERROR) from None
        if not isinstance(payload, dict):
            raise ApiError(f"{method} {url} answered unexpected JSON", EXIT_ERROR)
        return payload

    def tasks(self) -> dict[str, Any]:
        return self.call("GET", "/api/tasks")

    def task_action(self, task: str, action: str, body: dict[str, Any] | None = None
                    ) -> dict[str, Any]:
        return self.call("POST", f"/api/tasks/{_quote(task)}/{action}", body)

    def set_drained(self, node: str, drained: bool) -> dict[str, Any]:
        return self.call("POST", f"/api/nodes/{_quote(node)}/"
                                 f"{'drain' if drained else 'undrain'}")

    def rebalance(self) -> dict[str, Any]:
        return self.call("POST", "/api/rebalance")

    def events(self, after: int, limit: int) -> dict[str, Any]:
        payload = self.call("GET", f"/api/events?after={after}&limit={limit}")
        return {**payload, "node_url": self.url}

    def checkpoints(self, task: str, reset: bool, slot: str | None) -> dict[str, Any]:
        path = f"/api/tasks/{_quote(task)}/checkpoints"
        if not reset:
            return self.call("GET", path)
        return self.call("DELETE", path + (f"/{_quote(slot)}" if slot is not None else ""))

    def refresh_keys(self, task: str) -> dict[str, Any]:
        return self.task_action(task, "keys/refresh")

    def set_fields(self, task: str, changes: dict[str, Any]) -> dict[str, Any]:
        return self.call("PATCH", f"/api/tasks/{_quote(task)}", changes)


def _quote(part: str) -> str:
    from urllib.parse import quote

    return quote(part, safe="")


def _http_error(err: Any, url: str) -> ApiError:
    """One line from the API's `{error, message}` body, with an exit code by status."""
    try:
        message = str(json.loads(err.read() or b"{}").get("message") or "")
    except (ValueError, AttributeError, OSError):
        message = ""
    message = message or f"{err.code} {err.reason}"
    if err.code == 401:
        message += " (pass --token or set XCONSUMER_ADMIN_TOKEN)"
    if err.code == 503:
        return ApiError(f"{message} (HTTP 503 from {url})", EXIT_UNREACHABLE)
    return ApiError(message, EXIT_REQUEST if 400 <= err.code < 500 else EXIT_ERROR)


class _ZkBackend:
    """Management straight through ZooKeeper, with the override rules the API uses.

    Works with no node reachable over HTTP; the leader picks the change up from its watch on
    the overrides znode exactly as if a node had written it.
    """

    def __init__(self, config: Config, timeout: float) -> None:
        from .overrides import OverrideStore, overrides_from_assignment
        from .paths import Paths
        from .zk import make_client

        self.config = config
        self.timeout = timeout
        self.paths = Paths(config.zookeeper.root, config.cluster.name)
        self.client, _ = make_client(config.zookeeper.hosts,
                                     config.zookeeper.session_timeout, zk=config.zookeeper)
        self.store = OverrideStore(self.client, self.paths.overrides,
                                   fallback=lambda: overrides_from_assignment(
                                       self.published(), self.seed()))

    def __enter__(self) -> _ZkBackend:
        from .zk import start_client

        start_client(self.client, self.config.zookeeper.hosts, self.timeout)
        return self

    def __exit__(self, *exc: object) -> None:
        from .zk import stop_client

        stop_client(self.client)

    def published(self) -> dict[str, Any] | None:
        return valid_doc(read_assignment(self.client, self.paths)[0])

    def seed(self) -> list[Any]:
        return seed_from_doc(self.published(), self.config.tasks)

    def tasks(self) -> dict[str, Any]:
        doc = self.published()
        return tasks_table(self.client, self.paths, doc, seed_from_doc(doc, self.config.tasks),
                           self.store)

    def task_action(self, task: str, action: str, body: dict[str, Any] | None = None
                    ) -> dict[str, Any]:
        from . import overrides as ov

        seed = self.seed()
        changes = {"pause": {"paused": True}, "resume": {"paused": False},
                   "scale": {"workerNum": (body or {}).get("workerNum")}}
        if action == "reset":
            _, version = self.store.update(lambda d: ov.reset_task(d, seed, task))
        else:
            _, version = self.store.update(
                lambda d: ov.update_task(d, seed, task, changes[action],
                                         max_slots=self.config.assignment.max_slots))
        found = next((t for t in self.tasks()["tasks"] if t["name"] == task), None)
        return {"version": version, "task": found}

    def set_drained(self, node: str, drained: bool) -> dict[str, Any]:
        return drain_node(self.client, self.paths, self.store, node, drained)

    def rebalance(self) -> dict[str, Any]:
        from . import overrides as ov

        doc, version = self.store.update(ov.request_rebalance)
        return {"version": version, "rebalance": doc["rebalance"]}

    def checkpoints(self, task: str, reset: bool, slot: str | None) -> dict[str, Any]:
        from .checkpoint import read_checkpoints, reset_checkpoints
        from .paths import checkpoint_id, slot_index

        table = {t["name"]: t for t in self.tasks()["tasks"]}
        if task not in table and not self.client.exists(self.paths.checkpoint_task(task)):
            raise ApiError(f"unknown task {task!r}", EXIT_REQUEST)
        if not reset:
            return read_checkpoints(self.client, self.paths, task)
        if slot is None:
            return {"task": task, "reset": reset_checkpoints(self.client, self.paths, task)}
        if table.get(task, {}).get("keys"):
            slot_id = checkpoint_id(0, slot)
        elif slot_index(slot) is not None:  # as the API: no "007", no "²"
            slot_id = checkpoint_id(int(slot))
        else:
            raise ApiError(f"--slot must be a slot index (0, 1, ...), got {slot!r}",
                           EXIT_REQUEST)
        return {"task": task, "slot": slot,
                "reset": reset_checkpoints(self.client, self.paths, task, slot_id)}

    def refresh_keys(self, task: str) -> dict[str, Any]:
        from . import overrides as ov

        _, version = self.store.update(lambda d: ov.request_keys_refresh(d, self.seed(), task))
        return {"version": version, "task": task}

    def set_fields(self, task: str, changes: dict[str, Any]) -> dict[str, Any]:
        from . import overrides as ov

        _, version = self.store.update(
            lambda d: ov.update_task(d, self.seed(), task, changes,
                                     max_slots=self.config.assignment.max_slots))
        found = next((t for t in self.tasks()["tasks"] if t["name"] == task), None)
        return {"version": version, "task": found}

    def events(self, after: int, limit: int) -> dict[str, Any]:
        """Events live in each node's memory, not in ZooKeeper: ask the leader's admin API
        (it sees the most: elections, rebalances, joins), found through its member znode."""
        from .view import read_cluster

        view = read_cluster(self.client, self.paths, self.config.cluster.name)
        nodes = sorted(view["nodes"], key=lambda n: not n["leader"])
        url = next((n["admin_url"] for n in nodes if n.get("admin_url")), None)
        if url is None:
            raise ApiError("events are kept in node memory and no live node publishes an "
                           "admin URL; pass --url of a node", EXIT_ERROR)
        return _HttpBackend(url, None, self.timeout).events(after, limit)


def _worker_count(text: str) -> int:
    """`N` is parsed here, not by argparse, so a bad value gets our one-line error."""
    from .overrides import OverrideError

    try:
        return int(text)
    except ValueError:
        raise OverrideError(f"workerNum must be a non-negative integer, got {text!r}") from None


def _assignments(pairs: list[str]) -> dict[str, Any]:
    """`FIELD=VALUE` pairs; VALUE is JSON (`3`, `null`, `["a","b"]`), else a plain string."""
    from .overrides import OverrideError

    changes: dict[str, Any] = {}
    for pair in pairs:
        field, sep, text = pair.partition("=")
        if not sep or not field:
            raise OverrideError(f"expected FIELD=VALUE, got {pair!r} (e.g. interval=5 or "
                                "params='[\"a\", \"b\"]')")
        try:
            changes[field] = json.loads(text)
        except ValueError:
            changes[field] = text
    return changes


def run_manage(args: argparse.Namespace, load: Callable[[argparse.Namespace], Config]) -> int:
    from .errors import ConfigError

    if args.url and args.zk:
        raise ConfigError("--url and --zk are alternatives: give one")
    backend: _HttpBackend | _ZkBackend
    if args.url:
        backend = _HttpBackend(args.url, args.token, args.timeout or 10.0)
    else:
        config = load(args)
        backend = _ZkBackend(config, args.timeout if args.timeout is not None
                             else config.zookeeper.connect_timeout)
    cmd = args.command
    with backend:
        if cmd == "tasks":
            result = backend.tasks()
        elif cmd == "scale":
            result = backend.task_action(args.task, "scale",
                                         {"workerNum": _worker_count(args.workers)})
        elif cmd in ("pause", "resume", "reset"):
            result = backend.task_action(args.task, cmd)
        elif cmd in ("drain", "undrain"):
            result = backend.set_drained(args.node, cmd == "drain")
        elif cmd == "rebalance":
            result = backend.rebalance()
        elif cmd == "checkpoints":
            if args.slot is not None and not args.reset:
                raise ApiError("--slot goes with --reset (the listing shows every slot)",
                               EXIT_REQUEST)
            result = backend.checkpoints(args.task, args.reset, args.slot)
        elif cmd == "refresh-keys":
            result = backend.refresh_keys(args.task)
        elif cmd == "set":
            result = backend.set_fields(args.task, _assignments(args.changes))
        else:
            result = backend.events(args.after, args.limit)
    if args.json:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
    else:
        sys.stdout.write(format_result(cmd, result))
    return EXIT_OK


def format_result(command: str, result: dict[str, Any]) -> str:
    """Human output of a management command: a table for lists, one line for a change."""
    if command == "tasks":
        return format_tasks(result)
    if command == "events":
        return format_events(result)
    if command == "checkpoints":
        return format_checkpoints(result)
    if command == "set":
        task = result.get("task") or {}
        return (f"{task.get('name', '?')}: changed; overridden: "
                f"{', '.join(task.get('overridden') or []) or 'nothing'} (overrides version "
                f"{result.get('version')})\n")
    if command == "refresh-keys":
        return (f"{result.get('task')}: keys refresh requested (overrides version "
                f"{result.get('version')})\n")
    version = f"(overrides version {result.get('version')})"
    if command in ("drain", "undrain"):
        drained = ", ".join(result.get("drained_nodes") or []) or "none"
        return f"{result['node']}: {command}ed; drained nodes: {drained} {version}\n"
    if command == "rebalance":
        return f"rebalance requested: request #{result.get('rebalance')} {version}\n"
    task = result.get("task") or {}
    name, desired = task.get("name", "?"), task.get("desired")
    what = {"scale": f"workerNum {task.get('workerNum')}, desired {desired}",
            "pause": "paused, desired 0",
            "resume": f"resumed, desired {desired}",
            "reset": f"reset to app.toml: workerNum {task.get('workerNum')}, "
                     f"desired {desired}"}[command]
    return f"{name}: {what} {version}\n"


def format_tasks(payload: dict[str, Any]) -> str:
    tasks = payload.get("tasks") or []
    if not tasks:
        return f"no tasks (overrides version {payload.get('version')})\n"
    rows = [("TASK", "WORKNAME", "MODE", "WORKERS", "DESIRED", "ASSIGNED", "RUNNING",
             "STATE", "SOURCE")]
    for t in tasks:
        source = t.get("source", "")
        if t.get("overridden"):
            source += f" (overrides: {', '.join(t['overridden'])})"
        rows.append((t["name"], t.get("workName", ""), t.get("mode", ""),
                     str(t.get("workerNum")), str(t.get("desired")), str(t.get("assigned")),
                     str(t.get("running")), "paused" if t.get("paused") else "active",
                     source))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r[:-1], widths, strict=True))
             + "  " + r[-1] for r in rows]
    lines.append(f"overrides version {payload.get('version')}")
    return "\n".join(line.rstrip() for line in lines) + "\n"


def format_events(payload: dict[str, Any]) -> str:
    import time

    lines = []
    for e in payload.get("events") or []:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(e.get("time", 0))))
        lines.append(f"{when}  #{e.get('seq'):<5} {e.get('kind', ''):<15} "
                     f"{e.get('message', '')}")
    if not lines:
        lines.append(f"no events after #{payload.get('last', 0)}")
    return "\n".join(lines) + "\n"


def format_checkpoints(result: dict[str, Any]) -> str:
    task = result.get("task")
    if "reset" in result:
        where = f"{task}/{result['slot']}" if result.get("slot") is not None else task
        return f"{where}: {result['reset']} checkpoint(s) reset\n"
    rows = [("SLOT", "NODE", "FENCE", "VALUE")]
    for c in result.get("checkpoints") or []:
        slot = str(c["slot"] if c.get("slot") is not None else c.get("key"))
        value = (f"CORRUPT: {c['corrupt']}" if "corrupt" in c
                 else json.dumps(c.get("value")))
        rows.append((slot, str(c.get("node", "")), str(c.get("fence", "")),
                     value if len(value) <= 60 else value[:57] + "..."))
    if len(rows) == 1:
        return f"{task}: no checkpoints\n"
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r[:3], widths, strict=True))
             + "  " + r[3] for r in rows]
    if result.get("truncated"):
        lines.append("(more checkpoints than listed)")
    return "\n".join(lines) + "\n"
