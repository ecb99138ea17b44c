"""The scaling policy's own knobs: the parameters that have no InferencePool field.

Everything a pool can say about scaling (min/max replicas, target queue depth, the latency
objective, the stabilization windows, scale to zero, the budget) comes from the API through
:class:`~gpupool_operator.core.scaling.targets.Targets`. What remains is how the policy reads its
signals: window lengths, the panic threshold, the tolerance band, rate limits and staleness. Those
are documented defaults here, not API fields; ``gpupool simulate`` exposes them as flags so a
sweep can vary them, and :meth:`PolicyParams.validate` rejects values outside their range with
the field named.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from gpupool_operator.core.demand import ShapeKind

__all__ = ["DEFAULT_PARAMS", "ParamError", "PolicyParams"]


class ParamError(ValueError):
    """A policy parameter outside its range; ``field`` names it (the dataclass field name)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True, slots=True)
class PolicyParams:
    """How the policy turns signals into a capacity target. Defaults follow Knative's KPA where a
    KPA notion exists (60 s stable window, 6 s panic window, panic at 2x, 2 s tick, tolerance 0.1,
    at most halving per decision) and are gpupool's own otherwise."""

    #: Seconds between decisions (the operator's scaling tick; Knative's tick-interval is 2 s).
    tick_s: float = 2.0
    #: Arrival rates are averaged over this window for the stable recommendation.
    stable_window_s: float = 60.0
    #: The short window: when its demand reaches ``panic_threshold`` x ready capacity, the policy
    #: panics (scales to the short-window demand at once and does not scale down).
    panic_window_s: float = 6.0
    #: Panic when short-window demand >= this multiple of ready capacity (KPA: 200 %). At least 1.
    panic_threshold: float = 2.0
    #: After panic, the high-water mark of the panic recommendation decays with this half-life, so
    #: capacity steps down gradually after a burst instead of staying at the peak.
    panic_decay_half_life_s: float = 60.0
    #: ... and at least this many replica start-up times (as observed: how long the replicas asked
    #: for took to serve), so the slower new capacity arrives, the longer a burst's level is held.
    hold_startups: float = 4.0
    #: The start-up time assumed until one has been observed.
    startup_guess_s: float = 30.0
    #: No change while the target capacity is within this fraction of the current capacity.
    tolerance: float = 0.1
    #: Replicas are sized so the demand uses this share of their throughput within the objective.
    target_utilization: float = 0.7
    #: A decision may grow the replica count to at most this multiple of the current count ...
    max_scale_up_rate: float = 10.0
    #: ... or by this many replicas, whichever is more (so 0 or 1 replica can grow quickly).
    scale_up_min_step: int = 4
    #: A decision keeps at least current / this many replicas (KPA's max-scale-down-rate: 2).
    max_scale_down_rate: float = 2.0
    #: A sample older than this is stale: the policy holds (never scales down on stale data).
    stale_after_s: float = 10.0
    #: Queued requests above ``targetQueueDepth`` per replica are drained over this many seconds
    #: (about one pod start: capacity asked for now serves that much later anyway; draining a
    #: backlog within the latency objective would ask for many times the arrival rate).
    drain_s: float = 30.0
    #: While a scale-up is pending, still add replicas when arrival rates alone outgrow the
    #: capacity already coming (bursts grow during a pod start); ``False``: hold outright.
    pending_topup: bool = True
    #: A scale-up whose replicas are still not ready after this long no longer blocks decisions.
    pending_timeout_s: float = 600.0
    #: Change the mix of shapes (e.g. let the GPU tier go to zero while a CPU replica serves) only
    #: when the cheaper mix saves at least this share of the current $/h.
    recompose_saving: float = 0.2
    #: Fixed share of a full batch's time that any batch costs on a GPU or MIG slice (the rest grows
    #: with its rows): the batch-time model shared with the simulator, see
    #: :mod:`~gpupool_operator.core.scaling.offers`. 0.5: a lone request takes about half a full batch.
    batch_fixed_fraction: float = 0.5
    #: The same on CPU cores, which gain little from batching (a lone request takes about 1 / T).
    cpu_batch_fixed_fraction: float = 0.05

    def validate(self) -> PolicyParams:
        """These parameters, or :class:`ParamError` naming the first one out of range."""
        positive = ("tick_s", "stable_window_s", "panic_window_s", "panic_decay_half_life_s", "stale_after_s",
                    "drain_s", "pending_timeout_s", "startup_guess_s", "max_scale_up_rate", "max_scale_down_rate")
        for name in positive:
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0:
                raise ParamError(name, f"must be a positive number of {_unit(name)}, got {value:g}")
        if self.panic_window_s > self.stable_window_s:
            raise ParamError("panic_window_s", f"{self.panic_window_s:g} s is longer than the stable window "
                                               f"({self.stable_window_s:g} s)")
        if not math.isfinite(self.panic_threshold) or self.panic_threshold < 1:
            raise ParamError("panic_threshold", f"must be at least 1 (a multiple of ready capacity), "
                                                f"got {self.panic_threshold:g}")
        if self.max_scale_up_rate < 1 or self.max_scale_down_rate < 1:
            name = "max_scale_up_rate" if self.max_scale_up_rate < 1 else "max_scale_down_rate"
            raise ParamError(name, f"must be at least 1, got {getattr(self, name):g}")
        for name in ("tolerance", "recompose_saving", "batch_fixed_fraction", "cpu_batch_fixed_fraction"):
            value = getattr(self, name)
            if not math.isfinite(value) or not 0 <= value < 1:
                raise ParamError(name, f"must be in [0, 1), got {value:g}")
        if not math.isfinite(self.target_utilization) or not 0 < self.target_utilization <= 1:
            raise ParamError("target_utilization", f"must be in (0, 1], got {self.target_utilization:g}")
        if not math.isfinite(self.hold_startups) or self.hold_startups < 0:
            raise ParamError("hold_startups", f"must be a non-negative number, got {self.hold_startups:g}")
        if self.scale_up_min_step < 1:
            raise ParamError("scale_up_min_step", f"must be at least 1, got {self.scale_up_min_step}")
        return self

    def fixed_fraction(self, kind: ShapeKind) -> float:
        """The batch-time model's fixed share for a shape of ``kind``."""
        return self.cpu_batch_fixed_fraction if kind is ShapeKind.CPU else self.batch_fixed_fraction

    def replace(self, **changes: float | int | bool | None) -> PolicyParams:
        """A copy with ``changes`` applied and validated."""
        return dataclasses.replace(self, **changes).validate()  # type: ignore[arg-type]


def _unit(name: str) -> str:
    return "seconds" if name.endswith("_s") else "times"


DEFAULT_PARAMS = PolicyParams().validate()
