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
from tests.e2e.test_checkpoints import current_starts, events
from tests.util import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.chaos]

SESSION = 2.0
WORKS = REPO / "tests" / "checkpoint_works"
TASKS = [{"name": "count", "workName": "counter", "workerNum": 4, "stop_timeout": 5}]


def stored(cluster: ChaosCluster, slot: int) -> dict[str, Any]:
    return json.loads(cluster.client.get(cluster.paths.checkpoint("count", str(slot)))[0])


def start(cluster: ChaosCluster) -> tuple[str, int, dict[str, Any]]:
    """Three nodes committing on every slot; a slot, the follower that owns it, and the
    start record of its run (on a loaded machine the cluster may form by joins: the slot's
    owner can be a node that ran it before, or one whose handler has not started yet)."""
    for name in ("n1", "n2", "n3"):
        cluster.start_node(name)
    cluster.wait_converged({"n1", "n2", "n3"})
    runs = wait_until(lambda: current_starts(cluster, "count"), 30)
    wait_until(lambda: all(len(events(cluster, event="commit", slot=i, fence=r["fence"])) >= 5
                           for i, r in runs.items()), 30)
    leader = cluster.leader()
    slot, run = next((i, r) for i, r in sorted(runs.items()) if r["node"] != leader)
    return run["node"], slot, run


@pytest.fixture
def stubborn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XCONSUMER_TEST_STUBBORN", "200")


def test_a_frozen_owners_commit_after_sigcont_is_refused(
        zk_hosts: str, zk_root: str, make_cluster: ClusterFactory, stubborn: None) -> None:
    c = make_cluster(zk_hosts, zk_root, TASKS, session_timeout=SESSION, works=WORKS)
    victim, slot, frozen_run = start(c)
    frozen_fence = frozen_run["fence"]
    c.freeze(victim)
    # Its session expires, the slot moves, and the successor commits past the frozen count.
    wait_until(lambda: c.view()["owners"].get(f"count/{slot}") not in (None, victim),
               chaos.recovery_bound("crash", SESSION) + 20)

    def first_run_after_the_freeze() -> dict[str, Any] | None:
        """The start of the slot's first owner after the victim (the smallest later fence,
        whichever node it is: it may have run the slot before, when the cluster formed, and
        the slot may have moved on again since)."""
        runs = [r for r in events(c, event="start", slot=slot) if r["fence"] > frozen_fence]
        return min(runs, key=lambda r: r["fence"]) if runs else None

    resumed = wait_until(first_run_after_the_freeze, 20)
    successor = resumed["node"]
    wait_until(lambda: len([r for r in events(c, event="commit", slot=slot)
                            if r["fence"] > frozen_fence]) >= 5, 20)
    frozen_last = max(r["value"] for r in events(c, event="commit", slot=slot,
                                                  fence=frozen_fence))
    assert resumed["value"] >= frozen_last
    c.thaw(victim)
    lost = wait_until(lambda: events(c, event="lost", slot=slot, fence=frozen_fence), 20)
    assert "commit refused" in lost[0]["error"], lost
    # Nothing the woken node tried landed, and the value never went back. The woken node
    # rejoins under a new session, so a rebalance may hand the slot on again (to it, even):
    # owners are told apart by their fence (the owner znode's czxid), which every record
    # carries. Records first: each commit lands before it is recorded, so the stored value
    # read after them is at least the largest recorded.
    resumed = first_run_after_the_freeze() or resumed  # a smaller fence recorded late
    later: dict[int, list[int]] = {}
    for r in events(c, event="commit", slot=slot):
        if r["fence"] > frozen_fence:
            later.setdefault(r["fence"], []).append(r["value"])
    late = [r["value"] for r in events(c, event="commit", slot=slot, fence=frozen_fence)]
    after = stored(c, slot)
    detail = (after, resumed, events(c, slot=slot, event="start"))
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
    victim, slot, victim_run = start(c)
    starts_before = len(events(c, event="start", slot=slot))  # the file only grows
    c.kill(victim)
    last_recorded = events(c, event="commit", slot=slot, fence=victim_run["fence"])[-1]["value"]
    left = stored(c, slot)  # nobody writes it before the successor's handler starts
    assert left["node"] == victim and left["value"] in (last_recorded, last_recorded + 1)
    wait_until(lambda: c.view()["owners"].get(f"count/{slot}") not in (None, victim),
               chaos.recovery_bound("crash", SESSION) + 20)
    successor = c.view()["owners"][f"count/{slot}"]
    # Its first start after the kill: on a slow machine the cluster formed by joins, and
    # the successor may have run the slot once before, from the first value.
    first = wait_until(lambda: next(iter(
        r for r in events(c, event="start", slot=slot)[starts_before:]
        if r["node"] == successor), None), 20)
    assert first["value"] == left["value"]
    print(f"\nkilled owner {victim}: last landed commit {left['value']}; successor "
          f"{successor} resumed from {first['value']}")
