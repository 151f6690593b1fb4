"""The admin app factory with a stand-in node: error mapping and authentication rules."""

from __future__ import annotations

from types import SimpleNamespace

from kazoo.exceptions import ConnectionLoss

from xconsumer.admin import create_app


class FakeNode:
    def __init__(self, *, connected: bool = True, fail: bool = False) -> None:
        self.config = SimpleNamespace(admin=SimpleNamespace(token=None))
        self._connected = connected
        self._fail = fail

    def node_view(self) -> dict:
        return {"id": "n1", "state": "started", "connected": self._connected, "leader": True}

    def cluster_view(self) -> dict:
        if self._fail:
            raise ConnectionLoss()
        return {"cluster": "c"}


def test_zookeeper_failure_during_a_request_is_a_503_json():
    client = create_app(FakeNode(fail=True)).test_client()
    resp = client.get("/api/cluster")
    assert resp.status_code == 503
    assert resp.get_json() == {"error": "zookeeper_unavailable",
                               "message": "ZooKeeper did not answer: ConnectionLoss"}


def test_healthz_reports_degraded_when_disconnected():
    assert create_app(FakeNode()).test_client().get("/healthz").status_code == 200
    resp = create_app(FakeNode(connected=False)).test_client().get("/healthz")
    assert resp.status_code == 503 and resp.get_json()["status"] == "degraded"


def test_token_guards_mutations_only():
    client = create_app(FakeNode(), token="t0k").test_client()
    assert client.get("/api/cluster").status_code == 200
    denied = client.post("/api/rebalance")
    assert denied.status_code == 401 and denied.get_json()["error"] == "unauthorized"
    assert client.post("/api/rebalance", headers={"Authorization": "Bearer nope"}
                       ).status_code == 401


def test_unknown_route_and_method_are_json():
    client = create_app(FakeNode()).test_client()
    assert client.get("/nope").get_json()["error"] == "not_found"
    resp = client.delete("/api/cluster")
    assert resp.status_code == 405 and resp.get_json()["error"] == "method_not_allowed"
