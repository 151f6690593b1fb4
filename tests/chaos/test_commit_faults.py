"""Checkpoint commits under faults, against real node processes: a frozen owner's commit
after SIGCONT is refused, and a kill -9'd owner's last successful commit is what its
successor resumes from. The handler (tests/checkpoint_works) counts up from its checkpoint
and commits each step; run stubborn, it keeps committing after it was told to stop, so only
the fence can refuse it."""

from __future__ import annotations

import json
from itertools import pairwise
from typing import Any

import pytest

from tests.chaos import checker as chaos
from tests.chaos.conftest import ClusterFactory
from tests.chaos.harness import ChaosCluster
from tests.cluster import REPO
from tests.util import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.chaos]

SESSION = 2.0
WORKS = REPO / "tests" / "checkpoint_works"
TASKS = [{"name": "count", "workName": "counter", "workerNum": 4, "stop_timeout": 5}]


def records(cluster: ChaosCluster, **match: Any) -> list[dict[str, Any]]:
    if not cluster.record.exists():
        return []
    rows = [json.loads(line) for line in cluster.record.read_text().splitlines() if line]
    return [r for r in rows if all(r.get(k) == v for k, v in match.items())]


def stored(cluster: ChaosCluster, slot: int) -> dict[str, Any]:
    return json.loads(cluster.client.get(cluster.paths.checkpoint("count", str(slot)))[0])


def start(cluster: ChaosCluster) -> tuple[str, int]:
    """Three nodes committing on every slot; a slot and the follower that owns it."""
    for name in ("n1", "n2", "n3"):
        cluster.start_node(name)
    cluster.wait_converged({"n1", "n2", "n3"})
    wait_until(lambda: all(len(records(cluster, event="commit", slot=i)) >= 5
                           for i in range(4)), 30)
    owners = cluster.view()["owners"]
    leader = cluster.leader()
    slot, owner = next((int(k.split("/")[1]), n) for k, n in sorted(owners.items())
                       if n != leader)
    return owner, slot


@pytest.fixture
def stubborn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XCONSUMER_TEST_STUBBORN", "200")


def test_a_frozen_owners_commit_after_sigcont_is_refused(
        zk_hosts: str, zk_root: str, make_cluster: ClusterFactory, stubborn: None) -> None:
    c = make_cluster(zk_hosts, zk_root, TASKS, session_timeout=SESSION, works=WORKS)
    victim, slot = start(c)
    c.freeze(victim)
    frozen_fence = records(c, event="start", slot=slot, node=victim)[-1]["fence"]
    # Its session expires, the slot moves, and the successor commits past the frozen count.
    wait_until(lambda: c.view()["owners"].get(f"count/{slot}") not in (None, victim),
               chaos.recovery_bound("crash", SESSION) + 20)
    successor = c.view()["owners"][f"count/{slot}"]
    # Its run from this handover on (it may have run the slot before, when the cluster formed).
    resumed = wait_until(lambda: next((
        r for r in records(c, event="start", slot=slot, node=successor)
        if r["fence"] > frozen_fence), None), 20)
    wait_until(lambda: len(records(c, event="commit", slot=slot, fence=resumed["fence"])) >= 5,
               20)
    frozen_last = max(r["value"] for r in records(c, event="commit", slot=slot, node=victim,
                                                  fence=frozen_fence))
    assert resumed["value"] >= frozen_last
    c.thaw(victim)
    lost = wait_until(lambda: records(c, event="lost", slot=slot, node=victim), 20)
    assert "commit refused" in lost[0]["error"], lost
    # Nothing the woken node tried landed, and the value never went back. The woken node
    # rejoins under a new session, so a rebalance may hand the slot on again (to it, even):
    # owners are told apart by their fence (the owner znode's czxid), which every record
    # carries. Records first: each commit lands before it is recorded, so the stored value
    # read after them is at least the largest recorded.
    later: dict[int, list[int]] = {}
    for r in records(c, event="commit", slot=slot):
        if r["fence"] >= resumed["fence"]:
            later.setdefault(r["fence"], []).append(r["value"])
    late = [r["value"] for r in records(c, event="commit", slot=slot, fence=frozen_fence)]
    after = stored(c, slot)
    detail = (after, resumed, records(c, slot=slot, event="start"))
    # Once woken, the frozen owner may still record a commit that landed just before the
    # freeze: never one above what its successor resumed from.
    assert max(late) <= resumed["value"], detail
    assert after["fence"] >= resumed["fence"], detail
    runs = [later[f] for f in sorted(later)]
    assert all(run == sorted(run) for run in runs), detail
    assert all(a[-1] < b[0] for a, b in pairwise(runs)), detail
    assert after["value"] >= runs[-1][-1], detail
    print(f"\nfrozen owner {victim}: last commit {frozen_last}; successor {successor} "
          f"resumed from {resumed['value']}; late commit refused: {lost[0]['error']}")


def test_a_killed_owners_last_commit_is_what_its_successor_reads(
        zk_hosts: str, zk_root: str, make_cluster: ClusterFactory) -> None:
    c = make_cluster(zk_hosts, zk_root, TASKS, session_timeout=SESSION, works=WORKS)
    victim, slot = start(c)
    starts_before = len(records(c, event="start", slot=slot))  # the file only grows
    c.kill(victim)
    last_recorded = records(c, event="commit", slot=slot, node=victim)[-1]["value"]
    left = stored(c, slot)  # nobody writes it before the successor's handler starts
    assert left["node"] == victim and left["value"] in (last_recorded, last_recorded + 1)
    wait_until(lambda: c.view()["owners"].get(f"count/{slot}") not in (None, victim),
               chaos.recovery_bound("crash", SESSION) + 20)
    successor = c.view()["owners"][f"count/{slot}"]
    # Its first start after the kill: on a slow machine the cluster formed by joins, and
    # the successor may have run the slot once before, from the first value.
    first = wait_until(lambda: next(iter(
        r for r in records(c, event="start", slot=slot)[starts_before:]
        if r["node"] == successor), None), 20)
    assert first["value"] == left["value"]
    print(f"\nkilled owner {victim}: last landed commit {left['value']}; successor "
          f"{successor} resumed from {first['value']}")
