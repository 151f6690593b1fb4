"""The dashboard in a real headless Chromium, against real node processes on a real ZooKeeper.

Driven with Playwright's Python package pointed at the system Chromium (Debian's `chromium`,
installed by bin/setup): Playwright cannot download its own browsers here, but drives any
recent Chromium over CDP, and its auto-waiting locators keep the test free of sleeps. Every
change is made by clicking the page and checked in ZooKeeper, never only in the page, so the
test proves the page really drives the cluster.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster import REPO, Cluster
from tests.util import missing_tool, wait_until

pytestmark = pytest.mark.e2e

TOKEN = "dash-token"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Flags that let Chromium run as root in a container without a GPU, and keep it off the
# network except for the page under test. Playwright adds --headless and a fresh profile dir.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-dev-shm-usage"]
# The screenshot a human looks at goes to the test's tmp dir; set XCONSUMER_SCREENSHOT (e.g.
# to docs/img/dashboard.png) to refresh the one in the README.
SCREENSHOT = os.environ.get("XCONSUMER_SCREENSHOT")
UI_TIMEOUT_MS = 20_000  # upper bound of every wait in the browser
CLUSTER_TIMEOUT = 30.0  # upper bound of every wait on ZooKeeper


@pytest.fixture
def page(tmp_path: Path) -> Iterator:
    if CHROMIUM is None:
        missing_tool("no Chromium binary on PATH (`chromium`); bin/setup --tests installs "
                     "Debian's chromium package")
    from playwright.sync_api import expect, sync_playwright

    # set_default_timeout covers actions only; expect() assertions wait 5 s unless told.
    expect.set_options(timeout=UI_TIMEOUT_MS)
    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=CHROMIUM_ARGS, timeout=UI_TIMEOUT_MS)
        try:
            pg = browser.new_page(viewport={"width": 1400, "height": 1000})
            pg.set_default_timeout(UI_TIMEOUT_MS)
            pg.on("pageerror", lambda exc: errors.append(str(exc)))
            pg.errors = errors  # type: ignore[attr-defined]
            yield pg
        finally:
            browser.close()
    assert errors == [], f"JavaScript errors on the page: {errors}"


def set_workers(cluster: Cluster, task: str, n: int) -> None:
    """Keep Cluster.expected_slots() (read by wait_converged) in step with the page's edit."""
    for t in cluster.tasks:
        if t["name"] == task:
            t["workerNum"] = n


def owners_of(cluster: Cluster, task: str) -> dict[str, str]:
    return {k: v for k, v in cluster.view()["owners"].items() if k.startswith(f"{task}/")}


