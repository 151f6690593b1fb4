"""Unit tests for xconsumer.config: defaults, the file format, precedence and the messages.

The messages are part of the interface: an operator sees nothing else when a node refuses to
start, so they are asserted to be one line naming the file, the key and the bad value.
"""

from __future__ import annotations

import dataclasses
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest

from xconsumer.config import (
    ENV_VARS,
    AdminConfig,
    AssignmentConfig,
    ClusterConfig,
    Config,
    NodeConfig,
    TaskConfig,
    ZooKeeperConfig,
    load_config,
    parse_config,
)
from xconsumer.errors import ConfigError, XConsumerError

SHIPPED = Path(__file__).resolve().parents[2] / "app.toml"

TASK = '[[task]]\nname = "ingest"\nworkName = "test01"\nworkerNum = 2\n'

FULL = """
[cluster]
name = "prod.eu-1"

[zookeeper]
hosts = "zk1:2181,zk2:2182/apps/x"
session_timeout = 4
root = "/svc/xc"
connect_timeout = 2.5
auth = "svc:pa:ss"
acl_read_world = false
tls_verify = false

[admin]
enabled = false
host = "0.0.0.0"
port = 0
token = "s3cret"
events = 50

[node]
name = "worker-a"
works = ["test01", "poller"]
leader_works = false
reconcile_interval = 0.5
weight = 2.5

[assignment]
strategy = "sticky"
rejoin_grace = 30
debounce = 0.5

[[task]]
name = "ingest"
workName = "test01"
workerNum = 4
mode = "once"
interval = 0
stop_timeout = 3
retry_backoff = 0.5
retry_backoff_max = 8
max_per_node = 2
isolation = "process"

[[task]]
name = "poll"
workName = "poller"
workerNum = 0
"""


def parse(text: str, **kwargs: Any) -> Config:
    kwargs.setdefault("env", {})
    return parse_config(textwrap.dedent(text), source="app.toml", **kwargs)


def error_of(text: str, **kwargs: Any) -> str:
    with pytest.raises(ConfigError) as info:
        parse(text, **kwargs)
    message = str(info.value)
    assert "\n" not in message, message
    return message


def write(tmp_path: Path, text: str, name: str = "app.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


# --- defaults and a full file -----------------------------------------------------------


def test_defaults() -> None:
    config = Config()
    assert config.cluster == ClusterConfig(name="default")
    assert config.zookeeper == ZooKeeperConfig("127.0.0.1:2181", 10.0, "/xconsumer", 15.0)
    assert config.admin == AdminConfig(enabled=True, host="127.0.0.1", port=8000, token=None)
    assert config.node == NodeConfig(None, None, True, 5.0)
    assert config.assignment == AssignmentConfig("balanced")
    zk = config.zookeeper
    assert (zk.auth, zk.acl_read_world, zk.use_tls, zk.tls_ca, zk.tls_cert, zk.tls_key,
            zk.tls_verify) == (None, True, False, None, None, None, True)
    assert config.admin.events == 200
    assert config.node.weight == 1.0
    assert (config.assignment.rejoin_grace, config.assignment.debounce) == (0.0, 0.0)
    task = TaskConfig("t", "w", 1)
    assert (task.max_per_node, task.isolation) == (None, "thread")
    assert config.tasks == ()
    assert config.source == "<defaults>"


def test_empty_file_gives_defaults_and_zero_tasks_is_valid() -> None:
    config = parse("")
    assert config == Config(source="app.toml")
    assert config.task("anything") is None


def test_full_file_round_trips_into_the_dataclasses() -> None:
    config = parse(FULL)
    assert config.cluster == ClusterConfig(name="prod.eu-1")
    assert config.zookeeper == ZooKeeperConfig(
        hosts="zk1:2181,zk2:2182/apps/x", session_timeout=4.0, root="/svc/xc",
        connect_timeout=2.5, auth="svc:pa:ss", acl_read_world=False, tls_verify=False)
    assert config.admin == AdminConfig(enabled=False, host="0.0.0.0", port=0, token="s3cret",
                                       events=50)
    assert config.node == NodeConfig(name="worker-a", works=("test01", "poller"),
                                     leader_works=False, reconcile_interval=0.5, weight=2.5)
    assert config.assignment == AssignmentConfig(strategy="sticky", rejoin_grace=30.0,
                                                 debounce=0.5)
    assert config.tasks == (
        TaskConfig(name="ingest", work_name="test01", worker_num=4, mode="once", interval=0.0,
                   stop_timeout=3.0, retry_backoff=0.5, retry_backoff_max=8.0,
                   max_per_node=2, isolation="process"),
        TaskConfig(name="poll", work_name="poller", worker_num=0),
    )
    assert config.task("poll") is config.tasks[1]
    assert config.task("nope") is None


def test_numbers_are_normalised_to_the_field_types() -> None:
    config = parse(FULL)
    assert isinstance(config.zookeeper.session_timeout, float)
    assert isinstance(config.tasks[0].interval, float)
    assert type(config.tasks[0].worker_num) is int
    assert type(config.admin.port) is int
    assert type(config.admin.events) is int
    assert isinstance(config.node.weight, float)
    assert isinstance(config.assignment.rejoin_grace, float)
    assert type(config.tasks[0].max_per_node) is int


def test_config_is_frozen() -> None:
    config = parse(FULL)
    with pytest.raises(AttributeError):
        config.cluster = ClusterConfig("x")  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "attr", "expected"),
    [
        ('[admin]\ntoken = ""', "admin.token", None),
        ('[node]\nname = ""', "node.name", None),
        ("[node]\nworks = []", "node.works", ()),
        ('[zookeeper]\nhosts = "a:1 , b:2"', "zookeeper.hosts", "a:1,b:2"),
        ('[zookeeper]\nhosts = "[::1]:2181,zk"', "zookeeper.hosts", "[::1]:2181,zk"),
        ("[zookeeper]\nsession_timeout = 1", "zookeeper.session_timeout", 1.0),
        ('[zookeeper]\nauth = ""', "zookeeper.auth", None),
        ('[zookeeper]\ntls_ca = ""', "zookeeper.tls_ca", None),
        ("[node]\nweight = 3", "node.weight", 3.0),
        ("[node]\nweight = 0.25", "node.weight", 0.25),
        ("[node]\nweight = 0.001", "node.weight", 0.001),
        ("[node]\nweight = 1000", "node.weight", 1000.0),
        ("[assignment]\nrejoin_grace = 0", "assignment.rejoin_grace", 0.0),
        ("[assignment]\ndebounce = 2", "assignment.debounce", 2.0),
        ("[admin]\nevents = 1", "admin.events", 1),
        ("[admin]\nevents = 100000", "admin.events", 100000),
    ],
)
def test_normalised_values(text: str, attr: str, expected: Any) -> None:
    section, key = attr.split(".")
    assert getattr(getattr(parse(text), section), key) == expected


