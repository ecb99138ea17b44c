"""The data plane: everything a transport needs, in engine types. gRPC (or any front end) calls
this and only converts messages; one data plane could serve several transports at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from gpupool_worker.engine.batcher import BatchPolicy, DynamicBatcher
from gpupool_worker.engine.compute import ComputeThread
from gpupool_worker.engine.costing import CostLedger, CostModel
from gpupool_worker.engine.errors import ErrorKind, InferenceError
from gpupool_worker.engine.metrics import ModelMeters, WorkerMetrics
from gpupool_worker.engine.repository import ModelEntry, ModelRepository, ModelState
from gpupool_worker.engine.statistics import ModelStatistics, StatisticsSnapshot
from gpupool_worker.engine.types import InferRequest, InferResponse, ModelMetadata, Tensor
from gpupool_worker.engine.validation import Validator

__all__ = ["DataPlane", "IndexEntry"]

log = logging.getLogger(__name__)

SERVER_NAME = "gpupool-worker"
EXTENSIONS = ("model_repository", "statistics", "gpupool_cost")


@dataclass(frozen=True, slots=True)
class IndexEntry:
    name: str
    version: str
    state: str
    reason: str


@dataclass(slots=True)
class _Serving:
    entry: ModelEntry
    batcher: DynamicBatcher
    stats: ModelStatistics
    meters: ModelMeters
    validator: Validator
    inflight: int = 0


class DataPlane:
    def __init__(self, repository: ModelRepository, cost: CostModel, metrics: WorkerMetrics,
                 *, version: str = "0.1.0", compute: ComputeThread | None = None) -> None:
        self.repository = repository
        self.compute = compute
        self.cost = cost
        self.metrics = metrics
        self.version = version
        self._serving: dict[str, _Serving] = {}
        self._draining = False
        self._withdrawn = False
        self._loaded = asyncio.Event()
        # the models share one engine (the compute thread): a batch forms when it is free
        self._engine_gate = asyncio.Lock()
        # what the replica costs, charged to its models (idle time included): from now on
        self.ledger = CostLedger(cost, started_s=time.monotonic())

    # -- lifecycle -----------------------------------------------------------------------------
    async def load(self) -> None:
        """Load every model off the event loop, then start a batcher for each ready one."""
        if self.compute is not None:  # load on the thread that will run the models (engine.compute)
            await asyncio.get_running_loop().run_in_executor(self.compute.executor, self.repository.load_all)
        else:
            await asyncio.to_thread(self.repository.load_all)
        for entry in self.repository.entries():
            if entry.state is ModelState.READY and entry.model is not None:
                self._start(entry)
        self._loaded.set()

    def _start(self, entry: ModelEntry) -> None:
        assert entry.model is not None
        policy = entry.config.policy if entry.config is not None else BatchPolicy(
            max_batch_size=entry.model.max_batch_size)
        stats = ModelStatistics(entry.name, entry.version, self.cost, ledger=self.ledger)
        batcher = DynamicBatcher(entry.model, policy, stats, self.metrics,
                                 executor=self.compute.executor if self.compute is not None else None,
                                 engine_gate=self._engine_gate)
        batcher.start()
        serving = _Serving(entry, batcher, stats, self.metrics.model(entry.name),
                           Validator(entry.model.metadata))
        serving.meters.inflight = lambda: float(serving.inflight)
        self._serving[entry.name] = serving

    def withdraw(self) -> None:
        """Report not-ready (health, ServerReady, ModelReady) while still serving: the drain
        period, in which Kubernetes takes the pod out of its Services' endpoints."""
        self._withdrawn = True

    def refuse_new(self) -> None:
        """From now on, answer new inferences UNAVAILABLE (retriable on another replica)."""
        self._draining = True

    async def drain(self) -> None:
        """Refuse new requests; finish every queued and executing one."""
        self._draining = True
        await asyncio.gather(*(s.batcher.stop(drain=True) for s in self._serving.values()))
        if self.compute is not None:
            self.compute.shutdown()

    # -- health and metadata -------------------------------------------------------------------
    @property
    def live(self) -> bool:
        return True

    @property
    def ready(self) -> bool:
        entries = self.repository.entries()
        return (self._loaded.is_set() and not self._draining and not self._withdrawn and bool(entries)
                and all(e.state is ModelState.READY for e in entries))

    def model_ready(self, name: str, version: str = "") -> bool:
        serving = self._serving.get(name)
        return (serving is not None and not self._draining and not self._withdrawn
                and (not version or version == serving.entry.version))

    def model_metadata(self, name: str, version: str = "") -> ModelMetadata:
        return self._lookup(name, version).entry.model.metadata  # type: ignore[union-attr]

    def index(self, *, ready_only: bool = False) -> list[IndexEntry]:
        out = []
        for e in self.repository.entries():
            if ready_only and e.state is not ModelState.READY:
                continue
            out.append(IndexEntry(e.name, e.version, e.state.value, e.reason))
        return out

    def statistics(self, name: str = "", version: str = "") -> list[StatisticsSnapshot]:
        if name:
            return [self._lookup(name, version).stats.snapshot()]
        return [s.stats.snapshot() for _, s in sorted(self._serving.items())]

    def queue_depth(self, name: str) -> int:
        return self._lookup(name, "").batcher.queue_depth

    def inflight(self, name: str) -> int:
        return self._lookup(name, "").inflight

    def _lookup(self, name: str, version: str) -> _Serving:
        serving = self._serving.get(name)
        if serving is None:
            entry = self.repository.get(name)
            if entry is None:
                known = ", ".join(e.name for e in self.repository.entries()) or "none"
                raise InferenceError.not_found(f"unknown model '{name}' (models: {known})")
            detail = f": {entry.reason}" if entry.reason else ""
            raise InferenceError.unavailable(
                f"model '{name}' is not ready ({entry.state.value}{detail})")
        if version and version != serving.entry.version:
            raise InferenceError.not_found(
                f"model '{name}' has no version '{version}' (versions: {serving.entry.version})")
        return serving

    def count_failure(self, model_name: str, kind: ErrorKind) -> None:
        """Count a request refused before it reached :meth:`infer` (malformed in transit)."""
        serving = self._serving.get(model_name)
        if serving is not None:
            serving.meters.error(kind.value)
            serving.meters.failures += 1
            serving.stats.record_request(ok=False, total_ns=0, queue_ns=0)

    # -- inference -----------------------------------------------------------------------------
    async def infer(self, request: InferRequest, *, timeout_s: float | None = None) -> InferResponse:
        if self._draining:
            self.count_failure(request.model_name, ErrorKind.UNAVAILABLE)
            raise InferenceError.unavailable("worker is stopping, retry on another replica")
        serving = self._serving.get(request.model_name)
        if serving is None or (request.model_version
                               and request.model_version != serving.entry.version):
            serving = self._lookup(request.model_name, request.model_version)
        model = serving.entry.model
        assert model is not None
        meta = model.metadata
        started = time.perf_counter_ns()
        m = serving.meters
        serving.inflight += 1
        ok = False
        queue_ns = 0
        try:
            inputs, _rows = serving.validator(request)
            model.check(inputs)
            deadline = None if timeout_s is None else started + int(timeout_s * 1e9)
            result = await serving.batcher.infer(inputs, deadline_ns=deadline)
            queue_ns = result.queue_ns
            wanted = request.requested_outputs
            produced = result.outputs
            outputs = tuple(
                Tensor(spec.name, spec.datatype, produced[spec.name].shape, produced[spec.name])
                for spec in meta.outputs if not wanted or spec.name in wanted)
            ok = True
            return InferResponse(
                model_name=meta.name, model_version=serving.entry.version, id=request.id,
                outputs=outputs,
                parameters={
                    "cost_usd": result.cost_usd,
                    # what an inference of this model costs with the replica's idle time charged
                    # (last 60 s): the figure to budget with
                    "cost_per_inference_idle_charged_usd": result.idle_charged_usd,
                    # the same in 1e-12 USD, for clients whose proto has no double_param (kserve)
                    "cost_picousd": round(result.cost_usd * 1e12),
                    "busy_ns": result.busy_ns,
                    "queue_ns": result.queue_ns,
                    "batch_size": result.batch_rows,
                })
        except InferenceError as err:
            m.error(err.kind.value)
            raise
        except asyncio.CancelledError:
            m.error(ErrorKind.CANCELLED.value)
            raise
        finally:
            elapsed = time.perf_counter_ns() - started
            serving.inflight -= 1
            serving.stats.record_request(ok=ok, total_ns=elapsed, queue_ns=queue_ns)
            if ok:
                m.successes += 1
                m.request_latency.observe(elapsed / 1e9)
                m.queue_latency.observe(queue_ns / 1e9)
            else:
                m.failures += 1