def test_dashboard_shows_the_cluster_and_drives_it(cluster: Cluster, page, tmp_path: Path):
    from playwright.sync_api import expect

    url = next(n["admin_url"] for n in cluster.view()["nodes"] if n["id"] == "n2")
    page.goto(url + "/")
    tid = page.get_by_test_id

    # What the cluster looks like, as the page polls it.
    expect(tid("leader")).to_have_text("n1")
    expect(tid("conn-status")).to_have_text("live")
    expect(tid("cluster-name")).to_have_text("e2e")
    expect(tid("node-row-n1")).to_be_visible()
    expect(tid("node-row-n2")).to_be_visible()
    expect(tid("leader-mark-n1")).to_be_visible()
    expect(tid("leader-mark-n2")).to_have_count(0)
    expect(tid("served-by")).to_have_text("served by n2")
    for task in ("alpha", "beta"):
        expect(tid(f"task-row-{task}")).to_be_visible()
        expect(tid(f"task-running-{task}")).to_have_text("2")
        expect(tid(f"scale-input-{task}")).to_have_value("2")
    expect(tid("assignment-n1").get_by_test_id("chip-alpha/0").or_(
        tid("assignment-n2").get_by_test_id("chip-alpha/0"))).to_be_visible()
    expect(tid("events").locator("li").first).to_be_visible()

    # Without the token the API refuses, and the page shows the API's message inline.
    tid("scale-input-alpha").fill("5")
    tid("scale-btn-alpha").click()
    expect(tid("flash")).to_have_attribute("data-kind", "error")
    expect(tid("flash-text")).to_contain_text("Authorization: Bearer")
    assert len(owners_of(cluster, "alpha")) == 2

    # With the token, scaling through the page changes what runs on both nodes.
    tid("token-input").fill(TOKEN)
    assert page.evaluate("localStorage.getItem('xconsumer.adminToken')") == TOKEN
    expect(tid("scale-input-alpha")).to_have_value("5")  # the typed value survived polling
    tid("scale-btn-alpha").click()
    expect(tid("flash")).to_have_attribute("data-kind", "ok")
    set_workers(cluster, "alpha", 5)
    view = cluster.wait_converged({"n1", "n2"}, timeout=CLUSTER_TIMEOUT)
    alpha = {k: v for k, v in view["owners"].items() if k.startswith("alpha/")}
    assert sorted(alpha) == [f"alpha/{i}" for i in range(5)]
    assert set(alpha.values()) == {"n1", "n2"}, alpha
    expect(tid("task-running-alpha")).to_have_text("5")
    expect(tid("task-overridden-alpha")).to_contain_text("workerNum")
    for key, node in alpha.items():
        expect(tid(f"assignment-{node}").get_by_test_id(f"chip-{key}")).to_have_attribute(
            "data-state", "running")

    # Pause through the page: nothing of beta runs anywhere.
    tid("pause-btn-beta").click()
    wait_until(lambda: not owners_of(cluster, "beta"), CLUSTER_TIMEOUT,
               message=lambda: f"beta still running: {owners_of(cluster, 'beta')}")
    set_workers(cluster, "beta", 0)
    cluster.wait_converged({"n1", "n2"}, timeout=CLUSTER_TIMEOUT)
    expect(tid("task-status-beta")).to_have_text("paused")
    expect(tid("task-running-beta")).to_have_text("0")
    expect(tid("resume-btn-beta")).to_be_visible()
    expect(tid("pause-btn-beta")).to_be_hidden()
    expect(tid("chip-beta/0")).to_have_count(0)
    expect(tid("slot-count")).to_have_text("5 / 5")

    # A picture for humans (README) and for whoever debugs a failure of this test.
    page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
    if SCREENSHOT:
        target = REPO / SCREENSHOT
        target.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(target), full_page=True)

    # Resume brings beta back; drain/undrain move n2's slots away and back.
    tid("resume-btn-beta").click()
    set_workers(cluster, "beta", 2)
    cluster.wait_converged({"n1", "n2"}, timeout=CLUSTER_TIMEOUT)
    expect(tid("task-running-beta")).to_have_text("2")

    tid("drain-btn-n2").click()
    view = wait_until(lambda: (v := cluster.converged({"n1", "n2"})) and
                      not v["assignment"].get("n2") and v, CLUSTER_TIMEOUT,
                      message=lambda: f"n2 not drained: {cluster.view()['assignment']}")
    assert set(view["owners"].values()) == {"n1"}
    expect(tid("node-row-n2").get_by_test_id("node-state-n2")).to_have_text("draining")
    tid("undrain-btn-n2").click()
    wait_until(lambda: (v := cluster.converged({"n1", "n2"})) and v["assignment"].get("n2"),
               CLUSTER_TIMEOUT, message=lambda: f"n2 got nothing back: {cluster.view()}")
    expect(tid("node-state-n2")).to_have_text("active")
    assert page.errors == []  # type: ignore[attr-defined]


def test_a_slow_view_slows_the_dashboards_polling_down(cluster: Cluster, page):
    """Both views the page polls read every owner znode (about 1.9 s each at 10,000 slots):
    the next poll waits four times as long as the last one took, so an open dashboard
    does not keep ZooKeeper and the node busy all the time. Made slow in the browser (each
    answer of api/cluster held 800 ms): the polls then start at least 4 s apart (800 ms,
    then 3.2 s), where polling every second regardless started them 1 s apart. A lower
    bound on gaps, which a slow machine only widens."""
    url = next(n["admin_url"] for n in cluster.view()["nodes"] if n["id"] == "n1")
    page.add_init_script("""(() => {
      const real = window.fetch;
      window.__clusterPolls = [];
      window.fetch = async (path, init) => {
        if (String(path).endsWith("api/cluster")) {
          window.__clusterPolls.push(performance.now());
          const resp = await real(path, init);
          await new Promise((done) => setTimeout(done, 800));
          return resp;
        }
        return real(path, init);
      };
    })();""")
    page.goto(url + "/")
    page.wait_for_function("window.__clusterPolls.length >= 3", timeout=30_000)
    starts = page.evaluate("window.__clusterPolls")
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert all(gap >= 3_900 for gap in gaps), gaps


