"""The numbers one simulated run produces, and their JSON form.

Per run: share of requests within the latency objective, p50/p99 latency, GPU-hours and dollars
over the trace's span, $ per million inferences, cold starts, scale events per hour and time at
max replicas, plus a timeline (every ``sample_s``: arrivals/s, queue, replicas per shape, $/h) and
the policy's reasons for its changes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from gpupool_operator.sim.trace import Trace

__all__ = ["RunResult", "Timeline", "percentile", "summarize"]


@dataclass
class Timeline:
    """Samples of the run at a fixed interval (for the plots)."""

    shapes: tuple[str, ...]
    t: list[float] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)  # requests/s over the last sample interval
    queue: list[int] = field(default_factory=list)
    replicas: dict[str, list[int]] = field(default_factory=dict)  # ready + starting, per shape
    usd_per_hour: list[float] = field(default_factory=list)

    def add(self, t: float, arrivals: float, queue: int, live: dict[str, int], usd: float) -> None:
        self.t.append(round(t, 3))
        self.arrivals.append(round(arrivals, 4))
        self.queue.append(queue)
        for key in self.shapes:
            self.replicas.setdefault(key, []).append(live.get(key, 0))
        self.usd_per_hour.append(round(max(0.0, usd), 4))

    def to_dict(self) -> dict[str, Any]:
        used = {k: v for k, v in self.replicas.items() if any(v)}
        return {"t": self.t, "arrivalsPerSecond": self.arrivals, "queue": self.queue, "replicas": used,
                "usdPerHour": self.usd_per_hour}


@dataclass(frozen=True)
class RunResult:
    policy: str
    trace: str
    requests: int
    served: int
    within_objective: float  # share of all requests (unserved ones count as misses)
    p50_s: float
    p99_s: float
    usd: float
    gpu_hours: float
    usd_per_million: float
    cold_starts: int
    cold_requests: int
    scale_events: int
    scale_events_per_hour: float
    scale_ups: int
    scale_downs: int
    time_at_max_s: float
    duration_s: float
    timeline: Timeline
    decisions: tuple[tuple[float, str], ...] = ()

    def to_dict(self, timeline: bool = True, decisions: int = 50) -> dict[str, Any]:
        out: dict[str, Any] = {
            "policy": self.policy,
            "requests": self.requests,
            "served": self.served,
            "withinObjective": round(self.within_objective, 6),
            "p50Seconds": _round(self.p50_s),
            "p99Seconds": _round(self.p99_s),
            "usd": round(self.usd, 4),
            "gpuHours": round(self.gpu_hours, 4),
            "usdPerMillionInferences": round(self.usd_per_million, 4),
            "coldStarts": self.cold_starts,
            "coldStartRequests": self.cold_requests,
            "scaleEvents": self.scale_events,
            "scaleEventsPerHour": round(self.scale_events_per_hour, 2),
            "scaleUps": self.scale_ups,
            "scaleDowns": self.scale_downs,
            "secondsAtMaxReplicas": round(self.time_at_max_s, 1),
            "durationSeconds": round(self.duration_s, 3),
        }
        if decisions:
            out["decisions"] = [{"t": t, "reason": r} for t, r in self.decisions[:decisions]]
        if timeline:
            out["timeline"] = self.timeline.to_dict()
        return out


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q`` quantile by nearest rank (``inf`` when it falls on an unserved request)."""
    if not sorted_values:
        return 0.0
    k = max(0, min(len(sorted_values) - 1, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[k]


def summarize(policy: str, trace: Trace, finish: Sequence[float], objective_s: float | None, usd: float,
              gpu_hours: float, cold_starts: int, cold_requests: int, ups: int, downs: int, at_max_s: float,
              timeline: Timeline, decisions: Sequence[tuple[float, str]]) -> RunResult:
    latencies = sorted(f - a for f, a in zip(finish, trace.times, strict=True))
    served = sum(1 for x in latencies if math.isfinite(x))
    limit = objective_s if objective_s is not None else math.inf
    within = sum(1 for x in latencies if x <= limit + 1e-9) / len(latencies) if latencies else 1.0
    hours = trace.duration / 3600
    events = ups + downs
    return RunResult(
        policy=policy, trace=trace.name, requests=len(latencies), served=served, within_objective=within,
        p50_s=percentile(latencies, 0.50), p99_s=percentile(latencies, 0.99), usd=usd, gpu_hours=gpu_hours,
        usd_per_million=usd / served * 1e6 if served else math.inf, cold_starts=cold_starts,
        cold_requests=cold_requests, scale_events=events, scale_events_per_hour=events / hours if hours else 0.0,
        scale_ups=ups, scale_downs=downs, time_at_max_s=at_max_s, duration_s=trace.duration, timeline=timeline,
        decisions=tuple(decisions))


def _round(x: float) -> float | None:
    return round(x, 4) if math.isfinite(x) else None
