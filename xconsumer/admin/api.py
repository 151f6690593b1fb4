"""The JSON API routes. Each handler is thin: it validates the request and calls one pure
override function or one read; the rules themselves live in `xconsumer.overrides`."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Collection
from typing import Any

from flask import Flask, jsonify, request
from werkzeug.exceptions import RequestEntityTooLarge

from .. import overrides as ov
from ..checkpoint import read_checkpoints, reset_checkpoints
from ..config import MAX_JSON_DEPTH, nested_deeper_than
from ..leader import doc_plan, doc_unassigned
from ..membership import read_members
from ..paths import checkpoint_id, slot_index
from ..view import tasks_table
from .openapi import IF_MATCH_PATTERN, MAX_EVENT_SEQ, MAX_EVENTS_LIMIT, MAX_VERSION

MAX_BODY = 64 * 1024  # bytes; a task definition is a few hundred
_ABSENT = object()
_QUERY_INT = re.compile(r"-?[0-9]{1,19}")
_IF_MATCH = re.compile(IF_MATCH_PATTERN)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _bounded_int(text: str) -> int:
    if len(text) > 40:  # int() of thousands of digits is slow, then refused by Python itself
        raise ValueError(f"a number with {len(text.lstrip('-'))} digits is out of range")
    return int(text)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 parses to inf
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def _body(accepted: Collection[str] | None = None) -> dict[str, Any]:
    """The JSON object sent (Content-Type was checked before the route ran).

    Strict on purpose: UTF-8 only, no NaN / Infinity / numbers beyond a double, and a nesting
    limit, so malformed input is a one-line 400 instead of an exception deep in a handler.
    `accepted` lists the keys the endpoint understands; any other key is a 400 rather than
    silently ignored (a typo like "workernum" must not look like success).
    """
    # Read one byte past the cap ourselves: a chunked body has no Content-Length, and
    # werkzeug would cut it at MAX_CONTENT_LENGTH and hand over a silently truncated prefix.
    raw = request.stream.read(MAX_BODY)
    try:
        more = request.stream.read(1)
    except RequestEntityTooLarge:
        more = b"x"
    if more:
        raise ov.OverrideError(f"request body over {MAX_BODY - 1} bytes", status=413)
    if not raw.strip():
        return {}
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ov.OverrideError(f"request body is not UTF-8 (byte {exc.start})") from None
    try:
        data = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float,
                          parse_int=_bounded_int)
    except RecursionError:
        raise ov.OverrideError("request body is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, and our number checks
        detail = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        raise ov.OverrideError(f"request body is not valid JSON: {detail}") from None
    if not isinstance(data, dict):
        raise ov.OverrideError("request body must be a JSON object")
    if nested_deeper_than(data, MAX_JSON_DEPTH):
        raise ov.OverrideError(f"request body is nested deeper than {MAX_JSON_DEPTH} levels")
    if accepted is not None:
        unknown = sorted(set(data) - set(accepted) - {"version"})
        if unknown:
            raise ov.OverrideError(
                f"unknown field {', '.join(map(repr, unknown))[:200]} (accepted: "
                f"{', '.join([*accepted, 'version'])})")
    return data


def _version_number(value: Any, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) \
            or not -1 <= value <= MAX_VERSION:
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
        raise ov.OverrideError(f"{where} must be an integer -1..{MAX_VERSION} (the "
                               f"\"version\" of GET /api/tasks), got {shown}")
    return value


def _expected_version(body: dict[str, Any]) -> int | None:
    """The overrides version the client based its edit on: If-Match header or "version"."""
    in_body = body.pop("version", _ABSENT)
    header = request.headers.get("If-Match")
    if header is not None and header.strip() != "*":
        header = header.strip()  # an empty If-Match is a mistake, not "no condition"
        if _IF_MATCH.match(header) is None:
            raise ov.OverrideError(
                f'If-Match must be "<version>" (the ETag of GET /api/tasks) or *, got '
                f"{header[:40]!r}")
        return _version_number(int(header.removeprefix("W/").strip('"')), "If-Match")
    if in_body is _ABSENT:
        return None
    return _version_number(in_body, "version")


def _query_int(name: str, default: int, low: int, high: int) -> int:
    """An integer query parameter within [low, high]; anything else is a 400, not a clamp,
    so a client learns that its `limit=5000` was not honoured."""
    raw = request.args.get(name)
    if raw is None:
        return default
    if not _QUERY_INT.fullmatch(raw) or not low <= int(raw) <= high:
        raise ov.OverrideError(f"{name} must be an integer {low}..{high}, got {raw[:40]!r}")
    return int(raw)


def register_api(app: Flask, node: Any) -> None:
    def tasks_payload() -> tuple[dict[str, Any], int]:
        payload = tasks_table(node.client, node.paths, node.assignment, node.seed_tasks(),
                              node.overrides)
        return payload, payload["version"]

    def respond(payload: dict[str, Any], version: int, status: int = 200) -> Any:
        resp = jsonify(payload)
        resp.status_code = status
        resp.headers["ETag"] = f'"{version}"'
        return resp

    def mutate(change: Callable[[dict[str, Any]], dict[str, Any]], body: dict[str, Any],
               status: int = 200, task: str | None = None) -> Any:
        _, version = node.overrides.update(change, expected=_expected_version(body))
        payload, _ = tasks_payload()
        if task is not None:
            payload = {"version": version,
                       "task": next((t for t in payload["tasks"] if t["name"] == task), None)}
        return respond(payload, version, status)

    def handler_available(work_name: str) -> bool:
        return any(m.to_member().can_run(work_name)
                   for m in read_members(node.client, node.paths))

    @app.get("/api/cluster")
    def cluster() -> Any:
        return jsonify(node.cluster_view())

    @app.get("/api/node")
    def this_node() -> Any:
        return jsonify(node.node_view())

    @app.get("/api/nodes")
    def nodes() -> Any:
        return jsonify(nodes=node.cluster_view()["nodes"])

    @app.get("/api/assignment")
    def assignment() -> Any:
        doc = node.assignment or {}
        return jsonify(generation=doc.get("generation"), leader=doc.get("leader"),
                       strategy=doc.get("strategy"),
                       nodes={n: [{"task": s.task, "slot": s.index} for s in slots]
                              for n, slots in doc_plan(doc).items()},
                       unassigned=[{"task": s.task, "slot": s.index}
                                   for s in doc_unassigned(doc)])

    @app.get("/api/events")
    def events() -> Any:
        after = _query_int("after", 0, 0, MAX_EVENT_SEQ)
        limit = _query_int("limit", 100, 0, MAX_EVENTS_LIMIT)
        return jsonify(events=node.events.since(after, limit), last=node.events.last_seq)

    @app.get("/api/tasks")
    def list_tasks() -> Any:
        payload, version = tasks_payload()
        return respond(payload, version)

    @app.get("/api/tasks/<name>")
    def get_task(name: str) -> Any:
        payload, version = tasks_payload()
        for task in payload["tasks"]:
            if task["name"] == name:
                return respond({"version": version, "task": task}, version)
        raise ov.OverrideError(f"unknown task {name!r}", status=404)

    @app.post("/api/tasks")
    def add_task() -> Any:
        body = _body()
        expected = _expected_version(body)
        name = body.get("name")
        _, version = node.overrides.update(
            lambda d: ov.add_task(d, node.seed_tasks(), body, handler_available,
                               max_slots=node.config.assignment.max_slots),
            expected=expected)
        payload, _ = tasks_payload()
        task = next((t for t in payload["tasks"] if t["name"] == name), None)
        return respond({"version": version, "task": task}, version, 201)

    @app.patch("/api/tasks/<name>")
    def patch_task(name: str) -> Any:
        body = _body()
        version = _expected_version(body)
        if not body:
            raise ov.OverrideError("nothing to change: send e.g. {\"workerNum\": 3}")
        return mutate(lambda d: ov.update_task(d, node.seed_tasks(), name, body,
                                               max_slots=node.config.assignment.max_slots),
                      {"version": version} if version is not None else {}, task=name)

    @app.post("/api/tasks/<name>/scale")
    def scale_task(name: str) -> Any:
        body = _body(accepted=("workerNum",))
        if "workerNum" not in body:
            raise ov.OverrideError("send {\"workerNum\": N} with N a non-negative integer")
        n = body["workerNum"]
        return mutate(lambda d: ov.update_task(d, node.seed_tasks(), name, {"workerNum": n},
                                               max_slots=node.config.assignment.max_slots),
                      body, task=name)

    @app.post("/api/tasks/<name>/pause")
    def pause_task(name: str) -> Any:
        return mutate(lambda d: ov.update_task(d, node.seed_tasks(), name, {"paused": True}),
                      _body(accepted=()), task=name)

    @app.post("/api/tasks/<name>/resume")
    def resume_task(name: str) -> Any:
        return mutate(lambda d: ov.update_task(d, node.seed_tasks(), name, {"paused": False}),
                      _body(accepted=()), task=name)

    @app.post("/api/tasks/<name>/reset")
    def reset_task(name: str) -> Any:
        return mutate(lambda d: ov.reset_task(d, node.seed_tasks(), name), _body(accepted=()),
                      task=name)

    @app.delete("/api/tasks/<name>")
    def delete_task(name: str) -> Any:
        # Removed on purpose: the leader deletes its checkpoints once the table without it
        # is published (a task that only vanished from one node's app.toml keeps them).
        return mutate(lambda d: ov.remove_task(d, node.seed_tasks(), name),
                      _body(accepted=()))

    def known_task(name: str) -> dict[str, Any] | None:
        payload, _ = tasks_payload()
        return next((t for t in payload["tasks"] if t["name"] == name), None)

    def checkpoint_slot_id(name: str, slot: str) -> str:
        """A URL's slot: an index, or a key for a keyed task (percent-encoded in the URL)."""
        task = known_task(name)
        if task is not None and task.get("keys"):
            return checkpoint_id(0, slot)
        index = slot_index(slot)
        if index is None:
            # No such slot (not an error in the request's form: any string names a key of
            # some keyed task), so 404 like an unknown task.
            raise ov.OverrideError(f"task {name!r} has no slot {slot[:40]!r}: its slots are "
                                   "indices (0, 1, ...)", status=404)
        return checkpoint_id(index)

    def unchanged_since(body: dict[str, Any]) -> None:
        """A reset sent with a version (If-Match or `version`) applies only while the
        overrides are still at that version, like every other mutation."""
        expected = _expected_version(body)
        if expected is not None:
            _, version = node.overrides.read()
            if expected != version:
                raise ov.VersionConflict(expected, version)

    def checkpoint_task(name: str) -> None:
        if known_task(name) is None and not node.client.exists(
                node.paths.checkpoint_task(name)):
            raise ov.OverrideError(f"unknown task {name!r}", status=404)

    @app.post("/api/tasks/<name>/keys/refresh")
    def refresh_keys(name: str) -> Any:
        body = _body(accepted=())
        _, version = node.overrides.update(
            lambda d: ov.request_keys_refresh(d, node.seed_tasks(), name),
            expected=_expected_version(body))
        return respond({"version": version, "task": name}, version, 202)

    @app.get("/api/tasks/<name>/checkpoints")
    def list_checkpoints(name: str) -> Any:
        checkpoint_task(name)
        return jsonify(read_checkpoints(node.client, node.paths, name))

    @app.delete("/api/tasks/<name>/checkpoints")
    def reset_all_checkpoints(name: str) -> Any:
        unchanged_since(_body(accepted=()))
        checkpoint_task(name)
        count = reset_checkpoints(node.client, node.paths, name)
        node.events.add("checkpoints_reset", f"{name}: {count} checkpoint(s) reset", task=name)
        return jsonify(task=name, reset=count)

    @app.delete("/api/tasks/<name>/checkpoints/<slot>")
    def reset_one_checkpoint(name: str, slot: str) -> Any:
        unchanged_since(_body(accepted=()))
        checkpoint_task(name)
        count = reset_checkpoints(node.client, node.paths, name,
                                  checkpoint_slot_id(name, slot))
        node.events.add("checkpoints_reset", f"{name}/{slot}: checkpoint reset", task=name)
        return jsonify(task=name, slot=slot, reset=count)

    def set_drain(name: str, drained: bool) -> Any:
        body = _body(accepted=())
        result = ov.drain_node(node.client, node.paths, node.overrides, name, drained,
                               expected=_expected_version(body))
        return respond(result, result["version"])

    @app.post("/api/nodes/<name>/drain")
    def drain(name: str) -> Any:
        return set_drain(name, True)

    @app.post("/api/nodes/<name>/undrain")
    def undrain(name: str) -> Any:
        return set_drain(name, False)

    app.add_url_rule("/api/nodes/<name>/cordon", "cordon", drain, methods=["POST"])
    app.add_url_rule("/api/nodes/<name>/uncordon", "uncordon", undrain, methods=["POST"])

    @app.post("/api/rebalance")
    def rebalance() -> Any:
        body = _body(accepted=())
        doc, version = node.overrides.update(ov.request_rebalance,
                                             expected=_expected_version(body))
        return respond({"version": version, "rebalance": doc["rebalance"]}, version, 202)
