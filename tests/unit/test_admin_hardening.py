"""The admin API against input from outside, with Flask's test client and a stand-in node.

Covers what is decided before any ZooKeeper access: the Host / Origin / Sec-Fetch-Site rules
(cross-site requests and DNS rebinding), the Content-Type every change needs, body size and
parsing limits, version and query validation, the 405 Allow header and the metrics type.
"""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest
from flask.testing import FlaskClient
from prometheus_client import CONTENT_TYPE_LATEST

from xconsumer.admin import create_app
from xconsumer.admin.api import MAX_BODY
from xconsumer.admin.guard import HostPolicy, same_origin, split_host

JSON = "application/json"


class FakeOverrides:
    """Records the version each change was based on; every change succeeds."""

    def __init__(self) -> None:
        self.expected: list[int | None] = []

    def update(self, change: Any, *, expected: int | None = None) -> tuple[dict, int]:
        self.expected.append(expected)
        return {"rebalance": len(self.expected)}, len(self.expected)


class FakeNode:
    def __init__(self, token: str | None = None,
                 allowed_hosts: tuple[str, ...] = ()) -> None:
        self.config = SimpleNamespace(admin=SimpleNamespace(token=token,
                                                            allowed_hosts=allowed_hosts))
        self.overrides = FakeOverrides()
        self.events = SimpleNamespace(since=lambda after, limit: [], last_seq=0)
        self.metrics = SimpleNamespace(render=lambda: b"xconsumer_leader 1.0\n",
                                       content_type=CONTENT_TYPE_LATEST)

    def node_view(self) -> dict:
        return {"id": "n1", "state": "started", "connected": True, "leader": True}

    def cluster_view(self) -> dict:
        return {"cluster": "c", "nodes": []}

    def refresh_metrics(self) -> None:
        return None


