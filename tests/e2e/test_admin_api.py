"""The admin API against real node processes: a change sent to any node takes effect across
the cluster, mutations need the token, stale versions get 409, bad requests get a 4xx with a
JSON message."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from tests.cluster import Cluster
from tests.util import wait_until

pytestmark = pytest.mark.e2e

TOKEN = "s3cret-token"


def call(url: str, method: str = "GET", body: Any = None, token: str | None = TOKEN,
         headers: dict[str, str] | None = None, raw: bytes | None = None
         ) -> tuple[int, Any, dict[str, str]]:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            text = resp.read()
            ctype = resp.headers.get("Content-Type", "")
            return resp.status, (json.loads(text) if "json" in ctype else text.decode()), \
                dict(resp.headers)
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null"), dict(err.headers)


def url_of(cluster: Cluster, name: str) -> str:
    return next(n["admin_url"] for n in cluster.view()["nodes"] if n["id"] == name)


def set_workers(cluster: Cluster, task: str, n: int) -> None:
    for t in cluster.tasks:
        if t["name"] == task:
            t["workerNum"] = n


def test_scale_sent_to_a_follower_changes_what_runs_everywhere(cluster: Cluster):
    follower = url_of(cluster, "n2")
    status, body, _ = call(f"{follower}/api/tasks/alpha/scale", "POST", {"workerNum": 5})
    assert status == 200, body
    assert body["task"]["workerNum"] == 5 and "workerNum" in body["task"]["overridden"]
    set_workers(cluster, "alpha", 5)
    view = cluster.wait_converged({"n1", "n2"})
    assert sum(1 for k in view["owners"] if k.startswith("alpha/")) == 5
    # Scaling did not restart the slots that kept running: their fences are unchanged.
    # (Scale down and check the survivors keep their owner znodes.)
    before = {k: v for k, v in view["fences"].items() if k.startswith("beta/")}
    status, _, _ = call(f"{follower}/api/tasks/alpha/scale", "POST", {"workerNum": 1})
    assert status == 200
    set_workers(cluster, "alpha", 1)
    view = cluster.wait_converged({"n1", "n2"})
    assert {k: v for k, v in view["fences"].items() if k.startswith("beta/")} == before


def test_pause_resume_reset_and_listing(cluster: Cluster):
    leader = url_of(cluster, "n1")
    assert call(f"{leader}/api/tasks/beta/pause", "POST")[0] == 200
    wait_until(lambda: not any(k.startswith("beta/") for k in cluster.view()["owners"]), 15)
    status, body, headers = call(f"{leader}/api/tasks")
    assert status == 200 and headers["ETag"] == f'"{body["version"]}"'
    beta = next(t for t in body["tasks"] if t["name"] == "beta")
    assert beta["paused"] is True and beta["desired"] == 0 and beta["workerNum"] == 2
    assert call(f"{leader}/api/tasks/beta/resume", "POST")[0] == 200
    cluster.wait_converged({"n1", "n2"})
    assert call(f"{leader}/api/tasks/beta/scale", "POST", {"workerNum": 3})[0] == 200
    set_workers(cluster, "beta", 3)
    cluster.wait_converged({"n1", "n2"})  # three slots run: the reset below has work to do
    assert call(f"{leader}/api/tasks/beta/reset", "POST")[0] == 200
    status, body, _ = call(f"{leader}/api/tasks/beta")
    assert body["task"]["workerNum"] == 2 and body["task"]["overridden"] == []
    set_workers(cluster, "beta", 2)
    cluster.wait_converged({"n1", "n2"})


def test_add_and_remove_a_task_at_runtime(cluster: Cluster):
    follower = url_of(cluster, "n2")
    new = {"name": "gamma", "workName": "record", "workerNum": 3, "interval": 0}
    status, body, _ = call(f"{follower}/api/tasks", "POST", new)
    assert status == 201, body
    assert body["task"]["source"] == "api"
    cluster.tasks.append(new)
    cluster.wait_converged({"n1", "n2"})
    assert call(f"{follower}/api/tasks", "POST", new)[0] == 409  # exists
    unknown = {"name": "delta", "workName": "nosuch", "workerNum": 1}
    status, body, _ = call(f"{follower}/api/tasks", "POST", unknown)
    assert status == 400 and "nosuch" in body["message"]
    assert call(f"{follower}/api/tasks/gamma", "DELETE")[0] == 200
    cluster.tasks.pop()
    cluster.wait_converged({"n1", "n2"})
    # Removing a task from app.toml at runtime, then resetting it, brings it back.
    assert call(f"{follower}/api/tasks/alpha", "DELETE")[0] == 200
    wait_until(lambda: not any(k.startswith("alpha/") for k in cluster.view()["owners"]), 15)
    assert call(f"{follower}/api/tasks/alpha/reset", "POST")[0] == 200
    cluster.wait_converged({"n1", "n2"})


def test_changes_survive_a_leader_change(cluster: Cluster):
    leader = url_of(cluster, "n1")
    call(f"{leader}/api/tasks/alpha/scale", "POST", {"workerNum": 4})
    set_workers(cluster, "alpha", 4)
    cluster.wait_converged({"n1", "n2"})
    cluster.nodes["n1"].terminate()
    view = cluster.wait_converged({"n2"})
    assert view["leader"] == "n2"
    assert sum(1 for k in view["owners"] if k.startswith("alpha/")) == 4


def test_mutations_need_the_token_reads_do_not(cluster: Cluster):
    url = url_of(cluster, "n2")
    status, body, headers = call(f"{url}/api/tasks/alpha/scale", "POST", {"workerNum": 3},
                                 token=None)
    assert status == 401 and body["error"] == "unauthorized"
    assert headers.get("WWW-Authenticate", "").startswith("Bearer")
    assert call(f"{url}/api/tasks/alpha/scale", "POST", {"workerNum": 3}, token="wrong")[0] \
        == 401
    assert call(f"{url}/api/cluster", token=None)[0] == 200
    assert call(f"{url}/api/tasks", token=None)[0] == 200


def test_stale_version_gets_409(cluster: Cluster):
    url = url_of(cluster, "n1")
    _, body, _ = call(f"{url}/api/tasks")
    version = body["version"]
    assert call(f"{url}/api/tasks/alpha/scale", "POST", {"workerNum": 3},
                headers={"If-Match": f'"{version}"'})[0] == 200
    status, body, _ = call(f"{url}/api/tasks/alpha/scale", "POST", {"workerNum": 4},
                           headers={"If-Match": f'"{version}"'})
    assert status == 409 and "stale version" in body["message"]
    # The same with the version in the body.
    status, _, _ = call(f"{url}/api/tasks/alpha", "PATCH", {"workerNum": 4,
                                                             "version": version})
    assert status == 409


@pytest.mark.parametrize("path,method,body,raw,status,needle", [
    ("/api/tasks/nope/scale", "POST", {"workerNum": 1}, None, 404, "unknown task 'nope'"),
    ("/api/tasks/alpha/scale", "POST", {"workerNum": -1}, None, 400, "workerNum"),
    ("/api/tasks/alpha/scale", "POST", {"workerNum": "3"}, None, 400, "workerNum"),
    ("/api/tasks/alpha/scale", "POST", {}, None, 400, "workerNum"),
    ("/api/tasks/alpha/scale", "POST", None, b"{not json", 400, "not valid JSON"),
    ("/api/tasks/alpha", "PATCH", {"workName": "x"}, None, 400, "cannot change workName"),
    ("/api/tasks/alpha", "PATCH", {"paused": "yes"}, None, 400, "paused must be"),
    ("/api/tasks", "POST", ["a"], None, 400, "JSON object"),
    ("/api/tasks", "POST", {"name": "x"}, None, 400, "workName"),
    ("/api/nodes/ghost/drain", "POST", None, None, 404, "unknown node 'ghost'"),
    ("/api/events?after=x", "GET", None, None, 400, "integer"),
    ("/api/events?limit=1001", "GET", None, None, 400, "limit must be an integer 0..1000"),
    ("/api/tasks/alpha/scale", "POST", {"workerNum": 1, "version": True}, None, 400,
     "version must be an integer"),
    ("/api/tasks/alpha/scale", "POST", None, b'{"workerNum": 1e400}', 400, "out of range"),
    ("/api/tasks/alpha/scale", "POST", {"workerNum": 100001}, None, 400, "at most 100000"),
    ("/api/tasks/alpha", "PATCH", {"version": 0}, None, 400, "nothing to change"),
    ("/api/nothing", "GET", None, None, 404, ""),
])
def test_bad_requests_get_a_json_4xx(cluster: Cluster, path, method, body, raw, status, needle):
    got, payload, _ = call(url_of(cluster, "n2") + path, method, body, raw=raw)
    assert got == status, payload
    assert isinstance(payload, dict) and payload["error"] and needle in payload["message"]


def test_drain_moves_slots_off_a_node_and_undrain_brings_them_back(cluster: Cluster):
    url = url_of(cluster, "n1")
    status, body, _ = call(f"{url}/api/nodes/n2/drain", "POST")
    assert status == 200 and body["drained_nodes"] == ["n2"]
    view = wait_until(lambda: (v := cluster.converged({"n1", "n2"}))
                      and not v["assignment"].get("n2") and v, 15)
    assert next(n for n in view["nodes"] if n["id"] == "n2")["state"] == "draining"
    assert call(f"{url}/api/nodes/n2/uncordon", "POST")[0] == 200
    wait_until(lambda: (v := cluster.converged({"n1", "n2"})) and v["assignment"].get("n2"),
               15)
    status, body, _ = call(f"{url}/api/rebalance", "POST")
    assert status == 202 and body["rebalance"] == 1


def test_events_metrics_and_node_view(cluster: Cluster):
    url = url_of(cluster, "n1")
    cluster.start_node("n3")
    cluster.wait_converged({"n1", "n2", "n3"})
    status, body, _ = call(f"{url}/api/events?limit=50", token=None)
    kinds = {e["kind"] for e in body["events"]}
    assert {"leader", "rebalance", "node_joined"} <= kinds
    joined = [e for e in body["events"] if e["kind"] == "node_joined"]
    assert joined[-1]["node"] == "n3"
    later = call(f"{url}/api/events?after={body['last']}")[1]
    assert later["events"] == []
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as resp:
        text = resp.read().decode()
        assert resp.headers["Content-Type"].startswith("text/plain")
        assert resp.headers["Content-Type"].count("charset") == 1, resp.headers["Content-Type"]
    assert "xconsumer_leader 1.0" in text
    assert 'xconsumer_task_slots_desired{task="alpha"} 2.0' in text
    assert "xconsumer_rebalances_total" in text
    assert "xconsumer_zookeeper_connected 1.0" in text
    node = call(f"{url}/api/node")[1]
    assert node["leader"] is True and node["id"] == "n1"


def test_curl_style_requests_weak_etags_and_both_version_forms(cluster: Cluster):
    url = url_of(cluster, "n1")
    # curl -d without -H 'Content-Type: application/json' sends a form type: a web page can
    # send that cross-site without a preflight, so it is refused and changes nothing.
    status, body, _ = call(f"{url}/api/tasks/alpha/scale", "POST", {"workerNum": 3},
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 415 and "Content-Type: application/json" in body["message"], body
    assert call(f"{url}/api/tasks/alpha")[1]["task"]["workerNum"] == 2
    status, body, _ = call(f"{url}/api/tasks/alpha/scale", "POST", {"workerNum": 3})
    assert status == 200, body
    version = body["version"]
    status, body, _ = call(f"{url}/api/tasks/alpha", "PATCH",
                           {"workerNum": 2, "version": version},
                           headers={"If-Match": f'W/"{version}"'})
    assert status == 200, body
    status, body, _ = call(f"{url}/api/tasks/nosuch/reset", "POST")
    assert status == 404 and body["message"] == "unknown task 'nosuch'"


def test_cross_site_requests_and_foreign_hosts_are_refused(cluster: Cluster):
    """What a hostile web page can send, even one that somehow holds the token: a simple
    text/plain POST, a JSON request with its own Origin, and (after DNS rebinding) requests
    naming its own host. None changes anything; a health check with any Host still works."""
    url = url_of(cluster, "n2")
    port = url.rsplit(":", 1)[1]
    status, body, _ = call(f"{url}/api/tasks/alpha/pause", "POST", raw=b"{}",
                           headers={"Content-Type": "text/plain"})
    assert status == 415 and body["error"] == "unsupported_media_type"
    status, body, _ = call(f"{url}/api/tasks/alpha/pause", "POST", {},
                           headers={"Origin": "http://evil.example"})
    assert status == 403 and body["error"] == "forbidden"
    status, _, _ = call(f"{url}/api/tasks", headers={"Origin": "http://evil.example"})
    assert status == 403
    status, _, _ = call(f"{url}/api/tasks/alpha/pause", "POST", {},
                        headers={"Host": f"rebind.example:{port}"})
    assert status == 403
    assert call(f"{url}/api/cluster", headers={"Host": f"rebind.example:{port}"})[0] == 403
    assert call(f"{url}/healthz", headers={"Host": "lb-probe.internal"})[0] == 200
    assert call(f"{url}/healthz", headers={"Origin": "http://evil.example"})[0] == 403
    status, body, _ = call(f"{url}/api/tasks/alpha")
    assert status == 200 and body["task"]["paused"] is False
    # The node's own origin (the dashboard's fetch calls) is fine.
    status, _, _ = call(f"{url}/api/tasks/alpha/pause", "POST", {},
                        headers={"Origin": url, "Sec-Fetch-Site": "same-origin"})
    assert status == 200
