"""Reading the workers' own statistics: what $/1M in status (and, later, autoscaling) is made of.

Each replica pod serves Prometheus metrics (``gpupool_worker_*``, port ``metrics``). A
:class:`WorkerSample` is one scrape of one worker, general enough for every consumer: per model,
queue depth and in-flight requests (gauges), arrivals, completions, inferences, cost and busy
seconds (counters), the request-latency histogram (p99 between two samples), and what the
replica costs (``gpupool_worker_price_per_hour_usd`` x ``gpupool_worker_device_share``, the price
the operator gave it). Two samples of the same pod give a :class:`ModelLoad`: rates, p99 and
dollars per million inferences served, charged for every second the replica was up (replica-seconds
x price / inferences, shared among a pod's models by busy time: what serving costs, idle time
included, and what status shows) and busy-only (the device time of the batches priced, a floor).
Nothing is ever estimated: a model no worker answered for (a KWOK pod serves nothing) has no
load, and its status shows no $/1M.

:class:`StatsCollector` scrapes every Ready replica concurrently, in the background, with a short
timeout per request; an endpoint that does not answer is retried with exponential back-off, so
pods that never serve cost almost nothing. It also scrapes Running replicas that are not Ready: a
gpupool worker that cannot load its model stays up, not Ready, and says why in
``gpupool_worker_model_state{state="UNAVAILABLE", reason, message}``; the same scrape gives
:meth:`StatsCollector.load_failures` (the pool's ModelLoadFailed condition, adapters/modelload.py),
and only Ready replicas' samples ever count as load. The placement loop only reads its latest
samples (their age included): a slow worker never blocks a cycle.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from gpupool_operator.adapters.modelload import LoadFailure
from gpupool_operator.core.observed import Replica

__all__ = ["ModelLoad", "StatsCollector", "WorkerSample", "load_between", "parse_exposition"]

log = logging.getLogger("gpupool.workerstats")
PerModel = Mapping[str, float]


@dataclass(frozen=True, slots=True)
class WorkerSample:
    """One scrape of one worker (``at``: unix seconds when it was read)."""

    at: float
    queue_depth: PerModel = field(default_factory=dict)
    inflight: PerModel = field(default_factory=dict)
    completions: PerModel = field(default_factory=dict)  # requests answered (any outcome)
    inferences: PerModel = field(default_factory=dict)
    cost_usd: PerModel = field(default_factory=dict)
    busy_seconds: PerModel = field(default_factory=dict)
    latency: Mapping[str, tuple[tuple[float, float], ...]] = field(default_factory=dict)  # (le, cumulative)
    price_per_hour_usd: float | None = None  # the whole device's; None: the worker did not say
    device_share: float = 1.0
    unavailable: Mapping[str, tuple[str, str]] = field(default_factory=dict)  # model -> (reason, message)

    def arrivals(self, model: str) -> float:
        """Requests received so far: answered plus in flight."""
        return self.completions.get(model, 0.0) + self.inflight.get(model, 0.0)

    def age(self, now: float) -> float:
        return max(0.0, now - self.at)


@dataclass(frozen=True, slots=True)
class ModelLoad:
    """What a model's sampled replicas did between two samples each."""

    queue_depth: float
    inflight: float
    arrivals_per_second: float
    completions_per_second: float
    inferences_per_second: float
    usd_per_million_inferences: float | None  # idle time charged; None: nothing served in the window
    p99_seconds: float | None
    replicas: int  # replicas the figures come from
    age_s: float  # age of the oldest sample used
    usd_per_million_inferences_busy: float | None = None  # busy time only (the batches' device time)


_COUNTERS = {
    "gpupool_worker_inferences_total": "inferences",
    "gpupool_worker_cost_usd_total": "cost_usd",
    "gpupool_worker_busy_seconds_total": "busy_seconds",
    "gpupool_worker_requests_total": "completions",
}
_GAUGES = {"gpupool_worker_queue_depth": "queue_depth", "gpupool_worker_inflight_requests": "inflight"}
PRICE = "gpupool_worker_price_per_hour_usd"
SHARE = "gpupool_worker_device_share"
MODEL_STATE = "gpupool_worker_model_state"  # {model, state, reason, message}: why a model is not served


