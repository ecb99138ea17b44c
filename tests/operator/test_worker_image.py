"""Which worker image a replica pod runs: the torch-free CPU image (``gpupool[worker-cpu]``, ONNX
Runtime) only where it serves the replica, the torch/CUDA image for the rest, and the one image
for every replica when no CUDA image is configured."""

from __future__ import annotations

from typing import Any

import pytest
from operator_builders import PoolBuilder

from gpupool_operator.adapters.demands import parse_pool
from gpupool_operator.adapters.settings import settings_from_env
from gpupool_operator.adapters.workloads import WorkerSettings, replica_pod, torch_free_serves, worker_image
from gpupool_operator.api import InferencePool, ModelSpec
from gpupool_operator.cli import build_parser
from gpupool_operator.core.demand import Shape, ShapeKind
from gpupool_operator.core.plan import Assignment

CPU_IMAGE, CUDA_IMAGE = "registry.example/worker:1", "registry.example/worker-cuda:1"
SETTINGS = WorkerSettings(image=CPU_IMAGE, cuda_image=CUDA_IMAGE)
SHAPES = {
    ShapeKind.CPU: Shape(ShapeKind.CPU, cpu_millis=2000, memory_mib=2048),
    ShapeKind.GPU: Shape(ShapeKind.GPU, "H100-80GB", gpus=1),
    ShapeKind.MIG: Shape(ShapeKind.MIG, "A100-80GB", profile="1g.10gb"),
}
SOURCES = {
    "Builtin": {"uri": "builtin://minilm", "format": "Builtin"},
    "ONNX": {"uri": "s3://models/resnet", "format": "ONNX"},
    "SafeTensors": {"uri": "hf://sentence-transformers/all-MiniLM-L6-v2", "format": "SafeTensors"},
    "TorchScript": {"uri": "s3://models/program", "format": "TorchScript"},
    "TorchExport": {"uri": "s3://models/program", "format": "TorchExport"},
}
TENSORS = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
           "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 2]}]}


def _pool(source: dict[str, str], *, task: str | None = None, engine: dict[str, Any] | None = None,
          runtime: dict[str, Any] | None = None) -> InferencePool:
    body = PoolBuilder("p").cpu("m").obj()
    model = body["spec"]["models"][0]
    model["source"] = dict(source)
    if task is not None:
        model["task"] = task
        if task == "Tensors" and source["format"] in ("TorchScript", "TorchExport"):
            model["tensors"] = TENSORS  # a program declares its tensors; an ONNX graph carries its own
    if engine is not None:
        model["engine"] = engine
    if runtime is not None:
        model["runtime"] = runtime
    body["metadata"].update(namespace="ns", uid="uid-1", generation=1)
    parsed = parse_pool(body)
    assert parsed.pool is not None, parsed.error
    return parsed.pool


def _model(fmt: str, **kwargs: Any) -> ModelSpec:
    return _pool(SOURCES[fmt], **kwargs).spec.model("m")


def _pod_image(pool: InferencePool, kind: ShapeKind, settings: WorkerSettings = SETTINGS) -> str:
    shape = SHAPES[kind]
    a = Assignment(demand="ns/p/m", replica=0, shape=shape, node="n-0",
                   gpus=() if kind is ShapeKind.CPU else (0,), start=0, cost=1.0)
    pod = replica_pod(pool, "uid-1", pool.spec.model("m"), a, 0, "NVIDIA-H100-80GB-HBM3", 6.88, gated=False,
                      settings=settings)
    (worker,) = pod["spec"]["containers"]
    image: str = worker["image"]
    return image


