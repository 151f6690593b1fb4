"""A Docker engine for the docker tests, and the images they run.

The tests talk to dockerd through its socket with the Docker SDK. When no engine answers,
the session starts `dockerd` itself (as root: it needs to), with a pidfile of its own, and
stops exactly that process (by the PID it wrote) at the end; its data root stays the
default, so images built here are cached for the next run. Without an engine and without
the means to start one the tests are skipped on a developer's machine and fail under
CI=true (see `missing_tool`).

Images: `bin/docker-images` makes sure the base images exist (pulled, or built from Debian
where no registry is reachable), then the node image is built from the repository's
Dockerfile with the SDK, as `docker compose up --build` would.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.util import missing_tool, wait_until

try:
    import docker
except ImportError:  # pragma: no cover - bin/setup installs the test extra
    docker = None

REPO = Path(__file__).resolve().parents[2]
NODE_IMAGE = "xconsumer:local"
DOCKERD_START_TIMEOUT = 60.0
DOCKERD_STOP_TIMEOUT = 30.0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.docker)


def _client() -> docker.DockerClient | None:
    try:
        client = docker.from_env(version="auto", timeout=120)
        client.ping()
        return client
    except Exception:  # noqa: BLE001 - any failure means "no engine answers"
        return None


def _stop_dockerd(pid: int, proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM lets dockerd stop its containerd and unmount cleanly; SIGKILL only if it hangs."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=DOCKERD_STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=10)


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    if docker is None:
        missing_tool("the docker SDK is not installed (bin/setup --tests installs it)")
    client = _client()
    if client is not None:
        yield client
        client.close()
        return
    dockerd = shutil.which("dockerd")
    if dockerd is None:
        missing_tool("no Docker engine answers and dockerd is not installed "
                     "(bin/setup --tests installs Debian's docker.io)")
    if os.geteuid() != 0:
        missing_tool("no Docker engine answers, and starting dockerd needs root")
    workdir = Path(tempfile.mkdtemp(prefix="xc-dockerd-"))
    pidfile = workdir / "dockerd.pid"
    log = (workdir / "dockerd.log").open("wb")
    proc = subprocess.Popen([dockerd, "--pidfile", str(pidfile)], stdout=log,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        # Another test session may have started an engine a moment earlier: then ours
        # exits (socket taken) and theirs answers, which serves as well.
        client = wait_until(
            _client, DOCKERD_START_TIMEOUT, interval=0.2,
            message=lambda: f"dockerd did not answer (exit {proc.poll()}); log:\n"
                            + (workdir / "dockerd.log").read_text(errors="replace")[-3000:])
        assert client is not None
        yield client
        client.close()
    finally:
        # The PID dockerd wrote is the one to stop; it is the process started above.
        if proc.poll() is None:
            pid = int(pidfile.read_text().strip()) if pidfile.exists() else proc.pid
            assert pid == proc.pid, f"pidfile names {pid}, started {proc.pid}"
            _stop_dockerd(pid, proc)
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def base_images(docker_client: docker.DockerClient) -> None:
    """python:3.11-slim, zookeeper:3.8, prom/prometheus and the Debian base, however made."""
    started = time.monotonic()
    proc = subprocess.run([str(REPO / "bin" / "docker-images")], capture_output=True,
                          text=True, timeout=600, check=False, start_new_session=True)
    assert proc.returncode == 0, f"bin/docker-images failed:\n{proc.stdout}\n{proc.stderr}"
    print(f"\nbase images ready in {time.monotonic() - started:.1f} s")


@pytest.fixture(scope="session")
def node_image(docker_client: docker.DockerClient, base_images: None) -> str:
    """The node image from the repository's Dockerfile (the layer cache makes a rebuild cheap)."""
    started = time.monotonic()
    try:
        docker_client.images.build(path=str(REPO), tag=NODE_IMAGE, rm=True, forcerm=True)
    except docker.errors.BuildError as exc:
        log = "".join(str(chunk.get("stream", chunk)) for chunk in exc.build_log)
        pytest.fail(f"docker build failed: {exc}\n{log[-4000:]}")
    print(f"\n{NODE_IMAGE} built in {time.monotonic() - started:.1f} s")
    return NODE_IMAGE