# --- validation messages ----------------------------------------------------------------


BAD_VALUES = [
    # (file text, fragments every message must contain)
    ('[cluster]\nname = "bad name"', ["[cluster] name", "'bad name'"]),
    ('[cluster]\nname = "' + "x" * 65 + '"', ["[cluster] name", "1-64"]),
    ('[cluster]\nname = "-x"', ["[cluster] name", "'-x'"]),
    ("[cluster]\nname = 5", ["[cluster] name", "got 5"]),
    ('[zookeeper]\nhosts = ""', ["[zookeeper] hosts", "host:port", "''"]),
    ('[zookeeper]\nhosts = "a:1,,b:2"', ["[zookeeper] hosts", "'a:1,,b:2'"]),
    ('[zookeeper]\nhosts = "a:99999"', ["[zookeeper] hosts", "'a:99999'"]),
    ('[zookeeper]\nhosts = "a:1/"', ["[zookeeper] hosts", "chroot", "'a:1/'"]),
    ("[zookeeper]\nhosts = 2181", ["[zookeeper] hosts", "got 2181"]),
    ('[zookeeper]\nsession_timeout = "10"', ["[zookeeper] session_timeout", ">= 1", "'10'"]),
    ("[zookeeper]\nsession_timeout = 0.5", ["[zookeeper] session_timeout", ">= 1", "0.5"]),
    ("[zookeeper]\nsession_timeout = true", ["[zookeeper] session_timeout", "got true"]),
    ("[zookeeper]\nsession_timeout = inf", ["[zookeeper] session_timeout", "inf"]),
    ("[zookeeper]\nsession_timeout = nan", ["[zookeeper] session_timeout", "nan"]),
    ('[zookeeper]\nroot = "xconsumer"', ["[zookeeper] root", "absolute", "'xconsumer'"]),
    ('[zookeeper]\nroot = "/"', ["[zookeeper] root", "got '/'"]),
    ('[zookeeper]\nroot = "/a/"', ["[zookeeper] root", "trailing slash", "'/a/'"]),
    ('[zookeeper]\nroot = "/a//b"', ["[zookeeper] root", "'/a//b'"]),
    ('[zookeeper]\nroot = "/a/../b"', ["[zookeeper] root", "'/a/../b'"]),
    ("[zookeeper]\nconnect_timeout = 0", ["[zookeeper] connect_timeout", "> 0", "got 0"]),
    ("[zookeeper]\nconnect_timeout = -1.5", ["[zookeeper] connect_timeout", "-1.5"]),
    ('[admin]\nport = "80a"', ["[admin] port must be an integer 0..65535", "got '80a'"]),
    ("[admin]\nport = 65536", ["[admin] port", "0..65535", "65536"]),
    ("[admin]\nport = -1", ["[admin] port", "-1"]),
    ("[admin]\nport = 80.0", ["[admin] port", "80.0"]),
    ("[admin]\nport = true", ["[admin] port", "got true"]),
    ('[admin]\nenabled = "yes"', ["[admin] enabled", "true or false", "'yes'"]),
    ("[admin]\nenabled = 1", ["[admin] enabled", "got 1"]),
    ('[admin]\nhost = ""', ["[admin] host", "''"]),
    ('[admin]\nhost = "my host"', ["[admin] host", "'my host'"]),
    ("[admin]\ntoken = 123", ["[admin] token", "got 123"]),
    ('[node]\nname = "a/b"', ["[node] name", "'a/b'"]),
    ('[node]\nworks = "test01"', ["[node] works", "list", "'test01'"]),
    ('[node]\nworks = ["a", ""]', ["[node] works", "non-empty", "['a', '']"]),
    ("[node]\nworks = [1]", ["[node] works", "[1]"]),
    ('[node]\nleader_works = "no"', ["[node] leader_works", "'no'"]),
    ("[node]\nreconcile_interval = 0", ["[node] reconcile_interval", "> 0", "got 0"]),
    ('[assignment]\nstrategy = "random"', ["[assignment] strategy", "'round_robin'",
                                           "'sticky'", "'random'"]),
    ('[assignment]\nstrategy = ""', ["[assignment] strategy", "''"]),
    ("[assignment]\nrejoin_grace = -1", ["[assignment] rejoin_grace", ">= 0 (seconds)",
                                         "got -1"]),
    ('[assignment]\nrejoin_grace = "30s"', ["[assignment] rejoin_grace", "'30s'"]),
    ("[assignment]\ndebounce = -0.5", ["[assignment] debounce", ">= 0 (seconds)", "-0.5"]),
    ("[assignment]\ndebounce = true", ["[assignment] debounce", "got true"]),
    ("[node]\nweight = 0", ["[node] weight must be a number 0.001..1000 (relative "
                            "capacity", "got 0"]),
    ("[node]\nweight = -2", ["[node] weight", "0.001..1000", "-2"]),
    ("[node]\nweight = 1e-309", ["[node] weight", "0.001..1000"]),
    ("[node]\nweight = 1001", ["[node] weight", "0.001..1000", "1001"]),
    ('[node]\nweight = "2"', ["[node] weight", "'2'"]),
    ("[node]\nweight = inf", ["[node] weight", "inf"]),
    ("[node]\nweight = true", ["[node] weight", "got true"]),
    ("[admin]\nevents = 0", ["[admin] events must be an integer 1..100000", "got 0"]),
    ("[admin]\nevents = 100001", ["[admin] events", "100001"]),
    ("[admin]\nevents = 2.5", ["[admin] events", "2.5"]),
    ('[admin]\nevents = "200"', ["[admin] events", "'200'"]),
    ("[zookeeper]\nauth = 5", ["[zookeeper] auth", "'user:password'", "got a value of type int"]),
    ('[zookeeper]\nauth = ["u:secret"]', ["[zookeeper] auth", "of type list"]),
    ('[zookeeper]\nacl_read_world = "yes"', ["[zookeeper] acl_read_world", "'yes'"]),
    ("[zookeeper]\nuse_tls = 1", ["[zookeeper] use_tls", "true or false", "got 1"]),
    ("[zookeeper]\ntls_verify = 0", ["[zookeeper] tls_verify", "got 0"]),
    ("[zookeeper]\ntls_ca = 5", ["[zookeeper] tls_ca must be a string", "got 5"]),
    ('[zookeeper]\ntls_cert = ["a"]', ["[zookeeper] tls_cert", "['a']"]),
    ("[zookeeper]\ntls_key = false", ["[zookeeper] tls_key", "got false"]),
    ("zookeeper = 5", ["[zookeeper] must be a table", "got 5"]),
]


