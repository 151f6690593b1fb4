"""`isolation = "container"` (a task with `image`): each slot runs its image as a container.

One container run is one handler run, so the slot's loop is `handler_loop` itself, with a
"handler" that runs one container to completion: exit code 0 is a success (once: done;
loop: a new container after `interval`), anything else a failure, retried with the usual
backoff, run_timeout and breaker, reported through the same `report` calls (so state,
metrics and events work unchanged). A run that ends because the slot is stopping (revoke,
leave, lease end) or because it passed run_timeout is not a failure of the container: the
loop sees `ctx.stopping` / the run's deadline, exactly as for a thread handler that
returned early.

At most one: every container is removed (`remove(force=True)`) and confirmed absent through
the engine before `run()` returns, because returning is what releases the owner znode. A
container that cannot be confirmed gone (the engine does not answer) keeps the slot, and
its owner znode, stuck until it can, like a process that survives SIGKILL.

Stopping: `container.stop(timeout=stop_timeout)` sends the image's stop signal (SIGTERM by
default) and then SIGKILL; containers run with `init=True`, so the signal reaches the
program even when it is a shell that ignores signals as PID 1, and zombies are reaped. A
stop caused by the lease ending cannot wait for the whole stop_timeout (the session may
expire and another node start the slot): it gets at most a sixth of the session, as a
child process does (see isolation.py).

Crashes: every container is labelled (`xconsumer.cluster`, `.node`, `.task`, `.slot`,
`.fence`) and named uniquely; a node removes the leftovers labelled with its cluster and
name when it starts, before it joins. A node killed with SIGKILL (or frozen) cannot stop its
containers: they run on until that node starts again or someone runs `docker rm -f`, so
the next owner of the slot may run beside them. Unlike a child process (which watches its
parent's lease in shared memory), a container has no such guard yet; see the README.
"""

from __future__ import annotations

import math
import os
import threading
import time
import uuid
from typing import Any

from loguru import logger

from ..loop import Report, handler_loop
from .thread import _LiveTask

PROBE_TIMEOUT = 3.0  # seconds the start-up ping may take
API_TIMEOUT = 30.0  # seconds any other engine call may take (a stop adds its own timeout)
POLL = 0.1  # seconds between looks at a running container
GONE_TIMEOUT = 10.0  # seconds after which a container that will not go makes the slot stuck
LOG_JOIN_TIMEOUT = 2.0
LABEL = "xconsumer"
_SOCKET = "/var/run/docker.sock"


class ContainerFailed(Exception):
    """A container run that ended with a non-zero exit code (or could not start)."""


def engine(timeout: float = API_TIMEOUT) -> Any | None:
    """A Docker SDK client whose engine answered a ping, or None (no SDK, no engine)."""
    if not os.environ.get("DOCKER_HOST") and not os.path.exists(_SOCKET):
        return None  # the common case without Docker: no import, no connection attempt
    try:
        import docker

        client = docker.from_env(timeout=timeout)
    except Exception:  # noqa: BLE001 - no SDK or a bad DOCKER_HOST: no engine
        return None
    try:
        client.ping()
    except Exception:  # noqa: BLE001 - any failure means "no engine answers"
        client.close()
        return None
    return client


def engine_available() -> bool:
    """What a node advertises as `docker` in its member data: checked once, at start."""
    client = engine(PROBE_TIMEOUT)
    if client is None:
        return False
    client.close()
    return True


def labels(cluster: str, node: str) -> list[str]:
    """The label filters that select one node's containers."""
    return [f"{LABEL}.cluster={cluster}", f"{LABEL}.node={node}"]


def remove_leftovers(cluster: str, node: str) -> int:
    """Remove the containers a previous run of this node left (it was killed before it could
    remove them): they must not run beside the slots' next owners. Returns how many."""
    client = engine()
    if client is None:
        return 0
    try:
        found = client.containers.list(all=True, filters={"label": labels(cluster, node)})
        for container in found:
            logger.warning("removing container {} left by an earlier run of this node "
                           "(task {}, slot {})", container.name,
                           container.labels.get(f"{LABEL}.task"),
                           container.labels.get(f"{LABEL}.slot"))
            remove_gone(client, container.id, logger)
        return len(found)
    finally:
        client.close()


def remove_gone(client: Any, container_id: str, log: Any, on_late: Any = None) -> None:
    """Remove a container and return only once the engine says it does not exist.

    Kill first, look after (a look first could race a container that is still starting).
    Past GONE_TIMEOUT `on_late` is called once (the slot is then reported stuck) and this
    keeps trying: the owner znode must outlive the container."""
    import requests

    import docker

    started = time.monotonic()
    reported = False
    while True:
        try:
            client.api.remove_container(container_id, force=True)
        except docker.errors.NotFound:
            return
        except (docker.errors.APIError, requests.RequestException) as exc:
            error = f"{type(exc).__name__}: {exc}"
        else:
            error = "still listed after remove"
        try:
            client.api.inspect_container(container_id)
        except docker.errors.NotFound:
            return
        except (docker.errors.APIError, requests.RequestException) as exc:
            error = f"{type(exc).__name__}: {exc}"
        waited = time.monotonic() - started
        if waited > GONE_TIMEOUT and not reported:
            reported = True
            log.error("container {} not confirmed gone after {:.1f}s ({}): keeping the owner "
                      "znode until it is", container_id[:12], waited, error)
            if on_late is not None:
                on_late()
        time.sleep(POLL if not reported else 1.0)


