"""The compose file's `ensemble` profile: three ZooKeeper members that form one ensemble.

Only the members are started (no nodes): the nodes' behaviour on an ensemble is covered by
the chaos suite; what is proven here is that the profile's configuration (ZOO_MY_ID,
ZOO_SERVERS, on the official image or the Debian stand-in) makes a quorum with one leader,
and that it elects another when its leader is killed.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.docker.compose import ComposeProject, running_project
from tests.util import wait_until

MEMBERS = ("zk1", "zk2", "zk3")


@pytest.fixture(scope="module")
def ensemble(docker_client: Any, base_images: None) -> Iterator[ComposeProject]:
    with running_project(docker_client, profiles=("ensemble",), services=MEMBERS) as project:
        yield project


def _mode(project: ComposeProject, member: str) -> str | None:
    """The member's role from the `srvr` four-letter command, asked inside its container."""
    result = project.container(member).exec_run(["sh", "-c", "echo srvr | nc -w 2 localhost 2181"])
    match = re.search(rb"^Mode: (\w+)", result.output or b"", re.MULTILINE)
    return match[1].decode() if match else None


def _roles(project: ComposeProject, members: tuple[str, ...]) -> dict[str, str | None]:
    return {m: _mode(project, m) for m in members}


def _one_leader(roles: dict[str, str | None]) -> bool:
    values = sorted(str(v) for v in roles.values())
    return values == sorted(["leader"] + ["follower"] * (len(values) - 1))


def test_the_ensemble_profile_forms_a_quorum_and_survives_its_leader(
        ensemble: ComposeProject) -> None:
    roles = wait_until(lambda: (r := _roles(ensemble, MEMBERS)) and _one_leader(r) and r, 90,
                       interval=0.5, message=lambda: str(_roles(ensemble, MEMBERS)))
    leader = next(m for m, role in roles.items() if role == "leader")
    container = ensemble.container(leader)
    container.kill()
    # A killed container counts as stopped by hand: `restart: unless-stopped` leaves it down.
    container.wait(timeout=30)
    container.reload()
    assert container.status == "exited", container.status
    others = tuple(m for m in MEMBERS if m != leader)
    wait_until(lambda: _one_leader(_roles(ensemble, others)), 60, interval=0.5,
               message=lambda: str(_roles(ensemble, others)))