@pytest.mark.parametrize(("text", "fragments"), BAD_VALUES)
def test_bad_section_values(text: str, fragments: list[str]) -> None:
    message = error_of(text)
    assert message.startswith("app.toml: ")
    for fragment in fragments:
        assert fragment in message


def task_text(**keys: str | None) -> str:
    """One [[task]] table from TOML value snippets; a key given as None is left out."""
    values: dict[str, str | None] = {"name": '"ingest"', "workName": '"test01"', "workerNum": "2"}
    values.update(keys)
    lines = ["[[task]]"] + [f"{k} = {v}" for k, v in values.items() if v is not None]
    return "\n".join(lines) + "\n"


BAD_TASKS = [
    (dict(workerNum="-1"), "task[0] (name 'ingest') workerNum must be a non-negative integer, "
                           "got -1"),
    (dict(workerNum="2.5"), "task[0] (name 'ingest') workerNum must be a non-negative integer, "
                            "got 2.5"),
    (dict(workerNum="true"), "workerNum must be a non-negative integer, got true"),
    (dict(workerNum='"3"'), "workerNum must be a non-negative integer, got '3'"),
    (dict(workerNum="100001"), "workerNum must be at most 100000, got 100001"),
    (dict(workName=None), "task[0] (name 'ingest') is missing required key workName"),
    (dict(workerNum=None), "task[0] (name 'ingest') is missing required key workerNum"),
    (dict(name=None), "task[0] is missing required key name"),
    (dict(name='"a b"'), "task[0] name must be 1-128"),
    (dict(name='"' + "n" * 129 + '"'), "task[0] name must be 1-128"),
    (dict(name="7"), "task[0] name must be 1-128 letters, digits, '_', '.' or '-', starting "
                     "with a letter or digit, got 7"),
    (dict(workName='""'), "workName must be a Python identifier"),
    (dict(workName='"test-01"'), "workName must be a Python identifier such as 'test01' "
                                 "(letters, digits, '_'), got 'test-01'"),
    (dict(mode='"forever"'), "task[0] (name 'ingest') mode must be 'loop'"),
    (dict(mode='"forever"'), "got 'forever'"),
    (dict(interval="-1"), "task[0] (name 'ingest') interval must be a number >= 0"),
    (dict(interval='"1s"'), "interval must be a number >= 0 (seconds), got '1s'"),
    (dict(stop_timeout="0"), "stop_timeout must be a number > 0 (seconds), got 0"),
    (dict(retry_backoff="0"), "retry_backoff must be a number > 0 (seconds), got 0"),
    (dict(retry_backoff="5", retry_backoff_max="2"),
     "retry_backoff_max must be >= retry_backoff (5), got 2"),
    (dict(retry_backoff="60"), "retry_backoff_max must be >= retry_backoff (60), got 30 "
                               "(the default)"),
    (dict(worker_num="2"), "task[0] (name 'ingest') has unknown key worker_num (known: name, "
                           "workName, workerNum"),
    (dict(worker_num="2"), "did you mean workerNum?"),
    (dict(work_name='"x"'), "did you mean workName?"),
    (dict(intervall="2"), "did you mean interval?"),
    (dict(max_per_node="0"), "task[0] (name 'ingest') max_per_node must be an integer >= 1 "
                             "(most slots of this task on one node), got 0"),
    (dict(max_per_node="-3"), "max_per_node must be an integer >= 1"),
    (dict(max_per_node="1.5"), "max_per_node must be an integer >= 1 (most slots of this task "
                               "on one node), got 1.5"),
    (dict(max_per_node='"2"'), "got '2'"),
    (dict(max_per_node="true"), "max_per_node must be an integer >= 1 (most slots of this "
                                "task on one node), got true"),
    (dict(maxPerNode="2"), "did you mean max_per_node?"),
    (dict(isolation='"fork"'), "task[0] (name 'ingest') isolation must be 'thread' (in the "
                               "node process) or 'process'"),
    (dict(isolation='"Process"'), "got 'Process'"),
    (dict(isolation="1"), "isolation must be 'thread'"),
]


