"""The autoscalers gpupool is compared with, each with its real defaults (sources in the README).

All but WVA scale one Deployment of one shape: the scenario's
:meth:`~gpupool_operator.sim.scenario.Scenario.baseline_shape` (lowest $/h per request/s within
the objective), so the comparison is of control laws on the same hardware and prices.

* ``static``: the replicas the trace's peak needs (the oracle's peak on that shape), all hour.
* ``hpa``: Kubernetes HPA on utilization (busy share of ready replicas; target 0.7, our choice:
  HPA has no default target): 15 s sync, tolerance 0.1, scale-up at most max(+4 pods, +100 %) per
  15 s, scale-down to the highest recommendation of the last 300 s, never below 1.
* ``keda``: KEDA on queue length (requests waiting or in a batch, what KEDA's HTTP add-on counts as
  pending; target ``targetQueueDepth`` per replica): the HPA above does 1..N on KEDA's metric;
  KEDA polls every 30 s to activate from 0 and returns to 0 after a 300 s cooldown without
  activity (only where the pool allows zero).
* ``kpa``: Knative's KPA: concurrency averaged over a 60 s stable and a 6 s panic window, target
  0.7 x containerConcurrency (we set containerConcurrency = ``maxBatchSize``), a 2 s tick, panic at
  200 %, no scale-down in panic, max scale-up rate 1000, max scale-down rate 2, scale to zero
  30 s after the stable window saw no traffic (where the pool allows zero); the activator holds
  requests at zero (the model's queue does).
* ``aibrix``: AIBrix's KPA: the same law with a 180 s stable and 60 s panic window, at most 2x up
  and /2 down per decision, tolerance 0.1, a 300 s scale-down cooldown, a 10 s resync, no zero.
* ``wva``: llm-d's Workload Variant Autoscaler, saturation analyzer: every 60 s, the peak queue per
  replica of the last minute; a replica is saturated at 5 queued, scale up when spare queue per
  replica < 3 (+1 replica of the cheapest variant per replica, none while one is pending), scale
  down -1 of the dearest variant when spreading the queue over one replica fewer still leaves 3
  spare. Its variants are every shape that meets the objective. (KV-cache saturation is not
  modelled.)
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping

from gpupool_operator.sim.model import Observation, Policy
from gpupool_operator.sim.oracle import need_per_bin
from gpupool_operator.sim.scenario import Scenario
from gpupool_operator.sim.trace import Trace

__all__ = ["Hpa", "Keda", "Kpa", "Wva", "static_peak"]

HPA_SYNC_S = 15.0
HPA_TOLERANCE = 0.1
HPA_DOWN_WINDOW_S = 300.0
HPA_TARGET_UTILIZATION = 0.7
KEDA_POLL_S = 30.0
KEDA_COOLDOWN_S = 300.0
KNATIVE_TARGET_FRACTION = 0.7


class _OneShape:
    """Replica-count bookkeeping shared by the single-shape baselines."""

    name = "baseline"
    interval_s = HPA_SYNC_S
    last_reason = ""

    def __init__(self, scenario: Scenario, zero_ok: bool = False) -> None:
        self.scenario = scenario
        self.shape = scenario.baseline_shape()
        self.key = self.shape.key
        t = scenario.targets
        self.max = max(1, min(t.max_replicas, self.shape.room))
        self.min = 0 if zero_ok and t.scale_to_zero and t.min_replicas == 0 else max(1, t.min_replicas)
        self.min = min(self.min, self.max)

    def initial(self) -> Mapping[str, int]:
        return {self.key: self.min} if self.min else {}

    def _clamp(self, n: int) -> int:
        return max(self.min, min(self.max, n))

    def _out(self, n: int) -> dict[str, int]:
        return {self.key: n} if n else {}


def static_peak(scenario: Scenario, trace: Trace) -> Policy:
    """A fixed count: what the trace's busiest bin needs on the baseline shape."""
    base = _OneShape(scenario)
    cap = scenario.capacity(base.shape)
    need = max(need_per_bin(trace, scenario.targets.objective_s), default=0.0)
    return _Fixed("static", base.key, base._clamp(math.ceil(need / cap - 1e-9)))


