"""Run-level failure control on real node processes (`python -m xconsumer run`), driven
through the admin API: the breaker is switched on at run time without restarting the slot,
opens, shows in /api/node, /metrics and /api/events, and closes once the handler recovers;
bad values get a one-line 400."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster import Cluster
from tests.e2e.test_admin_api import TOKEN, call, url_of
from tests.util import wait_until

pytestmark = pytest.mark.e2e

@pytest.fixture
def cluster(tmp_path: Path, zk_hosts: str, zk_root: str) -> Iterator[Cluster]:
    c = Cluster(tmp_path, zk_hosts, zk_root,
                [{"name": "sw", "workName": "switch", "workerNum": 1, "retry_backoff": 0.05,
                  "retry_backoff_max": 0.05}],
                extra={"admin": {"token": TOKEN}})
    try:
        c.start_node("n1")
        c.wait_converged({"n1"})
        yield c
    finally:
        c.close()


def _slot(url: str) -> dict:
    return call(f"{url}/api/node", token=None)[1]["slots"][0]


def _metric(url: str, sample: str) -> float | None:
    text = call(f"{url}/metrics", token=None)[1]
    return next((float(line.split()[-1]) for line in text.splitlines()
                 if line.startswith(sample + " ")), None)


@pytest.mark.parametrize(("body", "needle"), [
    ({"run_timeout": 0}, "run_timeout must be a number > 0"),
    ({"run_timeout": "3"}, "run_timeout must be a number > 0"),
    ({"breaker_failures": 0}, "breaker_failures must be an integer 1..1000000"),
    ({"breaker_failures": 2.5}, "breaker_failures must be an integer 1..1000000"),
    ({"breaker_cooldown": -1}, "breaker_cooldown must be a number > 0"),
    ({"breaker_cooldown": None}, "breaker_cooldown must be a number > 0"),
])
def test_bad_failure_control_values_over_the_api_are_a_one_line_400(cluster: Cluster, body,
                                                                    needle):
    status, payload, _ = call(f"{url_of(cluster, 'n1')}/api/tasks/sw", "PATCH", body)
    assert status == 400, payload
    assert payload["error"] == "bad_request" and needle in payload["message"]
    assert "\n" not in payload["message"]


def test_a_breaker_switched_on_over_the_api_opens_and_closes(cluster: Cluster):
    url = url_of(cluster, "n1")
    fence = cluster.view()["fences"]["sw/0"]
    status, body, _ = call(f"{url}/api/tasks/sw", "PATCH",
                           {"breaker_failures": 2, "breaker_cooldown": 1.5})
    assert status == 200, body
    assert body["task"]["breaker_failures"] == 2
    assert {"breaker_failures", "breaker_cooldown"} <= set(body["task"]["overridden"])
    slot = wait_until(lambda: (s := _slot(url))["breaker"] == "open" and s, 20,
                      message=lambda: cluster.logs())
    assert slot["consecutive_failures"] >= 2 and slot["open_until"] is not None
    # Not restarted by the change: the same owner znode all along.
    assert cluster.view()["fences"]["sw/0"] == fence and slot["fence"] == fence
    wait_until(lambda: _metric(url, "xconsumer_slots_breaker_open") == 1, 10)
    assert (_metric(url, 'xconsumer_breaker_opened_total{task="sw"}') or 0) >= 1
    cluster.release.write_text("go")  # the dependency is back: the next trial succeeds
    wait_until(lambda: _slot(url)["breaker"] == "closed", 20, message=lambda: cluster.logs())
    wait_until(lambda: _metric(url, "xconsumer_slots_breaker_open") == 0, 10)
    kinds = [e["kind"] for e in call(f"{url}/api/events?limit=1000", token=None)[1]["events"]]
    assert "breaker_opened" in kinds and kinds.index("breaker_closed") > kinds.index(
        "breaker_opened")
    # The trial run succeeded once the cooldown had passed; no call during it.
    recs = cluster.records()
    fails = [r["t"] for r in recs if r["e"] == "fail"]
    first_ok = next(r["t"] for r in recs if r["e"] == "start")
    assert first_ok - fails[-1] >= 1.5 - 0.05
    # Switched off again (null): the published task leaves the key out once more.
    status, body, _ = call(f"{url}/api/tasks/sw", "PATCH", {"breaker_failures": None})
    assert status == 200 and "breaker_failures" not in body["task"], body
