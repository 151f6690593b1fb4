"""The embedding API against a real ZooKeeper: a `Consumer` in this process runs slots with
explicit or discovered handlers, forms a cluster with another one, fails at start with the
CLI's one-line errors, and leaves no thread behind; the shipped example runs as a host
application would run it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import xconsumer
from tests.cluster import RECORD_WORKS, REPO
from tests.util import wait_until
from xconsumer import Consumer
from xconsumer.config import parse_config
from xconsumer.embed import SlotKey, build_registry
from xconsumer.errors import ConfigError, WorksError, ZooKeeperUnavailable
from xconsumer.zkserver import free_port

EXAMPLE = REPO / "examples" / "embedded_app.py"


def config_text(zk_hosts: str, root: str, tasks: str, admin: bool = False) -> str:
    return f"""
[cluster]
name = "embed"
[zookeeper]
hosts = "{zk_hosts}"
root = "{root}"
session_timeout = 2.0
connect_timeout = 10
[admin]
enabled = {"true" if admin else "false"}
port = 0
[node]
reconcile_interval = 0.5
{tasks}
"""


def task(name: str, work: str, workers: int, **extra: Any) -> str:
    lines = [f'[[task]]\nname = "{name}"\nworkName = "{work}"\nworkerNum = {workers}',
             "stop_timeout = 2", *(f"{k} = {v!r}".replace("'", '"') for k, v in extra.items())]
    return "\n".join(lines) + "\n"


def xc_threads() -> list[str]:
    return sorted(t.name for t in threading.enumerate() if t.name.startswith("xc-"))


class Calls:
    """What the explicit handlers saw, by slot: proof that a slot ran here."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seen: dict[str, set[tuple[str, int]]] = {}

    def note(self, ctx: Any) -> None:
        with self.lock:
            self.seen.setdefault(ctx.node, set()).add((ctx.task, ctx.slot))


@pytest.fixture
def consumers() -> Iterator[list[Consumer]]:
    made: list[Consumer] = []
    yield made
    for consumer in made:
        consumer.stop(timeout=5)


@pytest.fixture(autouse=True)
def no_threads_left() -> Iterator[None]:
    """Every test ends with every thread it started joined, xconsumer's (xc-*) and kazoo's
    alike: the host process goes on living after a consumer stops."""
    before = set(threading.enumerate())

    def left() -> list[str]:
        return sorted(t.name for t in threading.enumerate() if t not in before)

    yield
    wait_until(lambda: not left(), 10, message=lambda: f"threads left: {left()}")


def make(consumers: list[Consumer], *args: Any, **kwargs: Any) -> Consumer:
    consumer = Consumer(*args, env={}, **kwargs)
    consumers.append(consumer)
    return consumer


def keys(*pairs: tuple[str, int]) -> list[SlotKey]:
    return [SlotKey(t, i) for t, i in pairs]


def test_start_runs_explicit_handlers_and_stop_joins_every_thread(zk_hosts, zk_root,
                                                                    consumers):
    calls = Calls()

    def RunEcho(ctx: Any) -> None:
        calls.note(ctx)
        ctx.sleep(0.2)

    consumer = make(consumers, config_text(zk_hosts, zk_root, task("e", "echo", 2)),
                    handlers={"RunEcho": RunEcho}, name="solo")
    assert consumer.status() == {"id": "solo", "state": "new"}
    assert consumer.start() is consumer
    assert consumer.running and consumer.name == "solo"
    wait_until(lambda: consumer.running_slots() == keys(("e", 0), ("e", 1)), 15,
               message=lambda: str(consumer.status()))
    assert consumer.is_leader and consumer.leader == "solo"
    assert consumer.assigned_slots() == keys(("e", 0), ("e", 1))
    wait_until(lambda: calls.seen.get("solo") == {("e", 0), ("e", 1)}, 10)
    status = consumer.status()
    assert status["id"] == "solo" and status["leader"] and status["generation"]
    assert {(s["task"], s["slot"]) for s in status["slots"]} == {("e", 0), ("e", 1)}
    assert xc_threads()  # the node's own threads run while it is started
    assert consumer.stop() is True
    assert not consumer.running and consumer.wait_until_stopped(0)
    assert consumer.running_slots() == [] and consumer.assigned_slots() == []
    assert not xc_threads()
    assert consumer.stop() is True  # idempotent
    with pytest.raises(RuntimeError, match="starts once"):
        consumer.start()