class _Fixed:
    interval_s = 3600.0
    last_reason = ""

    def __init__(self, name: str, key: str, n: int) -> None:
        self.name, self.key, self.n = name, key, n
        self.last_reason = f"static {n} x {key}"

    def initial(self) -> Mapping[str, int]:
        return {self.key: self.n}

    def decide(self, obs: Observation) -> Mapping[str, int]:
        return {self.key: self.n}


class _HpaCore(_OneShape):
    """The HPA's replica calculation and behaviour (default policies), fed a usage ratio."""

    def __init__(self, scenario: Scenario, zero_ok: bool = False) -> None:
        super().__init__(scenario, zero_ok)
        self.recommendations: deque[tuple[float, int]] = deque()

    def _hpa(self, now: float, current: int, ratio: float | None, desired_raw: int) -> int:
        rec = current if ratio is None or abs(ratio - 1.0) <= HPA_TOLERANCE else desired_raw
        rec = max(1, min(self.max, rec))
        self.recommendations.append((now, rec))
        while self.recommendations and self.recommendations[0][0] < now - HPA_DOWN_WINDOW_S:
            self.recommendations.popleft()
        if rec < current:  # the safest (highest) recommendation of the scale-down window
            rec = min(current, max(r for _, r in self.recommendations))
        return min(rec, max(current + 4, 2 * current))  # scale-up: max(4 pods, 100 %) per period


class Hpa(_HpaCore):
    name = "hpa"

    def __init__(self, scenario: Scenario, trace: Trace) -> None:
        super().__init__(scenario)

    def decide(self, obs: Observation) -> Mapping[str, int]:
        current = obs.ready_total + obs.pending_total
        ready = obs.ready_total
        if obs.utilization is None or ready == 0:
            ratio, raw = None, current
        else:
            ratio = obs.utilization / HPA_TARGET_UTILIZATION
            raw = math.ceil(ready * ratio - 1e-9)
        n = self._clamp(self._hpa(obs.now, current, ratio, raw))
        self.last_reason = f"utilization {obs.utilization or 0:.2f} -> {n}"
        return self._out(n)


class Keda(_HpaCore):
    name = "keda"

    def __init__(self, scenario: Scenario, trace: Trace) -> None:
        super().__init__(scenario, zero_ok=True)
        self.target = scenario.targets.target_queue_depth
        self.last_active = 0.0
        self.next_poll = 0.0

    def decide(self, obs: Observation) -> Mapping[str, int]:
        current = obs.ready_total + obs.pending_total
        metric = obs.queue + obs.in_flight
        if metric > 0:
            self.last_active = obs.now
        if current == 0:  # KEDA itself activates from zero, at its polling interval
            if obs.now + 1e-9 >= self.next_poll:
                self.next_poll = obs.now + KEDA_POLL_S
                if metric > 0 or obs.arrivals > 0:
                    self.last_reason = "activate from zero"
                    return self._out(1)
            return {}
        if self.min == 0 and obs.now - self.last_active >= KEDA_COOLDOWN_S:
            self.last_reason = "cooldown over: to zero"
            return {}
        ratio = metric / (self.target * max(1, current))
        n = self._hpa(obs.now, current, ratio, math.ceil(metric / self.target - 1e-9))
        n = max(1, min(self.max, n))
        self.last_reason = f"queue {metric} -> {n}"
        return self._out(n)


