"""Dockerfile, .dockerignore and docker-compose.yml, checked without a Docker daemon.

The structural checks always run (PyYAML plus a small Dockerfile reader). The compose file is
also handed to a real Compose client (`docker compose` or `docker-compose`) when one is
installed; `config` only parses and validates, so no daemon is needed.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.util import missing_tool
from xconsumer.config import ENV_VARS

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
COMPOSE_FILE = REPO / "docker-compose.yml"
NODES = ("node1", "node2", "node3")
ZK_SERVICE = "zookeeper"


# --- Dockerfile ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case, e.g. "COPY"
    args: str  # the rest of the logical line, continuations joined
    line: int  # first physical line, for messages

    def exec_form(self) -> list[str]:
        """The JSON-array form (`CMD ["a", "b"]`); fails the test on shell form."""
        try:
            value = json.loads(self.args)
        except json.JSONDecodeError:
            pytest.fail(f"Dockerfile line {self.line}: {self.keyword} should use the JSON "
                        f"(exec) form, got {self.args!r}")
        assert isinstance(value, list) and all(isinstance(v, str) for v in value), self.args
        return value


def parse_dockerfile(text: str) -> list[Instruction]:
    """Logical instructions: comments and blank lines dropped, `\\` continuations joined."""
    out: list[Instruction] = []
    parts: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not parts and (not stripped or stripped.startswith("#")):
            continue
        if parts and stripped.startswith("#"):
            continue  # comment lines inside a continued instruction are skipped by Docker
        if not parts:
            start = number
        if stripped.endswith("\\"):
            parts.append(stripped[:-1].strip())
            continue
        parts.append(stripped)
        logical = " ".join(p for p in parts if p)
        parts = []
        keyword, _, args = logical.partition(" ")
        out.append(Instruction(keyword.upper(), args.strip(), start))
    assert not parts, "Dockerfile ends inside a line continuation"
    return out


def _without_flags(words: list[str]) -> list[str]:
    return [w for w in words if not w.startswith("--")]


@pytest.fixture(scope="module")
def dockerfile() -> list[Instruction]:
    assert DOCKERFILE.is_file(), "Dockerfile missing at the repository root"
    return parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))


def _all(instructions: list[Instruction], keyword: str) -> list[Instruction]:
    return [i for i in instructions if i.keyword == keyword]


def _one(instructions: list[Instruction], keyword: str) -> Instruction:
    found = _all(instructions, keyword)
    assert found, f"Dockerfile has no {keyword}"
    # Only the last ENTRYPOINT/CMD/... takes effect; more than one is a likely mistake.
    assert len(found) == 1, f"Dockerfile has {len(found)} {keyword} instructions"
    return found[0]


def _copies(instructions: list[Instruction]) -> list[tuple[list[str], str]]:
    """(sources, destination) of every COPY/ADD from the build context."""
    result = []
    for ins in _all(instructions, "COPY") + _all(instructions, "ADD"):
        words = shlex.split(ins.args)
        if any(w.startswith("--from") for w in words):
            continue  # from another stage, not from the context
        paths = _without_flags(words)
        assert len(paths) >= 2, f"line {ins.line}: {ins.keyword} needs a source and a target"
        result.append((paths[:-1], paths[-1]))
    return result


def _container_path(source: str, dest: str, workdir: str = "/") -> str:
    """Where COPY puts `source`: into `dest/` if dest ends with a slash, else at `dest`."""
    if not dest.startswith("/"):
        dest = f"{workdir.rstrip('/')}/{dest}"
    if dest.endswith("/"):
        return dest + Path(source).name
    return dest


def _exposed_ports(instructions: list[Instruction]) -> set[int]:
    ports = set()
    for ins in _all(instructions, "EXPOSE"):
        for word in ins.args.split():
            ports.add(int(word.split("/")[0]))
    return ports


def test_base_image_is_python_311_or_newer(dockerfile: list[Instruction]) -> None:
    froms = _all(dockerfile, "FROM")
    assert froms, "Dockerfile has no FROM"
    image = _without_flags(froms[-1].args.split())[0]
    match = re.fullmatch(r"(?:docker\.io/(?:library/)?)?python:(\d+)\.(\d+)[\w.\-]*", image)
    assert match, f"final stage should build on an official python image, got {image!r}"
    assert (int(match[1]), int(match[2])) >= (3, 11), f"{image}: xconsumer needs Python 3.11+"


def test_runs_as_a_non_root_user(dockerfile: list[Instruction]) -> None:
    users = _all(dockerfile, "USER")
    assert users, "Dockerfile never switches away from root (no USER)"
    user = users[-1].args.split(":")[0].strip()
    assert user not in ("root", "0", ""), f"final USER is {user!r}"
    # The install must happen before dropping privileges, and nothing may run as root later.
    last_user = dockerfile.index(users[-1])
    pip_runs = [i for i in _all(dockerfile, "RUN") if "pip install" in i.args]
    assert pip_runs, "Dockerfile never pip-installs the package"
    assert all(dockerfile.index(i) < last_user for i in pip_runs), "pip install runs after USER"


def test_installs_the_package_without_pip_cache(dockerfile: list[Instruction]) -> None:
    pip_runs = [i.args for i in _all(dockerfile, "RUN") if "pip install" in i.args]
    assert any("--no-cache-dir" in args for args in pip_runs), pip_runs
    copied = {Path(s).name for sources, _ in _copies(dockerfile) for s in sources}
    assert {"pyproject.toml", "xconsumer"} <= copied, f"package sources not copied: {copied}"


def test_entrypoint_is_the_console_script(dockerfile: list[Instruction]) -> None:
    entrypoint = _one(dockerfile, "ENTRYPOINT").exec_form()
    assert entrypoint == ["xconsumer"], entrypoint
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "scripts"
    ]
    assert entrypoint[0] in scripts, f"pyproject.toml defines no console script {entrypoint[0]}"


def test_cmd_config_and_works_are_copied_into_the_image(dockerfile: list[Instruction]) -> None:
    cmd = _one(dockerfile, "CMD").exec_form()
    assert cmd[0] == "run", cmd
    options = dict(zip(cmd[1::2], cmd[2::2], strict=False))
    assert "--config" in options and "--works" in options, cmd
    targets = {
        _container_path(src, dest) for sources, dest in _copies(dockerfile) for src in sources
    }
    for option in ("--config", "--works"):
        path = options[option]
        assert path.startswith("/"), f"{option} {path}: use an absolute path in CMD"
        assert path in targets, f"CMD {option} {path} is not a COPY target ({sorted(targets)})"
    workdirs = _all(dockerfile, "WORKDIR")
    assert workdirs and workdirs[-1].args == str(Path(options["--config"]).parent), (
        "WORKDIR should be the directory holding the config"
    )


def test_every_copied_file_exists_and_is_not_dockerignored(
    dockerfile: list[Instruction],
) -> None:
    patterns = _dockerignore_patterns()
    for sources, _dest in _copies(dockerfile):
        for source in sources:
            assert not source.startswith(("http://", "https://")), source
            matches = list(REPO.glob(source)) if any(c in source for c in "*?[") else [
                REPO / source
            ]
            assert matches and all(m.exists() for m in matches), (
                f"Dockerfile copies {source!r}, which does not exist in the repository"
            )
            ignored = [p for p in patterns if _ignored(source, p)]
            assert not ignored, f"{source!r} is copied but excluded by .dockerignore {ignored}"


def test_admin_listens_on_all_interfaces_and_is_exposed(dockerfile: list[Instruction]) -> None:
    env = " ".join(i.args for i in _all(dockerfile, "ENV"))
    assert re.search(r"\bXCONSUMER_ADMIN_HOST[= ]0\.0\.0\.0\b", env), env
    assert "XCONSUMER_ADMIN_HOST" in ENV_VARS, "the app no longer reads XCONSUMER_ADMIN_HOST"
    assert _exposed_ports(dockerfile) == {8000}


def test_healthcheck_probes_healthz_without_curl(dockerfile: list[Instruction]) -> None:
    check = _one(dockerfile, "HEALTHCHECK").args
    assert "curl" not in check and "wget" not in check, "python:*-slim has neither"
    assert "urllib" in check and "/healthz" in check, check
    port = next(iter(_exposed_ports(dockerfile)))
    assert f"127.0.0.1:{port}" in check or str(port) in check, f"probe is not on port {port}"


def test_stops_with_sigterm(dockerfile: list[Instruction]) -> None:
    assert _one(dockerfile, "STOPSIGNAL").args in ("SIGTERM", "15")


# --- .dockerignore -------------------------------------------------------------------------


def _dockerignore_patterns() -> list[str]:
    assert DOCKERIGNORE.is_file(), ".dockerignore missing at the repository root"
    lines = DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]


def _ignored(path: str, pattern: str) -> bool:
    """Rough .dockerignore matching: the pattern or any leading directory of `path`."""
    if pattern.startswith("!"):
        return False
    pattern = pattern.strip("/").removeprefix("**/")
    parts = Path(path).parts
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)] + list(parts)
    return any(fnmatch.fnmatchcase(c, pattern) for c in candidates)


@pytest.mark.parametrize(
    "path",
    [".venv", ".git", "tests", ".pytest_cache", ".ruff_cache", ".run", "docs",
     "bench/results", "xconsumer/__pycache__"],
)
def test_dockerignore_keeps_local_state_out_of_the_context(path: str) -> None:
    patterns = _dockerignore_patterns()
    assert any(_ignored(path, p) for p in patterns), f"{path} is sent to the Docker daemon"


# --- docker-compose.yml --------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    assert COMPOSE_FILE.is_file(), "docker-compose.yml missing at the repository root"
    data = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(data, dict) and isinstance(data.get("services"), dict), data
    return data


_DEFAULTED_RE = re.compile(r"\$\{(\w+):?-([^}]*)\}")


def _defaults(value: str) -> str:
    """`${VAR:-default}` as compose resolves it when VAR is unset; `${VAR:?msg}` stays."""
    return _DEFAULTED_RE.sub(lambda m: m[2], value)


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # ["KEY=value", ...]
        env = dict(item.partition("=")[::2] for item in env)
    return {str(k): "" if v is None else _defaults(str(v)) for k, v in env.items()}


def _ports(service: dict[str, Any]) -> list[tuple[str, int, int]]:
    """(host ip, host port, container port) of each published port."""
    result = []
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):  # long syntax
            ip, host, target = entry.get("host_ip", ""), entry["published"], entry["target"]
            ip, host = _defaults(str(ip)), _defaults(str(host))
        else:
            fields = _defaults(str(entry)).split("/")[0].split(":")
            assert len(fields) == 3, f"port {entry!r} does not name a host IP"
            ip, host, target = fields
        result.append((str(ip), int(host), int(target)))
    return result


def _seconds(duration: str | int) -> float:
    if isinstance(duration, int | float):
        return float(duration)
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, f"bad duration {duration!r}"
    return sum(float(n) * units[u] for n, u in parts)


def test_zookeeper_service(compose: dict[str, Any]) -> None:
    zk = compose["services"].get(ZK_SERVICE)
    assert zk, f"no {ZK_SERVICE} service"
    assert str(zk.get("image", "")).startswith("zookeeper:3."), zk.get("image")
    test = zk.get("healthcheck", {}).get("test")
    assert test, "zookeeper needs a healthcheck for depends_on: service_healthy"
    text = " ".join(test) if isinstance(test, list) else str(test)
    assert "ruok" in text or "zkServer.sh status" in text, text
    if "ruok" in text:
        allowed = _environment(zk).get("ZOO_4LW_COMMANDS_WHITELIST", "")
        assert "ruok" in allowed.split(","), "ruok must be whitelisted for the healthcheck"


def test_three_nodes_share_one_image(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(NODES) <= set(services), f"services: {sorted(services)}"
    images = {services[n].get("image") for n in NODES}
    assert len(images) == 1 and None not in images, f"nodes use images {images}"
    builds = [services[n]["build"] for n in NODES if "build" in services[n]]
    assert builds, "no node builds the image from the Dockerfile"
    for build in builds:
        context = build if isinstance(build, str) else build.get("context", ".")
        dockerfile = "Dockerfile" if isinstance(build, str) else build.get(
            "dockerfile", "Dockerfile")
        assert (COMPOSE_FILE.parent / context / dockerfile).resolve() == DOCKERFILE, build


def test_nodes_point_at_the_zookeeper_service(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for node in NODES:
        hosts = _environment(services[node]).get("XCONSUMER_ZK")
        assert hosts, f"{node}: XCONSUMER_ZK not set (app.toml says 127.0.0.1)"
        for host_port in hosts.split("/")[0].split(","):
            host, _, port = host_port.partition(":")
            assert host == ZK_SERVICE and port in ("", "2181"), f"{node}: XCONSUMER_ZK={hosts}"


def test_nodes_have_unique_names(compose: dict[str, Any]) -> None:
    names = [_environment(compose["services"][n]).get("XCONSUMER_NAME") for n in NODES]
    assert all(names) and len(set(names)) == len(names), names
    assert all(re.fullmatch(r"[A-Za-z0-9_.\-]{1,64}", name) for name in names), names


def test_node_environment_is_understood_by_the_app(compose: dict[str, Any]) -> None:
    for node in NODES:
        unknown = {k for k in _environment(compose["services"][node])
                   if k.startswith("XCONSUMER_") and k not in ENV_VARS
                   and k != "XCONSUMER_LOG_LEVEL"}
        assert not unknown, f"{node}: xconsumer ignores {sorted(unknown)}"


def test_admin_ports_are_published_on_loopback_only(
    compose: dict[str, Any], dockerfile: list[Instruction]
) -> None:
    exposed = _exposed_ports(dockerfile)
    host_ports = []
    for node in NODES:
        ports = _ports(compose["services"][node])
        assert ports, f"{node}: admin port not published"
        for ip, host, target in ports:
            assert ip == "127.0.0.1", f"{node}: {ip or 'all interfaces'}:{host} is not loopback"
            assert target in exposed, f"{node}: container port {target} not EXPOSEd {exposed}"
            host_ports.append(host)
    assert len(set(host_ports)) == len(host_ports), f"host ports clash: {host_ports}"
    assert sorted(host_ports) == [8001, 8002, 8003]
    for name, service in compose["services"].items():
        for ip, host, _ in _ports(service):
            assert ip == "127.0.0.1", f"{name}: port {host} is published beyond loopback"


def test_admin_token_is_required_and_the_published_hosts_are_allowed(
    compose: dict[str, Any]
) -> None:
    """The admin listens on 0.0.0.0 in the containers: no token must stop the cluster from
    starting (`${VAR:?message}`), never leave changes open. Requests come in through the
    published ports with Host 127.0.0.1:800N, which is not the node's own 8000, so those
    names are allowed hosts (any port); the healthcheck probes 127.0.0.1:8000 directly."""
    from xconsumer.config import parse_config

    for node in NODES:
        env = _environment(compose["services"][node])
        token = env.get("XCONSUMER_ADMIN_TOKEN", "")
        assert re.fullmatch(r"\$\{XCONSUMER_ADMIN_TOKEN:\?[^}]+\}", token), (
            f"{node}: XCONSUMER_ADMIN_TOKEN={token!r} must be required (${{VAR:?message}})")
        allowed = env.get("XCONSUMER_ADMIN_ALLOWED_HOSTS", "")
        config = parse_config("", env={"XCONSUMER_ADMIN_ALLOWED_HOSTS": allowed})
        assert {"127.0.0.1", "localhost"} <= set(config.admin.allowed_hosts), (node, allowed)


def test_nodes_wait_for_a_healthy_zookeeper(compose: dict[str, Any]) -> None:
    for node in NODES:
        depends = compose["services"][node].get("depends_on")
        assert depends and ZK_SERVICE in depends, f"{node}: no depends_on {ZK_SERVICE}"
        if isinstance(depends, dict):
            condition = (depends[ZK_SERVICE] or {}).get("condition")
            assert condition == "service_healthy", f"{node}: depends_on condition {condition}"


def test_nodes_get_time_to_stop_gracefully(compose: dict[str, Any]) -> None:
    config = tomllib.loads((REPO / "app.toml").read_text(encoding="utf-8"))
    # `xconsumer run` waits up to the longest task stop_timeout (default 10) + 5 s on SIGTERM.
    budget = max([float(t.get("stop_timeout", 10)) for t in config.get("task", [])] + [0]) + 5
    for node in NODES:
        service = compose["services"][node]
        grace = _seconds(service.get("stop_grace_period", "10s"))
        assert grace >= max(budget, 15), f"{node}: stop_grace_period {grace}s < {budget}s"
        assert service.get("stop_signal", "SIGTERM") == "SIGTERM"
        assert service.get("restart") in ("unless-stopped", "on-failure", "always"), node


def test_compose_file_stays_valid_for_docker_compose_v1(compose: dict[str, Any]) -> None:
    # docker-compose 1.29 (Debian's) rejects any unknown top-level key, `name:` included.
    allowed = {"version", "services", "networks", "volumes", "secrets", "configs"}
    extra = {k for k in compose if k not in allowed and not k.startswith("x-")}
    assert not extra, f"top-level keys docker-compose v1 rejects: {sorted(extra)}"


# --- a real Compose client, when one is installed ------------------------------------------


def _compose_clients() -> tuple[list[tuple[str, list[str]]], list[str]]:
    """([(version line, argv prefix)], [why each candidate was unusable])."""
    found, missing = [], []
    for argv in (["docker", "compose"], ["docker-compose"]):
        label = " ".join(argv)
        exe = shutil.which(argv[0])
        if exe is None:
            missing.append(f"{argv[0]} not on PATH")
            continue
        try:
            proc = subprocess.run([exe, *argv[1:], "version"], capture_output=True, text=True,
                                  timeout=20, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            missing.append(f"`{label} version` failed: {exc}")
            continue
        if proc.returncode != 0:
            reason = (proc.stderr or proc.stdout).strip().splitlines()
            missing.append(f"`{label} version` exited {proc.returncode}"
                           + (f" ({reason[0]})" if reason else ""))
            continue
        version = (proc.stdout.strip().splitlines() or [label])[0]
        found.append((f"{label}: {version}", [exe, *argv[1:]]))
    return found, missing


def test_compose_client_accepts_the_file() -> None:
    clients, missing = _compose_clients()
    if not clients:
        missing_tool("no docker compose client (bin/setup --tests installs docker-compose): "
                     + "; ".join(missing))
    base_env = {k: v for k, v in os.environ.items() if k != "XCONSUMER_ADMIN_TOKEN"}
    for version, argv in clients:
        # `config` parses, interpolates and validates against the client's schema; it talks
        # to no daemon. Its normalised output also proves the YAML merge keys resolved.
        proc = subprocess.run([*argv, "-f", str(COMPOSE_FILE), "config"], cwd=REPO,
                              capture_output=True, text=True, timeout=60, check=False,
                              env={**base_env, "XCONSUMER_ADMIN_TOKEN": "t0ken"})
        assert proc.returncode == 0, f"{version} rejected docker-compose.yml:\n{proc.stderr}"
        resolved = yaml.safe_load(proc.stdout)
        for node in NODES:
            env = _environment(resolved["services"][node])
            assert env.get("XCONSUMER_NAME") == node, f"{version}: {node} env {env}"
            assert env.get("XCONSUMER_ZK") == f"{ZK_SERVICE}:2181", f"{version}: {env}"
            assert env.get("XCONSUMER_ADMIN_TOKEN") == "t0ken", f"{version}: {env}"
        # Without a token the cluster does not start at all (fail safe), with a message.
        proc = subprocess.run([*argv, "-f", str(COMPOSE_FILE), "config"], cwd=REPO,
                              capture_output=True, text=True, timeout=60, check=False,
                              env=base_env)
        assert proc.returncode != 0, f"{version} accepted the file without an admin token"
        assert "XCONSUMER_ADMIN_TOKEN" in proc.stderr + proc.stdout, proc.stderr


# --- what the nodes advertise, and the optional profiles ------------------------------------


def test_nodes_advertise_their_published_port_and_answer_to_their_service_name(
    compose: dict[str, Any]
) -> None:
    """Every node reports its admin URL to the cluster: it must be the published one (the
    dashboard's links), and the node must accept that Host and its compose service name
    (Prometheus scrapes node1:8000 on the compose network)."""
    from xconsumer.config import parse_config

    for node in NODES:
        service = compose["services"][node]
        env = _environment(service)
        [(ip, host_port, _)] = _ports(service)
        config = parse_config("", env={k: v for k, v in env.items() if k in ENV_VARS and
                                       k != "XCONSUMER_ADMIN_TOKEN"})
        assert config.admin.advertise_url == f"http://{ip}:{host_port}", (node, env)
        assert {ip, node} <= set(config.admin.allowed_hosts), (node, env)


def test_node_healthchecks_probe_healthz(compose: dict[str, Any]) -> None:
    for node in NODES:
        check = compose["services"][node].get("healthcheck") or {}
        text = " ".join(check.get("test", []))
        assert "/healthz" in text and "curl" not in text, f"{node}: {check}"
        assert _seconds(check.get("interval", "30s")) <= 10, f"{node}: probe too rare"


def test_monitoring_profile_scrapes_every_node_with_the_shipped_rules(
    compose: dict[str, Any]
) -> None:
    prometheus = compose["services"].get("prometheus")
    assert prometheus and prometheus.get("profiles") == ["monitoring"], prometheus
    mounts = {m.split(":")[1]: COMPOSE_FILE.parent / m.split(":")[0]
              for m in prometheus.get("volumes", [])}
    config_file = mounts.get("/etc/prometheus/prometheus.yml")
    assert config_file and config_file.is_file(), mounts
    config = yaml.safe_load(config_file.read_text(encoding="utf-8"))
    targets = {t for job in config["scrape_configs"] for sc in job["static_configs"]
               for t in sc["targets"]}
    assert targets == {f"{n}:8000" for n in NODES}, targets
    for rules in config["rule_files"]:
        mounted = mounts.get(str(Path("/etc/prometheus") / rules))
        assert mounted and mounted.is_file(), f"rule file {rules} is not mounted: {mounts}"


def test_ensemble_profile_is_three_members_that_know_each_other(
    compose: dict[str, Any]
) -> None:
    members = {name: s for name, s in compose["services"].items()
               if "ensemble" in (s.get("profiles") or [])}
    assert sorted(members) == ["zk1", "zk2", "zk3"], sorted(members)
    ids = set()
    for name, service in members.items():
        env = _environment(service)
        ids.add(env["ZOO_MY_ID"])
        servers = dict(e.split("=", 1) for e in env["ZOO_SERVERS"].split())
        assert servers == {f"server.{i}": f"zk{i}:2888:3888;2181" for i in (1, 2, 3)}, name
        assert "ruok" in env.get("ZOO_4LW_COMMANDS_WHITELIST", "").split(","), name
        assert service.get("healthcheck"), name
    assert ids == {"1", "2", "3"}, ids


def test_compose_client_accepts_the_profiles() -> None:
    clients, missing = _compose_clients()
    if not clients:
        missing_tool("no docker compose client (bin/setup --tests installs docker-compose): "
                     + "; ".join(missing))
    env = {**os.environ, "XCONSUMER_ADMIN_TOKEN": "t0ken"}
    for version, argv in clients:
        proc = subprocess.run([*argv, "-f", str(COMPOSE_FILE), "--profile", "monitoring",
                               "--profile", "ensemble", "config", "--services"], cwd=REPO,
                              capture_output=True, text=True, timeout=60, check=False, env=env)
        assert proc.returncode == 0, f"{version}: {proc.stderr}"
        services = set(proc.stdout.split())
        assert {"prometheus", "zk1", "zk2", "zk3", *NODES} <= services, (version, services)
