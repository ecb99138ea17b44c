"""The contract between the two halves: the environment the operator writes into a replica Pod is
what the worker reads (``gpupool_worker.config``), field by field, with the pool's engine options."""

from __future__ import annotations

from typing import Any

import pytest
from operator_builders import PoolBuilder

from gpupool_operator.adapters.demands import parse_pool
from gpupool_operator.adapters.workloads import WorkerSettings, replica_pod
from gpupool_operator.api import InferencePool
from gpupool_operator.core.demand import Shape, ShapeKind
from gpupool_operator.core.plan import Assignment
from gpupool_worker import config as worker_config


def _pool(body: dict[str, Any]) -> InferencePool:
    body["metadata"].update(namespace="ns", uid="uid-1", generation=1)
    parsed = parse_pool(body)
    assert parsed.pool is not None, parsed.error
    return parsed.pool


def _worker_settings(pool: InferencePool, model: str, shape: Shape, node: str) -> Any:
    assignment = Assignment(demand=f"ns/{pool.metadata.name}/{model}", replica=0, shape=shape, node=node,
                            gpus=(0,) if shape.kind is not ShapeKind.CPU else (), start=0, cost=0.5)
    pod = replica_pod(pool, "uid-1", pool.spec.model(model), assignment, 0, "NVIDIA-A100-SXM4-80GB", 3.43,
                      gated=False, settings=WorkerSettings())
    env = {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"]}
    return worker_config.WorkerSettings.from_env(env)


def test_a_mig_replica_worker_reads_price_share_engine_and_batching_from_the_pod() -> None:
    body = PoolBuilder("p").mig("embed", "1g.10gb").obj()
    body["spec"]["models"][0]["source"] = {"uri": "builtin://minilm", "format": "Builtin"}
    body["spec"]["models"][0]["engine"] = {"precision": "bf16", "maxBatchSize": 48, "maxQueueDelay": "3ms",
                                           "cudaGraphs": False}
    pool = _pool(body)
    s = _worker_settings(pool, "embed", Shape(ShapeKind.MIG, "A100-80GB", profile="1g.10gb"), "a100-0")
    assert (s.price_per_hour, s.mig_profile, s.accelerator) == (3.43, "1g.10gb", "NVIDIA-A100-SXM4-80GB")
    assert s.device_share == pytest.approx(1 / 7)
    assert (s.engine, s.precision, s.cuda_graphs) == ("auto", "bf16", False)
    assert (s.max_batch_size, s.max_queue_delay_us) == (48, 3_000)
    assert (s.builtin_models, s.model_name) == (("minilm",), "embed")


def test_engine_options_choose_the_workers_engine() -> None:
    body = PoolBuilder("p").gpu("llm", "H100-80GB").cpu("small").obj()
    body["spec"]["models"][0]["engine"] = {"torchCompile": True}
    body["spec"]["models"][1]["engine"] = {"tritonKernels": True}
    pool = _pool(body)
    gpu = _worker_settings(pool, "llm", Shape(ShapeKind.GPU, "H100-80GB", gpus=1), "h100-0")
    assert (gpu.engine, gpu.device, gpu.cuda_graphs) == ("compile", "auto", True)
    assert gpu.max_queue_delay_us == 5_000  # the API's default maxQueueDelay, 5ms
    cpu = _worker_settings(pool, "small", Shape(ShapeKind.CPU, cpu_millis=2500, memory_mib=1024), "cpu-0")
    # on a CPU the worker chooses: ONNX Runtime where the model exports to it, else eager torch
    assert (cpu.engine, cpu.device, cpu.precision, cpu.accelerator) == ("auto", "cpu", "fp32", "cpu")
    assert cpu.torch_threads == 2  # whole cores of the pod's CPU limit, not the node's
    assert gpu.torch_threads == 0  # GPU replicas: the host side is light, PyTorch's default


@pytest.mark.parametrize(("raw", "micros"), [("5ms", 5_000), ("500us", 500), ("1m30s", 90_000_000), ("2s", 2_000_000)])
def test_the_worker_reads_gateway_api_durations(raw: str, micros: int) -> None:
    assert worker_config.parse_duration_us(raw) == micros


@pytest.mark.parametrize("raw", ["", "5", "ms", "5 ms", "-1ms", "5msx"])
def test_a_bad_duration_names_the_variable(raw: str) -> None:
    with pytest.raises(worker_config.SettingsError, match="GPUPOOL_MAX_QUEUE_DELAY"):
        worker_config.WorkerSettings.from_env({"GPUPOOL_MAX_QUEUE_DELAY": raw or " "})
