"""Pure builders for every znode path the cluster uses.

Keeping them in one place means the layout documented in the README is the layout the code
uses; nothing else in the package concatenates path strings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote, unquote

NODE_PREFIX = "n-"


@dataclass(frozen=True)
class Paths:
    """Znode paths of one cluster: `<root>/<cluster>/...`."""

    root: str
    cluster: str

    @property
    def base(self) -> str:
        return f"{self.root.rstrip('/')}/{self.cluster}"

    @property
    def nodes(self) -> str:
        return f"{self.base}/nodes"

    @property
    def node_prefix(self) -> str:
        return f"{self.nodes}/{NODE_PREFIX}"

    def node(self, child: str) -> str:
        return f"{self.nodes}/{child}"

    @property
    def assignment(self) -> str:
        return f"{self.base}/assignment"

    @property
    def plans(self) -> str:
        return f"{self.base}/plans"

    def plan(self, node: str) -> str:
        """One node's share of the assignment, by node name (see plans.py)."""
        return f"{self.plans}/{node}"

    @property
    def owners(self) -> str:
        return f"{self.base}/owners"

    def owner_task(self, task: str) -> str:
        return f"{self.owners}/{task}"

    def owner(self, task: str, index: int) -> str:
        return f"{self.owners}/{task}/{index}"

    def slot_owner(self, task: str, index: int, key: str | None = None) -> str:
        """The owner znode of a slot: by index, or by key for a keyed task, so a key that
        moves to another index waits for its previous runner like any handover (at most
        one owner per key, not only per index)."""
        return self.owner(task, index) if key is None else \
            f"{self.owners}/{task}/{checkpoint_id(index, key)}"

    @property
    def done(self) -> str:
        return f"{self.base}/done"

    def done_marker(self, task: str, index: int) -> str:
        return f"{self.done}/{task}/{index}"

    @property
    def left(self) -> str:
        return f"{self.base}/left"

    def left_marker(self, name: str) -> str:
        """Written by a node in the same transaction that deletes its member znode, so the
        leader can tell a graceful leave (no rejoin grace) from a crash."""
        return f"{self.left}/{name}"

    @property
    def names(self) -> str:
        return f"{self.base}/names"

    def name_claim(self, name: str) -> str:
        """An ephemeral a node creates with its member znode, in one transaction: a second
        live process under the same name finds it taken without reading every member."""
        return f"{self.names}/{name}"

    @property
    def checkpoints(self) -> str:
        return f"{self.base}/checkpoints"

    def checkpoint_task(self, task: str) -> str:
        return f"{self.checkpoints}/{task}"

    def checkpoint(self, task: str, slot_id: str) -> str:
        """`slot_id` is `checkpoint_id(index, key)`: a keyed slot's checkpoint follows its
        key, not its index, because a key's index may change when other keys go away."""
        return f"{self.checkpoints}/{task}/{slot_id}"

    @property
    def overrides(self) -> str:
        return f"{self.base}/overrides"

    def all_persistent(self) -> tuple[str, ...]:
        """Containers every node makes sure exist before it joins."""
        return (self.nodes, self.owners, self.done, self.left, self.plans, self.names)


_INDEX_RE = re.compile(r"0|[1-9][0-9]{0,5}")


def slot_index(child: str) -> int | None:
    """The index of an `owners/<task>/<i>` or `done/<task>/<i>` child, or of a slot named in
    a request; None if it is not one (ASCII digits only, no leading zero: "²" or "007" are
    not slot indices)."""
    return int(child) if _INDEX_RE.fullmatch(child) else None


def checkpoint_id(index: int, key: str | None = None) -> str:
    """The checkpoint znode name of a slot: its index, or `k-` and its key percent-encoded
    (a key may hold any character; a znode name may not hold `/` or be `.`)."""
    return str(index) if key is None else "k-" + quote(key, safe="")


def checkpoint_slot(child: str) -> int | str | None:
    """Inverse of `checkpoint_id`: an index, a key, or None for a name neither could give."""
    if child.startswith("k-"):
        key = unquote(child[2:])
        return key if key and checkpoint_id(0, key) == child else None
    return slot_index(child)


_MEMBER_RE = re.compile(r"n-[0-9]{10}")  # ASCII: str.isdigit and \d accept other scripts


def is_member_child(child: str) -> bool:
    """Whether a `nodes/` child has the name ZooKeeper gives an `n-` sequential znode."""
    return _MEMBER_RE.fullmatch(child) is not None


def node_seq(child: str) -> int:
    """Sequence number of a `n-0000000042` child; unknown names sort last."""
    try:
        return int(child.rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return 1 << 62
