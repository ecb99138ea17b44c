"""Prometheus metrics of one worker, in a registry of its own (so several workers can share a process).

Names follow Prometheus conventions (base units, ``_total`` counters). The operator's scaling loop
reads ``gpupool_worker_queue_depth`` and ``gpupool_worker_inflight_requests``; dashboards read
cost per inference next to latency and batch size.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest

from gpupool_worker.engine.costing import CostModel

__all__ = ["WorkerMetrics"]

_LATENCY_BUCKETS = (
    0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


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
        self.requests = Counter("gpupool_worker_requests", "Inference requests by outcome.",
                                ["model", "outcome"], registry=r)
        self.errors = Counter("gpupool_worker_errors", "Failed requests by error kind.",
                              ["model", "kind"], registry=r)
        self.inferences = Counter("gpupool_worker_inferences", "Inferences (batch rows) executed.",
                                  ["model"], registry=r)
        self.executions = Counter("gpupool_worker_executions", "Batches executed.", ["model"], registry=r)
        self.request_latency = Histogram(
            "gpupool_worker_request_duration_seconds", "Request time from arrival to response.",
            ["model"], buckets=_LATENCY_BUCKETS, registry=r)
        self.queue_latency = Histogram(
            "gpupool_worker_queue_duration_seconds", "Time a request waited for its batch.",
            ["model"], buckets=_LATENCY_BUCKETS, registry=r)
        self.compute_latency = Histogram(
            "gpupool_worker_compute_duration_seconds", "Time a batch spent executing.",
            ["model"], buckets=_LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("gpupool_worker_batch_size", "Rows per executed batch.",
                                    ["model"], buckets=_BATCH_BUCKETS, registry=r)
        self.queue_depth = Gauge("gpupool_worker_queue_depth", "Requests waiting for a batch.",
                                 ["model"], registry=r)
        self.inflight = Gauge("gpupool_worker_inflight_requests",
                              "Requests accepted and not yet answered.", ["model"], registry=r)
        self.busy_seconds = Counter("gpupool_worker_busy_seconds", "Device time spent executing.",
                                    ["model"], registry=r)
        self.cost = Counter("gpupool_worker_cost_usd", "Cost of executed inferences (USD).",
                            ["model"], registry=r)
        self.cost_per_inference = Gauge(
            "gpupool_worker_cost_per_inference_usd",
            "Cumulative cost divided by cumulative inferences (USD).", ["model"], registry=r)

    def exposition(self) -> bytes:
        """The registry in Prometheus text format."""
        return generate_latest(self.registry)
