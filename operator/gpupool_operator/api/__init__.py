"""gpupool's API: the custom resources as pydantic models, the single source of truth.

The CRD YAML in ``crds/`` is generated from these models (``python -m gpupool_operator.api.crdgen``)
and the operator parses specs and writes status through them. This package imports only pydantic,
PyYAML and the standard library: every other layer may depend on it, it depends on none of them.

Wire format: camelCase (``acceleratorMemory``); Python: snake_case (``accelerator_memory``); both
are accepted on input. ``InferencePool.model_validate(manifest_dict)`` parses a manifest as
``kubectl`` sends it, and ``obj.to_wire()`` gives it back.
"""

from __future__ import annotations

from .conditions import Condition, ConditionReason, ConditionStatus, ConditionType, find_condition, set_condition
from .config import (
    DEFAULT_GPU_PRICES,
    DEFAULT_USD_PER_VCPU_HOUR,
    GPU_POOL_CONFIG_CRD,
    PRICE_TABLES,
    SINGLETON_NAME,
    CapacityType,
    EffectivePoolSettings,
    GPUPoolConfig,
    GPUPoolConfigSpec,
    GPUPoolConfigStatus,
    GpuPrice,
    MigLayoutPolicy,
    MigSettings,
    MigSlicePricing,
    NodePriceOverride,
    PoolDefaults,
    default_config,
)
from .groupversion import API_VERSION, GROUP, VERSION, CrdInfo, PrinterColumn
from .inferencepool import (
    INFERENCE_POOL_CRD,
    MAX_GPUS_PER_REPLICA,
    Budget,
    CpuTarget,
    EngineOptions,
    GpuTarget,
    HardwareOption,
    HardwareType,
    InferencePool,
    InferencePoolSpec,
    InferencePoolStatus,
    LatencyObjective,
    LatencyPercentile,
    MigTarget,
    ModelFormat,
    ModelSource,
    ModelSpec,
    ModelStatus,
    PlacementStrategy,
    Precision,
    ReplicaPlacement,
    ScalingBehavior,
)
from .meta import ObjectMeta
from .replica import ContainerSecurityDefaults, PodSecurityDefaults, ReplicaDefaults, ReplicaResources
from .types import format_decimal, mig_resource_name, parse_duration, parse_quantity

__all__ = [
    "API_VERSION",
    "DEFAULT_GPU_PRICES",
    "DEFAULT_USD_PER_VCPU_HOUR",
    "GPU_POOL_CONFIG_CRD",
    "GROUP",
    "INFERENCE_POOL_CRD",
    "MAX_GPUS_PER_REPLICA",
    "PRICE_TABLES",
    "SINGLETON_NAME",
    "VERSION",
    "Budget",
    "CapacityType",
    "Condition",
    "ConditionReason",
    "ConditionStatus",
    "ConditionType",
    "ContainerSecurityDefaults",
    "CpuTarget",
    "CrdInfo",
    "EffectivePoolSettings",
    "EngineOptions",
    "GPUPoolConfig",
    "GPUPoolConfigSpec",
    "GPUPoolConfigStatus",
    "GpuPrice",
    "GpuTarget",
    "HardwareOption",
    "HardwareType",
    "InferencePool",
    "InferencePoolSpec",
    "InferencePoolStatus",
    "LatencyObjective",
    "LatencyPercentile",
    "MigLayoutPolicy",
    "MigSettings",
    "MigSlicePricing",
    "MigTarget",
    "ModelFormat",
    "ModelSource",
    "ModelSpec",
    "ModelStatus",
    "NodePriceOverride",
    "ObjectMeta",
    "PlacementStrategy",
    "PodSecurityDefaults",
    "PoolDefaults",
    "Precision",
    "PrinterColumn",
    "ReplicaDefaults",
    "ReplicaPlacement",
    "ReplicaResources",
    "ScalingBehavior",
    "default_config",
    "find_condition",
    "format_decimal",
    "mig_resource_name",
    "parse_duration",
    "parse_quantity",
    "set_condition",
]
