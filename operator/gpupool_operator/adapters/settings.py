"""The operator's settings: what it needs to know that is not in the cluster, read from the environment.

The Deployment (Helm chart) and ``gpupool operator`` set these, so kopf's own command line
(``kopf run -m gpupool_operator.handlers``) and tests take the same path:

| variable | meaning | default |
|---|---|---|
| KUBECONFIG | kubeconfig to use; in-cluster ServiceAccount when unset | |
| GPUPOOL_NAMESPACE | namespace of the leader Lease (and of the MIG ConfigMap unless set below) | gpupool-system |
| GPUPOOL_WORKER_IMAGE | torch-free CPU worker image (see below) | ghcr.io/gpupool/worker:0.1.0 |
| GPUPOOL_WORKER_IMAGE_CUDA | torch/CUDA worker image; "" = GPUPOOL_WORKER_IMAGE for all | see below |
| GPUPOOL_WORKER_SERVICE_ACCOUNT | ServiceAccount of the replica pods | (namespace default) |
| GPUPOOL_REPLICA_DEFAULTS | JSON {"podSecurityContext", "securityContext", "resources"} for replica pods | {} |
| GPUPOOL_DRAIN_SECONDS / GPUPOOL_STOP_GRACE_SECONDS | a stopping replica serves this long, then stops within | 5 / 10 |
| GPUPOOL_MIG_CONFIGMAP | NVIDIA MIG manager's mig-parted ConfigMap | gpupool-mig-parted-config |
| GPUPOOL_MIG_CONFIGMAP_NAMESPACE | its namespace (the GPU Operator's own, typically) | GPUPOOL_NAMESPACE |
| GPUPOOL_MIG_TIMEOUT_SECONDS | a MIG re-layout not applied by then is abandoned | 600 |
| GPUPOOL_MIG_FAILURE_COOLDOWN_SECONDS | a node whose re-layout failed is retried after | 1800 |
| GPUPOOL_LEASE_NAME / GPUPOOL_LEASE_SECONDS | leader-election Lease | gpupool-operator / 15 |
| GPUPOOL_RESYNC_SECONDS | full re-plan period without events | 30 |
| GPUPOOL_UNSCHEDULABLE_SECONDS | how long kube-scheduler may refuse a replica before it is re-planned | 60 |
| GPUPOOL_REFUSED_CAPACITY_SECONDS | how long capacity kube-scheduler refused stays out of plans | 600 |
| GPUPOOL_STATS_SECONDS | how often Ready replicas' worker statistics are read | 15 |

Worker images, per replica (``adapters.workloads.worker_image``): GPUPOOL_WORKER_IMAGE (the default
CPU-only worker, ``gpupool[worker-cpu]`` on ONNX Runtime) runs CPU replicas of Builtin models and of
ONNX graphs with task Tensors, and the model fetch of vllm/triton/custom runtimes;
GPUPOOL_WORKER_IMAGE_CUDA (Dockerfile target ``worker-cuda``, with torch) runs every GPU and MIG
replica and every other model. Its default is ghcr.io/gpupool/worker-cuda:0.1.0 only while
GPUPOOL_WORKER_IMAGE is unset too: a GPUPOOL_WORKER_IMAGE set without GPUPOOL_WORKER_IMAGE_CUDA (or
with it empty) is the one image for every replica, as before there were two.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from gpupool_operator.adapters.workloads import WorkerSettings, replica_defaults

__all__ = ["OperatorSettings", "SettingsError", "settings_from_env"]


class SettingsError(ValueError):
    """An environment variable the operator cannot use: the message names it and says why."""


@dataclass(frozen=True)
class OperatorSettings:
    """Everything the loop needs to know that is not in the cluster."""

    namespace: str = "gpupool-system"
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    mig_config_map: str = "gpupool-mig-parted-config"
    mig_config_map_namespace: str = ""  # "" = ``namespace``
    mig_timeout_s: float = 600.0
    mig_cooldown_s: float = 1800.0
    debounce_s: float = 0.05
    resync_s: float = 30.0
    refused_cooldown_s: float = 600.0
    """How long capacity kube-scheduler refused on a node is kept out of plans."""
    unschedulable_grace_s: float = 60.0
    """How long kube-scheduler may refuse a replica before the operator re-plans it elsewhere."""
    move_penalty: float = 0.5
    concurrency: int = 16
    backoff_base_s: float = 2.0
    backoff_cap_s: float = 300.0
    stats_period_s: float = 15.0
    stats_timeout_s: float = 1.0

    @property
    def mig_namespace(self) -> str:
        return self.mig_config_map_namespace or self.namespace


def _number(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r}: expected a number of seconds, such as 30") from None
    if value < 0:
        raise SettingsError(f"{name}={raw!r}: expected zero or more seconds")
    return value


def settings_from_env(env: Mapping[str, str] | None = None) -> OperatorSettings:
    env = os.environ if env is None else env
    namespace = env.get("GPUPOOL_NAMESPACE", "gpupool-system")
    defaults = WorkerSettings()
    try:
        replica = replica_defaults(env.get("GPUPOOL_REPLICA_DEFAULTS", ""))
    except ValueError as err:
        raise SettingsError(f"GPUPOOL_REPLICA_DEFAULTS: {err}") from None
    image = env.get("GPUPOOL_WORKER_IMAGE")
    # a custom GPUPOOL_WORKER_IMAGE without a CUDA one keeps serving every replica (backward compatible)
    cuda_image = env.get("GPUPOOL_WORKER_IMAGE_CUDA", defaults.cuda_image if image is None else "")
    worker = WorkerSettings(
        image=defaults.image if image is None else image,
        cuda_image=cuda_image,
        service_account=env.get("GPUPOOL_WORKER_SERVICE_ACCOUNT") or None,
        defaults=replica,
        drain_s=int(_number(env, "GPUPOOL_DRAIN_SECONDS", defaults.drain_s)),
        stop_grace_s=int(_number(env, "GPUPOOL_STOP_GRACE_SECONDS", defaults.stop_grace_s)),
    )
    return OperatorSettings(
        namespace=namespace,
        worker=worker,
        mig_config_map=env.get("GPUPOOL_MIG_CONFIGMAP") or "gpupool-mig-parted-config",
        mig_config_map_namespace=env.get("GPUPOOL_MIG_CONFIGMAP_NAMESPACE") or "",
        mig_timeout_s=_number(env, "GPUPOOL_MIG_TIMEOUT_SECONDS", 600.0),
        mig_cooldown_s=_number(env, "GPUPOOL_MIG_FAILURE_COOLDOWN_SECONDS", 1800.0),
        resync_s=_number(env, "GPUPOOL_RESYNC_SECONDS", 30.0),
        unschedulable_grace_s=_number(env, "GPUPOOL_UNSCHEDULABLE_SECONDS", 60.0),
        refused_cooldown_s=_number(env, "GPUPOOL_REFUSED_CAPACITY_SECONDS", 600.0),
        stats_period_s=_number(env, "GPUPOOL_STATS_SECONDS", 15.0),
    )
