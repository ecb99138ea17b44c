"""What a replica pod runs for a model: the server's container, the source's volumes and the queue
signal the operator reads. A purely computational module over the model spec and settings.

:func:`serve_pod` takes the pod :func:`~gpupool_operator.adapters.workloads.replica_pod` built for
the gpupool worker and returns the pod for the model's runtime:

- every runtime gets what its source needs: the credentials Secret mounted read-only (nothing
  else is a credential), a ``pvc://`` claim mounted read-only, the node's model cache (a hostPath,
  so a node downloads each model once) and the source's settings as ``GPUPOOL_*`` variables;
- ``gpupool``: the worker itself fetches, loads and serves (and reports why it cannot);
- ``vllm``, ``triton``, ``custom``: an init container (the worker image's ``gpupool-worker fetch``)
  fetches the source into the cache with the same checks and links it at ``/models/current``;
  the server then reads it there. vLLM gets ``--tensor-parallel-size`` = the replica's GPUs,
  its dtype from the precision, shared memory for its workers, and a generous startup probe.

:func:`queue_signal` says where each runtime reports its queue (metric, port, label naming the
model), and the pod carries it as annotations so any scraper reads it from the pod alone.
"""

from __future__ import annotations

import copy
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from gpupool_operator.api import InferencePool, ModelSpec, ModelTask, Precision, RuntimeType
from gpupool_operator.core import catalog
from gpupool_operator.core.demand import Shape, ShapeKind

__all__ = ["ANN_METRICS_PATH", "ANN_METRICS_PORT", "ANN_QUEUE_METRIC", "ANN_RUNTIME", "QueueSignal",
           "RuntimeSettings", "queue_depth", "queue_signal", "serve_pod", "service_ports", "settings",
           "shape_memory_mib", "signal_of_pod"]

ANN_RUNTIME = "gpupool.io/runtime"
ANN_METRICS_PORT = "gpupool.io/metrics-port"
ANN_METRICS_PATH = "gpupool.io/metrics-path"
ANN_QUEUE_METRIC = "gpupool.io/queue-metric"
ANN_QUEUE_LABEL = "gpupool.io/queue-metric-model-label"

CREDENTIALS_DIR = "/var/run/gpupool/source-credentials"
PVC_ROOT = "/mnt/gpupool/pvc"
CACHE_DIR = "/var/cache/gpupool/models"
MODELS_DIR = "/models"
CURRENT = f"{MODELS_DIR}/current"
_FETCHED = ("hf://", "s3://", "https://", "oci://")
_VLLM_DTYPE = {Precision.FP32: "float32", Precision.FP16: "float16", Precision.BF16: "bfloat16",
               Precision.FP8: "auto", Precision.INT8: "auto"}


@dataclass(frozen=True, slots=True)
class RuntimeSettings:
    """Images of the LLM runtimes and where a node keeps its model cache (Helm values / env)."""

    vllm_image: str = "vllm/vllm-openai:v0.11.0"
    triton_image: str = "nvcr.io/nvidia/tritonserver:25.10-py3"
    model_cache_host_path: str = "/var/lib/gpupool/model-cache"
    """hostPath of the node's model cache; empty: a per-pod emptyDir (every replica downloads)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RuntimeSettings:
        env = os.environ if env is None else env
        d = cls()
        return cls(vllm_image=env.get("GPUPOOL_VLLM_IMAGE", d.vllm_image),
                   triton_image=env.get("GPUPOOL_TRITON_IMAGE", d.triton_image),
                   model_cache_host_path=env.get("GPUPOOL_MODEL_CACHE_HOST_PATH", d.model_cache_host_path))


_SETTINGS: list[RuntimeSettings] = []


def settings() -> RuntimeSettings:
    """The operator process's runtime settings (read from its environment once)."""
    if not _SETTINGS:
        _SETTINGS.append(RuntimeSettings.from_env())
    return _SETTINGS[0]


def shape_memory_mib(shape: Shape) -> int | None:
    """Accelerator (or, on CPU, host) memory one replica of ``shape`` holds; None if unknown."""
    try:
        if shape.kind is ShapeKind.MIG:
            return catalog.by_key(shape.product).profile(shape.profile).memory_mib
        if shape.kind is ShapeKind.GPU:
            return catalog.by_key(shape.product).memory_mib * max(shape.gpus, 1)
    except (KeyError, ValueError):
        return None
    return shape.memory_mib or None


