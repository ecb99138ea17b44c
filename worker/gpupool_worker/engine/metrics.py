"""Prometheus metrics of one worker, in a registry of its own (so several workers can share a process).

Names follow Prometheus conventions (base units, ``_total`` counters). The operator's scaling loop
reads ``gpupool_worker_queue_depth`` and ``gpupool_worker_inflight_requests``; dashboards read
cost per inference next to latency and batch size.

The request path only adds to plain numbers (:class:`ModelMeters`, one per model, written on the
event loop): a prometheus_client child takes a lock and several calls per update, which at a dozen
updates per request cost more than a tiny model's whole inference. A collector turns the numbers
into metric families when Prometheus scrapes.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Gauge, Info, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from gpupool_worker.engine.costing import CostFigures, CostModel

__all__ = ["Buckets", "ModelMeters", "WorkerMetrics"]

_LATENCY_BUCKETS = (
    0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


# le label values as prometheus_client writes them (4 -> "4.0", inf -> "+Inf"), computed once
_LE: dict[float, str] = {
    b: floatToGoString(b)  # type: ignore[no-untyped-call]
    for b in (*_LATENCY_BUCKETS, *_BATCH_BUCKETS, float("inf"))}


class Buckets:
    """A histogram's counts: one per upper bound plus +Inf, and the sum of what was observed."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    def cumulative(self) -> tuple[list[tuple[str, float]], float]:
        counts = list(self.counts)  # one consistent copy (the event loop may add meanwhile)
        total, out = 0, []
        for bound, count in zip((*self.bounds, float("inf")), counts, strict=True):
            total += count
            out.append((_LE[bound], float(total)))
        return out, self.sum


class ModelMeters:
    """One model's numbers. Gauges of live state (queue depth, in-flight) are read through
    callbacks at scrape time, so nothing on the request path writes them."""

    __slots__ = (
        "batch_size",
        "batched_requests",
        "busy_seconds",
        "compute_latency",
        "cost_per_inference",
        "cost_usd",
        "errors",
        "executing",
        "executions",
        "failures",
        "inferences",
        "inflight",
        "queue_depth",
        "queue_latency",
        "request_latency",
        "successes",
        "waiting_requests",
    )

    def __init__(self) -> None:
        self.successes = 0
        self.failures = 0
        self.errors: dict[str, int] = {}
        self.executions = 0
        self.inferences = 0
        self.busy_seconds = 0.0
        self.cost_usd = 0.0
        self.batched_requests = 0  # requests taken into batches by the batcher task ...
        self.waiting_requests = 0  # ... and those waiting when each of those batches formed
        self.request_latency = Buckets(_LATENCY_BUCKETS)
        self.queue_latency = Buckets(_LATENCY_BUCKETS)
        self.compute_latency = Buckets(_LATENCY_BUCKETS)
        self.batch_size = Buckets(_BATCH_BUCKETS)
        self.inflight: Callable[[], float] = lambda: 0.0
        self.queue_depth: Callable[[], float] = lambda: 0.0
        self.executing: Callable[[], float] = lambda: 0.0
        self.cost_per_inference: Callable[[], CostFigures | None] = lambda: None

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


