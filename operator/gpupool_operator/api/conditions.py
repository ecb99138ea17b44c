"""Status conditions in the shape of ``metav1.Condition``, and the pure helper that updates them.

The operator reports through four condition types on every InferencePool (``Ready``, ``Placed``,
``Scaling``, ``Degraded``). ``set_condition`` keeps ``lastTransitionTime`` stable while a
condition's status does not change, as Kubernetes' ``meta.SetStatusCondition`` does; the clock is
passed in so callers in the pure core stay deterministic.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import Annotated

from pydantic import Field, StringConstraints

from ._base import ApiModel
from .types import Timestamp

__all__ = ["Condition", "ConditionReason", "ConditionStatus", "ConditionType", "find_condition", "set_condition"]

REASON_PATTERN = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
CONDITION_TYPE_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
)


class ConditionType(StrEnum):
    """The condition types gpupool sets on an InferencePool."""

    READY = "Ready"
    """Every model has at least its minimum replicas ready and serving."""
    PLACED = "Placed"
    """Every desired replica has been assigned hardware (a GPU, MIG slice or CPU cores)."""
    SCALING = "Scaling"
    """Replica counts or placements are changing towards a new plan."""
    DEGRADED = "Degraded"
    """The pool serves, but below its objectives (over budget, fallback hardware, replicas lost)."""
    ACCEPTED = "Accepted"
    """On a GPUPoolConfig: the operator loaded this generation of the configuration."""
    MODEL_LOAD_FAILED = "ModelLoadFailed"
    """A replica's server could not fetch or load its model; the reason is the worker's
    (CredentialsRejected, ModelNotFound, ChecksumMismatch, FormatMismatch, WeightsTooLarge, ...)."""


class ConditionStatus(StrEnum):
    """Whether a condition holds."""

    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class ConditionReason(StrEnum):
    """Reasons the operator writes (CamelCase, machine-readable; the message says it for people)."""

    RECONCILING = "Reconciling"
    ALL_REPLICAS_READY = "AllReplicasReady"
    REPLICAS_NOT_READY = "ReplicasNotReady"
    PLACED = "Placed"
    UNPLACEABLE = "Unplaceable"
    INSUFFICIENT_CAPACITY = "InsufficientCapacity"
    BUDGET_EXCEEDED = "BudgetExceeded"
    """The pool's cheapest plan costs more than budget.maxUsdPerHour: what fits is placed."""
    NO_NODES = "NoNodes"
    """The cluster has no nodes at all."""
    NODES_TAINTED = "NodesTainted"
    """The only capacity left is on nodes whose taints the replicas do not tolerate."""
    SPOT_ONLY_CAPACITY = "SpotOnlyCapacity"
    """What fits is spot, and the model keeps replicas off spot."""
    MIG_RELAYOUT_FORBIDDEN = "MigRelayoutForbidden"
    """A MIG slice would need a re-layout the GPUPoolConfig's mig.policy forbids."""
    WRITE_REFUSED = "WriteRefused"
    """The API server refused a write for the pool (the message quotes it); retried with back-off."""
    MIG_RECONFIGURE_FAILED = "MigReconfigureFailed"
    MIG_RECONFIGURING = "MigReconfiguring"
    SCALING_UP = "ScalingUp"
    SCALING_DOWN = "ScalingDown"
    STABLE = "Stable"
    FALLBACK_HARDWARE = "FallbackHardware"
    AS_EXPECTED = "AsExpected"
    CONFIG_LOADED = "ConfigLoaded"
    CONFIG_REJECTED = "ConfigRejected"
    MODELS_LOADED = "ModelsLoaded"


class Condition(ApiModel):
    """One aspect of the object's state, in the shape of metav1.Condition."""

    type: Annotated[str, StringConstraints(pattern=CONDITION_TYPE_PATTERN, max_length=316)]
    """Type of condition in CamelCase: Ready, Placed, Scaling or Degraded."""
    status: ConditionStatus
    """Status of the condition: True, False or Unknown."""
    observed_generation: Annotated[int, Field(ge=0)] | None = None
    """The .metadata.generation the condition was set from; older than the object's means stale."""
    last_transition_time: Timestamp
    """When the condition last changed status (RFC 3339)."""
    reason: Annotated[str, StringConstraints(pattern=REASON_PATTERN, min_length=1, max_length=1024)]
    """A programmatic CamelCase identifier of why the condition has its status."""
    message: Annotated[str, StringConstraints(max_length=32768)] = ""
    """A human-readable explanation; may be empty."""


def find_condition(conditions: Sequence[Condition], type_: str) -> Condition | None:
    """The condition of the given type, or ``None``."""
    return next((c for c in conditions if c.type == type_), None)


def set_condition(conditions: Sequence[Condition], new: Condition) -> list[Condition]:
    """A new list with ``new`` replacing the condition of its type.

    A purely computational function with no side-effects. When the status is unchanged the
    previous ``lastTransitionTime`` is kept, so the time means "in this status since".
    """
    out: list[Condition] = []
    replaced = False
    for cond in conditions:
        if cond.type != new.type:
            out.append(cond)
            continue
        replaced = True
        if cond.status == new.status:
            new = new.model_copy(update={"last_transition_time": cond.last_transition_time})
        out.append(new)
    if not replaced:
        out.append(new)
    return out
