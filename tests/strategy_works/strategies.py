"""User strategies, as a user would write them: subclasses of `Strategy` with a `name`."""

from __future__ import annotations

import threading

from xconsumer.strategies import Plan, Slot, Strategy, dealing_order, eligible


class ReverseNames(Strategy):
    """A valid strategy that is not round robin: deals each task's slots over its eligible
    nodes in reverse name order, within max_per_node."""

    name = "reverse_names"

    def __call__(self, tasks, members, *, leader, leader_works=True, previous=None) -> Plan:
        nodes = sorted(dealing_order(members, leader, leader_works=leader_works),
                       key=lambda m: m.name, reverse=True)
        out: dict[str, list[Slot]] = {m.name: [] for m in nodes}
        unassigned: list[Slot] = []
        for task in tasks:
            able = [m for m in nodes if eligible(m, task)]
            limit = getattr(task, "max_per_node", None)
            for index in range(task.worker_num):
                room = [m for m in able if limit is None or
                        sum(s.task == task.name for s in out[m.name]) < limit]
                if room:
                    out[room[index % len(room)].name].append(Slot(task.name, index))
                else:
                    unassigned.append(Slot(task.name, index))
        return Plan({k: tuple(v) for k, v in out.items()}, tuple(unassigned))


class Raising(Strategy):
    name = "raising"

    def __call__(self, tasks, members, *, leader, leader_works=True, previous=None) -> Plan:
        raise RuntimeError("the strategy's own bug")


class GivesToGhost(Strategy):
    """Invalid: every slot goes to a node that is not a member."""

    name = "gives_to_ghost"

    def __call__(self, tasks, members, *, leader, leader_works=True, previous=None) -> Plan:
        return Plan({"ghost": tuple(Slot(t.name, i) for t in tasks for i in range(t.worker_num))})


# Set by a test to let a stuck call of Sleepy end; CALLS counts its calls.
RELEASE = threading.Event()
CALLS = {"sleepy": 0}


class Sleepy(Strategy):
    """Never returns until RELEASE is set (or a minute has passed)."""

    name = "sleepy"

    def __call__(self, tasks, members, *, leader, leader_works=True, previous=None) -> Plan:
        CALLS["sleepy"] += 1
        RELEASE.wait(60)
        return ReverseNames()(tasks, members, leader=leader, leader_works=leader_works)