def test_context_manager_with_a_list_of_functions_and_a_config_object(zk_hosts, zk_root,
                                                                       consumers):
    calls = Calls()

    def RunTick(ctx: Any) -> None:  # Go-style names: workName "tick" runs RunTick
        calls.note(ctx)
        ctx.sleep(0.2)

    def RunTock() -> None:  # a handler may take no ctx at all
        threading.Event().wait(0.05)

    config = parse_config(config_text(zk_hosts, zk_root, task("a", "tick", 1)
                                      + task("b", "tock", 1)), env={})
    with make(consumers, config, handlers=[RunTick, RunTock], name="cm") as consumer:
        assert consumer.name == "cm"  # the option replaced the Config's (empty) name
        wait_until(lambda: consumer.running_slots() == keys(("a", 0), ("b", 0)), 15)
        wait_until(lambda: calls.seen.get("cm") == {("a", 0)}, 10)
    assert consumer.wait_until_stopped(0) and not xc_threads()


def test_works_package_discovery(zk_hosts, zk_root, consumers, record: Path):
    from tests.checker import load_records

    consumer = make(consumers, config_text(zk_hosts, zk_root, task("r", "record", 2)),
                    works=RECORD_WORKS, name="pkg").start()
    wait_until(lambda: consumer.running_slots() == keys(("r", 0), ("r", 1)), 15)
    wait_until(lambda: {(r["task"], r["slot"]) for r in load_records(record)
                        if r["e"] == "start" and r["node"] == "pkg"} == {("r", 0), ("r", 1)},
               10)
    assert consumer.stop()


def test_config_file_with_works_beside_it_and_the_admin_api(tmp_path, zk_hosts, zk_root,
                                                             consumers):
    import json
    import urllib.request

    works = tmp_path / "works"
    works.mkdir()
    (works / "__init__.py").write_text("def RunNap(ctx):\n    ctx.sleep(0.2)\n")
    cfg = tmp_path / "app.toml"
    cfg.write_text(config_text(zk_hosts, zk_root, task("n", "nap", 1), admin=True))
    consumer = make(consumers, str(cfg), name="filed").start()
    wait_until(lambda: consumer.running_slots() == keys(("n", 0)), 15)
    assert consumer.admin_url is not None
    with urllib.request.urlopen(consumer.admin_url + "/api/node", timeout=5) as reply:
        assert json.load(reply)["id"] == "filed"
    assert consumer.stop()
    assert consumer.admin_url is None


def test_two_consumers_in_one_process_form_a_cluster_and_hand_over(zk_hosts, zk_root,
                                                                   consumers):
    calls = Calls()

    def RunShare(ctx: Any) -> None:
        calls.note(ctx)
        ctx.sleep(0.2)

    text = config_text(zk_hosts, zk_root, task("s", "share", 4))
    a = make(consumers, text, handlers=[RunShare], name="a").start()
    wait_until(lambda: len(a.running_slots()) == 4, 15)
    b = make(consumers, text, handlers=[RunShare], name="b").start()
    wait_until(lambda: len(a.running_slots()) == 2 and len(b.running_slots()) == 2, 20,
               message=lambda: f"a={a.status()} b={b.status()}")
    assert a.is_leader and not b.is_leader and b.leader == "a"
    assert set(a.running_slots()).isdisjoint(b.running_slots())
    assert a.stop()
    wait_until(lambda: len(b.running_slots()) == 4 and b.is_leader, 20,
               message=lambda: str(b.status()))
    wait_until(lambda: len(calls.seen.get("b", ())) == 4, 10)
    assert b.stop()