@dataclass(frozen=True, slots=True)
class QueueSignal:
    """Where a runtime says how many requests wait: a Prometheus gauge on a port of the pod."""

    runtime: str
    metric: str | None
    port: int
    path: str = "/metrics"
    model_label: str | None = None
    """Label whose value names the model (samples for other models are not counted)."""


def queue_signal(model: ModelSpec) -> QueueSignal:
    rt = model.runtime
    kind = model.runtime_type
    if kind is RuntimeType.VLLM:
        port = rt.port if rt and rt.port else 8000
        return QueueSignal("vllm", (rt.queue_metric if rt else None) or "vllm:num_requests_waiting",
                           (rt.metrics_port if rt else None) or port, model_label="model_name")
    if kind is RuntimeType.TRITON:
        return QueueSignal("triton", (rt.queue_metric if rt else None) or "nv_inference_pending_request_count",
                           (rt.metrics_port if rt else None) or 8002, model_label="model")
    if kind is RuntimeType.CUSTOM:
        assert rt is not None
        assert rt.port is not None
        return QueueSignal("custom", rt.queue_metric, rt.metrics_port or rt.port)
    return QueueSignal("gpupool", "gpupool_worker_queue_depth", 8002, model_label="model")


def signal_of_pod(pod: Mapping[str, Any]) -> QueueSignal | None:
    """The queue signal a replica pod's annotations declare (None for a pod without them)."""
    ann = (pod.get("metadata") or {}).get("annotations") or {}
    if ANN_METRICS_PORT not in ann:
        return None
    return QueueSignal(ann.get(ANN_RUNTIME, "gpupool"), ann.get(ANN_QUEUE_METRIC) or None,
                       int(ann[ANN_METRICS_PORT]), ann.get(ANN_METRICS_PATH, "/metrics"),
                       ann.get(ANN_QUEUE_LABEL) or None)


def queue_depth(exposition: str, signal: QueueSignal, model: str) -> float | None:
    """Requests waiting for ``model`` in one scrape of a runtime's metrics; None when the metric is
    absent (a runtime that does not report it, or no queue metric configured). NaN and negative
    samples are dropped, never counted."""
    if signal.metric is None:
        return None
    total, seen = 0.0, False
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name != signal.metric:
                continue
            if signal.model_label and signal.model_label in sample.labels and \
                    sample.labels[signal.model_label] != model:
                continue
            value = float(sample.value)
            if math.isnan(value) or value < 0:  # not a queue length
                continue
            total += value
            seen = True
    return total if seen else None


# -- the pod ----------------------------------------------------------------------------------

def _env(items: dict[str, str]) -> list[dict[str, str]]:
    return [{"name": k, "value": v} for k, v in items.items()]


def _source_parts(model: ModelSpec, settings: RuntimeSettings, device_memory_mib: int | None) -> tuple[
        dict[str, str], list[dict[str, Any]], list[dict[str, Any]]]:
    """(env, volumes, mounts) a container needs to fetch or read the model's source."""
    src = model.source
    env: dict[str, str] = {"GPUPOOL_MODEL_TASK": model.task.value}
    if src.revision:
        env["GPUPOOL_MODEL_REVISION"] = src.revision
    if src.sha256:
        env["GPUPOOL_MODEL_SHA256"] = src.sha256
    if model.tensors is not None:
        env["GPUPOOL_MODEL_TENSORS"] = json.dumps(model.tensors.to_wire(), separators=(",", ":"))
    if device_memory_mib:
        env["GPUPOOL_DEVICE_MEMORY"] = f"{device_memory_mib}Mi"
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    if src.credentials_secret_name:
        volumes.append({"name": "source-credentials",
                        "secret": {"secretName": src.credentials_secret_name, "defaultMode": 0o400}})
        mounts.append({"name": "source-credentials", "mountPath": CREDENTIALS_DIR, "readOnly": True})
        env["GPUPOOL_SOURCE_CREDENTIALS"] = CREDENTIALS_DIR
    if src.uri.startswith("pvc://"):
        claim = src.uri.removeprefix("pvc://").split("/", 1)[0]
        volumes.append({"name": "model-pvc", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}})
        mounts.append({"name": "model-pvc", "mountPath": f"{PVC_ROOT}/{claim}", "readOnly": True})
        env["GPUPOOL_PVC_ROOT"] = PVC_ROOT
    if src.uri.startswith(_FETCHED):
        cache: dict[str, Any] = {"name": "model-cache"}
        if settings.model_cache_host_path:
            cache["hostPath"] = {"path": settings.model_cache_host_path, "type": "DirectoryOrCreate"}
        else:
            cache["emptyDir"] = {}
        volumes.append(cache)
        mounts.append({"name": "model-cache", "mountPath": CACHE_DIR})
        env["GPUPOOL_MODEL_CACHE"] = CACHE_DIR
    return env, volumes, mounts


