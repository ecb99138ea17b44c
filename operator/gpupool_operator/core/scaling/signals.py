"""What the policy observes about one model at one instant: a sample of its load and replicas.

The operator fills a :class:`Signals` from the workers' statistics (queue depth, in-flight
requests, arrival and completion counters turned into rates) and from its pods (replicas ready
and pending per shape); the simulator fills the same type from its model. Every sample carries its
age: the policy holds rather than scale down on a sample that is stale, or on one that misses
replicas that should have reported.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["ShapeReplicas", "Signals"]


@dataclass(frozen=True, slots=True)
class ShapeReplicas:
    """Replicas of one shape: ``ready`` serve now; ``pending`` were asked for and are starting."""

    ready: int = 0
    pending: int = 0

    @property
    def total(self) -> int:
        return self.ready + self.pending


@dataclass(frozen=True, slots=True)
class Signals:
    """One sample of a model's load. Rates are requests per second since the previous sample."""

    #: Seconds between the measurement and the decision (0: just measured).
    age_s: float
    #: Requests waiting in the replicas' queues (not yet in a batch).
    queue: float
    #: Requests in a batch being computed.
    in_flight: float
    #: Requests that arrived per second since the previous sample.
    arrival_rate: float
    #: Requests completed per second since the previous sample.
    completion_rate: float = 0.0
    #: Replicas per shape key (:attr:`ShapeOffer.key`), as the cluster has them now.
    replicas: Mapping[str, ShapeReplicas] = field(default_factory=dict)
    #: How many ready replicas answered this sample; ``None``: all of them. Fewer than ready means
    #: the load of the silent ones is unknown, so the policy does not scale down.
    reporting: int | None = None

    @property
    def ready(self) -> int:
        return sum(r.ready for r in self.replicas.values())

    @property
    def pending(self) -> int:
        return sum(r.pending for r in self.replicas.values())

    def problem(self, stale_after_s: float) -> str | None:
        """Why this sample cannot justify a scale-down, or ``None`` when it is sound."""
        numbers = {"age_s": self.age_s, "queue": self.queue, "in_flight": self.in_flight,
                   "arrival_rate": self.arrival_rate, "completion_rate": self.completion_rate}
        for name, value in numbers.items():
            if not math.isfinite(value) or value < 0:
                return f"metric {name} is {value!r}"
        if self.age_s > stale_after_s:
            return f"metrics are stale ({self.age_s:.1f} s old, limit {stale_after_s:g} s)"
        if self.reporting is not None and self.reporting < self.ready:
            return f"only {self.reporting} of {self.ready} ready replicas reported"
        return None

    def counts(self) -> dict[str, int]:
        """Replicas per shape, ready and pending together (what the cluster is converging to)."""
        return {key: r.total for key, r in sorted(self.replicas.items()) if r.total}