def test_serve_forever_returns_after_request_stop(zk_hosts, zk_root, consumers):
    def RunIdle(ctx: Any) -> None:
        ctx.sleep(0.2)

    consumer = make(consumers, config_text(zk_hosts, zk_root, task("i", "idle", 1)),
                    handlers={"RunIdle": RunIdle}, name="serve").start()
    wait_until(lambda: consumer.running_slots() == keys(("i", 0)), 15)
    result: list[bool] = []
    server = threading.Thread(target=lambda: result.append(consumer.serve_forever()),
                              name="test-serve-forever")
    server.start()
    assert not consumer.wait_for_stop_request(0.2)
    consumer.request_stop()
    server.join(30)
    assert not server.is_alive() and result == [True]
    assert consumer.wait_until_stopped(0) and not consumer.running


def start_error(consumer: Consumer, kind: type[Exception], timeout: float | None = None
                ) -> str:
    """The one line a failed start raises; it must leave no thread of its own behind."""
    before = set(threading.enumerate())
    with pytest.raises(kind) as info:
        consumer.start(timeout)
    message = str(info.value)
    assert "\n" not in message, message
    assert consumer.wait_until_stopped(0) and not consumer.running
    assert not [t.name for t in threading.enumerate() if t not in before]
    return message


def test_bad_handler_signature_fails_at_start(zk_hosts, zk_root, consumers):
    def RunBad(ctx: Any, extra: Any) -> None:
        pass

    message = start_error(make(consumers, config_text(zk_hosts, zk_root, task("b", "bad", 1)),
                               handlers=[RunBad]), WorksError)
    # Located by module and qualified name: the function was handed in, not found in a file.
    assert "<locals>.RunBad in " in message and "test_embed takes 2 required arguments; " \
        "a handler takes one (ctx) or none" in message


@pytest.mark.parametrize(("handlers", "expected"), [
    ({"runLower": lambda ctx: None}, "handler name 'runLower' must be Run, Keys, Assign or "
                                     "Revoke followed by the work name"),
    ({"RunX": 42}, "handler RunX is not callable (got int)"),
    ([lambda ctx: None], "handler name '<lambda>' must be"),
    ("RunX", "handlers must be a mapping"),
    ({"KeysX": lambda ctx: []}, "must take no arguments"),
    ({"AssignX": lambda ctx: None}, "must take two arguments (ctx, slots)"),
])
def test_bad_explicit_handlers_get_one_line(handlers, expected):
    with pytest.raises(WorksError) as info:
        build_registry(handlers)
    assert expected in str(info.value) and "\n" not in str(info.value)


def test_hooks_are_kept_beside_run_handlers():
    def RunFeed(ctx: Any) -> None: ...
    def KeysFeed() -> list[str]: return ["p0", "p1"]
    def AssignFeed(ctx: Any, slots: Any) -> None: ...
    def RevokeFeed(ctx: Any, slots: Any, *more: Any) -> None: ...

    registry = build_registry([RunFeed, KeysFeed, AssignFeed, RevokeFeed])
    assert registry.names() == ["RunFeed"]  # hooks are not runnable handlers
    assert registry.hook_names() == ["AssignFeed", "KeysFeed", "RevokeFeed"]
    assert registry.resolve("feed").func is RunFeed
    keys_hook = registry.hook("Keys", "feed")
    assert keys_hook is not None and keys_hook() == ["p0", "p1"]


def test_the_same_name_from_two_functions_is_refused():
    def make_handler() -> Any:
        def RunTwin(ctx: Any) -> None: ...
        return RunTwin

    with pytest.raises(WorksError, match="handler RunTwin is given twice"):
        build_registry([make_handler(), make_handler()])