class _Collector(Collector):
    def __init__(self, models: dict[str, ModelMeters]) -> None:
        self._models = models

    def collect(self) -> Iterator[Metric]:
        models = sorted(self._models.items())
        requests = CounterMetricFamily("gpupool_worker_requests", "Inference requests by outcome.",
                                       labels=["model", "outcome"])
        errors = CounterMetricFamily("gpupool_worker_errors", "Failed requests by error kind.",
                                     labels=["model", "kind"])
        inferences = CounterMetricFamily("gpupool_worker_inferences",
                                         "Inferences (batch rows) executed.", labels=["model"])
        executions = CounterMetricFamily("gpupool_worker_executions", "Batches executed.",
                                         labels=["model"])
        busy = CounterMetricFamily("gpupool_worker_busy_seconds", "Device time spent executing.",
                                   labels=["model"])
        cost = CounterMetricFamily("gpupool_worker_cost_usd", "Cost of executed inferences (USD).",
                                   labels=["model"])
        batched = CounterMetricFamily(
            "gpupool_worker_batched_requests", "Requests the batcher took into batches (queued ones, "
            "not those run at once on an idle engine).", labels=["model"])
        waiting = CounterMetricFamily(
            "gpupool_worker_batch_waiting_requests", "Requests that were waiting when those batches "
            "formed: batched / waiting is the share of the queue a batch carries.", labels=["model"])
        histograms = {
            "request_latency": HistogramMetricFamily(
                "gpupool_worker_request_duration_seconds", "Request time from arrival to response.",
                labels=["model"]),
            "queue_latency": HistogramMetricFamily(
                "gpupool_worker_queue_duration_seconds", "Time a request waited for its batch.",
                labels=["model"]),
            "compute_latency": HistogramMetricFamily(
                "gpupool_worker_compute_duration_seconds", "Time a batch spent executing.",
                labels=["model"]),
            "batch_size": HistogramMetricFamily("gpupool_worker_batch_size",
                                                "Rows per executed batch.", labels=["model"]),
        }
        queue_depth = GaugeMetricFamily("gpupool_worker_queue_depth", "Requests waiting for a batch.",
                                        labels=["model"])
        inflight = GaugeMetricFamily("gpupool_worker_inflight_requests",
                                     "Requests accepted and not yet answered.", labels=["model"])
        executing = GaugeMetricFamily("gpupool_worker_executing_requests",
                                      "Requests in the batch on the engine now.", labels=["model"])
        per_inference = GaugeMetricFamily(
            "gpupool_worker_cost_per_inference_usd",
            "USD per inference: basis=busy prices the device time the batches took, basis=idle_charged "
            "every second the replica has been up (shared among its models by busy time); over the last "
            "60 s (window=60s) or the replica's lifetime. 0 with no inference in the span.",
            labels=["model", "basis", "window"])
        for name, m in models:
            requests.add_metric([name, "success"], m.successes)
            requests.add_metric([name, "failure"], m.failures)
            for kind, count in sorted(m.errors.items()):
                errors.add_metric([name, kind], count)
            inferences.add_metric([name], m.inferences)
            executions.add_metric([name], m.executions)
            busy.add_metric([name], m.busy_seconds)
            cost.add_metric([name], m.cost_usd)
            batched.add_metric([name], m.batched_requests)
            waiting.add_metric([name], m.waiting_requests)
            for attr, family in histograms.items():
                buckets, total = getattr(m, attr).cumulative()
                family.add_metric([name], buckets, total)
            queue_depth.add_metric([name], m.queue_depth())
            inflight.add_metric([name], m.inflight())
            executing.add_metric([name], m.executing())
            figures = m.cost_per_inference()
            if figures is not None:
                window = f"{figures.window_s:g}s"
                per_inference.add_metric([name, "busy", window], figures.busy_window)
                per_inference.add_metric([name, "busy", "lifetime"], figures.busy_lifetime)
                per_inference.add_metric([name, "idle_charged", window], figures.idle_charged_window)
                per_inference.add_metric([name, "idle_charged", "lifetime"], figures.idle_charged_lifetime)
        yield from (requests, errors, inferences, executions, *histograms.values(), queue_depth,
                    inflight, executing, busy, cost, per_inference, batched, waiting)


class WorkerMetrics:
    def __init__(self, cost: CostModel, *, engine: str = "", device: str = "") -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.info = Info("gpupool_worker", "What this worker runs on and how it prices it.", registry=r)
        self.info.info({
            "accelerator": cost.accelerator, "mig_profile": cost.mig_profile,
            "engine": engine, "device": device,
        })
        Gauge("gpupool_worker_price_per_hour_usd", "Price of the whole device per hour (USD).",
              registry=r).set(cost.price_per_hour_usd)
        Gauge("gpupool_worker_device_share", "Fraction of the device this worker holds.",
              registry=r).set(cost.device_share)
        self._models: dict[str, ModelMeters] = {}
        r.register(_Collector(self._models))

    def model(self, name: str) -> ModelMeters:
        """The meters of model ``name`` (created on first use; the batcher and the data plane
        of one model share them)."""
        meters = self._models.get(name)
        if meters is None:
            meters = self._models[name] = ModelMeters()
        return meters

    def exposition(self) -> bytes:
        """The registry in Prometheus text format."""
        return generate_latest(self.registry)
