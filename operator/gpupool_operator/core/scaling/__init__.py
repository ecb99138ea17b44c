"""The scaling policy, as pure functions: how many replicas of which shapes each model needs now.

Used the same way by the operator's scaling loop, by ``gpupool simulate`` and by tests::

    from gpupool_operator.core.scaling import ScalingState, Signals, ShapeReplicas, decide, offers_for, targets_for

    offers, rejected = offers_for(demand, snapshot, targets.max_replicas)   # shapes via the placement engine
    decision = decide(state, signals, targets, offers, now)                 # pure: now is passed in
    decision.replicas      # {"A100-80GB MIG 3g.40gb": 3, "8 CPU cores": 1}
    decision.reason        # "scale up 2 -> 4 (+2 A100-80GB MIG 3g.40gb): panic: ..."
    state = decision.state  # persist decision.state.to_dict(); ScalingState.from_dict() restores it

Modules: ``params`` (the policy's documented defaults), ``targets`` (what the pool asks, from the
API), ``signals`` (one sample of load and replicas, with its age), ``offers`` (shapes, cost, room
and the batch-time model), ``compose`` (cheapest mix of shapes for a capacity), ``fill`` (what
placement makes of a replica count, for the operator), ``state`` (the
JSON-able memory between decisions), ``policy`` (:func:`decide`).
"""

from gpupool_operator.core.scaling.compose import Cover, Option, cheapest_cover
from gpupool_operator.core.scaling.fill import count_covering, placed
from gpupool_operator.core.scaling.offers import (
    ShapeOffer,
    batch_seconds,
    batch_within,
    capacity_within,
    gpu_share,
    offers_for,
    shape_demand,
    shape_demands,
)
from gpupool_operator.core.scaling.params import DEFAULT_PARAMS, ParamError, PolicyParams
from gpupool_operator.core.scaling.policy import Decision, decide
from gpupool_operator.core.scaling.signals import ShapeReplicas, Signals
from gpupool_operator.core.scaling.state import ScalingState
from gpupool_operator.core.scaling.targets import Targets, targets_for

__all__ = [
    "DEFAULT_PARAMS",
    "Cover",
    "Decision",
    "Option",
    "ParamError",
    "PolicyParams",
    "ScalingState",
    "ShapeOffer",
    "ShapeReplicas",
    "Signals",
    "Targets",
    "batch_seconds",
    "batch_within",
    "capacity_within",
    "cheapest_cover",
    "count_covering",
    "decide",
    "gpu_share",
    "offers_for",
    "placed",
    "shape_demand",
    "shape_demands",
    "targets_for",
]