def test_unknown_work_name_names_the_task_and_the_handlers_given(zk_hosts, zk_root, consumers):
    def RunKnown(ctx: Any) -> None: ...

    message = start_error(make(consumers, config_text(zk_hosts, zk_root, task("u", "typo", 1)),
                               handlers=[RunKnown]), ConfigError)
    assert message.startswith("<config text>: task[0] (name 'u') workName 'typo'")
    assert "expected a function RunTypo (or Runtypo) among the handlers given" in message
    assert message.endswith("given: RunKnown")


def test_process_isolation_needs_a_works_package(zk_hosts, zk_root, consumers):
    def RunIso(ctx: Any) -> None: ...

    text = config_text(zk_hosts, zk_root, task("p", "iso", 1, isolation="process"))
    message = start_error(make(consumers, text, handlers=[RunIso]), ConfigError)
    assert "task[0] (name 'p') has isolation = \"process\"" in message


def test_zookeeper_down_fails_fast_with_one_line(consumers):
    port = free_port()

    def RunX(ctx: Any) -> None: ...

    consumer = make(consumers, config_text(f"127.0.0.1:{port}", "/x", task("x", "x", 1)),
                    handlers=[RunX])
    # start(timeout) bounds the wait for ZooKeeper (the config says 10 s).
    message = start_error(consumer, ZooKeeperUnavailable, timeout=1.5)
    assert message.startswith(f"cannot reach ZooKeeper at 127.0.0.1:{port} within 1.5s")


def test_a_name_in_use_and_a_busy_admin_port_leave_nothing_running(zk_hosts, zk_root,
                                                                    consumers):
    import socket

    from xconsumer.errors import NodeNameInUse

    def RunX(ctx: Any) -> None:
        ctx.sleep(0.2)

    text = config_text(zk_hosts, zk_root, task("x", "x", 1))
    first = make(consumers, text, handlers=[RunX], name="twin").start()
    wait_until(lambda: first.running_slots() == keys(("x", 0)), 15)  # its threads all up
    message = start_error(make(consumers, text, handlers=[RunX], name="twin"), NodeNameInUse)
    assert "node name 'twin' is already used by a live node" in message
    assert first.running
    first.stop()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        message = start_error(make(consumers, text, handlers=[RunX], admin=True,
                                   admin_port=port), ConfigError)
    assert f"admin HTTP cannot listen on 127.0.0.1:{port}" in message


def test_api_misuse_is_a_type_error():
    with pytest.raises(TypeError, match="not both"):
        Consumer("app.toml", works="works", handlers=[])
    with pytest.raises(TypeError, match="config must be"):
        Consumer(42)  # type: ignore[arg-type]
    assert xconsumer.Consumer is Consumer and "Consumer" in xconsumer.__all__


def test_the_example_application_runs_and_stops_on_sigint(tmp_path, zk_hosts, zk_root):
    cfg = tmp_path / "app.toml"
    cfg.write_text((REPO / "examples" / "embedded_app.toml").read_text()
                   .replace('hosts = "127.0.0.1:2181"',
                            f'hosts = "{zk_hosts}"\nroot = "{zk_root}"\nsession_timeout = 2'))
    log_path = tmp_path / "app.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("XCONSUMER_")}
    env["PYTHONPATH"] = str(REPO)
    with log_path.open("w") as log:
        proc = subprocess.Popen([sys.executable, str(EXAMPLE), "--config", str(cfg),
                                 "--name", "example"], stdout=log, stderr=subprocess.STDOUT,
                                cwd=tmp_path, env=env)
    try:
        wait_until(lambda: "hello from slot 1" in log_path.read_text()
                   and "hello from slot 0" in log_path.read_text(), 30,
                   message=lambda: log_path.read_text())
        assert proc.poll() is None
        os.kill(proc.pid, signal.SIGINT)
        assert proc.wait(30) == 0, log_path.read_text()
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
    text = log_path.read_text()
    assert "application running as node example" in text and "stopped cleanly" in text
    assert "Traceback" not in text
