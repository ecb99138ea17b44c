"""The live scaling loop's record: ``status.scaling`` of each pool (written, and read back by a new
leader) and its Prometheus series. Helpers of :mod:`~gpupool_operator.adapters.autoscale`.

The policy's state is stored with its times relative to ``observedAt`` (``ScalingState.shifted``),
so a new operator process, whose monotonic clock has nothing in common with the old one's,
continues on its own clock: ``stored.shifted(now - seconds since observedAt)``. Only that gap is
measured on the wall clock (clamped at zero: a wall clock stepped back reads as no gap).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from prometheus_client import Counter, Gauge

from gpupool_operator.adapters import names
from gpupool_operator.adapters.kube import Kube, KubeError, NotLeader, path_for
from gpupool_operator.adapters.store import Kind, Store
from gpupool_operator.adapters.workerstats import ModelLoad
from gpupool_operator.api import API_VERSION, ModelScaling, PoolScaling
from gpupool_operator.core.scaling import Decision, ScalingState, Signals

__all__ = ["DECISIONS", "SCRAPES", "TICK_SECONDS", "Memory", "Records", "export", "forget", "model_status",
           "read_record"]

log = logging.getLogger("gpupool.autoscale")

_LABELS = ["namespace", "pool", "model"]
DESIRED = Gauge("gpupool_scaling_desired_replicas", "Replicas the scaling policy wants for a model", _LABELS)
REPORTING = Gauge("gpupool_scaling_reporting_replicas", "Ready replicas whose metrics were read fresh", _LABELS)
QUEUE = Gauge("gpupool_scaling_queue_depth", "Requests waiting across a model's replicas", _LABELS)
ARRIVALS = Gauge("gpupool_scaling_arrival_rate", "Requests per second arriving at a model's replicas", _LABELS)
P99 = Gauge("gpupool_scaling_p99_seconds", "p99 request latency at a model's workers (bucket bound)", _LABELS)
USD_PER_HOUR = Gauge("gpupool_scaling_usd_per_hour", "What a model's wanted replicas cost per hour", _LABELS)
USD_PER_MILLION = Gauge("gpupool_scaling_usd_per_million_inferences",
                        "USD per million inferences from what the workers served", _LABELS)
AGE = Gauge("gpupool_scaling_sample_age_seconds", "Age of the oldest sample behind a model's decision", _LABELS)
PANIC = Gauge("gpupool_scaling_panic", "1 while a model's policy is in panic mode", _LABELS)
DECISIONS = Counter("gpupool_scaling_decisions_total", "Scaling decisions that changed a replica count",
                    ["direction"])
SCRAPES = Counter("gpupool_scaling_scrapes_total", "Replica metrics scrapes by outcome", ["outcome"])
TICK_SECONDS = Gauge("gpupool_scaling_tick_seconds", "Duration of the last scaling tick (scrape and decide)")


@dataclass
class Memory:
    """What the autoscaler remembers of one model (its state also lives in the pool's status)."""

    state: ScalingState = field(default_factory=ScalingState)
    measured: bool = False  # a replica has reported metrics: the policy governs the model
    decision: Decision | None = None
    signals: Signals | None = None
    load: ModelLoad | None = None
    last_scale_at: datetime | None = None
    changed: bool = False  # since the state was last written




def read_record(store: Store, key: str, now: float, wall_now: float) -> dict[str, tuple[Memory, int]]:
    """Per demand of pool ``key``, the memory and desired replicas its ``status.scaling`` holds,
    rebased onto the clock ``now`` is on (``{}`` when there is none or it does not parse)."""
    stored = ((store.get(Kind.POOL, key) or {}).get("status") or {}).get("scaling")
    if not stored:
        return {}
    try:
        record = PoolScaling.model_validate(stored)
    except ValueError as err:
        log.warning("%s: status.scaling not read (%s); starting afresh", key, str(err)[:200])
        return {}
    elapsed = max(0.0, wall_now - record.observed_at.timestamp())
    out: dict[str, tuple[Memory, int]] = {}
    for ms in record.models:
        demand = f"{key}/{ms.name}"
        if not ms.state:
            continue
        try:
            state = ScalingState.from_dict(json.loads(ms.state)).shifted(now - elapsed)
        except ValueError as err:
            log.warning("%s: scaling state not read (%s); starting afresh", demand, err)
            continue
        out[demand] = (Memory(state=state, measured=True, last_scale_at=ms.last_scale_time), ms.desired_replicas)
        log.info("%s: continuing from the stored scaling state (%.1f s old, %d replicas)", demand, elapsed,
                 ms.desired_replicas)
    return out


@dataclass
class Records:
    """Writes ``status.scaling`` of the pools whose measured models changed, or every ``every_s``."""

    kube: Kube
    store: Store
    every_s: float
    wall: Callable[[], float]
    written: dict[str, float] = field(default_factory=dict)  # pool -> clock of the last write

    async def write(self, pools: Mapping[str, Any], models: Mapping[str, Memory], now: float) -> None:
        jobs = []
        for key, entry in pools.items():
            if entry.pool is None:
                continue
            mine = [(m.name, models.get(names.demand_key(entry.namespace, entry.name, m.name)))
                    for m in entry.pool.spec.models]
            measured = [(n, m) for n, m in mine if m is not None and m.measured and m.decision is not None]
            if not measured:
                continue
            due = now - self.written.get(key, -math.inf) >= self.every_s
            if not due and not any(m.changed for _, m in measured):
                continue
            wall = self.wall()
            at = now - (wall - math.floor(wall))  # observedAt has whole seconds
            record = PoolScaling(observed_at=datetime.fromtimestamp(wall, UTC),
                                 models=[model_status(n, m, at) for n, m in measured])
            for _, m in measured:
                m.changed = False
            self.written[key] = now
            jobs.append(self.kube.run(self._patch, entry.namespace, entry.name, record.to_wire()))
        for result in await asyncio.gather(*jobs, return_exceptions=True):
            if isinstance(result, NotLeader):
                raise result
            if isinstance(result, BaseException):
                log.warning("status.scaling not written: %s", result)
            elif result is not None:
                self.store.upsert(Kind.POOL, result)

    def _patch(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any] | None:
        path = path_for(API_VERSION, "inferencepools", name, namespace, "status")
        try:
            return self.kube.merge_patch(path, {"status": {"scaling": body}})
        except KubeError as err:
            if err.status != 404:
                log.warning("status.scaling of %s/%s not written: %s", namespace, name, err)
            return None


_GAUGES = (DESIRED, REPORTING, QUEUE, ARRIVALS, P99, USD_PER_HOUR, USD_PER_MILLION, AGE, PANIC)


def forget(demand: str) -> None:
    """Drop a deleted model's series."""
    ns, pool, model = names.split_demand_key(demand)
    for gauge in _GAUGES:
        with contextlib.suppress(KeyError):
            gauge.remove(ns, pool, model)


def export(models: Mapping[str, Memory]) -> None:
    """The models' figures as the ``gpupool_scaling_*`` series."""
    for demand, m in models.items():
        ns, pool, model = names.split_demand_key(demand)
        labels = {"namespace": ns, "pool": pool, "model": model}
        if m.signals is not None:
            REPORTING.labels(**labels).set(m.signals.reporting or 0)
            QUEUE.labels(**labels).set(m.signals.queue)
            ARRIVALS.labels(**labels).set(m.signals.arrival_rate)
            AGE.labels(**labels).set(m.signals.age_s)
        if m.decision is not None:
            DESIRED.labels(**labels).set(m.decision.total)
            USD_PER_HOUR.labels(**labels).set(m.decision.usd_per_hour)
            PANIC.labels(**labels).set(1 if m.decision.panic else 0)
        if m.load is not None and m.load.p99_seconds is not None:
            P99.labels(**labels).set(m.load.p99_seconds)
        if m.load is not None and m.load.usd_per_million_inferences is not None:
            USD_PER_MILLION.labels(**labels).set(m.load.usd_per_million_inferences)


def _money(value: float | None) -> Decimal | None:
    if value is None or not math.isfinite(value) or value < 0:
        return None
    return Decimal(f"{min(value, 999_999_999.0):.4f}")


def model_status(name: str, m: Memory, at: float) -> ModelScaling:
    """One model's ``status.scaling`` entry; the state's times relative to ``at`` (the write)."""
    d, s, load = m.decision, m.signals, m.load
    assert d is not None
    state = json.dumps(d.state.shifted(-at).to_dict(), separators=(",", ":"))
    return ModelScaling(
        name=name, desired_replicas=d.total, ready_replicas=s.ready if s else 0, pending_replicas=s.pending if s else 0,
        reporting_replicas=(s.reporting or 0) if s else 0,
        queue_depth=_money(s.queue) if s else None, in_flight=_money(s.in_flight) if s else None,
        arrival_rate=_money(s.arrival_rate) if s else None,
        p99_seconds=_money(load.p99_seconds) if load else None, usd_per_hour=_money(d.usd_per_hour),
        usd_per_million_inferences=_money(load.usd_per_million_inferences) if load else None,
        sample_age_seconds=_money(s.age_s) if s else None, panic=d.panic, last_scale_time=m.last_scale_at,
        last_decision=d.reason[:1024], state=state)