class BoundClient(FlaskClient):
    """Requests as if served by a server bound to `bound`:`port`, sent to 127.0.0.1:`port`
    unless a test passes its own Host header (werkzeug's server puts the bound address in
    SERVER_NAME / SERVER_PORT, which the Host rules compare with)."""

    bound = "127.0.0.1"
    port = 8000

    def open(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("base_url", f"http://127.0.0.1:{self.port}")
        overrides = kwargs.setdefault("environ_overrides", {})
        overrides.update(SERVER_NAME=self.bound, SERVER_PORT=str(self.port))
        return super().open(*args, **kwargs)


def client_for(node: FakeNode | None = None, *, bound: str = "127.0.0.1",
               port: int = 8000) -> FlaskClient:
    app = create_app(node or FakeNode())
    app.test_client_class = type("Client", (BoundClient,), {"bound": bound, "port": port})
    return app.test_client()


def error_of(resp: Any) -> dict[str, str]:
    body = resp.get_json()
    assert set(body) == {"error", "message"}, body
    assert "\n" not in body["message"]
    return body


# -- cross-site requests ------------------------------------------------------------------------

@pytest.mark.parametrize("ctype", [None, "text/plain", "application/x-www-form-urlencoded",
                                   "multipart/form-data; boundary=x", "application/jsonx"])
def test_a_change_without_json_content_type_is_415_and_changes_nothing(ctype):
    node = FakeNode()
    client = client_for(node)
    kwargs = {"content_type": ctype} if ctype else {}
    resp = client.post("/api/rebalance", data="{}" if ctype else None, **kwargs)
    assert resp.status_code == 415
    assert error_of(resp)["error"] == "unsupported_media_type"
    assert node.overrides.expected == []


def test_json_content_type_with_an_empty_body_or_a_charset_is_fine():
    node = FakeNode()
    client = client_for(node)
    assert client.post("/api/rebalance", content_type=JSON).status_code == 202
    assert client.post("/api/rebalance", data="{}",
                       content_type="application/json; charset=utf-8").status_code == 202
    assert node.overrides.expected == [None, None]


@pytest.mark.parametrize("method,path", [("GET", "/api/cluster"), ("GET", "/"),
                                         ("POST", "/api/rebalance"), ("GET", "/healthz"),
                                         ("OPTIONS", "/api/rebalance")])
@pytest.mark.parametrize("origin", ["http://evil.example", "null", "http://127.0.0.1:8001",
                                    "https://127.0.0.1:9000", "http://localhost:8000"])
def test_a_foreign_origin_is_refused_for_every_method(method, path, origin):
    node = FakeNode()
    resp = client_for(node).open(path, method=method, data="{}", content_type=JSON,
                                 headers={"Origin": origin})
    assert resp.status_code == 403
    assert error_of(resp)["error"] == "forbidden"
    assert node.overrides.expected == []


def test_the_nodes_own_origin_and_no_origin_are_fine():
    client = client_for()
    for headers in ({}, {"Origin": "http://127.0.0.1:8000"},
                    {"Origin": "http://localhost:8000", "Host": "localhost:8000"},
                    {"Sec-Fetch-Site": "same-origin"}, {"Sec-Fetch-Site": "none"}):
        assert client.get("/api/cluster", headers=headers).status_code == 200, headers
        assert client.post("/api/rebalance", content_type=JSON,
                           headers=headers).status_code == 202, headers


def test_sec_fetch_site_cross_site_is_refused_even_without_origin():
    client = client_for()
    for path in ("/api/cluster", "/healthz"):
        resp = client.get(path, headers={"Sec-Fetch-Site": "cross-site"})
        assert resp.status_code == 403 and "cross-site" in error_of(resp)["message"]


# -- Host (DNS rebinding) -----------------------------------------------------------------------

@pytest.mark.parametrize("host", ["evil.example:8000", "evil.example", "127.0.0.1:8001",
                                  "localhost:9", "10.1.2.3:8000", "", "127.0.0.1:8000,x",
                                  "user@127.0.0.1:8000", "[::1", "127.0.0.1:"])
def test_a_host_that_is_not_this_node_is_refused(host):
    client = client_for()
    resp = client.get("/api/tasks", headers={"Host": host})
    assert resp.status_code == 403 and error_of(resp)["error"] == "forbidden"


@pytest.mark.parametrize("host", ["127.0.0.1:8000", "localhost:8000", "[::1]:8000",
                                  "LOCALHOST:8000"])
def test_loopback_names_on_the_bound_port_are_fine(host):
    assert client_for().get("/api/cluster", headers={"Host": host}).status_code == 200


def test_healthz_answers_any_host_but_never_a_foreign_origin():
    client = client_for()
    assert client.get("/healthz", headers={"Host": "node1.internal:1234"}).status_code == 200
    assert client.get("/healthz", headers={"Host": "evil.example",
                                           "Origin": "http://evil.example"}).status_code == 403


def test_allowed_hosts_entries_with_and_without_port():
    client = client_for(FakeNode(allowed_hosts=("admin.example", "proxy.example:8443")))
    ok = ["admin.example", "admin.example:1234", "ADMIN.example:8000", "proxy.example:8443"]
    for host in ok:
        assert client.get("/api/cluster", headers={"Host": host}).status_code == 200, host
    assert client.get("/api/cluster", headers={"Host": "proxy.example:80"}).status_code == 403
    resp = client.post("/api/rebalance", content_type=JSON,
                       headers={"Host": "admin.example", "Origin": "https://admin.example"})
    assert resp.status_code == 202


def test_the_bound_address_itself_is_fine():
    client = client_for(bound="192.0.2.7", port=8100)
    assert client.get("/api/cluster", headers={"Host": "192.0.2.7:8100"}).status_code == 200
    assert client.get("/api/cluster", headers={"Host": "192.0.2.8:8100"}).status_code == 403


def test_bound_to_every_interface_the_own_host_name_and_ip_literals_are_fine(monkeypatch):
    monkeypatch.setattr("xconsumer.admin.guard.socket.gethostname", lambda: "Box-7")
    client = client_for(bound="0.0.0.0", port=8000)
    for host in ("box-7:8000", "192.0.2.8:8000", "[2001:db8::1]:8000"):
        assert client.get("/api/cluster", headers={"Host": host}).status_code == 200, host
    for host in ("box-7:8001", "rebind.example:8000"):
        assert client.get("/api/cluster", headers={"Host": host}).status_code == 403, host


def test_config_allowed_hosts_reach_the_app():
    from xconsumer.config import parse_config

    config = parse_config('[admin]\nallowed_hosts = ["ops.example"]\n', env={})
    assert config.admin.allowed_hosts == ("ops.example",)
    node = FakeNode()
    node.config = config
    client = client_for(node)
    assert client.get("/api/cluster", headers={"Host": "ops.example"}).status_code == 200


def test_host_helpers():
    assert split_host("[::1]:80") == ("::1", 80)
    assert split_host("Example.com") == ("example.com", None)
    assert split_host("a:b") is None and split_host("a:70000") is None
    assert same_origin("http://a.example:8000", "a.example:8000")
    assert same_origin("https://a.example", "a.example:443")
    assert not same_origin("http://a.example:8000/x", "a.example:8000")
    assert not same_origin("ftp://a.example", "a.example")
    policy = HostPolicy.build(["x.example"], ["me"])
    assert policy.allows("x.example:1", "127.0.0.1", 8000)
    assert not policy.allows("me:8000", "127.0.0.1", 8000)  # own names only on 0.0.0.0


# -- bodies, versions, query parameters ---------------------------------------------------------

@pytest.mark.parametrize("raw,needle", [
    (b'{"workerNum": 1e400}', "out of range"),
    (b'{"workerNum": -1e400}', "out of range"),
    (b'{"workerNum": NaN}', "NaN"),
    (b'{"workerNum": Infinity}', "Infinity"),
    (b'{"workerNum": 1' + b"0" * 5000 + b"}", "digits"),
    (b"[" * 20000 + b"]" * 20000, "nested too deeply"),
    (b'{"workerNum": 1, "pad": ' + b"[" * 600 + b"]" * 600 + b"}",
     "nested deeper than 32 levels"),
    (b'{"workerNum": "\xff"}', "not UTF-8"),
    ('{"workerNum": 1}'.encode("utf-16"), "not UTF-8"),
    (b'{"workerNum": 1', "not valid JSON"),
    (b'{"workerNum": 1, "workernum": 2}', "unknown field 'workernum'"),
    (b'{"workerNum": 1, "version": true}', "version must be an integer"),
    (b'{"workerNum": 1, "version": 1.5}', "version must be an integer"),
    (b'{"workerNum": 1, "version": null}', "version must be an integer"),
    (b'{"workerNum": 1, "version": 2147483648}', "version must be an integer"),
    (b'{"workerNum": 1, "version": -2}', "version must be an integer"),
    (b'{"workerNum": 1, "version": "3"}', "version must be an integer"),
])
def test_bad_bodies_are_a_one_line_400(raw, needle):
    node = FakeNode()
    resp = client_for(node).post("/api/tasks/t/scale", data=raw, content_type=JSON)
    assert resp.status_code == 400, resp.get_data()
    body = error_of(resp)
    assert body["error"] == "bad_request" and needle in body["message"], body
    assert node.overrides.expected == []


@pytest.mark.parametrize("path", ["/api/rebalance", "/api/tasks/t/pause",
                                  "/api/nodes/n1/undrain", "/api/tasks/t/reset"])
def test_bodies_of_version_only_endpoints_take_no_other_field(path):
    resp = client_for().post(path, data=json.dumps({"workerNum": 3}), content_type=JSON)
    assert resp.status_code == 400 and "unknown field 'workerNum'" in error_of(resp)["message"]


def test_a_body_over_the_cap_is_413():
    node = FakeNode()
    client = client_for(node)
    big = json.dumps({"version": 1, "pad": "x" * MAX_BODY}).encode()
    resp = client.post("/api/rebalance", data=big, content_type=JSON)
    assert resp.status_code == 413 and error_of(resp)["error"] == "payload_too_large"
    assert node.overrides.expected == []


@pytest.mark.parametrize("header,expected", [('"7"', 7), ('W/"7"', 7), ("7", 7), ("*", None),
                                             ('"-1"', -1), ('"0"', 0)])
def test_if_match_forms_that_are_accepted(header, expected):
    node = FakeNode()
    resp = client_for(node).post("/api/rebalance", content_type=JSON,
                                 headers={"If-Match": header})
    assert resp.status_code == 202
    assert node.overrides.expected == [expected]


@pytest.mark.parametrize("header", ["abc", '"1.5"', '"7", "8"', '"99999999999"', "W/", '"-2"',
                                    '"٣"'])
def test_if_match_that_is_not_a_version_is_400(header):
    node = FakeNode()
    resp = client_for(node).post("/api/rebalance", content_type=JSON,
                                 headers={"If-Match": header})
    assert resp.status_code == 400 and "If-Match" in error_of(resp)["message"]
    assert node.overrides.expected == []


@pytest.mark.parametrize("query", ["limit=1001", "limit=-1", "after=-1", "after=x",
                                   "limit=1.5", "limit=1_0", "after=" + "9" * 30])
def test_event_query_out_of_range_is_400(query):
    resp = client_for().get(f"/api/events?{query}")
    assert resp.status_code == 400 and error_of(resp)["error"] == "bad_request"


def test_event_query_at_the_bounds_is_fine():
    client = client_for()
    for query in ("limit=0", "limit=1000", "after=0"):
        assert client.get(f"/api/events?{query}").status_code == 200, query


# -- protocol details ---------------------------------------------------------------------------

def test_405_names_the_allowed_methods():
    resp = client_for().delete("/api/cluster", content_type=JSON)
    assert resp.status_code == 405 and error_of(resp)["error"] == "method_not_allowed"
    assert set(resp.headers["Allow"].replace(" ", "").split(",")) >= {"GET", "HEAD"}
    resp = client_for().put("/api/tasks/t/scale", data="{}", content_type=JSON)
    assert resp.status_code == 405 and "POST" in resp.headers["Allow"]


def test_metrics_content_type_has_exactly_one_charset():
    resp = client_for().get("/metrics")
    assert resp.status_code == 200
    ctype = resp.headers["Content-Type"]
    assert ctype.count("charset") == 1, ctype
    assert ctype == CONTENT_TYPE_LATEST


def test_an_unexpected_failure_is_a_json_500_without_details(capsys):
    node = FakeNode()
    node.cluster_view = lambda: 1 / 0  # type: ignore[method-assign]
    resp = client_for(node).get("/api/cluster")
    assert resp.status_code == 500
    assert error_of(resp) == {"error": "internal_error",
                              "message": "the node failed to answer (ZeroDivisionError); see "
                                         "its log"}


# -- found by the adversarial review ------------------------------------------------------------

def test_a_chunked_body_is_refused_and_an_unbounded_one_capped():
    """A chunked body has no Content-Length: werkzeug cut it at the cap and the prefix was
    parsed as if it were the whole request."""
    import io

    node = FakeNode()
    body = b'{"version": 1}' + b" " * (MAX_BODY + 10)
    resp = client_for(node).post("/api/rebalance", input_stream=io.BytesIO(body),
                                 content_type=JSON,
                                 headers={"Transfer-Encoding": "chunked"})
    assert resp.status_code == 411 and error_of(resp)["error"] == "length_required"
    # A stream without a length that a server terminates itself is still capped, not cut.
    resp = client_for(node).post("/api/rebalance", input_stream=io.BytesIO(body),
                                 content_type=JSON,
                                 environ_overrides={"wsgi.input_terminated": True})
    assert resp.status_code == 413, resp.get_data()
    assert node.overrides.expected == []


@pytest.mark.parametrize("host", ["127.0.0.1:\u00b2", "127.0.0.1:\u0668\u0660\u0660\u0660",
                                  "localhost:８０００"])
def test_unicode_digits_in_the_host_port_are_refused_not_a_500(host):
    resp = client_for().get("/api/node", headers={"Host": host})
    assert resp.status_code == 403
    resp = client_for().get("/healthz", headers={"Host": host})
    assert resp.status_code in (200, 503)