@pytest.mark.parametrize(("fmt", "task", "cpu_image"), [
    ("Builtin", None, CPU_IMAGE),                   # MiniLM ships as model.onnx in the CPU image
    ("ONNX", "Tensors", CPU_IMAGE),                 # the graph's own tensors on ONNX Runtime
    ("ONNX", "SentenceEmbedding", CPU_IMAGE),       # a Hub onnx/model.onnx encoder on ONNX Runtime
    ("ONNX", "ImageClassification", CUDA_IMAGE),    # its resize/crop preprocessing is torch's
    ("ONNX", None, CUDA_IMAGE),                     # Auto: may turn out to be an image classifier
    ("SafeTensors", None, CUDA_IMAGE),              # loaded (or exported to ONNX) with torch
    ("TorchScript", "Tensors", CUDA_IMAGE),
    ("TorchExport", "Tensors", CUDA_IMAGE),
])
def test_cpu_replicas_get_the_torch_free_image_only_for_what_onnx_runtime_serves(
        fmt: str, task: str | None, cpu_image: str) -> None:
    pool = _pool(SOURCES[fmt], task=task)
    assert _pod_image(pool, ShapeKind.CPU) == cpu_image
    assert worker_image(pool.spec.model("m"), ShapeKind.CPU, SETTINGS) == cpu_image
    # every GPU and MIG replica runs torch (CUDA), whatever the format
    assert _pod_image(pool, ShapeKind.GPU) == CUDA_IMAGE
    assert _pod_image(pool, ShapeKind.MIG) == CUDA_IMAGE


def test_torch_compile_needs_the_torch_image_even_for_a_builtin_on_a_cpu() -> None:
    assert torch_free_serves(_model("Builtin"), ShapeKind.CPU)
    assert not torch_free_serves(_model("Builtin", engine={"torchCompile": True}), ShapeKind.CPU)
    assert _pod_image(_pool(SOURCES["Builtin"], engine={"torchCompile": True}), ShapeKind.CPU) == CUDA_IMAGE


def test_an_external_runtime_fetches_with_the_torch_free_image() -> None:
    pool = _pool(SOURCES["SafeTensors"], task="TextGeneration",
                 runtime={"type": "vllm"})
    shape = SHAPES[ShapeKind.GPU]
    a = Assignment(demand="ns/p/m", replica=0, shape=shape, node="n-0", gpus=(0,), start=0, cost=1.0)
    pod = replica_pod(pool, "uid-1", pool.spec.model("m"), a, 0, "NVIDIA-H100-80GB-HBM3", 6.88, gated=False,
                      settings=SETTINGS)
    (fetch,) = pod["spec"]["initContainers"]
    assert fetch["args"][0] == "fetch"
    assert fetch["image"] == CPU_IMAGE  # fetching needs no torch: no multi-GB pull for it


def test_without_a_cuda_image_every_replica_runs_the_one_image() -> None:
    one = WorkerSettings(image=CPU_IMAGE, cuda_image="")
    for fmt, source in SOURCES.items():
        task = "Tensors" if fmt in ("TorchScript", "TorchExport") else None
        pool = _pool(source, task=task)
        assert {_pod_image(pool, kind, one) for kind in SHAPES} == {CPU_IMAGE}, fmt


def test_settings_from_env_pair_the_images_and_keep_a_lone_custom_image_for_all() -> None:
    default = settings_from_env({}).worker
    assert (default.image, default.cuda_image) == ("ghcr.io/gpupool/worker:0.1.0", "ghcr.io/gpupool/worker-cuda:0.1.0")
    lone = settings_from_env({"GPUPOOL_WORKER_IMAGE": "localhost/gpupool-worker:dev"}).worker
    assert (lone.image, lone.cuda_image) == ("localhost/gpupool-worker:dev", "")  # as before: one image
    both = settings_from_env({"GPUPOOL_WORKER_IMAGE": CPU_IMAGE, "GPUPOOL_WORKER_IMAGE_CUDA": CUDA_IMAGE}).worker
    assert (both.image, both.cuda_image) == (CPU_IMAGE, CUDA_IMAGE)
    off = settings_from_env({"GPUPOOL_WORKER_IMAGE_CUDA": ""}).worker
    assert (off.image, off.cuda_image) == ("ghcr.io/gpupool/worker:0.1.0", "")


def test_the_operator_flag_sets_the_cuda_image(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GPUPOOL_WORKER_IMAGE_CUDA", raising=False)
    args = build_parser().parse_args(["operator", f"--worker-image={CPU_IMAGE}", f"--worker-image-cuda={CUDA_IMAGE}"])
    assert (args.worker_image, args.worker_image_cuda) == (CPU_IMAGE, CUDA_IMAGE)