class Kpa(_OneShape):
    """The KPA decision of Knative (and, with other windows and rates, AIBrix's copy of it)."""

    def __init__(self, scenario: Scenario, name: str, tick: float, stable: float, panic: float,
                 up_rate: float, down_rate: float, tolerance: float, down_window: float, zero_ok: bool) -> None:
        super().__init__(scenario, zero_ok)
        self.name, self.interval_s = name, tick
        self.stable_s, self.panic_s = stable, panic
        self.up_rate, self.down_rate, self.tolerance, self.down_window = up_rate, down_rate, tolerance, down_window
        self.target = KNATIVE_TARGET_FRACTION * scenario.targets.max_batch_size
        self.samples: deque[tuple[float, float]] = deque()
        self.panic_time: float | None = None
        self.max_panic = 0
        self.zero_since: float | None = None
        self.recommendations: deque[tuple[float, int]] = deque()

    @classmethod
    def knative(cls, scenario: Scenario, trace: Trace) -> Kpa:
        return cls(scenario, "kpa", 2.0, 60.0, 6.0, 1000.0, 2.0, 0.0, 0.0, zero_ok=True)

    @classmethod
    def aibrix(cls, scenario: Scenario, trace: Trace) -> Kpa:
        return cls(scenario, "aibrix", 10.0, 180.0, 60.0, 2.0, 2.0, 0.1, 300.0, zero_ok=False)

    def _mean(self, now: float, window: float) -> float:
        values = [v for t, v in self.samples if t > now - window]
        return sum(values) / len(values) if values else 0.0

    def decide(self, obs: Observation) -> Mapping[str, int]:
        now, current = obs.now, obs.ready_total + obs.pending_total
        self.samples.append((now, obs.concurrency))
        while self.samples and self.samples[0][0] <= now - self.stable_s:
            self.samples.popleft()
        ready = max(1.0, float(obs.ready_total))
        max_up = max(1.0, math.ceil(self.up_rate * ready))
        max_down = math.floor(ready / self.down_rate)
        stable, panic = self._mean(now, self.stable_s), self._mean(now, self.panic_s)
        dspc, dppc = math.ceil(stable / self.target - 1e-9), math.ceil(panic / self.target - 1e-9)
        want_stable = int(min(max(dspc, max_down), max_up))
        want_panic = int(min(max(dppc, max_down), max_up))
        over = dppc / ready >= 2.0
        if over:
            self.panic_time = now
        elif self.panic_time is not None and self.panic_time + self.stable_s < now:
            self.panic_time, self.max_panic = None, 0
        want = want_stable
        if self.tolerance and current and abs(stable / (self.target * current) - 1) <= self.tolerance:
            want = current
        if self.panic_time is not None:
            self.max_panic = max(self.max_panic, want_stable, want_panic)
            want = self.max_panic
        if self.down_window:
            self.recommendations.append((now, want))
            while self.recommendations[0][0] < now - self.down_window:
                self.recommendations.popleft()
            if want < current:
                want = min(current, max(r for _, r in self.recommendations))
        if want == 0 and self.min == 0:  # scale to zero after the grace period (30 s)
            self.zero_since = self.zero_since if self.zero_since is not None else now
            n = 0 if now - self.zero_since >= 30.0 else max(1, current)
        else:
            self.zero_since = None
            n = self._clamp(want)
        self.last_reason = f"{'panic' if self.panic_time is not None else 'stable'} concurrency {stable:.2f} -> {n}"
        return self._out(n)


class Wva:
    """llm-d WVA's saturation analyzer over every shape that meets the objective."""

    name = "wva"
    interval_s = 60.0
    last_reason = ""
    QUEUE_SATURATED = 5
    QUEUE_SPARE_TRIGGER = 3

    def __init__(self, scenario: Scenario, trace: Trace) -> None:
        usable = scenario.usable()
        self.cheapest = min(usable, key=lambda o: (o.usd_per_hour, o.key))
        self.dearest_order = sorted(usable, key=lambda o: (-o.usd_per_hour, o.key))
        self.room = {o.key: o.room for o in usable}
        t = scenario.targets
        self.min, self.max = max(1, t.min_replicas), t.max_replicas

    def initial(self) -> Mapping[str, int]:
        return {self.cheapest.key: self.min}

    def decide(self, obs: Observation) -> Mapping[str, int]:
        counts = {k: obs.ready.get(k, 0) + obs.pending.get(k, 0) for k in set(obs.ready) | set(obs.pending)}
        total, ready = sum(counts.values()), obs.ready_total
        per = obs.queue_peak / max(1, ready)
        saturated = per >= self.QUEUE_SATURATED
        up = saturated or (self.QUEUE_SATURATED - per) < self.QUEUE_SPARE_TRIGGER
        if up and obs.pending_total == 0 and total < self.max:
            key = next((o.key for o in [self.cheapest, *self.dearest_order[::-1]]
                        if counts.get(o.key, 0) < self.room[o.key]), None)
            if key is not None:
                counts[key] = counts.get(key, 0) + 1
                self.last_reason = f"queue {per:.1f}/replica: +1 {key}"
        elif not up and ready >= 2 and total > self.min:
            after = obs.queue_peak / (ready - 1)
            if self.QUEUE_SATURATED - after >= self.QUEUE_SPARE_TRIGGER:
                key = next(o.key for o in self.dearest_order if counts.get(o.key, 0) > 0)
                counts[key] -= 1
                self.last_reason = f"queue {per:.1f}/replica: -1 {key}"
        return {k: n for k, n in counts.items() if n > 0}
