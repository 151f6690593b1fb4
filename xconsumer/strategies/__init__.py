"""Assignment strategies: a family of pure functions from (tasks, members) to a plan.

One module per strategy, one interface (`base.Strategy`), registered here by name for
`[assignment] strategy`. `base` holds what they share: slots, members, plans, the dealing
order and the move count.
"""

from __future__ import annotations

from .balanced import balanced
from .base import (
    MAX_TURNS,
    Layout,
    Member,
    Plan,
    Slot,
    Strategy,
    TaskLike,
    all_slots,
    balance_report,
    dealing_order,
    eligible,
    is_container_task,
    moved_slots,
)
from .consistent_hash import DEFAULT_LOAD_FACTOR, ConsistentHash, consistent_hash
from .round_robin import round_robin
from .sticky import CHAIN_BUDGET, sticky
from .validate import validate_plan

# The built-ins. User strategies (classes in works/, entry points) are added per node by
# `user.available_strategies`, which also gives consistent_hash its configured load factor.
STRATEGIES: dict[str, Strategy] = {"balanced": balanced, "round_robin": round_robin,
                                   "sticky": sticky, "consistent_hash": consistent_hash}
DEFAULT_STRATEGY = "balanced"


def get_strategy(name: str) -> Strategy:
    try:
        return STRATEGIES[name]
    except KeyError:
        known = ", ".join(sorted(STRATEGIES))
        raise ValueError(f"unknown assignment strategy {name!r} (known: {known})") from None


__all__ = ["CHAIN_BUDGET", "DEFAULT_LOAD_FACTOR", "DEFAULT_STRATEGY", "MAX_TURNS", "STRATEGIES",
           "ConsistentHash", "Layout", "Member", "Plan", "Slot", "Strategy", "TaskLike",
           "all_slots", "balance_report", "balanced", "consistent_hash", "dealing_order",
           "eligible", "get_strategy", "is_container_task", "moved_slots", "round_robin",
           "sticky", "validate_plan"]
