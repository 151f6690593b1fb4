"""Pure builders for every znode path the cluster uses.

Keeping them in one place means the layout documented in the README is the layout the code
uses; nothing else in the package concatenates path strings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

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
    def owners(self) -> str:
        return f"{self.base}/owners"

    def owner_task(self, task: str) -> str:
        return f"{self.owners}/{task}"

    def owner(self, task: str, index: int) -> str:
        return f"{self.owners}/{task}/{index}"

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
    def overrides(self) -> str:
        return f"{self.base}/overrides"

    def all_persistent(self) -> tuple[str, ...]:
        """Containers every node makes sure exist before it joins."""
        return (self.nodes, self.owners, self.done, self.left)


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