def parse_exposition(text: str, at: float) -> WorkerSample:
    """A worker's ``/metrics`` text as a sample (unknown metrics are ignored)."""
    values: dict[str, dict[str, float]] = {v: {} for v in (*_COUNTERS.values(), *_GAUGES.values())}
    latency: dict[str, list[tuple[float, float]]] = {}
    device: dict[str, float] = {}
    unavailable: dict[str, tuple[str, str]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            model = s.labels.get("model", "")
            target = _COUNTERS.get(s.name) or _GAUGES.get(s.name)
            if target is not None:
                values[target][model] = values[target].get(model, 0.0) + float(s.value)
            elif s.name == "gpupool_worker_request_duration_seconds_bucket":
                latency.setdefault(model, []).append((float(s.labels["le"]), float(s.value)))
            elif s.name in (PRICE, SHARE):
                device[s.name] = float(s.value)
            elif s.name == MODEL_STATE and s.labels.get("state") == "UNAVAILABLE":
                unavailable[model] = (s.labels.get("reason") or "LoadFailed", s.labels.get("message", ""))
    return WorkerSample(at=at, latency={m: tuple(sorted(b)) for m, b in latency.items()},
                        price_per_hour_usd=device.get(PRICE), device_share=device.get(SHARE, 1.0),
                        unavailable=unavailable, **values)


def _p99(before: Sequence[tuple[float, float]], after: Sequence[tuple[float, float]]) -> float | None:
    """The 0.99 quantile of the requests between two cumulative histograms (bucket upper bound)."""
    old = dict(before)
    deltas = [(le, max(0.0, n - old.get(le, 0.0))) for le, n in after]
    total = deltas[-1][1] if deltas else 0.0
    if total <= 0:
        return None
    i = bisect.bisect_left([n for _, n in deltas], 0.99 * total)
    le = deltas[min(i, len(deltas) - 1)][0]
    return None if le == float("inf") else le


def _idle_charged_usd(before: WorkerSample, after: WorkerSample, model: str) -> float:
    """What ``model``'s share of one replica cost between two samples, idle time included: the
    replica's price x share x seconds, split among its models by busy time (evenly where none was
    busy). Without a price from the worker, its busy-only cost (nothing better is known)."""
    if after.price_per_hour_usd is None:
        return max(0.0, after.cost_usd.get(model, 0.0) - before.cost_usd.get(model, 0.0))
    replica = after.price_per_hour_usd * after.device_share * max(0.0, after.at - before.at) / 3600.0
    models = set(after.inferences) | set(after.busy_seconds) | {model}
    busy = {m: max(0.0, after.busy_seconds.get(m, 0.0) - before.busy_seconds.get(m, 0.0)) for m in models}
    total = sum(busy.values())
    return replica * (busy[model] / total if total > 0 else 1.0 / len(models))


def load_between(before: Iterable[WorkerSample], after: Iterable[WorkerSample], model: str) -> ModelLoad:
    """A model's load over replicas sampled twice (pairs in order; counters restart with a pod:
    deltas clamp at 0). $ per million inferences: idle time charged (``usd_per_million_inferences``)
    and busy-only (``usd_per_million_inferences_busy``)."""
    b, a = list(before), list(after)
    pairs = list(zip(b, a, strict=False))

    def delta(attr: str) -> float:
        return float(sum(max(0.0, getattr(x, attr).get(model, 0.0) - getattr(y, attr).get(model, 0.0))
                         for y, x in pairs))

    seconds = max((max(s.at for s in a) - min(s.at for s in b)) if a and b else 0.0, 1e-9)
    infer, cost = delta("inferences"), delta("cost_usd")
    charged = sum(_idle_charged_usd(y, x, model) for y, x in pairs)
    arrivals = sum(max(0.0, x.arrivals(model) - y.arrivals(model)) for y, x in pairs)
    p99s = [p for y, x in pairs if (p := _p99(y.latency.get(model, ()), x.latency.get(model, ()))) is not None]
    now = max((s.at for s in a), default=0.0)
    return ModelLoad(
        queue_depth=sum(s.queue_depth.get(model, 0.0) for s in a),
        inflight=sum(s.inflight.get(model, 0.0) for s in a),
        arrivals_per_second=arrivals / seconds,
        completions_per_second=delta("completions") / seconds,
        inferences_per_second=infer / seconds,
        usd_per_million_inferences=charged / infer * 1e6 if infer > 0 else None,
        usd_per_million_inferences_busy=cost / infer * 1e6 if infer > 0 else None,
        p99_seconds=max(p99s) if p99s else None,
        replicas=len(pairs),
        age_s=max((s.age(now) for s in b), default=0.0),
    )


class StatsCollector:
    """Scrapes Ready replicas in the background; :meth:`loads` reads the latest samples."""

    def __init__(self, period_s: float = 15.0, timeout_s: float = 1.0, concurrency: int = 32,
                 port: int = 8002) -> None:
        self.period_s = period_s
        self.timeout_s = timeout_s
        self.concurrency = concurrency
        self.port = port
        self.targets: dict[str, str] = {}  # pod key -> IP, set by the loop each cycle
        self.samples: dict[str, tuple[WorkerSample | None, WorkerSample]] = {}  # pod -> (previous, latest)
        self._failing: dict[str, tuple[int, float]] = {}  # pod -> (failures, retry after)

    def watch(self, replicas: Iterable[Replica]) -> None:
        """Scrape these (the Ready replicas with an IP, and the Running ones not Ready: a worker that
        cannot load its model says why); forget the rest."""
        self.targets = {r.key: r.ip for r in replicas
                        if (r.ready or r.phase == "Running") and r.ip and not r.deleting and not r.finished}
        for gone in set(self.samples) - set(self.targets):
            del self.samples[gone]

    def loads(self, replicas: Iterable[Replica], now: float) -> dict[str, ModelLoad]:
        """Per demand, the load its replicas' last two samples show (fresh samples only)."""
        pairs: dict[str, tuple[list[WorkerSample], list[WorkerSample]]] = {}
        for r in replicas:
            got = self.samples.get(r.key)
            if not r.ready or got is None or got[0] is None or got[1].age(now) > self._fresh_s:
                continue
            before, after = pairs.setdefault(r.demand, ([], []))
            before.append(got[0])
            after.append(got[1])
        return {d: load_between(b, a, d.rsplit("/", 1)[1]) for d, (b, a) in pairs.items()}

    @property
    def _fresh_s(self) -> float:
        return 3 * self.period_s + self.timeout_s

    def load_failures(self, replicas: Iterable[Replica], now: float) -> dict[str, list[LoadFailure]]:
        """Per demand, the models its replicas' workers say they cannot serve (``UNAVAILABLE`` with
        the worker's reason and message) in their latest fresh sample; nothing read: nothing said."""
        out: dict[str, list[LoadFailure]] = {}
        for r in replicas:
            got = self.samples.get(r.key)
            if r.deleting or got is None or got[1].age(now) > self._fresh_s:
                continue
            pod = r.key.split("/", 1)[-1]
            for model, (reason, message) in sorted(got[1].unavailable.items()):
                out.setdefault(r.demand, []).append(LoadFailure(model, pod, reason, message))
        return out

    async def run(self, stop: asyncio.Event, active: Callable[[], bool]) -> None:
        """Scrape every ``period_s`` while ``active()`` (the leader), until ``stop``."""
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while not stop.is_set():
                if active() and self.targets:
                    await self.sweep(session)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=self.period_s)

    async def sweep(self, session: object) -> None:
        now = time.time()
        sem = asyncio.Semaphore(self.concurrency)
        due = [(k, ip) for k, ip in self.targets.items() if self._failing.get(k, (0, 0.0))[1] <= now]
        await asyncio.gather(*(self._scrape(session, sem, k, ip) for k, ip in due))

    async def _scrape(self, session: object, sem: asyncio.Semaphore, key: str, ip: str) -> None:
        import aiohttp

        assert isinstance(session, aiohttp.ClientSession)
        async with sem:
            try:
                async with session.get(f"http://{ip}:{self.port}/metrics") as rsp:
                    text = await rsp.text()
                sample = parse_exposition(text, time.time())
            except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
                failures = self._failing.get(key, (0, 0.0))[0] + 1
                self._failing[key] = (failures, time.time() + min(300.0, self.period_s * 2 ** failures))
                return
        self._failing.pop(key, None)
        previous = self.samples.get(key)
        self.samples[key] = (previous[1] if previous is not None else None, sample)
