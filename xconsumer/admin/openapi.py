"""OpenAPI 3.0 description of the admin HTTP API, served at `/openapi.json`.

The operations come from one static table (`ROUTES`) rather than from introspection, because
Flask knows methods and paths but nothing about bodies, schemas or error codes. The risk of a
hand-written table is drift, so `undocumented_routes` / `stale_routes` compare it with the
live `url_map`; the unit test fails on any difference, and at runtime a route missing from the
table still appears (flagged `x-undocumented`) instead of silently vanishing from the spec.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any

from flask import Flask

from .. import __version__
from ..config import MAX_BREAKER_FAILURES, MAX_WORKER_NUM
from ..overrides import MUTABLE_FIELDS

IGNORED_METHODS = frozenset({"HEAD", "OPTIONS"})
IGNORED_ENDPOINTS = frozenset({"static"})
MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})

_FLASK_PARAM = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")

# The `error` code of each status the API answers with (the app uses this table too).
ERROR_CODES: dict[int, str] = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 409: "conflict", 411: "length_required", 413: "payload_too_large",
    415: "unsupported_media_type", 500: "internal_error", 503: "zookeeper_unavailable"}
MAX_VERSION = 2**31 - 1  # ZooKeeper versions are signed 32-bit; -1 means "never written"
MAX_EVENTS_LIMIT = 1000
MAX_EVENT_SEQ = 2**63 - 1
# If-Match as the API accepts it: the ETag ("7", maybe weakened to W/"7"), a bare number,
# or * (any version). Nine digits keep every match within MAX_VERSION.
IF_MATCH_PATTERN = r'^(\*|(W/)?"(-1|[0-9]{1,9})"|-1|[0-9]{1,9})$'


def openapi_path(rule: str) -> str:
    """Flask's `/api/tasks/<name>` (or `<string:name>`) as OpenAPI's `/api/tasks/{name}`."""
    return _FLASK_PARAM.sub(r"{\1}", rule)


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


# -- schemas ---------------------------------------------------------------------------------

_NUM_NONNEG = {"type": "number", "minimum": 0}
_NUM_POS = {"type": "number", "exclusiveMinimum": True, "minimum": 0}
_TASK_FIELDS: dict[str, Any] = {
    "name": {"type": "string", "description": "unique task name", "example": "ingest",
             "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"},
    "workName": {"type": "string",
                 "description": "handler name: `record` runs `RunRecord` from works/",
                 "example": "record", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
    "workerNum": {"type": "integer", "minimum": 0, "maximum": MAX_WORKER_NUM,
                  "description": "number of slots (copies) to run across the cluster"},
    "mode": {"type": "string", "enum": ["loop", "once"],
             "description": "`loop` restarts the handler when it returns; `once` runs it once"},
    "interval": {**_NUM_NONNEG, "description": "seconds between runs in loop mode"},
    "stop_timeout": {**_NUM_POS, "description": "seconds a handler gets to stop"},
    "retry_backoff": {**_NUM_POS, "description": "first retry delay after a failure (s)"},
    "retry_backoff_max": {**_NUM_POS, "description": "largest retry delay (s)"},
    "max_per_node": {"type": "integer", "minimum": 1, "nullable": True,
                     "description": "at most this many of the task's slots on one node"},
    "isolation": {"type": "string", "enum": ["thread", "process", "container"],
                  "description": "`process` runs the handler in a child process that can be "
                                 "terminated after stop_timeout; `container` (implied by "
                                 "image) runs each slot as a Docker container"},
    "run_timeout": {**_NUM_POS, "nullable": True,
                    "description": "seconds one handler run may take (null: no limit); a "
                                   "longer run is stopped and counts as a failure"},
    "breaker_failures": {"type": "integer", "minimum": 1, "maximum": MAX_BREAKER_FAILURES,
                         "nullable": True,
                         "description": "consecutive failures that open the slot's circuit "
                                        "breaker (null: no breaker)"},
    "breaker_cooldown": {**_NUM_POS, "description": "seconds an open breaker calls nothing "
                                                    "before its trial run"},
    "image": {"type": "string", "minLength": 1, "nullable": True,
              "description": "a container task: each slot runs this image (a change restarts "
                             "the slots)"},
    "command": {"type": "array", "items": {"type": "string"}, "minItems": 1,
                "nullable": True, "description": "the container's command (null: the image's)"},
    "env": {"type": "object", "additionalProperties": {"type": "string"}, "nullable": True,
            "description": "extra environment of the container (XCONSUMER_* are set by the "
                           "node)"},
    "params": {"oneOf": [{"type": "array"},
                         {"type": "object",
                          "propertyNames": {"pattern": "^[A-Za-z0-9_.:@=+-]{1,200}$"}}],
               "nullable": True,
               "description": "per-slot parameters, `ctx.param`: a list indexed by slot, or an "
                              "object slot index (a keyed task: slot key) -> any JSON value; "
                              "at most 64 KiB as JSON"},
    "keys": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$", "nullable": True,
             "description": "a keyed task: one slot per key `Keys<keys>()` in works/ returns "
                            "(instead of workerNum)"},
    "keys_interval": {**_NUM_POS, "description": "seconds between two calls of a keyed "
                                                 "task's provider"},
}
_VERSION_FIELD = {"type": "integer", "minimum": -1, "maximum": MAX_VERSION,
                  "description": "overrides version this edit is based on (like If-Match); "
                                 "a stale one gets 409"}
_MUTABLE = MUTABLE_FIELDS
_SLOT_REF = {"type": "object", "required": ["task", "slot"],
             "properties": {"task": {"type": "string"}, "slot": {"type": "integer"}}}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object", "required": ["error", "message"],
        "description": "every non-2xx answer of the JSON API",
        "properties": {
            "error": {"type": "string", "description": "machine code",
                      "example": "not_found", "enum": [*ERROR_CODES.values(), "error"]},
            "message": {"type": "string", "description": "what went wrong, one line"},
        },
    },
    "TaskDefinition": {"type": "object", "properties": copy.deepcopy(_TASK_FIELDS)},
    "Task": {
        "description": "a task as the leader schedules it: app.toml patched by overrides, "
                       "with live counts",
        "allOf": [
            _ref("TaskDefinition"),
            {"type": "object",
             "required": ["name", "workName", "workerNum", "paused", "source", "overridden",
                          "desired", "assigned", "running"],
             "properties": {
                 "paused": {"type": "boolean"},
                 "source": {"type": "string", "enum": ["app.toml", "api"],
                            "description": "where the definition comes from"},
                 "overridden": {"type": "array", "items": {"type": "string"},
                                "description": "fields changed at runtime (reset drops them)"},
                 "desired": {"type": "integer", "description": "workerNum, 0 when paused"},
                 "assigned": {"type": "integer",
                              "description": "slots in the published assignment"},
                 "running": {"type": "integer",
                             "description": "slots whose owner znode is held right now"},
                 "slot_keys": {"type": "array", "items": {"type": "string"},
                               "description": "a keyed task's keys as published, in slot "
                                              "order (workerNum is their number)"},
             }},
        ],
    },
    "TaskList": {
        "type": "object", "required": ["version", "tasks"],
        "properties": {"version": {"type": "integer",
                                   "description": "overrides znode version (-1: never "
                                                  "written); also the ETag"},
                       "tasks": {"type": "array", "items": _ref("Task")},
                       "corrupt": {"type": "array", "items": _ref("Corrupt"),
                        "description": "znodes read as corrupt (named, never a 500)"}},
    },
    "Corrupt": {
        "type": "object", "required": ["kind", "znode", "error"],
        "properties": {
            "kind": {"type": "string", "enum": ["member", "assignment", "plan", "overrides",
                                                "owner", "checkpoint", "done", "left"]},
            "znode": {"type": "string"}, "error": {"type": "string"}},
    },
    "TaskEnvelope": {
        "type": "object", "required": ["version", "task"],
        "properties": {"version": {"type": "integer"},
                       "task": {**_ref("Task"), "nullable": True}},
    },
    # Request bodies: unknown fields are a 400 (a typo must not look like success).
    "NewTask": {
        "type": "object", "required": ["name", "workName"],
        "additionalProperties": False,
        "oneOf": [{"required": ["workerNum"], "not": {"required": ["keys"]}},
                  {"required": ["keys"], "not": {"required": ["workerNum"]}}],
        "description": "workerNum or keys, not both; 400 also when retry_backoff_max < "
                       "retry_backoff, when params of a workerNum task are keyed by anything "
                       "but slot indices, or when no live node has a handler for workName",
        "properties": {**copy.deepcopy(_TASK_FIELDS), "version": _VERSION_FIELD},
    },
    "TaskPatch": {
        "type": "object", "additionalProperties": False,
        "description": "any subset of the changeable fields, at least one of them",
        "properties": {**{k: copy.deepcopy(_TASK_FIELDS[k]) for k in _MUTABLE},
                       "paused": {"type": "boolean"}, "version": _VERSION_FIELD},
        "anyOf": [{"required": [k]} for k in (*_MUTABLE, "paused")],
    },
    "Scale": {
        "type": "object", "required": ["workerNum"], "additionalProperties": False,
        "properties": {"workerNum": copy.deepcopy(_TASK_FIELDS["workerNum"]),
                       "version": _VERSION_FIELD},
        "example": {"workerNum": 5},
    },
    "VersionOnly": {
        "type": "object", "additionalProperties": False,
        "description": "`{}`, or an empty body (still with Content-Type: application/json)",
        "properties": {"version": _VERSION_FIELD},
    },
    "ClusterNode": {
        "type": "object",
        "properties": {
            "id": {"type": "string"}, "seq": {"type": "integer"},
            "znode": {"type": "string", "description": "membership child, e.g. n-0000000003"},
            "leader": {"type": "boolean"},
            "state": {"type": "string",
                      "description": "node state, `draining` when drained"},
            "admin_url": {"type": "string", "nullable": True},
            "host": {"type": "string", "nullable": True},
            "pid": {"type": "integer", "nullable": True},
            "started_at": {"type": "number", "nullable": True},
            "handlers": {"type": "array", "items": {"type": "string"}, "nullable": True},
            "slots": {"type": "integer", "description": "slots assigned to this node"},
        },
    },
    "PublishedTask": {
        "allOf": [_ref("TaskDefinition"),
                  {"type": "object",
                   "properties": {"paused": {"type": "boolean"},
                                  "desired": {"type": "integer"},
                                  "assigned": {"type": "integer"},
                                  "running": {"type": "integer"}}}],
    },
    "SlotRef": _SLOT_REF,
    "Cluster": {
        "type": "object",
        "description": "the cluster as ZooKeeper sees it (same as `xconsumer status --json`)",
        "properties": {
            "cluster": {"type": "string"},
            "leader": {"type": "string", "nullable": True},
            "generation": {"type": "integer", "nullable": True},
            "strategy": {"type": "string", "nullable": True},
            "nodes": {"type": "array", "items": _ref("ClusterNode")},
            "tasks": {"type": "array", "items": _ref("PublishedTask")},
            "assignment": {"type": "object", "description": "node id -> its slots",
                           "additionalProperties": {"type": "array",
                                                    "items": _ref("SlotRef")}},
            "unassigned": {"type": "array", "items": _ref("SlotRef")},
            "owners": {"type": "object",
                       "description": "`task/slot` -> node holding its owner znode (null: "
                                      "no live member holds it, e.g. made by hand)",
                       "additionalProperties": {"type": "string", "nullable": True}},
            "fences": {"type": "object",
                       "description": "`task/slot` -> owner znode czxid (fencing token)",
                       "additionalProperties": {"type": "integer"}},
            "done": {"type": "array", "items": {"type": "string"},
                     "description": "`task/slot` of completed once-slots"},
            "corrupt": {"type": "array", "items": _ref("Corrupt"),
                        "description": "znodes read as corrupt (named, never a 500)"},
        },
    },
    "NodeList": {"type": "object", "required": ["nodes"],
                 "properties": {"nodes": {"type": "array", "items": _ref("ClusterNode")}}},
    "SlotStatus": {
        "type": "object",
        "properties": {
            "task": {"type": "string"}, "slot": {"type": "integer"},
            "state": {"type": "string", "example": "running"},
            "fence": {"type": "integer", "nullable": True},
            "generation": {"type": "integer"}, "runs": {"type": "integer"},
            "failures": {"type": "integer"},
            "last_error": {"type": "string", "nullable": True},
            "started_at": {"type": "number", "nullable": True},
            "timeouts": {"type": "integer", "description": "runs stopped by run_timeout"},
            "breaker": {"type": "string", "enum": ["closed", "open", "half_open"],
                        "description": "the slot's circuit breaker (closed when off)"},
            "consecutive_failures": {"type": "integer",
                                     "description": "failed runs in a row (timeouts too)"},
            "open_until": {"type": "number", "nullable": True,
                           "description": "Unix time an open breaker allows its trial run"},
        },
    },
    "Node": {
        "type": "object", "description": "the node that answers",
        "properties": {
            "id": {"type": "string"}, "cluster": {"type": "string"},
            "state": {"type": "string",
                      "enum": ["new", "starting", "started", "stopping", "stopped"]},
            "znode": {"type": "string", "nullable": True},
            "leader": {"type": "boolean"},
            "leader_id": {"type": "string", "nullable": True},
            "generation": {"type": "integer", "nullable": True,
                           "description": "on a follower running from its plan: the "
                                          "generation in which its plan last changed"},
            "plan": {"type": "string", "nullable": True, "enum": ["plan", "document"],
                     "description": "where this node's slots come from: its own plan "
                                    "(plans/<node>) or the whole assignment (the leader, or "
                                    "a follower without a plan it can trust)"},
            "connected": {"type": "boolean"},
            "lease_remaining": {"type": "number"},
            "session_timeout": {"type": "number"},
            "slots": {"type": "array", "items": _ref("SlotStatus")},
            "publish_error": {"type": "string", "nullable": True,
                              "description": "on the leader: why the last plan could not "
                                             "be published in full"},
            "strategy_error": {"type": "string", "nullable": True,
                               "description": "on the leader: why the configured strategy "
                                              "was replaced by round_robin"},
            "corrupt": {"type": "array", "items": _ref("Corrupt"),
                        "description": "znodes read as corrupt (named, never a 500)"},
        },
    },
    "Assignment": {
        "type": "object",
        "properties": {
            "generation": {"type": "integer", "nullable": True},
            "leader": {"type": "string", "nullable": True},
            "strategy": {"type": "string", "nullable": True},
            "nodes": {"type": "object", "additionalProperties": {"type": "array",
                                                                 "items": _ref("SlotRef")}},
            "unassigned": {"type": "array", "items": _ref("SlotRef")},
        },
    },
    "Event": {
        "type": "object", "required": ["seq", "time", "kind", "message"],
        "description": "kind-specific fields (node, leader, generation, ...) may follow",
        "additionalProperties": True,
        "properties": {
            "seq": {"type": "integer"}, "time": {"type": "number", "description": "epoch s"},
            "kind": {"type": "string", "example": "rebalance"},
            "message": {"type": "string"},
        },
    },
    "Events": {
        "type": "object", "required": ["events", "last"],
        "properties": {"events": {"type": "array", "items": _ref("Event")},
                       "last": {"type": "integer",
                                "description": "newest seq; pass it as `after` next time"}},
    },
    "Health": {
        "type": "object",
        "properties": {"status": {"type": "string", "enum": ["ok", "degraded"]},
                       "node": {"type": "string"},
                       "leader": {"type": "boolean"}},
    },
    "DrainResult": {
        "type": "object",
        "properties": {"version": {"type": "integer"}, "node": {"type": "string"},
                       "drained": {"type": "boolean"},
                       "drained_nodes": {"type": "array", "items": {"type": "string"}}},
    },
    "Checkpoints": {
        "type": "object", "required": ["task", "checkpoints", "truncated"],
        "properties": {
            "task": {"type": "string"},
            "truncated": {"type": "boolean",
                          "description": "more checkpoints exist than the 1000 listed"},
            "checkpoints": {"type": "array", "items": {
                "type": "object", "required": ["slot", "key", "version"],
                "properties": {
                    "slot": {"type": "integer", "nullable": True},
                    "key": {"type": "string", "nullable": True,
                            "description": "a keyed task's slot key (slot is then null)"},
                    "version": {"type": "integer", "description": "znode version"},
                    "value": {"description": "the committed value (any JSON, null: none)"},
                    "fence": {"type": "integer", "description": "fence of the committer"},
                    "node": {"type": "string"},
                    "committed_at": {"type": "number", "nullable": True},
                    "corrupt": {"type": "string",
                                "description": "why the znode does not decode (no value)"}}}},
        },
    },
    "CheckpointReset": {
        "type": "object", "required": ["task", "reset"],
        "properties": {"task": {"type": "string"}, "slot": {"type": "string"},
                       "reset": {"type": "integer", "description": "checkpoints deleted"}},
    },
    "KeysRefresh": {
        "type": "object", "required": ["version", "task"],
        "properties": {"version": {"type": "integer"}, "task": {"type": "string"}},
    },
    "RebalanceResult": {
        "type": "object",
        "properties": {"version": {"type": "integer"},
                       "rebalance": {"type": "integer", "description": "request counter"}},
    },
}

_ERROR_TEXT = {
    400: "bad request (invalid body or value)",
    401: "missing or wrong bearer token",
    403: "Host is not an address of this node ([admin] allowed_hosts), or a cross-site "
         "request (foreign Origin, Sec-Fetch-Site: cross-site)",
    404: "no such task / node / route",
    409: "stale version or conflicting change",
    411: "chunked body: send a Content-Length",
    413: "request body too large",
    415: "a change without Content-Type: application/json",
    503: "ZooKeeper did not answer",
}


# -- the route table --------------------------------------------------------------------------

@dataclass(frozen=True)
class Route:
    """One operation. `rule` is written exactly as Flask registers it."""

    rule: str
    method: str
    summary: str
    tag: str
    ok: int = 200
    response: str | None = None  # schema name; None means a non-JSON body (see `content`)
    content: dict[str, Any] | None = None
    body: str | None = None
    query: tuple[dict[str, Any], ...] = ()
    errors: tuple[int, ...] = (503,)
    etag: bool = False
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


_TASK_ERRORS = (400, 404, 409, 503)
_EVENT_QUERY = (
    {"name": "after", "in": "query", "required": False,
     "description": "only events with a larger seq (use `last` of the previous answer)",
     "schema": {"type": "integer", "default": 0, "minimum": 0, "maximum": MAX_EVENT_SEQ}},
    {"name": "limit", "in": "query", "required": False,
     "description": "at most this many (the newest); 400 outside 0..1000",
     "schema": {"type": "integer", "default": 100, "minimum": 0,
                "maximum": MAX_EVENTS_LIMIT}},
)

ROUTES: tuple[Route, ...] = (
    Route("/", "GET", "Dashboard (HTML page polling this API)", "ui", response=None,
          content={"text/html": {"schema": {"type": "string"}}}, errors=()),
    Route("/openapi.json", "GET", "This OpenAPI document", "meta", response=None,
          content=_json({"type": "object"}), errors=()),
    Route("/healthz", "GET", "Liveness/readiness of this node", "meta", response="Health",
          errors=(), description="503 with status `degraded` when the node is not started or "
                                 "not connected to ZooKeeper",
          extra={"503": {"description": "degraded", "content": _json(_ref("Health"))}}),
    Route("/metrics", "GET", "Prometheus metrics", "meta", response=None,
          content={"text/plain": {"schema": {"type": "string"}}}, errors=()),
    Route("/api/cluster", "GET", "Whole cluster: nodes, tasks, assignment, owners", "cluster",
          response="Cluster"),
    Route("/api/node", "GET", "The node answering: state, lease, its slots", "cluster",
          response="Node", errors=()),
    Route("/api/nodes", "GET", "Live nodes", "cluster", response="NodeList"),
    Route("/api/assignment", "GET", "Published assignment as this node last saw it", "cluster",
          response="Assignment", errors=()),
    Route("/api/events", "GET", "Recent events seen by this node (in memory, bounded)",
          "cluster", response="Events", query=_EVENT_QUERY, errors=(400,)),
    Route("/api/tasks", "GET", "Tasks with desired/assigned/running counts", "tasks",
          response="TaskList", etag=True),
    Route("/api/tasks", "POST", "Add a task at runtime (stored in the overrides znode)",
          "tasks", ok=201, response="TaskEnvelope", body="NewTask",
          errors=(400, 409, 503), etag=True,
          description="400 when no live node has a handler for its workName; 409 when the "
                      "name exists"),
    Route("/api/tasks/<name>", "GET", "One task", "tasks", response="TaskEnvelope",
          errors=(404, 503), etag=True),
    Route("/api/tasks/<name>", "PATCH", "Change fields of a task (override app.toml)",
          "tasks", response="TaskEnvelope", body="TaskPatch",
          errors=_TASK_ERRORS, etag=True),
    Route("/api/tasks/<name>", "DELETE", "Remove a task (an app.toml task until reset)",
          "tasks", response="TaskList", body="VersionOnly", errors=_TASK_ERRORS, etag=True),
    Route("/api/tasks/<name>/scale", "POST", "Set workerNum", "tasks",
          response="TaskEnvelope", body="Scale", errors=_TASK_ERRORS,
          etag=True),
    Route("/api/tasks/<name>/pause", "POST", "Pause: run zero slots, keep workerNum", "tasks",
          response="TaskEnvelope", body="VersionOnly", errors=_TASK_ERRORS, etag=True),
    Route("/api/tasks/<name>/resume", "POST", "Resume a paused task", "tasks",
          response="TaskEnvelope", body="VersionOnly", errors=_TASK_ERRORS, etag=True),
    Route("/api/tasks/<name>/reset", "POST", "Drop every override: back to app.toml", "tasks",
          response="TaskEnvelope", body="VersionOnly", errors=_TASK_ERRORS, etag=True,
          description="404 for a task unknown to app.toml; 409 for an API-added task "
                      "(remove it instead)"),
    Route("/api/tasks/<name>/checkpoints", "GET", "The task's per-slot checkpoints",
          "tasks", response="Checkpoints", errors=(404, 503)),
    Route("/api/tasks/<name>/checkpoints", "DELETE", "Reset every checkpoint of the task",
          "tasks", response="CheckpointReset", body="VersionOnly", errors=(404, 409, 503),
          description="a running slot's next commit is refused: it restarts from none"),
    Route("/api/tasks/<name>/checkpoints/<slot>", "DELETE", "Reset one slot's checkpoint",
          "tasks", response="CheckpointReset", body="VersionOnly", errors=_TASK_ERRORS,
          description="slot: an index, or a key for a keyed task (404 otherwise)"),
    Route("/api/tasks/<name>/keys/refresh", "POST", "Call a keyed task's provider now",
          "tasks", ok=202, response="KeysRefresh", body="VersionOnly", errors=_TASK_ERRORS,
          etag=True, description="409 when the task is not keyed"),
    Route("/api/nodes/<name>/drain", "POST", "Drain a node: its slots move elsewhere",
          "nodes", response="DrainResult", body="VersionOnly", errors=_TASK_ERRORS,
          etag=True, description="404 when no live node has that name"),
    Route("/api/nodes/<name>/undrain", "POST", "Undrain a node: it gets slots again",
          "nodes", response="DrainResult", body="VersionOnly", errors=(400, 409, 503),
          etag=True),
    Route("/api/nodes/<name>/cordon", "POST", "Alias of drain", "nodes",
          response="DrainResult", body="VersionOnly", errors=_TASK_ERRORS, etag=True),
    Route("/api/nodes/<name>/uncordon", "POST", "Alias of undrain", "nodes",
          response="DrainResult", body="VersionOnly", errors=(400, 409, 503), etag=True),
    Route("/api/rebalance", "POST", "Ask the leader for a full rebalance (ignore stickiness)",
          "cluster", ok=202, response="RebalanceResult", body="VersionOnly",
          errors=(400, 409, 503), etag=True),
)


# -- building the document --------------------------------------------------------------------

def _operation_id(route: Route) -> str:
    words = [w for w in re.split(r"[^A-Za-z0-9]+", route.rule) if w and w != "api"]
    return route.method.lower() + "".join(w.capitalize() for w in words)


def _operation(route: Route) -> dict[str, Any]:
    ok: dict[str, Any] = {"description": route.summary}
    if route.response is not None:
        ok["content"] = _json(_ref(route.response))
    elif route.content is not None:
        ok["content"] = route.content
    if route.etag:
        ok["headers"] = {"ETag": {"description": "overrides version, quoted; send it back "
                                                 "as If-Match",
                                  "schema": {"type": "string", "example": '"7"'}}}
    responses: dict[str, Any] = {str(route.ok): ok}
    codes = set(route.errors) | {403}  # Host / Origin rules apply to every route
    if route.method in MUTATING:
        codes |= {400, 401, 411, 413, 415}
    for code in sorted(codes):
        responses[str(code)] = {"description": _ERROR_TEXT[code],
                                "content": _json(_ref("Error"))}
    responses.update(copy.deepcopy(route.extra))
    op: dict[str, Any] = {"operationId": _operation_id(route), "summary": route.summary,
                          "tags": [route.tag], "responses": responses}
    if route.description:
        op["description"] = route.description
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in _FLASK_PARAM.findall(route.rule)]
    params += [copy.deepcopy(q) for q in route.query]
    if route.method in MUTATING:
        params.append({"$ref": "#/components/parameters/IfMatch"})
        op["security"] = [{"bearer": []}]
    if params:
        op["parameters"] = params
    if route.body is not None:
        # Required even where `{}` will do: a change must carry Content-Type:
        # application/json (415 otherwise), which only a request with a body has.
        op["requestBody"] = {"required": True,
                             "content": _json(_ref(route.body))}
    return op


def _undocumented_operation(method: str, rule: str) -> dict[str, Any]:
    return {"operationId": f"undocumented_{method.lower()}_{_operation_id_safe(rule)}",
            "summary": "not described yet (add it to xconsumer.admin.openapi.ROUTES)",
            "x-undocumented": True, "responses": {"default": {"description": "unknown"}}}


def _operation_id_safe(rule: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", rule).strip("_") or "root"


def app_routes(app: Flask) -> set[tuple[str, str]]:
    """(Flask rule, method) of every operation the app serves."""
    return {(rule.rule, method) for rule in app.url_map.iter_rules()
            if rule.endpoint not in IGNORED_ENDPOINTS
            for method in (rule.methods or set()) - IGNORED_METHODS}


def table_routes() -> set[tuple[str, str]]:
    return {(r.rule, r.method) for r in ROUTES}


def undocumented_routes(app: Flask) -> set[tuple[str, str]]:
    return app_routes(app) - table_routes()


def stale_routes(app: Flask) -> set[tuple[str, str]]:
    """Table rows for operations the app no longer serves."""
    return table_routes() - app_routes(app)


def openapi_document(app: Flask) -> dict[str, Any]:
    """The full document; a fresh dict each call so callers may change it freely."""
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        paths.setdefault(openapi_path(route.rule), {})[route.method.lower()] = \
            _operation(route)
    for rule, method in sorted(undocumented_routes(app)):
        paths.setdefault(openapi_path(rule), {})[method.lower()] = \
            _undocumented_operation(method, rule)
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "xconsumer admin API",
            "version": __version__,
            "description": (
                "Every node serves the same API. Reads are open; mutations need "
                "`Authorization: Bearer <token>` when `[admin] token` is set, and always "
                "`Content-Type: application/json` (415 otherwise; the body may be empty or "
                "`{}` where nothing is needed). Requests with an `Origin` that is not the "
                "node's own, with `Sec-Fetch-Site: cross-site`, or with a `Host` that is not "
                "an address of the node (`[admin] allowed_hosts`) get 403; `/healthz` "
                "answers any Host. Bodies are capped (413). A mutation sent to any node is "
                "written to ZooKeeper and takes effect cluster-wide. Task and node changes "
                "are conditional when you send `If-Match: \"<version>\"` (the ETag of GET "
                "/api/tasks) or a `version` field: a stale one gets 409."),
        },
        "servers": [{"url": "/"}],
        "tags": [{"name": "cluster"}, {"name": "tasks"}, {"name": "nodes"},
                 {"name": "meta"}, {"name": "ui"}],
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": copy.deepcopy(SCHEMAS),
            "parameters": {"IfMatch": {
                "name": "If-Match", "in": "header", "required": False,
                "description": "overrides version the change is based on (quoted or bare "
                               "integer, `*` for any); 409 when stale, 400 when not a "
                               "version",
                "schema": {"type": "string", "pattern": IF_MATCH_PATTERN,
                           "example": '"7"'}}},
            "securitySchemes": {"bearer": {
                "type": "http", "scheme": "bearer",
                "description": "the `[admin] token` of app.toml (XCONSUMER_ADMIN_TOKEN)"}},
        },
    }