@pytest.mark.parametrize(("keys", "fragment"), BAD_TASKS)
def test_bad_task_values(keys: dict[str, str | None], fragment: str) -> None:
    message = error_of(task_text(**keys))
    assert message.startswith("app.toml: task[0]")
    assert fragment in message


def test_error_names_the_right_task_index() -> None:
    text = task_text(name='"a"') + task_text(name='"b"') + task_text(name='"c"', workerNum="-1")
    assert error_of(text) == ("app.toml: task[2] (name 'c') workerNum must be a non-negative "
                              "integer, got -1")


def test_duplicate_task_names() -> None:
    text = (task_text(name='"a"') + task_text(name='"ingest"') + task_text(name='"b"')
            + task_text(name='"ingest"'))
    assert error_of(text) == "app.toml: duplicate task name 'ingest' (task[1] and task[3])"


def test_unknown_key_in_a_section() -> None:
    assert error_of("[zookeeper]\nsesion_timeout = 3") == (
        "app.toml: unknown key [zookeeper] sesion_timeout (known: hosts, session_timeout, "
        "root, connect_timeout, auth, acl_read_world, use_tls, tls_ca, tls_cert, tls_key, "
        "tls_verify; did you mean session_timeout?)")


def test_unknown_key_in_snake_or_camel_case_suggests_the_right_spelling() -> None:
    assert "did you mean session_timeout?" in error_of("[zookeeper]\nsessionTimeout = 3")
    assert "did you mean workerNum?" in error_of(task_text(workerNum=None, workernum="2"))


def test_unknown_key_without_a_close_match_lists_the_known_ones() -> None:
    message = error_of("[admin]\nzzz = 1")
    assert message == ("app.toml: unknown key [admin] zzz (known: enabled, host, port, token, "
                       "events, allowed_hosts, advertise_url)")


@pytest.mark.parametrize("value", ['""', '["ok.example", ""]', '["a b"]', '["a:99999"]',
                                   '[1]', '["http://a.example"]'])
def test_admin_allowed_hosts_must_be_host_names(value: str) -> None:
    message = error_of(f"[admin]\nallowed_hosts = {value}")
    assert message.startswith("app.toml: [admin] allowed_hosts must be a list of host names")
    assert "\n" not in message


def test_admin_allowed_hosts_from_the_file_and_the_environment() -> None:
    config = parse('[admin]\nallowed_hosts = ["a.example", "b.example:8443", "[::1]:9"]')
    assert config.admin.allowed_hosts == ("a.example", "b.example:8443", "[::1]:9")
    env = {"XCONSUMER_ADMIN_ALLOWED_HOSTS": "x.example, y.example:1"}
    assert parse("", env=env).admin.allowed_hosts == ("x.example", "y.example:1")
    assert parse("").admin.allowed_hosts == ()


@pytest.mark.parametrize("value", ['"ftp://a.example"', '"a.example:8001"', '"http://a b"',
                                   '"http://a.example:99999"', '1', '["http://a.example"]'])
def test_admin_advertise_url_must_be_an_http_url(value: str) -> None:
    message = error_of(f"[admin]\nadvertise_url = {value}")
    assert message.startswith("app.toml: [admin] advertise_url must ")
    assert "\n" not in message