def _forward_logs(container: Any, log: Any) -> None:
    """Body of the log thread: the container's stdout and stderr, line by line, through the
    node's logger (bound with task and slot). Ends when the container ends."""
    rest = b""
    try:
        for chunk in container.logs(stream=True, follow=True, stdout=True, stderr=True):
            *lines, rest = (rest + chunk).split(b"\n")
            for line in lines:
                log.info("container: {}", line.decode(errors="replace").rstrip("\r"))
    except Exception as exc:  # noqa: BLE001 - a broken stream must not kill the slot
        log.debug("log stream of container {} ended: {}", container.name, exc)
    if rest:
        log.info("container: {}", rest.decode(errors="replace").rstrip("\r"))


class _OneContainer:
    """The "handler" the loop calls: one container, from creation to confirmed removal."""

    def __init__(self, runner: Any, client: Any, fence: int) -> None:
        self._runner = runner
        self._client = client
        self._fence = fence

    def __call__(self, run: Any) -> None:
        runner, task = self._runner, self._runner.task
        slot = runner.slot.index
        cluster = runner._paths.cluster
        name = f"xc-{runner.node}-{task.name}-{slot}-{uuid.uuid4().hex[:8]}"
        env = {**dict(task.env or ()), "XCONSUMER_TASK": task.name,
               "XCONSUMER_SLOT": str(slot), "XCONSUMER_FENCE": str(self._fence),
               "XCONSUMER_NODE": runner.node, "XCONSUMER_GENERATION": str(runner.generation)}
        tags = {f"{LABEL}.cluster": cluster, f"{LABEL}.node": runner.node,
                f"{LABEL}.task": task.name, f"{LABEL}.slot": str(slot),
                f"{LABEL}.fence": str(self._fence)}
        container = self._create(task.image, list(task.command) if task.command else None,
                                 name=name, environment=env, labels=tags, init=True)
        logs: threading.Thread | None = None
        try:
            container.start()
            runner.log.info("container {} started from {}", name, task.image)
            logs = threading.Thread(target=_forward_logs, args=(container, runner.log),
                                    name=f"xc-logs-{task.name}-{slot}", daemon=True)
            logs.start()
            code, stopped = self._wait(container, run)
            logs.join(LOG_JOIN_TIMEOUT)  # the last lines, before the container goes
        finally:
            remove_gone(self._client, container.id, runner.log,
                        lambda: runner.request_stop("its container would not go"))
            if logs is not None:
                logs.join(LOG_JOIN_TIMEOUT)
                if logs.is_alive():
                    runner.log.warning("log thread of container {} still running", name)
        if stopped:
            runner.log.info("container {} stopped (exit code {})", name, code)
            return  # a stop is not the container's failure: the loop sees ctx.stopping
        if code is None:
            raise ContainerFailed(f"container {name} was removed while it ran")
        if code != 0:
            raise ContainerFailed(f"container {name} exited with code {code}")

    def _create(self, image: str, command: list[str] | None, **options: Any) -> Any:
        """Create the container, pulling the image first when the engine does not have it."""
        import docker

        try:
            return self._client.containers.create(image, command, **options)
        except docker.errors.ImageNotFound:
            self._runner.log.info("pulling image {}", image)
            self._client.images.pull(image)
            return self._client.containers.create(image, command, **options)

    def _wait(self, container: Any, run: Any) -> tuple[int | None, bool]:
        """Until the container exits: (exit code, whether we stopped it). `run.stopping`
        turns true on a stop request, at the lease's end and past run_timeout."""
        stopped = False
        import docker

        while True:
            try:
                container.reload()
            except docker.errors.NotFound:
                return None, stopped  # removed by someone else: gone, without an exit code
            state = container.attrs.get("State", {})
            if state.get("Status") in ("exited", "dead"):
                return state.get("ExitCode"), stopped
            if run.stopping and not stopped:
                stopped = True
                self._stop(container)
                continue
            run.stop_event.wait(POLL)

    def _stop(self, container: Any) -> None:
        runner = self._runner
        lease = runner._lease
        limit = runner.task.stop_timeout
        if not lease.valid():
            limit = min(limit, lease.session_timeout / 6.0)
        seconds = max(1, math.ceil(limit))  # the engine takes whole seconds
        runner.log.info("stopping container {} (SIGTERM, SIGKILL after {}s)", container.name,
                        seconds)
        try:
            container.stop(timeout=seconds)
        except Exception as exc:  # noqa: BLE001 - removal (force) follows whatever happened
            runner.log.warning("stopping container {} failed ({}); removing it by force",
                               container.name, exc)
            raise ContainerFailed(f"container {container.name} could not be stopped") from exc


class ContainerExecutor:
    kind = "container"

    def run(self, runner: Any, ctx: Any, handler: Any, report: Report) -> bool:
        client = engine()
        if client is None:
            # Dealt here in a race (the engine went away after the node advertised it):
            # nothing can run the slot on this node, so it fails visibly, once.
            message = (f"cannot run container task {runner.task.name!r}: no Docker engine "
                       "answers on this node (docker.from_env().ping() failed)")
            runner.state = "failed"
            runner.last_error = message
            runner.log.error(message)
            return False
        try:
            return handler_loop(_OneContainer(runner, client, ctx.fence), ctx,
                                _LiveTask(runner), report, breaker=runner.breaker)
        finally:
            client.close()
