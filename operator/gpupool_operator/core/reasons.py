"""Why replicas stay unplaced, as condition reasons (CamelCase, the Kubernetes convention).

Each :class:`~gpupool_operator.core.plan.Unplaced` carries one of these in ``code`` (its ``reason``
says the same in a sentence with numbers), so the operator's status can set the pool's condition
reason without reading prose.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["UnplacedCode"]


class UnplacedCode(StrEnum):
    NO_NODES = "NoNodes"  # the cluster has no nodes at all
    NO_ACCEPTED_SHAPE = "NoAcceptedShape"  # no hardware in the cluster meets the model's needs
    INSUFFICIENT_CAPACITY = "InsufficientCapacity"  # accepted shapes exist, all of them are full
    TAINTED = "NodesTainted"  # the only capacity left is on nodes whose taints the pods do not tolerate
    SPOT_ONLY = "SpotOnlyCapacity"  # what fits is spot and the model keeps a replica off spot
    BUDGET_EXCEEDED = "BudgetExceeded"  # the pool's budget.maxUsdPerHour is reached
    MIG_RELAYOUT_FORBIDDEN = "MigRelayoutForbidden"  # a slice would need a re-layout the policy forbids