def test_admin_advertise_url_from_the_file_and_the_environment() -> None:
    config = parse('[admin]\nadvertise_url = "https://node1.example:8443/xc/"')
    assert config.admin.advertise_url == "https://node1.example:8443/xc"
    env = {"XCONSUMER_ADMIN_ADVERTISE_URL": "http://127.0.0.1:8001"}
    assert parse("", env=env).admin.advertise_url == "http://127.0.0.1:8001"
    assert parse('[admin]\nadvertise_url = ""').admin.advertise_url is None


def test_unknown_quoted_key_is_shown_quoted_on_one_line() -> None:
    message = error_of('[admin]\n"a\\nb" = 1')
    assert "'a\\nb'" in message


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("[zookeper]\nhosts = 'x'", ["unknown section [zookeper]", "did you mean zookeeper?",
                                    "cluster, zookeeper, admin, node, assignment, task"]),
        ("[tasks]\nname = 'x'", ["unknown section [tasks]", "did you mean task?"]),
        ('name = "x"', ["unknown top-level key name", "known sections"]),
    ],
)
def test_unknown_top_level_names(text: str, fragments: list[str]) -> None:
    message = error_of(text)
    assert message.startswith("app.toml: ")
    for fragment in fragments:
        assert fragment in message


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('[task]\nname = "a"', "task must be an array of tables written as [[task]], got a "
                               "single table ([task])"),
        ("task = 5", "task must be an array of tables written as [[task]], got 5"),
        ("task = [1, 2]", "task[0] must be a table with name, workName and workerNum, got 1"),
    ],
)
def test_task_must_be_an_array_of_tables(text: str, fragment: str) -> None:
    assert error_of(text) == f"app.toml: {fragment}"


def test_custom_strategy_set() -> None:
    config = parse('[assignment]\nstrategy = "spread"', strategies={"spread", "round_robin"})
    assert config.assignment.strategy == "spread"
    message = error_of('[assignment]\nstrategy = "stiky"', strategies=["round_robin"])
    assert message == ("app.toml: [assignment] strategy must be one of 'round_robin', "
                       "got 'stiky'")
    assert "did you mean sticky?" in error_of('[assignment]\nstrategy = "stiky"')


def test_default_strategy_outside_the_allowed_set_is_reported_as_the_default() -> None:
    message = error_of("", strategies=("sticky",))
    assert message == ("app.toml: [assignment] strategy (default) must be one of 'sticky', "
                       "got 'balanced'")


def test_long_values_are_cut_in_messages() -> None:
    message = error_of('[admin]\nhost = "' + "a " * 200 + '"')
    assert message.endswith("...")
    assert len(message) < 200


# --- malformed TOML and files -----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[cluster]\nname = "a"\n\n[admin]\nport 8000\n',
         "app.toml: invalid TOML at line 5, column 6: Expected '=' after a key in a key/value "
         "pair"),
        ("[admin]\nport = 1\nport = 2\n", "app.toml: invalid TOML at line 3, column"),
        ('x = "abc', "app.toml: invalid TOML at line 1, column 9 (end of file): "
                     "Unterminated string"),
        ("a = 1\nb = [1,\n", "app.toml: invalid TOML at line 3, column 1 (end of file)"),
    ],
)
def test_malformed_toml_reports_line_and_column(text: str, expected: str) -> None:
    message = error_of(text)
    assert message.startswith(expected)


def test_load_config_reads_a_file(tmp_path: Path) -> None:
    path = write(tmp_path, FULL)
    config = load_config(path, env={})
    assert config.source == str(path)
    assert config == dataclasses.replace(parse(FULL), source=str(path))


def test_load_config_keeps_the_path_as_given_in_messages(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "[admin]\nport = 70000\n")
    with pytest.raises(ConfigError) as info:
        load_config("app.toml", env={})
    assert str(info.value) == ("app.toml: [admin] port must be an integer 0..65535 (0 = any "
                               "free port), got 70000")


def test_missing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_config("app.toml", env={})
    assert str(info.value) == f"config file app.toml not found (cwd: {tmp_path})"
    assert isinstance(info.value, XConsumerError)


