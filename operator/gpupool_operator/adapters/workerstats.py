"""Reading the workers' own statistics: the seam the autoscaler and the $/1M figure plug into.

Each replica pod serves Prometheus metrics (``gpupool_worker_*``, port ``metrics``). A
:class:`WorkerSample` is one scrape of one worker: queue depth and in-flight requests per model
(what queue-depth autoscaling reads) and cumulative inferences and cost (two samples give the rate
and dollars per million inferences for ``status``). :class:`StatsSource` is what the placement loop
would call; :class:`PrometheusScraper` is the real one. Under KWOK no worker runs, so the loop does
not scrape yet; the next issue (autoscaling) wires a source into a :class:`ReplicaPolicy`.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["ModelLoad", "PrometheusScraper", "StatsSource", "WorkerSample", "load_between", "parse_exposition"]


@dataclass(frozen=True, slots=True)
class WorkerSample:
    """One scrape of one worker: per-model gauges and cumulative counters."""

    at: float
    queue_depth: Mapping[str, float] = field(default_factory=dict)
    inflight: Mapping[str, float] = field(default_factory=dict)
    inferences: Mapping[str, float] = field(default_factory=dict)
    cost_usd: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ModelLoad:
    """What a model's replicas did between two samples."""

    queue_depth: float
    inferences_per_second: float
    usd_per_million_inferences: float | None


def parse_exposition(text: str, at: float) -> WorkerSample:
    """A worker's ``/metrics`` text as a sample (unknown metrics are ignored)."""
    wanted = {
        "gpupool_worker_queue_depth": "queue_depth",
        "gpupool_worker_inflight_requests": "inflight",
        "gpupool_worker_inferences_total": "inferences",
        "gpupool_worker_cost_usd_total": "cost_usd",
    }
    values: dict[str, dict[str, float]] = {v: {} for v in wanted.values()}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            target = wanted.get(sample.name)
            if target is not None:
                model = sample.labels.get("model", "")
                values[target][model] = values[target].get(model, 0.0) + float(sample.value)
    return WorkerSample(at=at, **values)


def load_between(before: Iterable[WorkerSample], after: Iterable[WorkerSample], model: str) -> ModelLoad:
    """A model's load over the replicas sampled twice (counters restart with a pod: deltas clamp at 0)."""
    b, a = list(before), list(after)
    depth = sum(s.queue_depth.get(model, 0.0) for s in a)
    seconds = max((max(s.at for s in a) - min(s.at for s in b)) if a and b else 0.0, 1e-9)
    pairs = list(zip(a, b, strict=False))
    infer = sum(max(0.0, x.inferences.get(model, 0.0) - y.inferences.get(model, 0.0)) for x, y in pairs)
    cost = sum(max(0.0, x.cost_usd.get(model, 0.0) - y.cost_usd.get(model, 0.0)) for x, y in pairs)
    per_million = cost / infer * 1e6 if infer > 0 else None
    return ModelLoad(queue_depth=depth, inferences_per_second=infer / seconds, usd_per_million_inferences=per_million)


class StatsSource(Protocol):
    """Where the loop gets worker samples from (a scraper, or a fake in tests)."""

    def sample(self, endpoints: Iterable[str], at: float) -> dict[str, WorkerSample]: ...


class PrometheusScraper:
    """Scrapes ``http://<pod IP>:<port>/metrics`` with a short timeout; unreachable workers are skipped."""

    def __init__(self, timeout_s: float = 1.0) -> None:
        self.timeout_s = timeout_s

    def sample(self, endpoints: Iterable[str], at: float) -> dict[str, WorkerSample]:
        out: dict[str, WorkerSample] = {}
        for endpoint in endpoints:
            try:
                with urllib.request.urlopen(f"http://{endpoint}/metrics", timeout=self.timeout_s) as rsp:
                    out[endpoint] = parse_exposition(rsp.read().decode(), at)
            except (OSError, ValueError):
                continue
        return out
