"""The discrete-event model of one model's replicas serving a trace under a scaling policy.

What it models, and nothing more:

* **Replicas** of each shape serve one shared FIFO queue (ideal least-loaded routing, like
  Knative's activator or the Gateway API's endpoint picker). An idle ready replica takes up to
  ``maxBatchSize`` queued requests at once (fewer on a shape whose full batches would miss the
  objective: :func:`~gpupool_operator.core.scaling.offers.batch_within`; the worker runs a batch
  at once when it finds the model idle) and holds them for the batch time of the shared model
  (:func:`~gpupool_operator.core.scaling.offers.batch_seconds`, from the shape's profile, scaled by
  the requests' work). When several replicas are idle the fastest takes the batch.
* **Pod start**: a new replica serves ``pod_start_s`` after it is asked for, plus
  ``mig_relayout_s`` when its placement needs a MIG layout change the cluster has not made yet.
  It costs money from the moment it is asked for (the GPU is held while the pod starts).
* **Scale-down** removes starting replicas first (newest first), then idle ones, then busy ones,
  which finish their batch first (draining, still billed).
* **Zero replicas**: requests wait in the queue until a replica is ready (Knative's activator);
  each time a request finds no ready replica a cold start begins (counted once per episode).

Dollars and GPU-hours are billed over the trace's span, ``[0, last arrival]``; after that the model
runs on only until the queue drains (at most ``drain_limit_s``), for the latencies. Everything is
deterministic: there is no randomness in the model, and time is the simulation's own.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from gpupool_operator.core.scaling.offers import batch_seconds
from gpupool_operator.sim.results import RunResult, Timeline, summarize
from gpupool_operator.sim.trace import Trace

__all__ = ["Observation", "Placer", "Policy", "ShapeModel", "SimConfig", "Simulation"]

_READY, _DONE, _TICK, _SAMPLE = 0, 1, 2, 3
_STARTING, _SERVING, _DRAINING, _GONE = 0, 1, 2, 3


@dataclass(frozen=True, slots=True)
class ShapeModel:
    """One shape as the model needs it: speed, price, GPU share."""

    key: str
    throughput: float  # the profile's inferences/s at full batches
    usd_per_hour: float
    gpus: float = 0.0
    mig: bool = False
    fixed_fraction: float = 0.5  # the batch-time model's fixed share (see core.scaling.offers)
    batch_limit: int = 0  # most rows a batch takes here (0: the model's maxBatchSize)


@dataclass(frozen=True, slots=True)
class SimConfig:
    pod_start_s: float = 30.0
    mig_relayout_s: float = 60.0
    max_batch: int = 32
    objective_s: float | None = None
    max_replicas: int = 1
    sample_s: float = 5.0
    drain_limit_s: float = 600.0


@dataclass(frozen=True, slots=True)
class Observation:
    """What a policy sees at one of its ticks; counts and averages cover the time since its last."""

    now: float
    interval: float
    queue: int  # requests waiting now
    in_flight: int  # requests in a batch now
    arrivals: int
    completions: int
    concurrency: float  # time-averaged requests waiting or in a batch
    utilization: float | None  # busy share of the ready replicas (None: none was ready)
    queue_peak: int  # most requests waiting at once
    ready: Mapping[str, int] = field(default_factory=dict)
    pending: Mapping[str, int] = field(default_factory=dict)

    @property
    def ready_total(self) -> int:
        return sum(self.ready.values())

    @property
    def pending_total(self) -> int:
        return sum(self.pending.values())


class Policy(Protocol):
    """A scaling policy the model can run: replicas per shape at t = 0, then at every tick."""

    name: str
    interval_s: float

    def initial(self) -> Mapping[str, int]: ...

    def decide(self, obs: Observation) -> Mapping[str, int]: ...


class Placer(Protocol):
    """Checks a mix against the cluster: what of it fits, and how many MIG layout changes it needs."""

    def place(self, counts: Mapping[str, int]) -> tuple[dict[str, int], int]: ...


class _Replica:
    __slots__ = ("batch", "busy", "id", "ready_at", "shape", "state")

    def __init__(self, rid: int, shape: ShapeModel, ready_at: float, state: int) -> None:
        self.id = rid
        self.shape = shape
        self.ready_at = ready_at
        self.state = state
        self.busy = False
        self.batch: tuple[int, ...] = ()


class _Fleet:
    """The replicas of one run and what they cost per hour: the bookkeeping the loop relies on."""

    def __init__(self, shapes: Mapping[str, ShapeModel]) -> None:
        self.shapes = dict(shapes)
        self.replicas: list[_Replica] = []
        self.ready_count = 0
        self.cost_rate = self.gpu_rate = 0.0
        self.next_id = 0

    def _push(self, t: float, kind: int, rep: _Replica | None = None) -> None:
        raise NotImplementedError

    def _create(self, key: str, ready_at: float, ready_now: bool = False) -> None:
        shape = self.shapes[key]
        self.next_id += 1
        r = _Replica(self.next_id, shape, ready_at, _SERVING if ready_now else _STARTING)
        self.replicas.append(r)
        self.cost_rate += shape.usd_per_hour
        self.gpu_rate += shape.gpus
        if ready_now:
            self.ready_count += 1
        else:
            self._push(ready_at, _READY, r)

    def _remove(self, have: list[_Replica], n: int) -> None:
        order = sorted(have, key=lambda r: (r.state != _STARTING, r.busy, -r.id))
        for r in order[:n]:
            if r.state == _SERVING:
                self.ready_count -= 1
            if r.busy:
                r.state = _DRAINING
            else:
                self._drop(r)

    def _drop(self, r: _Replica) -> None:
        r.state = _GONE
        self.replicas.remove(r)
        self.cost_rate -= r.shape.usd_per_hour
        self.gpu_rate -= r.shape.gpus

    def _live_total(self) -> int:
        return sum(1 for r in self.replicas if r.state in (_STARTING, _SERVING))


class Simulation(_Fleet):
    """One run: a trace, a policy, the shapes it may use. :meth:`run` returns the numbers."""

    def __init__(self, trace: Trace, shapes: Mapping[str, ShapeModel], config: SimConfig, policy: Policy,
                 placer: Placer | None = None) -> None:
        super().__init__(shapes)
        self.trace, self.cfg, self.policy, self.placer = trace, config, policy, placer
        self.queue: deque[int] = deque()
        self.events: list[tuple[float, int, int, _Replica | None]] = []
        self.seq = 0
        self.finish = [math.inf] * len(trace)
        self.now = 0.0
        self.in_batches = 0
        self.bill_end = trace.duration
        self.usd = self.gpu_hours = self.at_max_s = 0.0
        self.relayouts_done = 0
        self.cold_starts = self.cold_requests = 0
        self.cold = False
        self.scale_ups = self.scale_downs = 0
        self.decisions: list[tuple[float, str]] = []
        # per-tick accumulators (what the next Observation reports)
        self.acc_arrivals = self.acc_completions = self.acc_queue_peak = 0
        self.acc_area = self.acc_busy = self.acc_ready = 0.0
        self.acc_since = 0.0
        # per-sample accumulators (the timeline)
        self.sample_arrivals = 0
        self.timeline = Timeline(tuple(sorted(self.shapes)))

    # ------------------------------------------------------------------------------- run
    def run(self, progress: Callable[[float], None] | None = None) -> RunResult:
        for key, n in sorted(self.policy.initial().items()):
            for _ in range(n):
                self._create(key, 0.0, ready_now=True)
        self._push(self.policy.interval_s, _TICK)  # the first tick looks back one full interval
        self._push(0.0, _SAMPLE)
        times, n = self.trace.times, len(self.trace)
        end_limit = self.trace.duration + self.cfg.drain_limit_s
        i, next_report = 0, 0.0
        while True:
            t_arr = times[i] if i < n else math.inf
            t_evt = self.events[0][0] if self.events else math.inf
            if i >= n and not self.queue and self.in_batches == 0:
                break
            t = min(t_arr, t_evt)
            if t > end_limit:
                break
            self._advance(t)
            if t_arr <= t_evt:
                self._arrive(i)
                i += 1
            else:
                _, _, kind, rep = heapq.heappop(self.events)
                if kind == _DONE:
                    assert rep is not None
                    self._done(rep)
                elif kind == _READY:
                    assert rep is not None
                    self._ready(rep)
                elif kind == _TICK:
                    self._tick()
                else:
                    self._sample()
            if progress is not None and t >= next_report:
                progress(min(t, self.trace.duration))
                next_report = t + 60.0
        self._advance(max(self.now, self.bill_end))
        if progress is not None:
            progress(self.trace.duration)
        return summarize(self.policy.name, self.trace, self.finish, self.cfg.objective_s, self.usd, self.gpu_hours,
                         self.cold_starts, self.cold_requests, self.scale_ups, self.scale_downs, self.at_max_s,
                         self.timeline, self.decisions)

    # ------------------------------------------------------------------------------- events
    def _push(self, t: float, kind: int, rep: _Replica | None = None) -> None:
        self.seq += 1
        heapq.heappush(self.events, (t, self.seq, kind, rep))

    def _advance(self, t: float) -> None:
        dt = t - self.now
        if dt <= 0:
            return
        self.acc_area += (len(self.queue) + self.in_batches) * dt
        self.acc_busy += sum(1 for r in self.replicas if r.busy and r.state == _SERVING) * dt
        self.acc_ready += self.ready_count * dt
        billed = max(0.0, min(t, self.bill_end) - self.now)
        if billed > 0:
            self.usd += self.cost_rate * billed / 3600
            self.gpu_hours += self.gpu_rate * billed / 3600
            if self._live_total() >= self.cfg.max_replicas:
                self.at_max_s += billed
        self.now = t

    def _arrive(self, j: int) -> None:
        self.queue.append(j)
        self.acc_arrivals += 1
        self.sample_arrivals += 1
        self.acc_queue_peak = max(self.acc_queue_peak, len(self.queue))
        if self.ready_count == 0:
            if not self.cold:
                self.cold, self.cold_starts = True, self.cold_starts + 1
            self.cold_requests += 1
        self._dispatch()

    def _dispatch(self) -> None:
        B, work = self.cfg.max_batch, self.trace.work
        while self.queue:
            best: _Replica | None = None
            for r in self.replicas:
                if r.state == _SERVING and not r.busy and (
                        best is None or r.shape.throughput > best.shape.throughput):
                    best = r
            if best is None:
                return
            take = min(len(self.queue), best.shape.batch_limit or B)
            batch = tuple(self.queue.popleft() for _ in range(take))
            rows = sum(work[j] for j in batch)
            seconds = batch_seconds(best.shape.throughput, B, rows, best.shape.fixed_fraction)
            best.busy, best.batch = True, batch
            self.in_batches += take
            self._push(self.now + seconds, _DONE, best)

    def _done(self, r: _Replica) -> None:
        for j in r.batch:
            self.finish[j] = self.now
        self.acc_completions += len(r.batch)
        self.in_batches -= len(r.batch)
        r.busy, r.batch = False, ()
        if r.state == _DRAINING:
            self._drop(r)
        self._dispatch()

    def _ready(self, r: _Replica) -> None:
        if r.state != _STARTING:
            return
        r.state = _SERVING
        self.ready_count += 1
        self.cold = False
        self._dispatch()

    def _tick(self) -> None:
        obs = self._observe()
        desired = self.policy.decide(obs)
        self._apply(desired)
        reason = getattr(self.policy, "last_reason", None)
        if reason and (not self.decisions or self.decisions[-1][1] != reason) and "hold" not in reason[:5]:
            self.decisions.append((round(self.now, 3), reason))
        if self.now < self.trace.duration + self.cfg.drain_limit_s:
            self._push(self.now + self.policy.interval_s, _TICK)

    def _sample(self) -> None:
        live: dict[str, int] = {}
        for r in self.replicas:
            if r.state in (_STARTING, _SERVING):
                live[r.shape.key] = live.get(r.shape.key, 0) + 1
        self.timeline.add(self.now, self.sample_arrivals / self.cfg.sample_s, len(self.queue), live, self.cost_rate)
        self.sample_arrivals = 0
        if self.now + self.cfg.sample_s <= self.bill_end:
            self._push(self.now + self.cfg.sample_s, _SAMPLE)

    # ------------------------------------------------------------------------------- scaling
    def _observe(self) -> Observation:
        interval = max(1e-9, self.now - self.acc_since)
        ready: dict[str, int] = {}
        pending: dict[str, int] = {}
        for r in self.replicas:
            if r.state == _SERVING:
                ready[r.shape.key] = ready.get(r.shape.key, 0) + 1
            elif r.state == _STARTING:
                pending[r.shape.key] = pending.get(r.shape.key, 0) + 1
        obs = Observation(
            now=self.now, interval=interval, queue=len(self.queue), in_flight=self.in_batches,
            arrivals=self.acc_arrivals, completions=self.acc_completions,
            concurrency=self.acc_area / interval if self.now > self.acc_since else float(len(self.queue)),
            utilization=self.acc_busy / self.acc_ready if self.acc_ready > 0 else None,
            queue_peak=max(self.acc_queue_peak, len(self.queue)), ready=ready, pending=pending)
        self.acc_arrivals = self.acc_completions = 0
        self.acc_queue_peak = len(self.queue)
        self.acc_area = self.acc_busy = self.acc_ready = 0.0
        self.acc_since = self.now
        return obs

    def _apply(self, desired: Mapping[str, int]) -> None:
        unknown = set(desired) - set(self.shapes)
        if unknown:
            raise ValueError(f"policy {self.policy.name} asked for unknown shapes: {', '.join(sorted(unknown))}")
        live: dict[str, list[_Replica]] = {k: [] for k in self.shapes}
        for r in self.replicas:
            if r.state in (_STARTING, _SERVING):
                live[r.shape.key].append(r)
        want = {k: max(0, int(desired.get(k, 0))) for k in self.shapes}
        relayout = False
        if self.placer is not None and any(want[k] > len(live[k]) for k in want):
            fits, layouts = self.placer.place({k: n for k, n in want.items() if n})
            want = {k: max(len(live[k]), min(n, fits.get(k, 0))) if n > len(live[k]) else n for k, n in want.items()}
            if layouts > self.relayouts_done:
                relayout, self.relayouts_done = True, layouts
        before = self._live_total()
        for key in sorted(want):
            have = live[key]
            for _ in range(want[key] - len(have)):
                extra = self.cfg.mig_relayout_s if relayout and self.shapes[key].mig else 0.0
                self._create(key, self.now + self.cfg.pod_start_s + extra)
            if len(have) > want[key]:
                self._remove(have, len(have) - want[key])
        after = self._live_total()
        changed = any(want[k] != len(live[k]) for k in want)
        if changed:
            if after > before or (after == before and any(want[k] > len(live[k]) for k in want)):
                self.scale_ups += 1
            else:
                self.scale_downs += 1
