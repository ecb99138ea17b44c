"""Prometheus metrics of the placement loop (served on ``--metrics-port`` when set)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = ["API_REQUESTS", "CYCLES", "CYCLE_SECONDS", "PLAN_SECONDS", "PLAN_USD_PER_HOUR", "UNPLACED_REPLICAS"]

CYCLES = Counter("gpupool_placement_cycles_total", "Placement cycles run by the active operator")
CYCLE_SECONDS = Histogram(
    "gpupool_placement_cycle_seconds",
    "Duration of one placement cycle (snapshot, solve, apply, status)",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10),
)
PLAN_SECONDS = Histogram(
    "gpupool_placement_plan_seconds",
    "CPU part of a cycle: snapshot and solve (0 when the previous plan is reused)",
    buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5),
)
API_REQUESTS = Counter("gpupool_api_requests_total", "Requests the operator sent to the API server", ["verb"])
PLAN_USD_PER_HOUR = Gauge("gpupool_plan_usd_per_hour", "Cost of the current plan, USD per hour")
UNPLACED_REPLICAS = Gauge("gpupool_unplaced_replicas", "Replicas the current plan could not place")