def test_unreadable_path_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path, env={})


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[cluster]\nname = 'a'\n[admin\n", name="node1.toml")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert str(info.value).startswith(f"{path}: invalid TOML at line 3, column")


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "app.toml"
    path.write_bytes(b'[cluster]\nname = "\xff"\n')
    with pytest.raises(ConfigError, match=r"app.toml: not valid UTF-8 at byte 18"):
        load_config(path, env={})


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "app.toml"
    path.write_bytes(b'\xef\xbb\xbf[cluster]\nname = "bom"\n')
    assert load_config(path, env={}).cluster.name == "bom"


# --- precedence: overrides > env > file > defaults --------------------------------------


PRECEDENCE_FILE = """
[cluster]
name = "file-cluster"
[zookeeper]
hosts = "file:2181"
[admin]
host = "10.0.0.1"
port = 7000
token = "file-token"
[node]
name = "file-node"
"""


def test_file_beats_defaults() -> None:
    config = parse(PRECEDENCE_FILE)
    assert config.zookeeper.hosts == "file:2181"
    assert config.admin.port == 7000
    assert config.zookeeper.session_timeout == 10.0


def test_env_beats_file() -> None:
    env = {"XCONSUMER_ZK": "env:2181", "XCONSUMER_NAME": "env-node",
           "XCONSUMER_ADMIN_PORT": "7100", "XCONSUMER_ADMIN_HOST": "10.0.0.2",
           "XCONSUMER_ADMIN_TOKEN": "env-token", "XCONSUMER_CLUSTER": "env-cluster",
           "UNRELATED": "x"}
    config = parse(PRECEDENCE_FILE, env=env)
    assert config.zookeeper.hosts == "env:2181"
    assert config.node.name == "env-node"
    assert config.admin.port == 7100
    assert config.admin.host == "10.0.0.2"
    assert config.admin.token == "env-token"
    assert config.cluster.name == "env-cluster"


def test_env_var_table_is_complete() -> None:
    assert set(ENV_VARS) == {"XCONSUMER_ZK", "XCONSUMER_NAME", "XCONSUMER_ADMIN_PORT",
                             "XCONSUMER_ADMIN_HOST", "XCONSUMER_ADMIN_TOKEN",
                             "XCONSUMER_ADMIN_ALLOWED_HOSTS", "XCONSUMER_CLUSTER",
                             "XCONSUMER_ZK_AUTH", "XCONSUMER_ADMIN_ADVERTISE_URL"}


def test_overrides_beat_env_and_none_means_not_given() -> None:
    env = {"XCONSUMER_ZK": "env:2181", "XCONSUMER_NAME": "env-node",
           "XCONSUMER_ADMIN_PORT": "7100"}
    overrides = {"zookeeper.hosts": "cli:2181", "node.name": None, "admin.port": 0,
                 "admin.host": "127.0.0.2"}
    config = parse(PRECEDENCE_FILE, env=env, overrides=overrides)
    assert config.zookeeper.hosts == "cli:2181"
    assert config.node.name == "env-node"
    assert config.admin.port == 0
    assert config.admin.host == "127.0.0.2"
    assert config.admin.token == "file-token"


def test_empty_env_values_count_as_unset() -> None:
    config = parse(PRECEDENCE_FILE, env={"XCONSUMER_ADMIN_TOKEN": "", "XCONSUMER_ZK": ""})
    assert config.admin.token == "file-token"
    assert config.zookeeper.hosts == "file:2181"


def test_env_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XCONSUMER_CLUSTER", "from-environ")
    assert parse_config("").cluster.name == "from-environ"
    assert parse_config("", env={}).cluster.name == "default"


@pytest.mark.parametrize("raw", ["abc", "80a", "8.5", ""])
def test_env_port_must_be_an_integer(raw: str) -> None:
    if raw == "":
        assert parse("", env={"XCONSUMER_ADMIN_PORT": raw}).admin.port == 8000
        return
    message = error_of("", env={"XCONSUMER_ADMIN_PORT": raw})
    assert message == f"XCONSUMER_ADMIN_PORT={raw!r} is not an integer port (0..65535)"


def test_env_values_are_validated_and_named() -> None:
    message = error_of("", env={"XCONSUMER_ADMIN_PORT": "70000"})
    assert message == ("XCONSUMER_ADMIN_PORT (admin.port) must be an integer 0..65535 "
                       "(0 = any free port), got 70000")
    message = error_of("", env={"XCONSUMER_NAME": "bad name"})
    assert message.startswith("XCONSUMER_NAME (node.name) must be 1-64")
    assert "'bad name'" in message


def test_override_values_are_validated_and_named() -> None:
    message = error_of("", overrides={"admin.port": 70000})
    assert message.startswith("override admin.port must be an integer 0..65535")
    assert error_of("", overrides={"admin.port": "x"}) == (
        "override admin.port='x' is not an integer port (0..65535)")


def test_string_overrides_are_converted() -> None:
    config = parse("", overrides={"admin.port": "9000", "zookeeper.session_timeout": "2.5",
                                  "admin.enabled": "false", "node.works": "a, b"})
    assert config.admin.port == 9000
    assert config.zookeeper.session_timeout == 2.5
    assert config.admin.enabled is False
    assert config.node.works == ("a", "b")


def test_unknown_override_key() -> None:
    message = error_of("", overrides={"admin.prot": 1})
    assert message.startswith("unknown override 'admin.prot' (known: cluster.name, ")
    assert message.endswith("did you mean admin.port?)")


# --- TaskConfig.to_dict / from_dict -----------------------------------------------------


def test_task_to_dict_uses_toml_keys() -> None:
    task = TaskConfig(name="t", work_name="test01", worker_num=3, mode="once", interval=2.0)
    assert task.to_dict() == {
        "name": "t", "workName": "test01", "workerNum": 3, "mode": "once", "interval": 2.0,
        "stop_timeout": 10.0, "retry_backoff": 1.0, "retry_backoff_max": 30.0,
    }


def test_task_round_trip() -> None:
    for task in parse(FULL).tasks:
        assert TaskConfig.from_dict(task.to_dict()) == task


def test_task_from_dict_minimal_and_int_numbers() -> None:
    task = TaskConfig.from_dict({"name": "t", "workName": "w", "workerNum": 1, "interval": 3})
    assert task == TaskConfig(name="t", work_name="w", worker_num=1, interval=3.0)
    assert isinstance(task.interval, float)


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"name": "t", "workName": "w", "workerNum": -1},
         "znode /x/tasks (name 't') workerNum must be a non-negative integer, got -1"),
        ({"name": "t", "workName": "w"}, "znode /x/tasks (name 't') is missing required key "
                                         "workerNum"),
        ({"name": "t", "work_name": "w", "workerNum": 1}, "znode /x/tasks (name 't') has "
                                                          "unknown key work_name"),
        ({"name": "t", "workName": "w", "workerNum": 1, "mode": "again"},
         "znode /x/tasks (name 't') mode must be 'loop'"),
        ({"name": "", "workName": "w", "workerNum": 1}, "znode /x/tasks name must be 1-128"),
        ([1, 2], "znode /x/tasks must be a table"),
    ],
)
def test_task_from_dict_errors_mention_where(data: Any, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        TaskConfig.from_dict(data, where="znode /x/tasks")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(fragment)


def test_task_from_dict_default_where() -> None:
    with pytest.raises(ConfigError, match=r"^task \(name 't'\) workerNum must be"):
        TaskConfig.from_dict({"name": "t", "workName": "w", "workerNum": True})


# --- ZooKeeper credentials and TLS -------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("justauser", "no ':'"),
        (":hunter2", "an empty user"),
        ("admin:", "an empty password"),
    ],
)
def test_zk_auth_must_be_user_colon_password_and_is_never_echoed(value: str,
                                                                  problem: str) -> None:
    message = error_of(f'[zookeeper]\nauth = "{value}"')
    assert message == ("app.toml: [zookeeper] auth must be 'user:password' (digest "
                       f"credentials, both parts non-empty), got a value with {problem}")
    assert "hunter2" not in message and "justauser" not in message


