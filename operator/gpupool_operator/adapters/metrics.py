"""Prometheus metrics of the operator (served by ``gpupool operator`` on the chart's metrics address)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "API_REQUESTS",
    "CYCLES",
    "CYCLE_SECONDS",
    "DESIRED_REPLICAS",
    "FAILURES",
    "FENCED_WRITES",
    "LEADER",
    "MIG_RELAYOUTS",
    "PLAN_SECONDS",
    "PLAN_USD_PER_HOUR",
    "READY_REPLICAS",
    "UNPLACED_REPLICAS",
]

CYCLES = Counter("gpupool_placement_cycles_total", "Placement cycles run by the active operator")
CYCLE_SECONDS = Histogram(
    "gpupool_placement_cycle_seconds",
    "Duration of one placement cycle (observe, decide, act, report)",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10),
)
PLAN_SECONDS = Histogram(
    "gpupool_placement_plan_seconds",
    "CPU part of a cycle: snapshot and solve (0 when the previous plan is reused)",
    buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5),
)
FAILURES = Counter(
    "gpupool_reconcile_failures_total",
    "Failures by cycle stage (observe, decide, act, report) and reason (the API server's, or the error's type)",
    ["stage", "reason"],
)
LEADER = Gauge("gpupool_leader", "1 while this operator replica holds the leader Lease and may write, else 0")
FENCED_WRITES = Counter("gpupool_fenced_writes_total", "Writes refused locally because this replica was not the leader")
API_REQUESTS = Counter("gpupool_api_requests_total", "Requests the operator sent to the API server",
                       ["verb", "resource"])
DESIRED_REPLICAS = Gauge("gpupool_desired_replicas", "Replicas a model should have now",
                         ["namespace", "pool", "model"])
READY_REPLICAS = Gauge("gpupool_ready_replicas", "Replicas of a model that are Ready", ["namespace", "pool", "model"])
PLAN_USD_PER_HOUR = Gauge("gpupool_plan_usd_per_hour", "Cost of the current plan, USD per hour")
UNPLACED_REPLICAS = Gauge("gpupool_unplaced_replicas", "Replicas the current plan could not place")
MIG_RELAYOUTS = Counter("gpupool_mig_relayouts_total",
                        "MIG re-layout steps: requested (nvidia.com/mig.config set), applied, abandoned", ["step"])