def _fetch_init(worker: dict[str, Any], env: dict[str, str], mounts: list[dict[str, Any]]) -> dict[str, Any]:
    base = {e["name"]: e["value"] for e in worker.get("env", []) if e["name"] in (
        "GPUPOOL_MODEL_URI", "GPUPOOL_MODEL_FORMAT", "GPUPOOL_MODEL_NAME")}
    return {"name": "fetch-model", "image": worker["image"], "args": ["fetch", "--link", CURRENT],
            "env": _env({**base, **env}), "volumeMounts": [*mounts, {"name": "models", "mountPath": MODELS_DIR}],
            "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"memory": "2Gi"}},
            "terminationMessagePolicy": "FallbackToLogsOnError",
            **({"securityContext": copy.deepcopy(worker["securityContext"])} if "securityContext" in worker else {})}


def _model_path(model: ModelSpec) -> str:
    uri = model.source.uri
    if uri.startswith("pvc://"):
        return f"{PVC_ROOT}/{uri.removeprefix('pvc://')}"
    return CURRENT


def _server(model: ModelSpec, worker: dict[str, Any], gpus: int, settings: RuntimeSettings) -> dict[str, Any]:
    rt = model.runtime
    assert rt is not None
    user_env = {e.name: e.value for e in rt.env}
    http_probe: dict[str, Any] = {"periodSeconds": 5}
    startup: dict[str, Any] = {"periodSeconds": 10, "failureThreshold": 180}  # LLM weights take minutes
    container: dict[str, Any]
    if rt.type is RuntimeType.VLLM:
        port = rt.port or 8000
        args = ["--model", _model_path(model), "--served-model-name", model.name, "--port", str(port),
                "--tensor-parallel-size", str(max(gpus, 1)), "--dtype", _VLLM_DTYPE[model.engine.precision],
                "--max-num-seqs", str(model.engine.max_batch_size)]
        if model.engine.precision is Precision.FP8:
            args += ["--quantization", "fp8"]
        container = {"name": "vllm", "image": rt.image or settings.vllm_image, "args": [*args, *rt.args],
                     "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
                     "readinessProbe": {"httpGet": {"path": "/health", "port": port}, **http_probe},
                     "startupProbe": {"httpGet": {"path": "/health", "port": port}, **startup},
                     "env": _env({"HF_HUB_OFFLINE": "1", **user_env})}
    elif rt.type is RuntimeType.TRITON:
        port = rt.port or 8001
        args = [f"--model-repository={_model_path(model)}", f"--grpc-port={port}", "--http-port=8000",
                f"--metrics-port={rt.metrics_port or 8002}", "--exit-on-error=true"]
        container = {"name": "triton", "image": rt.image or settings.triton_image, "command": ["tritonserver"],
                     "args": [*args, *rt.args],
                     "ports": [{"name": "grpc", "containerPort": port, "protocol": "TCP"},
                               {"name": "http", "containerPort": 8000, "protocol": "TCP"},
                               {"name": "metrics", "containerPort": rt.metrics_port or 8002, "protocol": "TCP"}],
                     "readinessProbe": {"httpGet": {"path": "/v2/health/ready", "port": 8000}, **http_probe},
                     "startupProbe": {"httpGet": {"path": "/v2/health/ready", "port": 8000}, **startup},
                     "env": _env(user_env)}
    else:
        assert rt.port is not None
        ports = [{"name": "serve", "containerPort": rt.port, "protocol": "TCP"}]
        if rt.metrics_port and rt.metrics_port != rt.port:
            ports.append({"name": "metrics", "containerPort": rt.metrics_port, "protocol": "TCP"})
        keep = {e["name"]: e["value"] for e in worker.get("env", [])}
        container = {"name": "server", "image": rt.image, "args": list(rt.args), "ports": ports,
                     "readinessProbe": {"tcpSocket": {"port": rt.port}, **http_probe},
                     "env": _env({**keep, "GPUPOOL_MODEL_PATH": _model_path(model), **user_env})}
        if rt.command:
            container["command"] = list(rt.command)
    container["resources"] = copy.deepcopy(worker.get("resources", {}))
    if "securityContext" in worker:  # the platform's replica defaults hold for every runtime
        container["securityContext"] = copy.deepcopy(worker["securityContext"])
    return container


