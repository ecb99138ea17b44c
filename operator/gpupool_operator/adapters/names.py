"""The labels, annotations and names the operator writes, in one place.

Why one module: every adapter, the tests and the Helm chart must agree on these strings, and the
MIG manager, the scheduler and ``kubectl`` read them. Object names are derived in
:mod:`gpupool_operator.core.naming` (re-exported here); pure string helpers only.
"""

from __future__ import annotations

from gpupool_operator.core.labels import EMULATED_LABEL as LABEL_EMULATED
from gpupool_operator.core.naming import label_value, pod_name, service_name

__all__ = [
    "ANN_DEMAND",
    "ANN_ENGINE",
    "ANN_GPUS",
    "ANN_MIG_CONFIG_PREVIOUS",
    "ANN_MIG_FAILED",
    "ANN_MIG_INSTANCE",
    "ANN_MIG_LAYOUT",
    "ANN_MIG_LAYOUT_SINCE",
    "ANN_MIG_LAYOUT_TARGET",
    "ANN_MIG_REQUEST",
    "ANN_NODE",
    "ANN_USD_PER_HOUR",
    "FIELD_MANAGER",
    "LABEL_EMULATED",
    "LABEL_MANAGED_BY",
    "LABEL_MIG_CONFIG",
    "LABEL_MIG_CONFIG_STATE",
    "LABEL_MODEL",
    "LABEL_POOL",
    "LABEL_REPLICA",
    "MANAGED_BY",
    "MIG_GATE",
    "demand_key",
    "label_value",
    "pod_name",
    "service_name",
    "split_demand_key",
]

MANAGED_BY = "gpupool"
FIELD_MANAGER = "gpupool-operator"

LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_POOL = "gpupool.io/inferencepool"
LABEL_MODEL = "gpupool.io/model"
LABEL_REPLICA = "gpupool.io/replica"

ANN_DEMAND = "gpupool.io/demand"
"""On a replica pod: the placement demand it serves (``namespace/pool/model``)."""
ANN_NODE = "gpupool.io/node"
"""On a replica pod: the node the plan chose (the pod's required node affinity says the same)."""
ANN_GPUS = "gpupool.io/gpus"
"""On a replica pod: the GPU indices it holds on its node, comma-separated (whole GPUs)."""
ANN_MIG_INSTANCE = "gpupool.io/mig-instance"
"""On a replica pod: ``<gpu>:<profile>:<start slot>`` of the MIG instance it holds."""
ANN_USD_PER_HOUR = "gpupool.io/usd-per-hour"
"""On a replica pod: what its share of the hardware costs per hour."""
ANN_ENGINE = "gpupool.io/engine"
"""On a replica pod: ``emulated`` when its node's GPUs are emulated (the node's ``LABEL_EMULATED``),
so its batch times follow the shape's throughput profile, not a real device. Absent elsewhere: a
real node's pods say what they run in their worker's ``gpupool_engine_emulated`` metric and log."""

LABEL_MIG_CONFIG = "nvidia.com/mig.config"
LABEL_MIG_CONFIG_STATE = "nvidia.com/mig.config.state"
ANN_MIG_LAYOUT = "gpupool.io/mig-layout"
"""On a node: the per-GPU MIG layout in force (JSON list of {profile: count}, one per GPU)."""
ANN_MIG_LAYOUT_TARGET = "gpupool.io/mig-layout-target"
"""On a node: the per-GPU layout the operator asked the MIG manager for, until it reports success."""
ANN_MIG_CONFIG_PREVIOUS = "gpupool.io/mig-config-previous"
"""On a node: the ``nvidia.com/mig.config`` value before the operator's change (for a rollback)."""
ANN_MIG_FAILED = "gpupool.io/mig-failed"
"""On a node: ``<unix time> <config>`` of the last layout the MIG manager failed to apply."""

ANN_MIG_LAYOUT_SINCE = "gpupool.io/mig-layout-since"
"""On a node: when (unix seconds) the operator recorded its target (the re-layout's timeout runs from it)."""
ANN_MIG_REQUEST = "gpupool.io/mig-request"
"""On a node: JSON ``{"config", "at", "stateThen", "seen"}`` of the ``nvidia.com/mig.config`` value the
operator set, the MIG manager's state at that moment, and whether the manager has since reported
pending (so an old ``success`` is never taken for the new one; NVIDIA's manager alone writes the state)."""

MIG_GATE = "gpupool.io/mig-reconfiguration"
"""Scheduling gate held by replica pods until their node's new MIG layout is in allocatable."""


def demand_key(namespace: str, pool: str, model: str) -> str:
    """The placement demand of one model of one pool: ``namespace/pool/model``."""
    return f"{namespace}/{pool}/{model}"


def split_demand_key(key: str) -> tuple[str, str, str]:
    namespace, pool, model = key.split("/", 2)
    return namespace, pool, model
