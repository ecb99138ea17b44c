"""What a pool asks of the scaling policy for one model, in the units the policy computes with.

Every field comes from an InferencePool field that already exists (``minReplicas``,
``maxReplicas``, ``targetQueueDepth``, ``latencyObjective``, ``engine.maxBatchSize``,
``scaling.*``, ``budget``), defaulted by the cluster's GPUPoolConfig (:class:`PoolDefaults`);
:func:`targets_for` does the conversion.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from gpupool_operator.core.scaling.params import ParamError

if TYPE_CHECKING:
    from gpupool_operator.api.config import PoolDefaults
    from gpupool_operator.api.inferencepool import InferencePool

__all__ = ["Targets", "targets_for"]


@dataclass(frozen=True, slots=True)
class Targets:
    """One model's scaling targets."""

    min_replicas: int = 1
    max_replicas: int = 1
    #: Requests queued per replica the policy aims for (``targetQueueDepth``).
    target_queue_depth: int = 8
    #: Latency objective in seconds (``latencyObjective.target``); ``None``: none declared.
    objective_s: float | None = None
    #: The percentile the objective bounds (0.95 for P95), for reasons and reports.
    objective_quantile: float = 0.95
    #: Largest batch the worker forms (``engine.maxBatchSize``): sizes the batch-time model.
    max_batch_size: int = 32
    #: ``scaling.scaleUpStabilizationWindow``: load must stay high this long before scaling up.
    scale_up_window_s: float = 0.0
    #: ``scaling.scaleDownStabilizationWindow``: load must stay low this long before scaling down.
    scale_down_window_s: float = 300.0
    #: ``scaling.scaleToZero`` (with ``minReplicas: 0``): the model may drop to zero replicas.
    scale_to_zero: bool = False
    #: ``scaling.scaleToZeroAfter``: idle time before the last replica goes.
    scale_to_zero_after_s: float = 900.0
    #: What this model may spend per hour: the pool's ``budget.maxUsdPerHour`` less what the pool's
    #: other models cost (the caller splits a shared budget); ``None``: no cap.
    budget_usd_per_hour: float | None = None

    def validate(self) -> Targets:
        """These targets, or :class:`ParamError` naming the first field out of range."""
        if self.min_replicas < 0:
            raise ParamError("min_replicas", f"must be >= 0, got {self.min_replicas}")
        if self.max_replicas < max(1, self.min_replicas):
            raise ParamError("max_replicas", f"must be >= max(1, minReplicas={self.min_replicas}), "
                                             f"got {self.max_replicas}")
        if self.min_replicas == 0 and not self.scale_to_zero:
            raise ParamError("min_replicas", "0 needs scaleToZero")
        if self.target_queue_depth < 1:
            raise ParamError("target_queue_depth", f"must be >= 1, got {self.target_queue_depth}")
        if self.objective_s is not None and not self.objective_s > 0:
            raise ParamError("objective_s", f"must be a positive duration, got {self.objective_s:g}")
        if self.max_batch_size < 1:
            raise ParamError("max_batch_size", f"must be >= 1, got {self.max_batch_size}")
        for name in ("scale_up_window_s", "scale_down_window_s", "scale_to_zero_after_s"):
            if getattr(self, name) < 0:
                raise ParamError(name, f"must not be negative, got {getattr(self, name):g}")
        if self.budget_usd_per_hour is not None and self.budget_usd_per_hour < 0:
            raise ParamError("budget_usd_per_hour", f"must not be negative, got {self.budget_usd_per_hour:g}")
        return self


def targets_for(pool: InferencePool, model: str, defaults: PoolDefaults | None = None) -> Targets:
    """The :class:`Targets` of ``model`` in ``pool``, unset fields from ``defaults`` (the
    GPUPoolConfig's pool defaults; the built-in ones when ``None``). The whole pool budget goes to
    this model: a caller with several models splits it. A purely computational function."""
    from gpupool_operator.api.config import PoolDefaults

    spec = pool.spec.model(model)
    settings = (defaults or PoolDefaults()).apply(pool.spec)
    objective = spec.latency_objective
    return Targets(
        min_replicas=spec.min_replicas,
        max_replicas=spec.max_replicas,
        target_queue_depth=spec.target_queue_depth,
        objective_s=objective.target_seconds if objective is not None else None,
        objective_quantile=objective.percentile.quantile if objective is not None else 0.95,
        max_batch_size=spec.engine.max_batch_size,
        scale_up_window_s=settings.scale_up_stabilization_seconds,
        scale_down_window_s=settings.scale_down_stabilization_seconds,
        scale_to_zero=settings.scale_to_zero,
        scale_to_zero_after_s=settings.scale_to_zero_after_seconds,
        budget_usd_per_hour=float(settings.max_usd_per_hour) if settings.max_usd_per_hour is not None else None,
    ).validate()