def serve_pod(pod: dict[str, Any], pool: InferencePool, model: ModelSpec, *, gpus: int,
              device_memory_mib: int | None, settings: RuntimeSettings) -> dict[str, Any]:
    """``pod`` (the gpupool worker's replica pod) turned into the pod of the model's runtime."""
    out = copy.deepcopy(pod)
    spec = out["spec"]
    worker = spec["containers"][0]
    env, volumes, mounts = _source_parts(model, settings, device_memory_mib)
    signal = queue_signal(model)
    ann = out["metadata"].setdefault("annotations", {})
    ann[ANN_RUNTIME] = signal.runtime
    ann[ANN_METRICS_PORT] = str(signal.port)
    ann[ANN_METRICS_PATH] = signal.path
    if signal.metric:
        ann[ANN_QUEUE_METRIC] = signal.metric
    if signal.model_label:
        ann[ANN_QUEUE_LABEL] = signal.model_label
    if model.runtime_type is RuntimeType.GPUPOOL:
        present = {e["name"] for e in worker.get("env", [])}
        worker["env"] = [*worker.get("env", []), *(_env({k: v for k, v in env.items() if k not in present}))]
        if mounts:
            worker["volumeMounts"] = [*worker.get("volumeMounts", []), *mounts]
        if volumes:
            spec["volumes"] = [*spec.get("volumes", []), *volumes]
        return out
    server = _server(model, worker, gpus, settings)
    server_mounts = [m for m in mounts if m["name"] != "source-credentials"]  # only the fetch needs them
    pod_volumes = list(volumes)
    if model.source.uri.startswith(_FETCHED):
        spec["initContainers"] = [_fetch_init(worker, env, mounts)]
        pod_volumes.append({"name": "models", "emptyDir": {}})
        server_mounts.append({"name": "models", "mountPath": MODELS_DIR, "readOnly": True})
    if model.runtime_type is RuntimeType.VLLM:
        pod_volumes.append({"name": "dshm", "emptyDir": {"medium": "Memory"}})
        server_mounts.append({"name": "dshm", "mountPath": "/dev/shm"})
    server["volumeMounts"] = server_mounts
    spec["containers"] = [server]
    spec["volumes"] = [*spec.get("volumes", []), *pod_volumes]
    spec["terminationGracePeriodSeconds"] = max(int(spec.get("terminationGracePeriodSeconds", 30)), 60)
    return out


def service_ports(model: ModelSpec) -> list[dict[str, Any]] | None:
    """The model Service's ports for an external runtime (None: the gpupool worker's defaults)."""
    kind = model.runtime_type
    if kind is RuntimeType.GPUPOOL or model.runtime is None:
        return None
    rt = model.runtime
    if kind is RuntimeType.VLLM:
        return [{"name": "http", "port": rt.port or 8000, "targetPort": "http", "protocol": "TCP",
                 "appProtocol": "http"}]
    if kind is RuntimeType.TRITON:
        return [{"name": "grpc", "port": rt.port or 8001, "targetPort": "grpc", "protocol": "TCP",
                 "appProtocol": "grpc"},
                {"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"},
                {"name": "metrics", "port": rt.metrics_port or 8002, "targetPort": "metrics", "protocol": "TCP"}]
    return [{"name": "serve", "port": rt.port or 80, "targetPort": "serve", "protocol": "TCP"}]


def text_generation(model: ModelSpec) -> bool:
    return model.task is ModelTask.TEXT_GENERATION
