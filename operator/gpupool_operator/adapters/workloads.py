"""The objects the operator creates for a pool: one Pod per placed replica and a Service per model.

Why bare Pods and not a Deployment: the plan places each replica on a specific GPU or MIG instance
of a specific node, and the placement loop is itself the controller that replaces lost replicas.
Each pod is pinned with a required node affinity on ``metadata.name`` (kube-scheduler still binds
it, checking the extended resources), requests exactly its shape (``nvidia.com/gpu``,
``nvidia.com/mig-<profile>`` or CPU cores), carries the plan's GPU indices or MIG instance in
annotations, and is owned by its InferencePool so deleting the pool deletes it. Pods going onto a
GPU that is being re-laid out wait behind a scheduling gate.

Tolerations: the model's own, plus, on GPU and MIG replicas only, the ``nvidia.com/gpu`` taint
NVIDIA's GPU Operator puts on GPU nodes (a CPU replica never tolerates it). Security context and
host resources: the cluster's defaults (``GPUPOOL_REPLICA_DEFAULTS``, set by the Helm chart),
overridden field by field by the pool's ``spec.replicaDefaults``; what the plan decides (GPUs,
slices, a CPU replica's cores and memory) always wins. Stopping: ``preStop`` runs
``gpupool-worker drain`` (the worker reports not-ready and keeps serving for the drain period),
then SIGTERM stops it within the stop grace; ``terminationGracePeriodSeconds`` covers both.

Image: the worker ships as two images, the torch-free CPU one (``gpupool[worker-cpu]``, ONNX
Runtime) and the torch/CUDA one (Dockerfile target ``worker-cuda``). :func:`worker_image` picks per
replica: the torch-free image where it serves the replica (:func:`torch_free_serves`), the CUDA one
for the rest; with no CUDA image configured, the one image for all.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gpupool_operator.adapters import names, runtimes
from gpupool_operator.api import (
    API_VERSION,
    InferencePool,
    ModelFormat,
    ModelSpec,
    ModelTask,
    ReplicaDefaults,
    RuntimeType,
)
from gpupool_operator.core import catalog, mig
from gpupool_operator.core.demand import ShapeKind
from gpupool_operator.core.plan import Assignment

__all__ = [
    "ReplicaPodDefaults",
    "WorkerSettings",
    "model_service",
    "owner_reference",
    "replica_defaults",
    "replica_pod",
    "service_matches",
    "torch_free_serves",
    "worker_engine",
    "worker_image",
]

GRPC_PORT = 8001
METRICS_PORT = 8002
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
_DEFAULT_KEYS = ("podSecurityContext", "securityContext", "resources")


@dataclass(frozen=True, slots=True)
class ReplicaPodDefaults:
    """The cluster's defaults for every replica pod (``GPUPOOL_REPLICA_DEFAULTS``), as the
    Kubernetes objects they merge into (camelCase dicts)."""

    pod_security_context: Mapping[str, Any] = field(default_factory=dict)
    security_context: Mapping[str, Any] = field(default_factory=dict)
    resources: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # requests/limits

    def merged(self, pool: ReplicaDefaults | None) -> ReplicaPodDefaults:
        """These defaults with a pool's ``spec.replicaDefaults`` on top, field by field."""
        if pool is None:
            return self
        wire = pool.to_wire()
        res = wire.get("resources") or {}
        return ReplicaPodDefaults(
            pod_security_context={**self.pod_security_context, **(wire.get("podSecurityContext") or {})},
            security_context={**self.security_context, **(wire.get("securityContext") or {})},
            resources={k: {**(self.resources.get(k) or {}), **(res.get(k) or {})} for k in ("requests", "limits")},
        )


