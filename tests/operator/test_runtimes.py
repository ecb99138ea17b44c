"""The replica pod of every runtime (pure: workloads.replica_pod + adapters.runtimes), the queue
signal each runtime is read by, and the ModelLoadFailed condition from the replicas' own reports.
The same pods on the real control plane: test_runtime_pods.py."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from gpupool_operator.adapters import runtimes
from gpupool_operator.adapters.demands import parse_pool
from gpupool_operator.adapters.modelload import (
    LoadFailure,
    failures_from_metrics,
    failures_from_pod,
    load_condition,
    load_events,
)
from gpupool_operator.adapters.workloads import WorkerSettings, model_service, replica_pod
from gpupool_operator.api import InferencePool, RuntimeType
from gpupool_operator.core import catalog
from gpupool_operator.core.demand import Shape, ShapeKind
from gpupool_operator.core.plan import Assignment

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def example(name: str) -> InferencePool:
    body = yaml.safe_load((ROOT / "examples" / "pools" / name).read_text())
    body["metadata"].update(namespace="ns", uid="uid-1", generation=1)
    parsed = parse_pool(body)
    assert parsed.pool is not None, parsed.error
    return parsed.pool


def pod_for(pool: InferencePool, model: str, shape: Shape) -> dict[str, Any]:
    gpus = tuple(range(shape.gpus)) if shape.kind is ShapeKind.GPU else ((0,) if shape.kind is ShapeKind.MIG else ())
    a = Assignment(demand=f"ns/{pool.metadata.name}/{model}", replica=0, shape=shape, node="n-0", gpus=gpus,
                   start=0, cost=1.0)
    return replica_pod(pool, "uid-1", pool.spec.model(model), a, 0, "NVIDIA-H100-80GB-HBM3", 6.88, gated=False,
                       settings=WorkerSettings(image="ghcr.io/gpupool/worker:test"))


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", [])}


def test_the_llm_example_launches_vllm_on_both_gpus() -> None:
    pool = example("llm-tensor-parallel.yaml")
    pod = pod_for(pool, "llama-3-1-70b-instruct", Shape(ShapeKind.GPU, "H100-80GB", gpus=2))
    spec = pod["spec"]
    (server,) = spec["containers"]
    assert server["name"] == "vllm"
    assert server["image"] == runtimes.RuntimeSettings().vllm_image
    args = server["args"]
    assert args[args.index("--tensor-parallel-size") + 1] == "2"
    assert args[args.index("--model") + 1] == "/models/current"
    assert args[args.index("--served-model-name") + 1] == "llama-3-1-70b-instruct"
    assert args[args.index("--quantization") + 1] == "fp8"
    assert args[args.index("--max-num-seqs") + 1] == "64"
    assert server["resources"]["limits"] == {"nvidia.com/gpu": "2"}
    assert server["readinessProbe"]["httpGet"] == {"path": "/health", "port": 8000}
    assert server["startupProbe"]["failureThreshold"] * server["startupProbe"]["periodSeconds"] >= 1800
    (fetch,) = spec["initContainers"]
    assert fetch["image"] == "ghcr.io/gpupool/worker:test"
    assert fetch["args"] == ["fetch", "--link", "/models/current"]
    fenv = env_of(fetch)
    assert fenv["GPUPOOL_MODEL_URI"] == "hf://meta-llama/Llama-3.1-70B-Instruct"
    assert fenv["GPUPOOL_MODEL_REVISION"] == "main"
    assert fenv["GPUPOOL_SOURCE_CREDENTIALS"] == runtimes.CREDENTIALS_DIR
    assert int(fenv["GPUPOOL_DEVICE_MEMORY"].removesuffix("Mi")) > 2 * 79_000  # both GPUs of the replica
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["source-credentials"]["secret"]["secretName"] == "hf-token"
    assert volumes["model-cache"]["hostPath"]["path"] == runtimes.RuntimeSettings().model_cache_host_path
    assert volumes["dshm"]["emptyDir"] == {"medium": "Memory"}
    mounts = {m["name"]: m for m in server["volumeMounts"]}
    assert "source-credentials" not in mounts  # only the fetch reads the token
    assert mounts["models"]["readOnly"] is True
    ann = pod["metadata"]["annotations"]
    assert ann[runtimes.ANN_QUEUE_METRIC] == "vllm:num_requests_waiting"
    assert ann[runtimes.ANN_METRICS_PORT] == "8000"
    service = model_service(pool, "uid-1", pool.spec.model("llama-3-1-70b-instruct"))
    assert service["spec"]["ports"] == [{"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP",
                                         "appProtocol": "http"}]


def test_triton_and_custom_runtimes() -> None:
    pool = example("llm-tensor-parallel.yaml")
    model = pool.spec.models[0]
    assert model.runtime is not None
    triton = model.model_copy(update={"runtime": model.runtime.model_copy(update={"type": RuntimeType.TRITON})})
    pool.spec.models[0] = triton
    pod = pod_for(pool, model.name, Shape(ShapeKind.GPU, "H100-80GB", gpus=2))
    (server,) = pod["spec"]["containers"]
    assert server["command"] == ["tritonserver"]
    assert "--model-repository=/models/current" in server["args"]
    assert pod["metadata"]["annotations"][runtimes.ANN_QUEUE_METRIC] == "nv_inference_pending_request_count"
    assert pod["metadata"]["annotations"][runtimes.ANN_METRICS_PORT] == "8002"

    body = yaml.safe_load((ROOT / "examples/pools/quickstart-minilm-cpu.yaml").read_text())
    body["metadata"].update(namespace="ns", uid="uid-1", generation=1)
    body["spec"]["models"][0].update(source={"uri": "s3://models/minilm", "format": "SafeTensors"},
                                     runtime={"type": "custom", "image": "example.com/my-server:1",
                                              "command": ["/serve"], "port": 9000, "queueMetric": "my_queue",
                                              "env": [{"name": "MODE", "value": "fast"}]})
    pool = parse_pool(body).pool
    assert pool is not None
    pod = pod_for(pool, "all-minilm-l6-v2", Shape(ShapeKind.CPU, cpu_millis=2000, memory_mib=1024))
    (server,) = pod["spec"]["containers"]
    assert (server["image"], server["command"], server["ports"][0]["containerPort"]) == (
        "example.com/my-server:1", ["/serve"], 9000)
    assert env_of(server)["MODE"] == "fast"
    assert env_of(server)["GPUPOOL_MODEL_PATH"] == "/models/current"
    assert server["resources"]["limits"] == {"cpu": "2000m", "memory": "1024Mi"}
    signal = runtimes.signal_of_pod(pod)
    assert signal == runtimes.QueueSignal("custom", "my_queue", 9000)


def test_the_gpupool_worker_gets_the_sources_volumes_and_settings() -> None:
    pool = example("small-models-mig.yaml")
    pod = pod_for(pool, "resnet50-classifier", Shape(ShapeKind.MIG, "A100-80GB", profile="2g.20gb"))
    (worker,) = pod["spec"]["containers"]
    env = env_of(worker)
    assert env["GPUPOOL_MODEL_URI"] == "s3://ml-models/vision/resnet50-v1.5/"
    assert env["GPUPOOL_MODEL_TASK"] == "ImageClassification"
    assert env["GPUPOOL_SOURCE_CREDENTIALS"] == runtimes.CREDENTIALS_DIR
    assert env["GPUPOOL_MODEL_CACHE"] == runtimes.CACHE_DIR
    slice_mib = catalog.by_key("A100-80GB").profile("2g.20gb").memory_mib
    assert env["GPUPOOL_DEVICE_MEMORY"] == f"{slice_mib}Mi"  # the slice the catalog says, not the whole GPU
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["source-credentials"]["secret"] == {"secretName": "models-s3", "defaultMode": 0o400}
    assert {m["name"]: m.get("readOnly", False) for m in worker["volumeMounts"]} == {
        "source-credentials": True, "model-cache": False}
    yolo = pod_for(pool, "yolo-detector", Shape(ShapeKind.MIG, "A100-80GB", profile="2g.20gb"))
    tensors = json.loads(env_of(yolo["spec"]["containers"][0])["GPUPOOL_MODEL_TENSORS"])
    assert tensors["inputs"][0] == {"name": "images", "datatype": "FP32", "shape": [-1, 3, 640, 640]}

    body = pool.to_wire()
    body["metadata"].update(namespace="ns", uid="uid-1", generation=1)
    body["spec"]["models"][1]["source"] = {"uri": "pvc://models/resnet50", "format": "ONNX"}
    pvc_pool = parse_pool(body).pool
    assert pvc_pool is not None
    pod = pod_for(pvc_pool, "resnet50-classifier", Shape(ShapeKind.MIG, "A100-80GB", profile="2g.20gb"))
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["model-pvc"]["persistentVolumeClaim"] == {"claimName": "models", "readOnly": True}
    mount = next(m for m in pod["spec"]["containers"][0]["volumeMounts"] if m["name"] == "model-pvc")
    assert (mount["mountPath"], mount["readOnly"]) == ("/mnt/gpupool/pvc/models", True)
    assert "model-cache" not in volumes  # read in place, nothing to cache


VLLM_METRICS = """\
# HELP vllm:num_requests_running Number of requests currently running on GPU.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="llama-3-1-70b-instruct"} 12.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="llama-3-1-70b-instruct"} 7.0
vllm:num_requests_waiting{engine="1",model_name="llama-3-1-70b-instruct"} 2.0
vllm:num_requests_waiting{engine="0",model_name="another-model"} 40.0
"""
TRITON_METRICS = """\
# HELP nv_inference_pending_request_count Instantaneous number of pending requests awaiting execution per-model.
# TYPE nv_inference_pending_request_count gauge
nv_inference_pending_request_count{model="resnet",version="1"} 3
nv_inference_pending_request_count{model="bert",version="1"} NaN
nv_inference_pending_request_count{model="other",version="1"} -1
"""


def test_queue_signals_read_each_runtimes_own_metric() -> None:
    vllm = runtimes.QueueSignal("vllm", "vllm:num_requests_waiting", 8000, model_label="model_name")
    assert runtimes.queue_depth(VLLM_METRICS, vllm, "llama-3-1-70b-instruct") == 9.0  # both engines, not others
    triton = runtimes.QueueSignal("triton", "nv_inference_pending_request_count", 8002, model_label="model")
    assert runtimes.queue_depth(TRITON_METRICS, triton, "resnet") == 3.0
    assert runtimes.queue_depth(TRITON_METRICS, triton, "bert") is None  # NaN is no reading
    assert runtimes.queue_depth(TRITON_METRICS, triton, "other") is None  # nor is a negative one
    assert runtimes.queue_depth(VLLM_METRICS, runtimes.QueueSignal("custom", None, 1), "x") is None


def test_model_load_failures_become_a_condition_and_events() -> None:
    worker_metrics = (
        '# HELP gpupool_worker_model_state x\n# TYPE gpupool_worker_model_state gauge\n'
        'gpupool_worker_model_state{message="s3://b/m: listing the bucket: SignatureDoesNotMatch",model="m",'
        'reason="CredentialsRejected",state="UNAVAILABLE"} 1.0\n')
    (f,) = failures_from_metrics(worker_metrics, "p-m-0")
    assert (f.model, f.reason) == ("m", "CredentialsRejected")
    pod = {"metadata": {"name": "p-llm-0", "labels": {"gpupool.io/model": "llm"}},
           "status": {"initContainerStatuses": [{"name": "fetch-model", "state": {"waiting": {
               "reason": "CrashLoopBackOff"}}, "lastState": {"terminated": {"exitCode": 3, "message":
               "ModelNotFound: hf://org/llm at https://huggingface.co: repository not found"}}}]}}
    (g,) = failures_from_pod(pod)
    assert (g.model, g.pod, g.reason) == ("llm", "p-llm-0", "ModelNotFound")
    cond = load_condition([g, f], 3, NOW)
    assert (cond.type, cond.status.value, cond.reason) == ("ModelLoadFailed", "True", "ModelNotFound")
    assert "SignatureDoesNotMatch" in cond.message
    assert "repository not found" in cond.message
    assert load_condition([], 3, NOW).status.value == "False"
    assert load_events([f, f, g]) == [("Warning", "ModelLoadFailed", g.describe()),
                                      ("Warning", "ModelLoadFailed", f.describe())]
    assert failures_from_pod({"metadata": {"name": "ok"}, "status": {}}) == []


def test_pool_status_carries_model_load_failed() -> None:
    from gpupool_operator.adapters.status import pool_status
    from gpupool_operator.core.plan import Plan

    pool = example("quickstart-minilm-cpu.yaml")
    failure = LoadFailure("all-minilm-l6-v2", "p-0", "WeightsTooLarge",
                          "the model's files are 2.0 GiB, more than 1.0 GiB")
    status = pool_status(pool, Plan(assignments=()), {}, {}, {}, None, NOW, load_failures=[failure])
    cond = next(c for c in status.conditions if c.type == "ModelLoadFailed")
    assert (cond.status.value, cond.reason) == ("True", "WeightsTooLarge")
    untouched = pool_status(pool, Plan(assignments=()), {}, {}, {}, None, NOW)
    assert all(c.type != "ModelLoadFailed" for c in untouched.conditions)


@pytest.mark.parametrize(("shape", "mib"), [
    (Shape(ShapeKind.MIG, "A100-80GB", profile="1g.10gb"), catalog.by_key("A100-80GB").profile("1g.10gb").memory_mib),
    (Shape(ShapeKind.GPU, "H100-80GB", gpus=2), None),
    (Shape(ShapeKind.CPU, cpu_millis=2000, memory_mib=1024), 1024),
    (Shape(ShapeKind.GPU, "Tesla-T4", gpus=1), None),
])
def test_shape_memory(shape: Shape, mib: int | None) -> None:
    got = runtimes.shape_memory_mib(shape)
    if mib is None and shape.product == "H100-80GB":
        assert got is not None
        assert got > 2 * 79_000
    else:
        assert got == mib
