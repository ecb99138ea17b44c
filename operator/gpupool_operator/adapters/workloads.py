"""The objects the operator creates for a pool: one Pod per placed replica and a Service per model.

Why bare Pods and not a Deployment: the plan places each replica on a specific GPU or MIG instance
of a specific node, and the placement loop is itself the controller that replaces lost replicas.
Each pod is pinned with a required node affinity on ``metadata.name`` (kube-scheduler still binds
it, checking the extended resources), tolerates the GPU taint, requests exactly its shape
(``nvidia.com/gpu``, ``nvidia.com/mig-<profile>`` or CPU cores), carries the plan's GPU indices or
MIG instance in annotations, and is owned by its InferencePool so deleting the pool deletes it.
Pods going onto a GPU that is being re-laid out wait behind a scheduling gate.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gpupool_operator.adapters import names, runtimes
from gpupool_operator.api import API_VERSION, InferencePool, ModelSpec
from gpupool_operator.core import catalog, mig
from gpupool_operator.core.demand import ShapeKind
from gpupool_operator.core.plan import Assignment

__all__ = ["WorkerSettings", "model_service", "owner_reference", "replica_pod", "worker_engine"]

GRPC_PORT = 8001
METRICS_PORT = 8002


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """How replica pods run the worker (from the operator's command line / Helm values)."""

    image: str = "ghcr.io/gpupool/worker:0.1.0"
    service_account: str | None = None
    gpu_toleration_key: str = "nvidia.com/gpu"
    cpu_request_millis_on_gpu: int = 0
    memory_request_mib_on_gpu: int = 0


def owner_reference(pool: InferencePool, uid: str) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "InferencePool",
        "name": pool.metadata.name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _labels(pool: InferencePool, model: ModelSpec) -> dict[str, str]:
    return {
        names.LABEL_MANAGED_BY: names.MANAGED_BY,
        names.LABEL_POOL: names.label_value(pool.metadata.name or ""),
        names.LABEL_MODEL: model.name,
        "app.kubernetes.io/name": "gpupool-worker",
        "app.kubernetes.io/instance": names.label_value(pool.metadata.name or ""),
    }


def worker_engine(model: ModelSpec, *, on_cpu: bool) -> str:
    """The worker's ``GPUPOOL_ENGINE`` for a model's engine options: ``torchCompile`` wins, then
    ``tritonKernels`` (``auto``: the worker uses its Triton kernels where the GPU runs them and
    falls back by itself), else plain eager PyTorch. On a CPU the Triton kernels never apply."""
    if model.engine.torch_compile:
        return "compile"
    if model.engine.triton_kernels and not on_cpu:
        return "auto"
    return "eager"


def _worker_env(pool: InferencePool, model: ModelSpec, a: Assignment, product_label: str,
                gpu_price: float) -> list[dict[str, str]]:
    shape = a.shape
    share = 1.0
    price = gpu_price * max(shape.gpus, 1)
    accelerator = product_label or shape.product
    profile = ""
    if shape.kind is ShapeKind.MIG:
        share = mig.fraction(catalog.by_key(shape.product).profile(shape.profile))
        price = gpu_price
        profile = shape.profile
    elif shape.kind is ShapeKind.CPU:
        accelerator = "cpu"
        price = a.cost
    env = {
        "GPUPOOL_PRICE_PER_HOUR": f"{price:.6g}",
        "GPUPOOL_DEVICE_SHARE": f"{share:.6g}",
        "GPUPOOL_ACCELERATOR": accelerator,
        "GPUPOOL_MIG_PROFILE": profile,
        "GPUPOOL_DEVICE": "cpu" if shape.kind is ShapeKind.CPU else "auto",
        "GPUPOOL_PRECISION": model.engine.precision.value if shape.kind is not ShapeKind.CPU else "fp32",
        "GPUPOOL_ENGINE": worker_engine(model, on_cpu=shape.kind is ShapeKind.CPU),
        "GPUPOOL_CUDA_GRAPHS": "true" if model.engine.cuda_graphs else "false",
        "GPUPOOL_MODEL_NAME": model.name,
        "GPUPOOL_MODEL_URI": model.source.uri,
        "GPUPOOL_MODEL_FORMAT": model.source.format.value,
        "GPUPOOL_MAX_BATCH_SIZE": str(model.engine.max_batch_size),
        "GPUPOOL_MAX_QUEUE_DELAY": model.engine.max_queue_delay,
        "GPUPOOL_GRPC_PORT": str(GRPC_PORT),
        "GPUPOOL_METRICS_PORT": str(METRICS_PORT),
        "GPUPOOL_POOL": f"{pool.metadata.namespace}/{pool.metadata.name}",
    }
    if shape.kind is ShapeKind.CPU:
        # torch sizes its thread pool by the node's cores, not the pod's CPU limit: on a 64-core
        # node a 2-core replica would run 64 threads into its CFS quota
        env["GPUPOOL_TORCH_THREADS"] = str(max(1, shape.cpu_millis // 1000))
    if model.source.uri.startswith("builtin://"):
        builtin = model.source.uri.removeprefix("builtin://")
        env["GPUPOOL_BUILTIN_MODELS"] = "minilm" if "minilm" in builtin else builtin
    return [{"name": k, "value": v} for k, v in env.items()]


def replica_pod(
    pool: InferencePool,
    uid: str,
    model: ModelSpec,
    assignment: Assignment,
    replica: int,
    product_label: str,
    gpu_price: float,
    gated: bool,
    settings: WorkerSettings,
) -> dict[str, Any]:
    """The Pod manifest that runs one placed replica on exactly its planned node and shape."""
    a = assignment
    shape = a.shape
    limits: dict[str, str] = {}
    requests: dict[str, str] = {}
    annotations = {
        names.ANN_DEMAND: a.demand,
        names.ANN_NODE: a.node,
        names.ANN_USD_PER_HOUR: f"{a.cost:.6f}",
    }
    tolerations: list[dict[str, str]] = []
    if shape.kind is ShapeKind.CPU:
        requests = {"cpu": f"{shape.cpu_millis}m", "memory": f"{max(shape.memory_mib, 1)}Mi"}
        limits = dict(requests)
    else:
        limits = dict(shape.resources())
        requests = dict(limits)
        if settings.cpu_request_millis_on_gpu:
            requests["cpu"] = f"{settings.cpu_request_millis_on_gpu}m"
        if settings.memory_request_mib_on_gpu:
            requests["memory"] = f"{settings.memory_request_mib_on_gpu}Mi"
        tolerations.append({"key": settings.gpu_toleration_key, "operator": "Exists", "effect": "NoSchedule"})
        if shape.kind is ShapeKind.MIG:
            if a.start is None or not a.gpus:
                raise ValueError(f"MIG assignment without an instance: {a}")
            annotations[names.ANN_MIG_INSTANCE] = f"{a.gpus[0]}:{shape.profile}:{a.start}"
        else:
            annotations[names.ANN_GPUS] = ",".join(str(g) for g in a.gpus)
    labels = {**_labels(pool, model), names.LABEL_REPLICA: str(replica)}
    spec: dict[str, Any] = {
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [a.node]}]}
                    ]
                }
            }
        },
        "tolerations": tolerations,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 30,
        "containers": [
            {
                "name": "worker",
                "image": settings.image,
                "args": ["serve"],
                "env": _worker_env(pool, model, a, product_label, gpu_price),
                "ports": [
                    {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
                    {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
                ],
                "resources": {"limits": limits, "requests": requests},
                "readinessProbe": {"grpc": {"port": GRPC_PORT}, "periodSeconds": 5},
            }
        ],
    }
    if settings.service_account:
        spec["serviceAccountName"] = settings.service_account
    if gated:
        spec["schedulingGates"] = [{"name": names.MIG_GATE}]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": names.pod_name(pool.metadata.name or "", model.name, replica),
            "namespace": pool.metadata.namespace,
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [owner_reference(pool, uid)],
        },
        "spec": spec,
    }
    # the model's runtime (gpupool worker, vllm, triton, custom) and its source's volumes: adapters.runtimes
    return runtimes.serve_pod(pod, pool, model, gpus=shape.gpus, device_memory_mib=runtimes.shape_memory_mib(shape),
                              settings=runtimes.settings())


def model_service(pool: InferencePool, uid: str, model: ModelSpec) -> dict[str, Any]:
    """The Service clients use to reach a model's replicas over gRPC (KServe v2)."""
    labels = _labels(pool, model)
    selector = {k: labels[k] for k in (names.LABEL_MANAGED_BY, names.LABEL_POOL, names.LABEL_MODEL)}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": names.service_name(pool.metadata.name or "", model.name),
            "namespace": pool.metadata.namespace,
            "labels": labels,
            "ownerReferences": [owner_reference(pool, uid)],
        },
        "spec": {
            "selector": selector,
            "ports": runtimes.service_ports(model) or [
                {"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc", "protocol": "TCP", "appProtocol": "grpc"},
                {"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics", "protocol": "TCP"},
            ],
        },
    }


def pod_is_ready(pod: Mapping[str, Any]) -> bool:
    conds = pod.get("status", {}).get("conditions", []) or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)