def test_zk_auth_password_may_contain_colons() -> None:
    assert parse('[zookeeper]\nauth = "u:p:w"').zookeeper.auth == "u:p:w"


def test_zk_auth_from_the_environment() -> None:
    config = parse('[zookeeper]\nauth = "file:pw"', env={"XCONSUMER_ZK_AUTH": "env:pw"})
    assert config.zookeeper.auth == "env:pw"
    message = error_of("", env={"XCONSUMER_ZK_AUTH": "nopassword:"})
    assert message.startswith("XCONSUMER_ZK_AUTH (zookeeper.auth) must be 'user:password'")
    assert parse('[zookeeper]\nauth = "f:pw"', env={"XCONSUMER_ZK_AUTH": ""}).zookeeper.auth \
        == "f:pw"


def tls_text(tmp_path: Path, **keys: str) -> str:
    lines = ["[zookeeper]", "use_tls = true"]
    lines += [f'{key} = "{tmp_path / name}"' for key, name in keys.items()]
    return "\n".join(lines) + "\n"


def test_tls_files_are_accepted_when_they_exist(tmp_path: Path) -> None:
    for name in ("ca.pem", "cert.pem", "key.pem"):
        (tmp_path / name).write_text("x")
    config = parse(tls_text(tmp_path, tls_ca="ca.pem", tls_cert="cert.pem", tls_key="key.pem"))
    zk = config.zookeeper
    assert zk.use_tls is True and zk.tls_verify is True
    assert (zk.tls_ca, zk.tls_cert, zk.tls_key) == tuple(
        str(tmp_path / n) for n in ("ca.pem", "cert.pem", "key.pem"))


def test_tls_without_files_uses_the_defaults() -> None:
    assert parse("[zookeeper]\nuse_tls = true").zookeeper.tls_ca is None


@pytest.mark.parametrize("key", ["tls_ca", "tls_cert", "tls_key"])
def test_missing_tls_file_names_the_key_and_the_path(tmp_path: Path, key: str) -> None:
    for name in ("cert.pem", "key.pem"):
        (tmp_path / name).write_text("x")
    files = {"tls_cert": "cert.pem", "tls_key": "key.pem", key: "missing.pem"}
    message = error_of(tls_text(tmp_path, **files))
    assert message.startswith(f"app.toml: [zookeeper] {key} file {tmp_path / 'missing.pem'} "
                              "not found (cwd: ")


def test_tls_file_that_is_a_directory(tmp_path: Path) -> None:
    assert error_of(f'[zookeeper]\nuse_tls = true\ntls_ca = "{tmp_path}"') == (
        f"app.toml: [zookeeper] tls_ca {tmp_path} is not a file")


@pytest.mark.parametrize(("given", "missing"), [("tls_cert", "tls_key"),
                                                ("tls_key", "tls_cert")])
def test_client_certificate_and_key_go_together(tmp_path: Path, given: str,
                                                missing: str) -> None:
    (tmp_path / "f.pem").write_text("x")
    assert error_of(tls_text(tmp_path, **{given: "f.pem"})) == (
        f"app.toml: [zookeeper] {given} is set but {missing} is not: a client certificate is "
        "only used together with its key")