def replica_defaults(raw: str) -> ReplicaPodDefaults:
    """Parse ``GPUPOOL_REPLICA_DEFAULTS``: JSON ``{"podSecurityContext": {...}, "securityContext":
    {...}, "resources": {"requests": {...}, "limits": {...}}}`` (every key optional)."""
    if not raw.strip():
        return ReplicaPodDefaults()
    try:
        doc = json.loads(raw)
    except ValueError as err:
        raise ValueError(f"not JSON ({err})") from None
    if not isinstance(doc, dict) or any(k not in _DEFAULT_KEYS for k in doc):
        raise ValueError(f"expected a JSON object with only the keys {', '.join(_DEFAULT_KEYS)}")
    for key in _DEFAULT_KEYS:
        if not isinstance(doc.get(key, {}), dict):
            raise ValueError(f"{key}: expected a JSON object")
    resources = doc.get("resources", {})
    if any(k not in ("requests", "limits") or not isinstance(v, dict) for k, v in resources.items()):
        raise ValueError("resources: expected {\"requests\": {...}, \"limits\": {...}}")
    return ReplicaPodDefaults(doc.get("podSecurityContext", {}), doc.get("securityContext", {}),
                              {k: {str(n): str(q) for n, q in v.items()} for k, v in resources.items()})


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """How replica pods run the worker (from the operator's environment / Helm values)."""

    image: str = "ghcr.io/gpupool/worker:0.1.0"
    """The torch-free CPU worker (``gpupool[worker-cpu]``, ONNX Runtime)."""
    cuda_image: str = "ghcr.io/gpupool/worker-cuda:0.1.0"
    """The torch/CUDA worker, for replicas the torch-free one cannot serve; "" = ``image`` for all."""
    service_account: str | None = None
    defaults: ReplicaPodDefaults = field(default_factory=ReplicaPodDefaults)
    drain_s: int = 5
    """A stopping replica reports not-ready and keeps serving this long (``gpupool-worker drain``)."""
    stop_grace_s: int = 10
    """Then SIGTERM stops it within this long."""

    @property
    def termination_grace_s(self) -> int:
        return self.drain_s + self.stop_grace_s + 5


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
    falls back by itself), else plain eager PyTorch. On a CPU ``auto`` too: the worker runs ONNX
    Runtime where the model exports to it (faster than eager torch on CPUs) and eager otherwise."""
    if model.engine.torch_compile:
        return "compile"
    if on_cpu or model.engine.triton_kernels:
        return "auto"
    return "eager"


def torch_free_serves(model: ModelSpec, kind: ShapeKind) -> bool:
    """Whether the torch-free worker image serves a replica of ``model`` on a ``kind`` shape.

    Yes for an external runtime (vllm, triton, custom: the worker image only fetches the model) and
    for a CPU replica of a built-in model (MiniLM, shipped as ONNX) or of an ONNX graph with task
    Tensors or SentenceEmbedding (ONNX Runtime's encoder), unless the pool asks for
    torch.compile. No for every GPU or MIG replica (CUDA is
    torch's), for SafeTensors, TorchScript and TorchExport (loaded with torch; a shipped ONNX
    export beside SafeTensors weights is only found after the fetch), and for ONNX with task
    ImageClassification or Auto (the image preprocessing is torch's, and Auto may turn out to be
    an image classifier)."""
    if model.runtime_type is not RuntimeType.GPUPOOL:
        return True
    if kind is not ShapeKind.CPU or model.engine.torch_compile:
        return False
    fmt = model.source.format
    return fmt is ModelFormat.BUILTIN or (fmt is ModelFormat.ONNX and model.task in (ModelTask.TENSORS,
                                                                                      ModelTask.SENTENCE_EMBEDDING))


def worker_image(model: ModelSpec, kind: ShapeKind, settings: WorkerSettings) -> str:
    """The image a replica pod runs: ``settings.image`` where the torch-free worker serves it or no
    CUDA image is configured, else ``settings.cuda_image``."""
    if not settings.cuda_image or torch_free_serves(model, kind):
        return settings.image
    return settings.cuda_image


def _worker_env(pool: InferencePool, model: ModelSpec, a: Assignment, product_label: str,
                gpu_price: float, settings: WorkerSettings,
                inferences_per_second: float | None = None) -> list[dict[str, str]]:
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
        "GPUPOOL_DRAIN_SECONDS": str(settings.drain_s),
        "GPUPOOL_STOP_GRACE_SECONDS": str(settings.stop_grace_s),
    }
    if inferences_per_second is not None:
        # the shape's throughput profile: an emulated accelerator's batch times follow it
        env["GPUPOOL_INFERENCES_PER_SECOND"] = f"{inferences_per_second:.6g}"
    if shape.kind is ShapeKind.CPU:
        # torch sizes its thread pool by the node's cores, not the pod's CPU limit: on a 64-core
        # node a 2-core replica would run 64 threads into its CFS quota
        env["GPUPOOL_TORCH_THREADS"] = str(max(1, shape.cpu_millis // 1000))
    if model.source.uri.startswith("builtin://"):
        builtin = model.source.uri.removeprefix("builtin://")
        env["GPUPOOL_BUILTIN_MODELS"] = "minilm" if "minilm" in builtin else builtin
    return [{"name": k, "value": v} for k, v in env.items()]


def _model_tolerations(model: ModelSpec) -> list[dict[str, Any]]:
    """The model's own tolerations (standard core/v1 Tolerations), as the pod carries them."""
    out: list[dict[str, Any]] = []
    for t in getattr(model, "tolerations", None) or ():
        out.append(t.to_wire() if hasattr(t, "to_wire") else dict(t))
    return out


def _resources(shape_limits: Mapping[str, str], shape_requests: Mapping[str, str],
               defaults: ReplicaPodDefaults) -> dict[str, dict[str, str]]:
    """The plan's resources, with the defaults filling in what the plan does not decide."""
    limits = {**(defaults.resources.get("limits") or {}), **shape_limits}
    requests = {**(defaults.resources.get("requests") or {}), **shape_requests}
    out = {"limits": limits, "requests": requests}
    return {k: v for k, v in out.items() if v}


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
    inferences_per_second: float | None = None,
    emulated: bool = False,
) -> dict[str, Any]:
    """The Pod manifest that runs one placed replica on exactly its planned node and shape.

    ``inferences_per_second``: the pool's throughput profile for the shape (``GPUPOOL_INFERENCES_PER_SECOND``);
    ``emulated``: the node's GPUs are emulated (the pod is annotated ``gpupool.io/engine: emulated``)."""
    a = assignment
    shape = a.shape
    namespace, pool_name = pool.metadata.namespace or "default", pool.metadata.name or ""
    annotations = {
        names.ANN_DEMAND: a.demand,
        names.ANN_NODE: a.node,
        names.ANN_USD_PER_HOUR: f"{a.cost:.6f}",
    }
    if emulated and shape.kind is not ShapeKind.CPU:
        annotations[names.ANN_ENGINE] = "emulated"
    tolerations = _model_tolerations(model)
    if shape.kind is ShapeKind.CPU:
        limits = {"cpu": f"{shape.cpu_millis}m", "memory": f"{max(shape.memory_mib, 1)}Mi"}
        requests = dict(limits)
    else:
        limits = dict(shape.resources())
        requests = dict(limits)
        if GPU_TOLERATION not in tolerations:
            tolerations.append(dict(GPU_TOLERATION))
        if shape.kind is ShapeKind.MIG:
            if a.start is None or not a.gpus:
                raise ValueError(f"MIG assignment without an instance: {a}")
            annotations[names.ANN_MIG_INSTANCE] = f"{a.gpus[0]}:{shape.profile}:{a.start}"
        else:
            annotations[names.ANN_GPUS] = ",".join(str(g) for g in a.gpus)
    defaults = settings.defaults.merged(pool.spec.replica_defaults)
    labels = {**_labels(pool, model), names.LABEL_REPLICA: str(replica)}
    container: dict[str, Any] = {
        "name": "worker",
        "image": worker_image(model, shape.kind, settings),
        "args": ["serve"],
        "env": _worker_env(pool, model, a, product_label, gpu_price, settings, inferences_per_second),
        "ports": [
            {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
        ],
        "resources": _resources(limits, requests, defaults),
        "readinessProbe": {"grpc": {"port": GRPC_PORT}, "periodSeconds": 5},
        "lifecycle": {"preStop": {"exec": {"command": ["gpupool-worker", "drain"]}}},
    }
    if defaults.security_context:
        container["securityContext"] = dict(defaults.security_context)
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
        "terminationGracePeriodSeconds": settings.termination_grace_s,
        "containers": [container],
    }
    if defaults.pod_security_context:
        spec["securityContext"] = dict(defaults.pod_security_context)
    if settings.service_account:
        spec["serviceAccountName"] = settings.service_account
    if gated:
        spec["schedulingGates"] = [{"name": names.MIG_GATE}]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": names.pod_name(namespace, pool_name, uid, model.name, replica),
            "namespace": namespace,
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
    namespace = pool.metadata.namespace or "default"
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": names.service_name(namespace, pool.metadata.name or "", uid, model.name),
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


def service_matches(observed: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    """Whether a Service still routes as the operator made it: same selector, ports, our labels
    and owner (a hand edit of any of these is put back)."""
    o_meta, d_meta = observed.get("metadata", {}), desired["metadata"]
    o_spec, d_spec = observed.get("spec", {}) or {}, desired["spec"]
    labels = o_meta.get("labels") or {}
    ports = [{k: p.get(k) for k in ("name", "port", "targetPort", "protocol")} for p in o_spec.get("ports") or []]
    want = [{k: p.get(k) for k in ("name", "port", "targetPort", "protocol")} for p in d_spec["ports"]]
    return (o_spec.get("selector") == d_spec["selector"] and ports == want
            and all(labels.get(k) == v for k, v in d_meta["labels"].items())
            and any(r.get("uid") == d_meta["ownerReferences"][0]["uid"] for r in o_meta.get("ownerReferences") or ()))


def pod_is_ready(pod: Mapping[str, Any]) -> bool:
    conds = pod.get("status", {}).get("conditions", []) or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)
