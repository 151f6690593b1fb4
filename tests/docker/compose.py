"""One docker-compose project of the repository's docker-compose.yml, for one test module.

Compose v1 (Debian's docker-compose 1.29) has no SDK, so bringing the project up and down
goes through its CLI; every check goes through the Docker SDK (containers, exit codes,
what is left over) or the nodes' own HTTP API on the ports published on 127.0.0.1. The
project name is unique per run, the host ports are free ones picked here, so a developer's
own cluster on 8001-8003 is never touched.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.util import missing_tool
from xconsumer.zkserver import free_ports

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
NODES = ("node1", "node2", "node3")
PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"


def compose_argv() -> list[str] | None:
    """The compose client: the v1 `docker-compose`, else the `docker compose` plugin."""
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker") and subprocess.run(
            ["docker", "compose", "version"], capture_output=True, timeout=30,
            check=False).returncode == 0:
        return ["docker", "compose"]
    return None


def http_json(url: str, *, method: str = "GET", token: str | None = None,
              body: Any = None, timeout: float = 5.0) -> tuple[int, Any]:
    """(status, decoded JSON body); HTTP errors are answers too, not exceptions."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"} if data is not None or method != "GET" else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    if method != "GET" and data is None:
        request.data = b"{}"
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


@dataclass
class ComposeProject:
    client: Any  # docker.DockerClient
    argv: list[str]
    profiles: tuple[str, ...] = ()
    name: str = field(default_factory=lambda: f"xctest{uuid.uuid4().hex[:10]}")
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    ports: dict[str, int] = field(default_factory=dict)
    extra_env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        node_ports = free_ports(len(NODES) + 1)
        self.ports = {node: node_ports[i] for i, node in enumerate(NODES)}
        self.ports["prometheus"] = node_ports[-1]

    # -- the compose CLI (up/down only) ---------------------------------------------------
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("XCONSUMER_", "COMPOSE_"))}
        env.update({"XCONSUMER_ADMIN_TOKEN": self.token, "COMPOSE_PROJECT_NAME": self.name,
                    "XCONSUMER_PROMETHEUS_PORT": str(self.ports["prometheus"]),
                    **{f"XCONSUMER_{n.upper()}_PORT": str(self.ports[n]) for n in NODES},
                    **self.extra_env})
        return env

    def compose(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        profiles = [w for p in self.profiles for w in ("--profile", p)]
        argv = [*self.argv, "-f", str(COMPOSE_FILE), "-p", self.name, *profiles, *args]
        proc = subprocess.run(argv, cwd=REPO, env=self.env(), capture_output=True, text=True,
                              timeout=timeout, check=False, start_new_session=True)
        assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
        return proc

    def up(self, *services: str) -> None:
        # The node image was built by the fixture; --no-build keeps compose from doing it again.
        self.compose("up", "-d", "--no-build", *services)

    def down(self) -> None:
        self.compose("down", "--volumes", "--remove-orphans", "--timeout", "10")

    # -- the SDK --------------------------------------------------------------------------
    def _labels(self, service: str | None = None) -> dict[str, list[str]]:
        labels = [f"{PROJECT_LABEL}={self.name}"]
        if service:
            labels.append(f"{SERVICE_LABEL}={service}")
        return {"label": labels}

    def container(self, service: str) -> Any:
        found = self.client.containers.list(all=True, filters=self._labels(service))
        assert len(found) == 1, f"{service}: {len(found)} containers"
        return found[0]

    def leftovers(self) -> list[str]:
        """Every container, network and volume of the project that still exists."""
        label = self._labels()
        containers = self.client.containers.list(all=True, filters=label)
        return ([f"container {c.name}" for c in containers]
                + [f"network {n.name}" for n in self.client.networks.list(filters=label)]
                + [f"volume {v.name}" for v in self.client.volumes.list(filters=label)])

    def logs(self, service: str, tail: int = 40) -> str:
        try:
            return self.container(service).logs(tail=tail).decode(errors="replace")
        except Exception as exc:  # noqa: BLE001 - diagnostics only
            return f"(no logs: {exc})"

    # -- the nodes' HTTP API --------------------------------------------------------------
    def url(self, node: str) -> str:
        return f"http://127.0.0.1:{self.ports[node]}"

    def view(self, node: str) -> dict[str, Any]:
        status, body = http_json(self.url(node) + "/api/cluster")
        assert status == 200, (status, body)
        return body


def every_slot_running(view: dict[str, Any], *, not_on: set[str] = frozenset()
                       ) -> bool:
    """Every desired slot runs on a live member (a once-slot may be done instead), there is
    a leader, nothing is unassigned, and no slot is owned by a node in `not_on`."""
    members = {n["id"] for n in view["nodes"]} - not_on
    if view.get("leader") not in members or view.get("unassigned"):
        return False
    owners, done = view["owners"], set(view["done"])
    for task in view["tasks"]:
        for index in range(task["desired"]):
            key = f"{task['name']}/{index}"
            if owners.get(key) in members:
                continue
            if task.get("mode") == "once" and key in done and key not in owners:
                continue
            return False
    return True


@contextmanager
def running_project(client: Any, profiles: tuple[str, ...] = (), services: tuple[str, ...] = ()
                    ) -> Iterator[ComposeProject]:
    """A project brought up for the block and torn down after it, leaving nothing behind."""
    argv = compose_argv()
    if argv is None:
        missing_tool("no docker compose client (bin/setup --tests installs docker-compose)")
    project = ComposeProject(client, argv, profiles=profiles)
    try:
        project.up(*services)
        yield project
    finally:
        project.down()
        left = project.leftovers()
        assert not left, f"compose down left {left}"