def test_tls_files_are_not_checked_while_tls_is_off(tmp_path: Path) -> None:
    text = f'[zookeeper]\ntls_ca = "{tmp_path / "nope.pem"}"\ntls_key = "k"\n'
    assert parse(text).zookeeper.tls_ca == str(tmp_path / "nope.pem")


def test_tls_file_error_names_an_override(tmp_path: Path) -> None:
    message = error_of("[zookeeper]\nuse_tls = true",
                       overrides={"zookeeper.tls_ca": str(tmp_path / "x.pem")})
    assert message.startswith(f"override zookeeper.tls_ca file {tmp_path / 'x.pem'} not found")


# --- weights, damping, events and task limits through env/overrides ----------------------


def test_new_keys_take_string_overrides() -> None:
    config = parse("", overrides={"node.weight": "2.5", "admin.events": "50",
                                  "assignment.rejoin_grace": "30",
                                  "assignment.debounce": "0.5", "zookeeper.use_tls": "false",
                                  "zookeeper.acl_read_world": "no"})
    assert config.node.weight == 2.5
    assert config.admin.events == 50
    assert (config.assignment.rejoin_grace, config.assignment.debounce) == (30.0, 0.5)
    assert config.zookeeper.use_tls is False and config.zookeeper.acl_read_world is False
    assert error_of("", overrides={"admin.events": "many"}) == (
        "override admin.events='many' is not an integer")
    assert error_of("", overrides={"node.weight": "0"}).startswith(
        "override node.weight must be a number 0.001..1000")


def test_task_to_dict_leaves_out_optional_keys_at_their_default() -> None:
    plain = TaskConfig(name="t", work_name="w", worker_num=1)
    assert "max_per_node" not in plain.to_dict() and "isolation" not in plain.to_dict()
    limited = TaskConfig(name="t", work_name="w", worker_num=4, max_per_node=1,
                         isolation="process")
    data = limited.to_dict()
    assert (data["max_per_node"], data["isolation"]) == (1, "process")
    assert list(data)[-2:] == ["max_per_node", "isolation"]
    for task in (plain, limited):
        assert TaskConfig.from_dict(task.to_dict()) == task


def test_task_from_dict_null_max_per_node_means_no_limit() -> None:
    """An API patch {"max_per_node": null} removes the limit; TOML cannot say null."""
    data = {"name": "t", "workName": "w", "workerNum": 1, "max_per_node": None}
    assert TaskConfig.from_dict(data).max_per_node is None


# --- the shipped example ----------------------------------------------------------------


def test_shipped_app_toml_loads() -> None:
    config = load_config(SHIPPED, env={})
    assert config.cluster.name == "demo"
    assert config.zookeeper.hosts == "127.0.0.1:2181"
    assert config.zookeeper.session_timeout == 6.0
    assert (config.admin.host, config.admin.port) == ("127.0.0.1", 8000)
    assert [(t.name, t.work_name, t.worker_num, t.mode) for t in config.tasks] == [
        ("ticker", "test01", 4, "loop"),
        ("countdown", "countdown", 2, "once"),
        ("poller", "poller", 3, "loop"),
    ]
    assert config.task("ticker") is not None
    assert config.task("ticker").interval == 2.0  # type: ignore[union-attr]


def test_shipped_app_toml_commented_keys_are_valid() -> None:
    """Uncommenting any documented `# key = value` line must still give a valid file."""
    text = SHIPPED.read_text(encoding="utf-8")
    uncommented = re.sub(r"(?m)^# ([a-z_]+ = .+)$", r"\1", text)
    assert uncommented != text
    config = parse_config(uncommented, source="app.toml", env={})
    assert config.node.name == "worker-a"
    assert config.node.works == ("test01", "countdown", "poller")
    assert len(config.tasks) == 3


def test_a_message_names_the_task_once_and_shows_toml_values() -> None:
    """Defect: `task 'ticker' (name 'ticker') ... got True` from an API edit."""
    with pytest.raises(ConfigError) as err:
        TaskConfig.from_dict({"name": "ticker", "workName": "w", "workerNum": True},
                             where="task 'ticker'")
    assert str(err.value) == ("task 'ticker' workerNum must be a non-negative integer, "
                              "got true")


# --- [assignment] formation_window ---------------------------------------------------------


def test_formation_window_defaults_to_a_second_and_zero_disables_it() -> None:
    assert Config().assignment.formation_window == 1.0
    assert parse("[assignment]\nformation_window = 0").assignment.formation_window == 0.0
    assert parse("[assignment]\nformation_window = 2.5").assignment.formation_window == 2.5


@pytest.mark.parametrize(("value", "shown"), [("-1", "got -1"), ('"1s"', "'1s'"),
                                               ("true", "got true"), ("nan", "got nan")])
def test_formation_window_must_be_a_non_negative_number(value: str, shown: str) -> None:
    message = error_of(f"[assignment]\nformation_window = {value}")
    assert "[assignment] formation_window" in message and ">= 0 (seconds)" in message
    assert shown in message


def test_the_default_strategy_is_balanced_and_the_others_stay_selectable() -> None:
    assert Config().assignment.strategy == "balanced"
    for name in ("round_robin", "sticky", "consistent_hash"):
        assert parse(f'[assignment]\nstrategy = "{name}"').assignment.strategy == name
