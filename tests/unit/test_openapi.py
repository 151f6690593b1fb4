"""The OpenAPI document stays in step with the routes Flask actually serves.

The document is a hand-written table (Flask cannot know bodies or error codes), so the only
protection against drift is comparing it with `app.url_map` here: adding a route without
describing it, or deleting one without removing its row, fails this test.
"""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest
from flask import Flask

from xconsumer.admin import create_app
from xconsumer.admin.openapi import (
    IGNORED_ENDPOINTS,
    IGNORED_METHODS,
    openapi_document,
    openapi_path,
)

HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


@pytest.fixture
def app() -> Flask:
    # create_app only reads config.admin.token while building the app; no route is called
    # except /openapi.json, which touches nothing on the node.
    fake = SimpleNamespace(config=SimpleNamespace(admin=SimpleNamespace(token=None)))
    return create_app(fake, token=None)


@pytest.fixture
def doc(app: Flask) -> dict[str, Any]:
    return openapi_document(app)


def served_operations(app: Flask) -> set[tuple[str, str]]:
    return {(openapi_path(rule.rule), method.lower())
            for rule in app.url_map.iter_rules() if rule.endpoint not in IGNORED_ENDPOINTS
            for method in (rule.methods or set()) - IGNORED_METHODS}


def documented_operations(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(path, method) for path, item in doc["paths"].items()
            for method in item if method in HTTP_METHODS}


def resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def test_flask_params_become_openapi_params():
    assert openapi_path("/api/tasks/<name>/scale") == "/api/tasks/{name}/scale"
    assert openapi_path("/x/<int:id>/<path:rest>") == "/x/{id}/{rest}"
    assert openapi_path("/") == "/"


def test_every_route_and_method_is_described_and_nothing_else(app: Flask,
                                                               doc: dict[str, Any]):
    served = served_operations(app)
    documented = documented_operations(doc)
    assert served, "the app serves no routes?"
    assert served - documented == set(), "routes missing from ROUTES in admin/openapi.py"
    assert documented - served == set(), "ROUTES describes routes the app does not serve"
    flagged = [(p, m) for p, item in doc["paths"].items() for m, op in item.items()
               if op.get("x-undocumented")]
    assert flagged == [], "routes only covered by the runtime fallback"


