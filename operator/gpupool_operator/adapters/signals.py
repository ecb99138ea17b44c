"""The scaling loop's signals: each replica's own metrics endpoint, scraped concurrently.

Every replica pod says where it reports its load (annotations ``gpupool.io/metrics-port``,
``metrics-path``, ``queue-metric``, ``queue-metric-model-label``: :func:`~gpupool_operator.adapters.
runtimes.signal_of_pod`), so the scraper needs nothing but the pod. What it reads per runtime:

- gpupool worker: queue ``gpupool_worker_queue_depth``, in flight ``gpupool_worker_inflight_requests``,
  completions ``gpupool_worker_requests_total``, and ``gpupool_worker_inferences_total``,
  ``_cost_usd_total`` and the ``_request_duration_seconds`` histogram ($/1M and p99);
- vLLM: queue ``vllm:num_requests_waiting``, in flight ``vllm:num_requests_running``, completions
  ``vllm:request_success_total``;
- Triton: queue ``nv_inference_pending_request_count``, completions
  ``nv_inference_request_success`` + ``_failure``, inferences ``nv_inference_count``;
- custom: the configured ``queueMetric`` only.

(the queue metric of a runtime can be overridden by ``runtime.queueMetric``; a model label, where
the runtime has one, keeps other models' samples out). No Prometheus server is involved; the
worker's series stay exposed for one that exists.

Faults, each handled the same way: **the reading is refused and the replica counts as not
reporting**, which the policy treats as missing data (it never scales down on it):
a connection refused or reset, a timeout (``timeout_s`` for the whole request, 1 s by default), a
body that is not Prometheus text (HTML, binary, truncated), larger than ``max_bytes``, a queue
metric that is absent, NaN, infinite or negative. Counters that go backwards (a restarted
server) give a zero delta, never a negative rate.

One slow or dead replica never delays the others (all requests run concurrently, each bounded by
its own timeout), and a replica that keeps failing is retried with back-off capped at
``max_backoff_s`` (8 s) so the loop notices quickly when it comes back; one that has never
answered (a KWOK pod serves nothing) backs off to 120 s, and at most 64 of those are probed per
sweep, so a fleet of pods that serve nothing costs a bounded sweep. Samples carry the time they
were read on the operator's monotonic clock (a clock step on the host changes nothing), so each
model's :class:`Signals` says how old its data is.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from gpupool_operator.adapters.runtimes import QueueSignal
from gpupool_operator.adapters.workerstats import PRICE, SHARE, ModelLoad, WorkerSample, load_between
from gpupool_operator.core.scaling import ShapeReplicas, Signals

__all__ = ["BadMetrics", "Reading", "Scraper", "SignalBook", "Target", "model_signals", "parse_reading"]

log = logging.getLogger("gpupool.signals")

#: Series each external runtime reports besides its queue (sample names, as exposed).
_EXTERNAL: Mapping[str, Mapping[str, tuple[str, ...]]] = {
    "vllm": {"inflight": ("vllm:num_requests_running",), "completions": ("vllm:request_success_total",)},
    "triton": {"completions": ("nv_inference_request_success", "nv_inference_request_failure"),
               "inferences": ("nv_inference_count",)},
}
_LATENCY = "gpupool_worker_request_duration_seconds_bucket"
_WORKER = {
    "queue_depth": ("gpupool_worker_queue_depth",),
    "inflight": ("gpupool_worker_inflight_requests",),
    "completions": ("gpupool_worker_requests_total",),
    "inferences": ("gpupool_worker_inferences_total",),
    "cost_usd": ("gpupool_worker_cost_usd_total",),
    "busy_seconds": ("gpupool_worker_busy_seconds_total",),
}


class BadMetrics(ValueError):
    """A scrape whose content cannot be used (the message says why, for logs and status)."""


@dataclass(frozen=True, slots=True)
class Target:
    """One replica to scrape: where, what its runtime calls its queue, and which model it serves."""

    pod: str  # namespace/name
    demand: str  # namespace/pool/model
    model: str  # the model's name (the value of the runtime's model label)
    url: str
    signal: QueueSignal


@dataclass(frozen=True, slots=True)
class Reading:
    """What one scrape of one replica gave: a sample, or why there is none."""

    at: float  # monotonic seconds when the scrape ended
    sample: WorkerSample | None
    error: str | None = None


def parse_reading(text: str, signal: QueueSignal, model: str, at: float) -> WorkerSample:
    """One scrape as a :class:`WorkerSample` of ``model`` (``at``: the caller's clock), or
    :class:`BadMetrics` when it cannot be trusted: not Prometheus text, no queue metric for the
    model, or a NaN, infinite or negative value in any series the policy reads."""
    if signal.metric is None:
        raise BadMetrics(f"runtime {signal.runtime} declares no queue metric")
    series = dict(_WORKER) if signal.runtime == "gpupool" else dict(_EXTERNAL.get(signal.runtime, {}))
    series["queue_depth"] = (signal.metric,)
    wanted = {name: field_ for field_, names in series.items() for name in names}
    values: dict[str, float] = {}
    latency: list[tuple[float, float]] = []
    device: dict[str, float] = {}
    try:
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if signal.runtime == "gpupool" and s.name in (PRICE, SHARE):  # what the replica costs
                    device[s.name] = float(s.value)
                    continue
                latency_bucket = signal.runtime == "gpupool" and s.name == _LATENCY
                if s.name not in wanted and not latency_bucket:
                    continue
                if signal.model_label and signal.model_label in s.labels and s.labels[signal.model_label] != model:
                    continue
                value = float(s.value)
                if not math.isfinite(value) or value < 0:
                    if latency_bucket and value == math.inf:
                        continue
                    raise BadMetrics(f"{s.name} is {value!r}: not a count")
                if latency_bucket:
                    latency.append((float(s.labels["le"]), value))
                else:
                    values[wanted[s.name]] = values.get(wanted[s.name], 0.0) + value
    except BadMetrics:
        raise
    except (ValueError, KeyError, IndexError, TypeError) as err:
        raise BadMetrics(f"not Prometheus text ({type(err).__name__}: {str(err)[:120]})") from None
    if "queue_depth" not in values:
        raise BadMetrics(f"no {signal.metric} for model {model}")
    per_model = {k: {model: v} for k, v in values.items()}
    price = device.get(PRICE)
    return WorkerSample(at=at, latency={model: tuple(sorted(latency))} if latency else {}, **per_model,
                        price_per_hour_usd=price if price is not None and math.isfinite(price) and price >= 0 else None,
                        device_share=device.get(SHARE, 1.0) if 0 < device.get(SHARE, 1.0) <= 1 else 1.0,
                        unavailable={})  # load failures: workerstats.StatsCollector's scrape reads them


@dataclass
class _Replica:
    samples: list[WorkerSample] = field(default_factory=list)  # oldest first; see SignalBook.record
    error: str | None = None
    failures: int = 0
    retry_at: float = 0.0
    answered: bool = False  # has ever given a good sample

    @property
    def latest(self) -> WorkerSample | None:
        return self.samples[-1] if self.samples else None

    @property
    def previous(self) -> WorkerSample | None:
        return self.samples[0] if len(self.samples) > 1 else None


@dataclass
class SignalBook:
    """Recent good samples of every replica, and the last error of each (see the module doc).

    Rates come from the latest sample and the newest one at least ``rate_window_s`` older (so two
    scrapes a few milliseconds apart never make a rate); a replica with no such pair yet does not
    report."""

    max_backoff_s: float = 8.0
    #: Back-off cap of a replica that has never answered (a pod that serves nothing).
    never_backoff_s: float = 120.0
    #: Replicas that have never answered probed per sweep at most.
    probe_limit: int = 64
    rate_window_s: float = 1.0
    replicas: dict[str, _Replica] = field(default_factory=dict)

    def due(self, targets: Iterable[Target], now: float) -> list[Target]:
        """The targets to scrape now: every replica that has answered before (failing ones once
        their back-off is over), and at most ``probe_limit`` that never have, the longest
        waiting first (so thousands of pods that serve nothing, KWOK's, cost a bounded sweep and
        soon back off to ``never_backoff_s``). Forgets pods no longer targeted."""
        targets = list(targets)
        keep = {t.pod for t in targets}
        for gone in set(self.replicas) - keep:
            del self.replicas[gone]
        known: list[Target] = []
        fresh: list[Target] = []
        for t in targets:
            r = self.replicas.get(t.pod)
            if r is not None and r.retry_at > now:
                continue
            (known if r is not None and r.answered else fresh).append(t)
        fresh.sort(key=lambda t: self.replicas[t.pod].retry_at if t.pod in self.replicas else -math.inf)
        return known + fresh[: self.probe_limit]

    def record(self, pod: str, reading: Reading, base_s: float) -> None:
        r = self.replicas.setdefault(pod, _Replica())
        if reading.sample is None:
            r.error = reading.error or "no sample"
            r.failures += 1
            cap = self.max_backoff_s if r.answered else self.never_backoff_s
            r.retry_at = reading.at + min(cap, base_s * 2 ** (r.failures - 1))
            return
        r.answered = True
        r.samples.append(reading.sample)
        while len(r.samples) > 2 and (r.samples[-1].at - r.samples[1].at >= self.rate_window_s
                                      or len(r.samples) > 64):
            r.samples.pop(0)
        r.error, r.failures, r.retry_at = None, 0, 0.0

    def latest(self, pod: str) -> WorkerSample | None:
        r = self.replicas.get(pod)
        return r.latest if r is not None else None

    def error(self, pod: str) -> str | None:
        r = self.replicas.get(pod)
        return r.error if r is not None else None

    def pairs(self, pods: Iterable[str], now: float, stale_after_s: float
              ) -> tuple[list[WorkerSample], list[WorkerSample], list[str]]:
        """(previous, latest) samples of the pods whose latest sample is fresh and has a
        predecessor, and the pods that do not report (no sample, only one, stale, or failing)."""
        before: list[WorkerSample] = []
        after: list[WorkerSample] = []
        silent: list[str] = []
        for pod in pods:
            r = self.replicas.get(pod)
            first, last = (r.previous, r.latest) if r is not None else (None, None)
            if r is None or first is None or last is None or r.error is not None \
                    or now - last.at > stale_after_s or last.at - first.at < self.rate_window_s / 2:
                silent.append(pod)
                continue
            before.append(first)
            after.append(last)
        return before, after, silent


def model_signals(book: SignalBook, model: str, ready: Mapping[str, str], pending: Mapping[str, int],
                  now: float, stale_after_s: float) -> tuple[Signals, ModelLoad | None, list[str]]:
    """One model's :class:`Signals` from its replicas' samples: ``ready`` maps each Ready
    replica pod to its shape key, ``pending`` counts starting replicas per shape key. Also the
    :class:`ModelLoad` (rates, p99, $/1M) of the replicas that report, and the ones that do not.

    A replica reports when its two latest scrapes succeeded and the later one is fresh; the
    sample's age is that of the oldest sample used. Replicas that do not report make
    ``reporting`` smaller than ``ready``, which the policy never scales down on."""
    shapes: dict[str, ShapeReplicas] = {}
    for shape in ready.values():
        shapes[shape] = ShapeReplicas(shapes.get(shape, ShapeReplicas()).ready + 1, 0)
    for shape, n in pending.items():
        if n > 0:
            shapes[shape] = ShapeReplicas(shapes.get(shape, ShapeReplicas()).ready, n)
    before, after, silent = book.pairs(sorted(ready), now, stale_after_s)
    if not after:
        ages = [now - s.at for p in ready if (s := book.latest(p)) is not None]
        age = max(ages) if ages else 0.0
        return Signals(age_s=age, queue=0.0, in_flight=0.0, arrival_rate=0.0, replicas=shapes, reporting=0), \
            None, silent
    load = load_between(before, after, model)
    age = max(now - s.at for s in after)
    signals = Signals(age_s=max(age, 0.0), queue=load.queue_depth, in_flight=load.inflight,
                      arrival_rate=load.arrivals_per_second, completion_rate=load.completions_per_second,
                      replicas=shapes, reporting=len(after))
    return signals, load, silent


class Scraper:
    """Reads every target's metrics concurrently, each within ``timeout_s``; records into ``book``."""

    def __init__(self, timeout_s: float = 1.0, concurrency: int = 64, max_bytes: int = 4 << 20,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.timeout_s = timeout_s
        self.concurrency = concurrency
        self.max_bytes = max_bytes
        self.clock = clock
        self._session: object | None = None

    async def close(self) -> None:
        import aiohttp

        if isinstance(self._session, aiohttp.ClientSession):
            await self._session.close()
        self._session = None

    async def sweep(self, book: SignalBook, targets: Sequence[Target]) -> dict[str, Reading]:
        """Scrape the targets that are due (all at once, bounded by ``concurrency``); returns the
        readings by pod (what ``book`` recorded)."""
        import aiohttp

        if not isinstance(self._session, aiohttp.ClientSession):
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                connector=aiohttp.TCPConnector(limit=self.concurrency, force_close=True))
        session = self._session
        assert isinstance(session, aiohttp.ClientSession)
        due = book.due(targets, self.clock())
        readings = await asyncio.gather(*(self._one(session, t) for t in due))
        out = {}
        for target, reading in zip(due, readings, strict=True):
            book.record(target.pod, reading, self.timeout_s)
            out[target.pod] = reading
        return out

    async def _one(self, session: object, target: Target) -> Reading:
        import aiohttp

        assert isinstance(session, aiohttp.ClientSession)
        try:
            async with asyncio.timeout(self.timeout_s + 0.5):  # belt and braces over aiohttp's own timeout
                async with session.get(target.url) as rsp:
                    if rsp.status != 200:
                        return Reading(self.clock(), None, f"HTTP {rsp.status} from {target.url}")
                    body = b""
                    while len(body) <= self.max_bytes:
                        chunk = await rsp.content.read(self.max_bytes + 1 - len(body))
                        if not chunk:
                            break
                        body += chunk
            if len(body) > self.max_bytes:
                return Reading(self.clock(), None, f"more than {self.max_bytes} bytes of metrics")
            text = body.decode("utf-8")
            at = self.clock()
            return Reading(at, parse_reading(text, target.signal, target.model, at))
        except TimeoutError:
            return Reading(self.clock(), None, f"no answer within {self.timeout_s:g} s")
        except (aiohttp.ClientError, OSError) as err:
            return Reading(self.clock(), None, f"{type(err).__name__}: {str(err)[:160]}")
        except UnicodeDecodeError:
            return Reading(self.clock(), None, "metrics are not UTF-8 text")
        except BadMetrics as err:
            return Reading(self.clock(), None, str(err))