def test_dashboard_tells_http_errors_from_disconnection_and_flags_corrupt_znodes(
        cluster: Cluster, page):
    """An answer with an error status is shown with its status and message (the node is
    there, it said no); only a request that got no answer at all is "disconnected". Znodes
    the API reports as corrupt get a red banner. Answers are altered in the browser."""
    import json
    import urllib.request

    from playwright.sync_api import expect

    url = next(n["admin_url"] for n in cluster.view()["nodes"] if n["id"] == "n1")
    with urllib.request.urlopen(f"{url}/api/tasks", timeout=10) as resp:
        version = json.loads(resp.read())["version"]
    page.goto(url + "/")
    tid = page.get_by_test_id
    expect(tid("conn-status")).to_have_text("live")
    expect(tid("tasks-version")).to_have_text(
        "no runtime overrides" if version < 0 else f"overrides version {version}")
    expect(tid("corrupt-banner")).to_be_hidden()

    def with_corrupt(route) -> None:
        answer = route.fetch()
        body = answer.json()
        body["corrupt"] = [{"znode": "/x/e2e/assignment", "kind": "assignment",
                            "error": "not valid JSON"}]
        route.fulfill(response=answer, json=body)

    page.route("**/api/cluster", with_corrupt)
    expect(tid("corrupt-banner")).to_be_visible()
    expect(tid("corrupt-list")).to_contain_text("/x/e2e/assignment (assignment): not valid JSON")
    page.unroute("**/api/cluster")
    expect(tid("corrupt-banner")).to_be_hidden()

    page.route("**/api/tasks", lambda route: route.fulfill(
        status=503, json={"error": "zookeeper_unavailable",
                          "message": "ZooKeeper did not answer: ConnectionLoss"}))
    expect(tid("conn-status")).to_have_text("HTTP 503: ZooKeeper did not answer: ConnectionLoss")
    expect(tid("conn-status")).to_have_attribute("data-state", "http-error")
    page.unroute("**/api/tasks")
    expect(tid("conn-status")).to_have_text("live")

    page.route("**/api/tasks", lambda route: route.abort())
    expect(tid("conn-status")).to_have_text("disconnected")
    page.unroute("**/api/tasks")
    expect(tid("conn-status")).to_have_text("live")


@pytest.fixture
def keyed_cluster(tmp_path: Path, zk_hosts: str, zk_root: str,
                  monkeypatch: pytest.MonkeyPatch) -> Iterator[Cluster]:
    """A workerNum task and a keyed task, both committing checkpoints."""
    keys = tmp_path / "keys.txt"
    keys.write_text("s-a\ns-b\n")
    monkeypatch.setenv("XCONSUMER_TEST_KEYS", str(keys))
    c = Cluster(tmp_path, zk_hosts, zk_root,
                [{"name": "count", "workName": "counter", "workerNum": 2,
                  "params": ["east", {"zone": "b"}]},
                 {"name": "shards", "workName": "counter", "keys": "shards",
                  "keys_interval": 3600}],
                works=REPO / "tests" / "checkpoint_works", extra={"admin": {"token": TOKEN}})
    c.keys_file = keys  # type: ignore[attr-defined]
    try:
        c.start_node("n1")
        yield c
    finally:
        c.close()


def test_dashboard_shows_and_resets_checkpoints_and_refreshes_keys(keyed_cluster: Cluster,
                                                                    page):
    from playwright.sync_api import expect

    cluster = keyed_cluster
    url = cluster.view()["nodes"][0]["admin_url"]
    page.goto(url + "/")
    tid = page.get_by_test_id
    tid("token-input").fill(TOKEN)
    expect(tid("task-work-shards")).to_contain_text("keys 2 from KeysShards()")
    expect(tid("scale-input-shards")).to_have_count(0)  # keyed: no workerNum to set
    expect(tid("task-params-count")).to_have_text("params: 2")
    expect(tid("task-params-count")).to_have_attribute("title", 'ctx.param per slot: '
                                                      '{"0":"east","1":{"zone":"b"}}')

    # The checkpoints of a task, live: values go up as the handlers commit.
    tid("checkpoints-btn-count").click()
    expect(tid("checkpoints-task")).to_have_text("count")
    expect(tid("checkpoint-row-1")).to_be_visible()
    expect(tid("checkpoint-node-1")).to_have_text("n1")
    first = int(tid("checkpoint-value-1").inner_text())
    expect(tid("checkpoint-value-1")).not_to_have_text(str(first))

    # Reset one slot through the page: its handler starts over from none (ZooKeeper says so).
    starts = lambda: [line for line in cluster.record.read_text().splitlines()  # noqa: E731
                      if '"event": "start"' in line and '"slot": 1' in line
                      and '"task": "count"' in line]
    before = len(starts())
    tid("checkpoint-reset-1").click()
    expect(tid("flash")).to_have_attribute("data-kind", "ok")
    wait_until(lambda: len(starts()) > before, CLUSTER_TIMEOUT)
    assert '"value": 0' in starts()[-1]

    # A keyed task's checkpoints are listed by key; refreshing its keys runs the provider.
    tid("checkpoints-btn-shards").click()
    expect(tid("checkpoint-row-s-a")).to_be_visible()
    cluster.keys_file.write_text("s-a\ns-b\ns-c\n")  # type: ignore[attr-defined]
    tid("refresh-keys-btn-shards").click()
    expect(tid("task-work-shards")).to_contain_text("keys 3 from")
    expect(tid("checkpoint-row-s-c")).to_be_visible()
    tid("checkpoints-reset-all").click()
    expect(tid("flash-text")).to_contain_text("checkpoint(s) reset")