def test_structure_is_openapi_3(doc: dict[str, Any]):
    assert doc["openapi"].startswith("3.0.")
    assert doc["info"]["title"] and doc["info"]["version"]
    ids = [op["operationId"] for item in doc["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids)), "operationIds must be unique"
    for path, item in doc["paths"].items():
        assert "<" not in path and ">" not in path, path
        for method, op in item.items():
            assert op["responses"], f"{method} {path} has no responses"
            names = [p["name"] for p in op.get("parameters", []) if "name" in p]
            for param in path.split("{")[1:]:
                assert param.split("}")[0] in names, f"{method} {path}: path param missing"


def test_every_ref_resolves(doc: dict[str, Any]):
    text = json.dumps(doc)
    refs = {part.split('"')[0] for part in text.split('"$ref": "')[1:]}
    assert refs
    for ref in refs:
        resolve(doc, ref)


def test_mutations_are_secured_conditional_and_document_errors(doc: dict[str, Any]):
    bearer = doc["components"]["securitySchemes"]["bearer"]
    assert bearer["type"] == "http" and bearer["scheme"] == "bearer"
    error = doc["components"]["schemas"]["Error"]
    assert set(error["required"]) == {"error", "message"}
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method in ("post", "patch", "put", "delete"):
                assert op.get("security") == [{"bearer": []}], f"{method} {path}"
                refs = [p.get("$ref") for p in op.get("parameters", [])]
                assert "#/components/parameters/IfMatch" in refs, f"{method} {path}"
                for code in ("401", "409", "503"):
                    body = op["responses"][code]["content"]["application/json"]["schema"]
                    assert body == {"$ref": "#/components/schemas/Error"}, (method, path, code)
            else:
                assert "security" not in op, f"reads are open: {method} {path}"
    if_match = doc["components"]["parameters"]["IfMatch"]
    assert if_match["in"] == "header" and if_match["name"] == "If-Match"
    for path in ("/api/tasks/{name}", "/api/tasks/{name}/scale"):
        op = next(iter(op for m, op in doc["paths"][path].items() if m != "get"))
        assert "404" in op["responses"] and "400" in op["responses"]


def test_request_bodies_for_task_add_patch_and_scale(doc: dict[str, Any]):
    def body(path: str, method: str) -> dict[str, Any]:
        op = doc["paths"][path][method]
        assert op["requestBody"]["required"] is True
        return resolve(doc, op["requestBody"]["content"]["application/json"]["schema"]["$ref"])

    add = body("/api/tasks", "post")
    assert set(add["required"]) == {"name", "workName"}  # and workerNum or keys:
    assert [set(o["required"]) for o in add["oneOf"]] == [{"workerNum"}, {"keys"}]
    assert add["properties"]["mode"]["enum"] == ["loop", "once"]
    patch = body("/api/tasks/{name}", "patch")
    assert {"workerNum", "paused", "version"} <= set(patch["properties"])
    assert "name" not in patch["properties"]  # identity fields cannot change
    scale = body("/api/tasks/{name}/scale", "post")
    assert scale["required"] == ["workerNum"]
    worker_num = scale["properties"]["workerNum"]
    assert worker_num["type"] == "integer" and worker_num["minimum"] == 0
    assert doc["paths"]["/api/tasks"]["post"]["responses"].keys() >= {"201", "400", "409"}


def test_events_query_and_response_schemas(doc: dict[str, Any]):
    op = doc["paths"]["/api/events"]["get"]
    params = {p["name"]: p for p in op["parameters"]}
    assert params["after"]["in"] == params["limit"]["in"] == "query"
    assert params["limit"]["schema"]["maximum"] == 1000
    schemas = doc["components"]["schemas"]
    assert {"events", "last"} <= set(schemas["Events"]["properties"])
    assert {"seq", "kind", "message", "time"} <= set(schemas["Event"]["properties"])
    for name in ("Cluster", "Node", "TaskList", "Assignment"):
        assert schemas[name]["properties"], name
    assert {"nodes", "assignment", "owners", "leader"} <= set(schemas["Cluster"]["properties"])
    task = schemas["Task"]["allOf"][1]["properties"]
    assert {"desired", "assigned", "running", "paused", "source", "overridden"} <= set(task)


def test_served_at_openapi_json(app: Flask, doc: dict[str, Any]):
    resp = app.test_client().get("/openapi.json")
    assert resp.status_code == 200
    assert resp.mimetype == "application/json"
    assert resp.get_json() == json.loads(json.dumps(doc))


def test_a_route_added_later_still_shows_up_flagged(app: Flask):
    @app.get("/api/new-thing/<item>")
    def new_thing(item: str) -> str:  # pragma: no cover - never called
        return item

    op = openapi_document(app)["paths"]["/api/new-thing/{item}"]["get"]
    assert op["x-undocumented"] is True


def test_task_schemas_know_every_task_field(doc: dict[str, Any]):
    """A field added to [[task]] must be described too (and be patchable if mutable)."""
    from xconsumer.config import TaskConfig
    from xconsumer.overrides import MUTABLE_FIELDS

    fields = set(TaskConfig.from_dict({"name": "t", "workName": "w", "workerNum": 1}).to_dict())
    schemas = doc["components"]["schemas"]
    described = set(schemas["TaskDefinition"]["properties"])
    assert fields - described == set(), "describe these in _TASK_FIELDS of admin/openapi.py"
    patchable = set(schemas["TaskPatch"]["properties"])
    missing = (set(MUTABLE_FIELDS) & fields) - patchable
    assert missing == set(), "add these to _MUTABLE of admin/openapi.py"


def test_the_document_states_the_limits_the_api_enforces(doc: dict[str, Any]):
    """Each of these was once a gap a fuzzer found: a value the schema allowed got a 400, or
    one it forbade was accepted, or a status the API sends was not documented."""
    import re

    from xconsumer.admin.openapi import ERROR_CODES, IF_MATCH_PATTERN, MAX_VERSION
    from xconsumer.config import MAX_WORKER_NUM

    schemas = doc["components"]["schemas"]
    assert schemas["Scale"]["properties"]["workerNum"]["maximum"] == MAX_WORKER_NUM
    assert schemas["NewTask"]["properties"]["workerNum"]["maximum"] == MAX_WORKER_NUM
    for name in ("NewTask", "TaskPatch", "Scale", "VersionOnly"):
        assert schemas[name]["additionalProperties"] is False, name
        version = schemas[name]["properties"]["version"]
        assert (version["minimum"], version["maximum"]) == (-1, MAX_VERSION), name
    # {"version": 0} alone changes nothing: the patch must name a field.
    assert {"required": ["version"]} not in schemas["TaskPatch"]["anyOf"]
    assert {"required": ["workerNum"]} in schemas["TaskPatch"]["anyOf"]
    if_match = doc["components"]["parameters"]["IfMatch"]["schema"]
    assert if_match["pattern"] == IF_MATCH_PATTERN
    for ok in ('"7"', 'W/"7"', "7", "*", '"-1"'):
        assert re.search(IF_MATCH_PATTERN, ok), ok
    for bad in ("", "abc", '"1.5"', '"7", "8"', '"9999999999"'):
        assert not re.search(IF_MATCH_PATTERN, bad), bad
    limit = next(p for p in doc["paths"]["/api/events"]["get"]["parameters"]
                 if p["name"] == "limit")
    assert limit["schema"]["maximum"] == 1000
    assert set(ERROR_CODES.values()) <= set(schemas["Error"]["properties"]["error"]["enum"])
    for path, item in doc["paths"].items():
        for method, op in item.items():
            assert "403" in op["responses"], f"{method} {path}: Host/Origin refusal"
            if method in ("post", "patch", "put", "delete"):
                assert {"400", "413", "415"} <= set(op["responses"]), f"{method} {path}"
                assert op["requestBody"]["required"] is True, f"{method} {path}"
