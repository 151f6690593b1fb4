"""The JSON API routes. Each handler is thin: it validates the request and calls one pure
override function or one read; the rules themselves live in `xconsumer.overrides`."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from flask import Flask, jsonify, request

from .. import overrides as ov
from ..leader import doc_plan, doc_unassigned
from ..membership import read_members
from ..view import tasks_table


def _body() -> dict[str, Any]:
    """The JSON object sent, whatever the Content-Type says (`curl -d` sends form type)."""
    raw = request.get_data()
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ov.OverrideError("request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ov.OverrideError("request body must be a JSON object")
    return data


def _expected_version(body: dict[str, Any]) -> int | None:
    """The overrides version the client based its edit on: If-Match header or "version"."""
    in_body = body.pop("version", None)
    header = request.headers.get("If-Match", "").strip()
    header = header.removeprefix("W/").strip('"')  # a proxy may weaken our ETag
    raw = header or in_body
    if raw in (None, "", "*"):
        return None
    try:
        return int(raw)
    except (TypeError, ValueError):
        raise ov.OverrideError(f"version must be an integer, got {raw!r}") from None


def register_api(app: Flask, node: Any) -> None:
    def tasks_payload() -> tuple[dict[str, Any], int]:
        payload = tasks_table(node.client, node.paths, node.assignment, node.seed_tasks())
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
        try:
            after = int(request.args.get("after", 0))
            limit = int(request.args.get("limit", 100))
        except ValueError:
            raise ov.OverrideError("after and limit must be integers") from None
        return jsonify(events=node.events.since(after, max(0, min(limit, 1000))),
                       last=node.events.last_seq)

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
            lambda d: ov.add_task(d, node.seed_tasks(), body, handler_available),
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
        return mutate(lambda d: ov.update_task(d, node.seed_tasks(), name, body),
                      {"version": version} if version is not None else {}, task=name)

    @app.post("/api/tasks/<name>/scale")
    def scale_task(name: str) -> Any:
        body = _body()
        if "workerNum" not in body:
            raise ov.OverrideError("send {\"workerNum\": N} with N a non-negative integer")
        n = body["workerNum"]
        return mutate(lambda d: ov.update_task(d, node.seed_tasks(), name, {"workerNum": n}),
                      body, task=name)

    @app.post("/api/tasks/<name>/pause")
    def pause_task(name: str) -> Any:
        return mutate(lambda d: ov.update_task(d, node.seed_tasks(), name, {"paused": True}),
                      _body(), task=name)

    @app.post("/api/tasks/<name>/resume")
    def resume_task(name: str) -> Any:
        return mutate(lambda d: ov.update_task(d, node.seed_tasks(), name, {"paused": False}),
                      _body(), task=name)

    @app.post("/api/tasks/<name>/reset")
    def reset_task(name: str) -> Any:
        return mutate(lambda d: ov.reset_task(d, node.seed_tasks(), name), _body(), task=name)

    @app.delete("/api/tasks/<name>")
    def delete_task(name: str) -> Any:
        return mutate(lambda d: ov.remove_task(d, node.seed_tasks(), name), _body())

    def set_drain(name: str, drained: bool) -> Any:
        body = _body()
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
        body = _body()
        doc, version = node.overrides.update(ov.request_rebalance,
                                             expected=_expected_version(body))
        return respond({"version": version, "rebalance": doc["rebalance"]}, version, 202)
