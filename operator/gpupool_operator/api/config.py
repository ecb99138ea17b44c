"""GPUPoolConfig (gpupool.io/v1alpha1, cluster-scoped): what the platform team decides for everyone.

Prices per GPU product and per vCPU, per-node price overrides (spot, reserved), how a MIG slice is
priced, which MIG layouts the operator may apply, and the defaults pools inherit. One object,
named ``default``, holds it: the placement loop is global (every pool competes for the same GPUs),
so there is one set of prices and policies, and a singleton needs no merge rules.

The default price table (``DEFAULT_GPU_PRICES``) ships with its sources; ``default_config()`` is
what the operator uses when no GPUPoolConfig exists, and the Helm chart installs the same object.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, StringConstraints, model_validator

from ._base import ApiModel, CelRule, list_map, list_set, schema_extra
from .conditions import Condition
from .groupversion import CrdInfo, PrinterColumn
from .inferencepool import InferencePoolSpec, PlacementStrategy
from .meta import ObjectMeta
from .types import DnsLabel, Duration, GpuProduct, LabelValue, PositiveDecimal, UsdAmount, parse_duration

__all__ = [
    "DEFAULT_GPU_PRICES",
    "DEFAULT_USD_PER_VCPU_HOUR",
    "GPU_POOL_CONFIG_CRD",
    "SINGLETON_NAME",
    "CapacityType",
    "EffectivePoolSettings",
    "GPUPoolConfig",
    "GPUPoolConfigSpec",
    "GPUPoolConfigStatus",
    "GpuPrice",
    "MigLayoutPolicy",
    "MigSettings",
    "MigSlicePricing",
    "NodePriceOverride",
    "PoolDefaults",
    "default_config",
]

SINGLETON_NAME = "default"
MIG_LAYOUT_PATTERN = r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
LabelKey = Annotated[str, StringConstraints(min_length=1, max_length=317)]



class CapacityType(StrEnum):
    """How the platform buys a node's capacity."""

    ON_DEMAND = "OnDemand"
    SPOT = "Spot"
    RESERVED = "Reserved"


class MigSlicePricing(StrEnum):
    """How a MIG slice's price is derived from its GPU's price (no cloud sells slices)."""

    MAX_SHARE = "MaxShare"
    COMPUTE_SHARE = "ComputeShare"
    MEMORY_SHARE = "MemoryShare"


class MigLayoutPolicy(StrEnum):
    """Whether and how the operator may repartition MIG-capable GPUs."""

    ANY = "Any"
    ALLOW_LIST = "AllowList"
    DISABLED = "Disabled"


class GpuPrice(ApiModel):
    """The hourly price of one GPU of a product."""

    product: GpuProduct
    """GPU product: catalog short name (H100-80GB) or nvidia.com/gpu.product value."""
    usd_per_gpu_hour: UsdAmount
    """US dollars per GPU-hour, as a decimal string ("6.88")."""
    source: Annotated[str, StringConstraints(max_length=256)] | None = None
    """Where the figure comes from (provider, instance type, date), for whoever audits it."""


class NodePriceOverride(ApiModel):
    """Prices for the nodes a selector matches (spot or reserved capacity, a negotiated rate)."""

    model_config = ConfigDict(
        json_schema_extra=schema_extra(
            CelRule(
                "!(has(self.priceMultiplier) && (has(self.usdPerGpuHour) || has(self.usdPerVcpuHour)))",
                "set either priceMultiplier or absolute prices (usdPerGpuHour, usdPerVcpuHour), not both",
                ".priceMultiplier",
            ),
            CelRule(
                "has(self.capacityType) || has(self.priceMultiplier) || has(self.usdPerGpuHour) || "
                "has(self.usdPerVcpuHour)",
                "an override must set capacityType, priceMultiplier or an absolute price",
                ".capacityType",
            ),
        )
    )

    name: DnsLabel
    """Name of the override, unique in the list; earlier entries win when several match a node."""
    node_selector: dict[LabelKey, LabelValue] = Field(min_length=1, max_length=16)
    """Node labels that must all match, e.g. {"karpenter.sh/capacity-type": "spot"}."""
    capacity_type: CapacityType | None = None
    """OnDemand, Spot or Reserved: how matching nodes are bought. Without a priceMultiplier or
    absolute price, the operator's default discount for the tier applies."""
    usd_per_gpu_hour: UsdAmount | None = None
    """Absolute price per GPU-hour on matching nodes, whatever the product."""
    usd_per_vcpu_hour: UsdAmount | None = None
    """Absolute price per vCPU-hour on matching nodes."""
    price_multiplier: PositiveDecimal | None = None
    """Multiplier on the product's list price on matching nodes (e.g. "0.35" for spot)."""

    @model_validator(mode="after")
    def _pricing_mode(self) -> NodePriceOverride:
        absolute = self.usd_per_gpu_hour is not None or self.usd_per_vcpu_hour is not None
        if self.price_multiplier is not None and absolute:
            raise ValueError(
                "priceMultiplier: set either priceMultiplier or absolute prices (usdPerGpuHour, usdPerVcpuHour)"
            )
        if self.capacity_type is None and self.price_multiplier is None and not absolute:
            raise ValueError("capacityType: an override must set capacityType, priceMultiplier or an absolute price")
        return self


class MigSettings(ApiModel):
    """Which MIG layouts the operator may ask NVIDIA's MIG manager to apply."""

    model_config = ConfigDict(
        json_schema_extra=schema_extra(
            CelRule(
                "(has(self.policy) && self.policy == 'AllowList') == "
                "(has(self.allowedLayouts) && size(self.allowedLayouts) > 0)",
                "allowedLayouts must be non-empty when policy is AllowList, and empty otherwise",
                ".allowedLayouts",
            )
        )
    )

    policy: MigLayoutPolicy = MigLayoutPolicy.ANY
    """Any (any layout in the MIG manager's config), AllowList (only allowedLayouts) or Disabled
    (never relabel nvidia.com/mig.config; use the slices that exist)."""
    allowed_layouts: list[Annotated[str, StringConstraints(pattern=MIG_LAYOUT_PATTERN, max_length=63)]] = Field(
        default_factory=list, max_length=64, json_schema_extra=list_set()
    )
    """Names of mig-parted configs (e.g. all-1g.10gb, all-balanced) the operator may set in a node's
    nvidia.com/mig.config label, when policy is AllowList."""

    @model_validator(mode="after")
    def _allow_list(self) -> MigSettings:
        if (self.policy is MigLayoutPolicy.ALLOW_LIST) != bool(self.allowed_layouts):
            raise ValueError("allowedLayouts: must be non-empty when policy is AllowList, and empty otherwise")
        if len(set(self.allowed_layouts)) != len(self.allowed_layouts):
            raise ValueError("allowedLayouts: duplicate layout names")
        return self


class PoolDefaults(ApiModel):
    """Values an InferencePool gets for the fields it leaves unset."""

    placement_strategy: PlacementStrategy = PlacementStrategy.COST
    """Placement strategy of pools that set none."""
    scale_up_stabilization_window: Duration = "0s"
    """Scale-up stabilization window of pools that set none."""
    scale_down_stabilization_window: Duration = "5m"
    """Scale-down stabilization window of pools that set none (HPA's default)."""
    scale_to_zero_after: Duration = "15m"
    """Idle time before a scale-to-zero model loses its last replica, for pools that set none."""

    def apply(self, spec: InferencePoolSpec) -> EffectivePoolSettings:
        """The pool-wide settings in force for ``spec``: its own values, else these defaults."""
        scaling = spec.scaling
        return EffectivePoolSettings(
            placement_strategy=spec.placement_strategy or self.placement_strategy,
            scale_up_stabilization_seconds=parse_duration(
                (scaling and scaling.scale_up_stabilization_window) or self.scale_up_stabilization_window
            ),
            scale_down_stabilization_seconds=parse_duration(
                (scaling and scaling.scale_down_stabilization_window) or self.scale_down_stabilization_window
            ),
            scale_to_zero=bool(scaling and scaling.scale_to_zero),
            scale_to_zero_after_seconds=parse_duration(
                (scaling and scaling.scale_to_zero_after) or self.scale_to_zero_after
            ),
            max_usd_per_hour=spec.budget.max_usd_per_hour if spec.budget is not None else None,
        )


@dataclass(frozen=True, slots=True)
class EffectivePoolSettings:
    """Pool-wide policy after defaulting, in the units the core computes with."""

    placement_strategy: PlacementStrategy
    scale_up_stabilization_seconds: float
    scale_down_stabilization_seconds: float
    scale_to_zero: bool
    scale_to_zero_after_seconds: float
    max_usd_per_hour: Decimal | None


class GPUPoolConfigSpec(ApiModel):
    """Cluster-wide prices, MIG policy and pool defaults."""

    gpu_prices: list[GpuPrice] = Field(
        default_factory=list, max_length=64, json_schema_extra=list_map("product")
    )
    """Price per GPU-hour for each product, keyed by product. Products not listed here are priced
    by an estimate proportional to their memory."""
    usd_per_vcpu_hour: UsdAmount = Decimal("0.048")
    """Price per vCPU-hour of CPU nodes (and of CPU replicas on GPU nodes)."""
    mig_slice_pricing: MigSlicePricing = MigSlicePricing.MAX_SHARE
    """How a MIG slice is priced from its GPU: MaxShare = GPU price x max(compute slices/7,
    memory slots/8) (neutral default), ComputeShare = x compute/7, MemoryShare = x memory/8."""
    node_overrides: list[NodePriceOverride] = Field(
        default_factory=list, max_length=64, json_schema_extra=list_map("name")
    )
    """Per-node price overrides (spot, reserved, negotiated), first match wins."""
    mig: MigSettings = Field(default_factory=MigSettings, json_schema_extra={"default": {}})
    """Which MIG layouts the operator may apply."""
    defaults: PoolDefaults = Field(default_factory=PoolDefaults, json_schema_extra={"default": {}})
    """Defaults for InferencePool fields left unset."""

    @model_validator(mode="after")
    def _unique_keys(self) -> GPUPoolConfigSpec:
        for what, keys in (
            ("gpuPrices", [p.product for p in self.gpu_prices]),
            ("nodeOverrides", [o.name for o in self.node_overrides]),
        ):
            if len(set(keys)) != len(keys):
                raise ValueError(f"{what}: duplicate keys {sorted(k for k in set(keys) if keys.count(k) > 1)}")
        return self

    def gpu_price(self, product: str) -> Decimal | None:
        """The list price per GPU-hour of ``product`` (matched exactly), or ``None``."""
        return next((p.usd_per_gpu_hour for p in self.gpu_prices if p.product == product), None)


class GPUPoolConfigStatus(ApiModel):
    """Observed state of the configuration."""

    observed_generation: Annotated[int, Field(ge=0)] | None = None
    """The .metadata.generation the operator last loaded."""
    conditions: list[Condition] = Field(default_factory=list, max_length=8, json_schema_extra=list_map("type"))
    """Accepted: whether the operator loaded this configuration, and why not when it did not."""


class GPUPoolConfig(ApiModel):
    """GPUPoolConfig is gpupool's cluster-wide configuration, owned by the platform team: GPU and CPU
    prices, per-node price overrides, MIG repartitioning policy and InferencePool defaults. It is a
    singleton named "default"."""

    api_version: Literal["gpupool.io/v1alpha1"] = "gpupool.io/v1alpha1"
    """APIVersion defines the versioned schema of this representation of an object."""
    kind: Literal["GPUPoolConfig"] = "GPUPoolConfig"
    """Kind is a string value representing the REST resource this object represents."""
    metadata: ObjectMeta = Field(default_factory=lambda: ObjectMeta(name=SINGLETON_NAME))
    """Standard object metadata; the name must be "default"."""
    spec: GPUPoolConfigSpec = Field(default_factory=GPUPoolConfigSpec)
    """Desired configuration."""
    status: GPUPoolConfigStatus | None = None
    """Observed state, written by the operator."""

    @model_validator(mode="after")
    def _singleton(self) -> GPUPoolConfig:
        if self.metadata.name not in (None, SINGLETON_NAME):
            raise ValueError(f'metadata.name: GPUPoolConfig is a singleton named "{SINGLETON_NAME}"')
        return self


# Prices: on-demand list prices in USD per GPU-hour (see shared notes/domain.md). Defaults only: the
# platform team overrides them in its GPUPoolConfig. Products without a figure from that provider
# are left out rather than guessed.
_AWS = "AWS on-demand"
_GCP = "GCP on-demand"
_LAMBDA = "Lambda on-demand"
PRICE_TABLES: dict[str, tuple[tuple[str, str, str], ...]] = {
    "aws": (
        ("A100-40GB", "2.74", f"{_AWS}, p4d.24xlarge / 8 GPUs, after the 2025 price cut"),
        ("A100-80GB", "3.43", f"{_AWS}, p4de.24xlarge / 8 GPUs"),
        ("H100-80GB", "6.88", f"{_AWS}, p5.48xlarge / 8 GPUs, after the 2025 price cut"),
        ("H200-141GB", "10.60", f"{_AWS}, p5en.48xlarge / 8 GPUs (older figure)"),
        ("B200-180GB", "6.69", f"{_LAMBDA} (no AWS figure; Lambda's B200 list price)"),
    ),
    "gcp": (
        ("A100-40GB", "3.67", f"{_GCP}, a2-highgpu per GPU"),
        ("A100-80GB", "5.07", f"{_GCP}, a2-ultragpu per GPU"),
        ("H100-80GB", "11.06", f"{_GCP}, a3-highgpu per GPU"),
        ("H200-141GB", "10.44", f"{_GCP}, a3-ultragpu per GPU"),
    ),
    "lambda": (
        ("A100-40GB", "1.99", f"{_LAMBDA}, 1x A100 40GB"),
        ("A100-80GB", "2.79", f"{_LAMBDA}, A100 80GB"),
        ("H100-80GB", "3.99", f"{_LAMBDA}, H100 80GB"),
        ("B200-180GB", "6.69", f"{_LAMBDA}, B200"),
    ),
}
DEFAULT_PROVIDER = "aws"
DEFAULT_USD_PER_VCPU_HOUR = Decimal("0.048")
"""Midpoint of the 0.045-0.052 USD per vCPU-hour the clouds charge on demand."""

DEFAULT_GPU_PRICES: tuple[GpuPrice, ...] = tuple(
    GpuPrice(product=product, usd_per_gpu_hour=Decimal(price), source=source)
    for product, price, source in PRICE_TABLES[DEFAULT_PROVIDER]
)


def default_config(provider: str = DEFAULT_PROVIDER) -> GPUPoolConfig:
    """The configuration used when the cluster has no GPUPoolConfig: list prices of ``provider``."""
    try:
        table = PRICE_TABLES[provider]
    except KeyError:
        raise ValueError(f"unknown price table {provider!r}; known: {', '.join(PRICE_TABLES)}") from None
    prices = [GpuPrice(product=p, usd_per_gpu_hour=Decimal(v), source=s) for p, v, s in table]
    return GPUPoolConfig(spec=GPUPoolConfigSpec(gpu_prices=prices, usd_per_vcpu_hour=DEFAULT_USD_PER_VCPU_HOUR))


def _root_rule() -> dict[str, Any]:
    return CelRule(
        f"self.metadata.name == '{SINGLETON_NAME}'",
        f'GPUPoolConfig is a singleton: metadata.name must be "{SINGLETON_NAME}"',
    ).to_schema()


GPU_POOL_CONFIG_CRD = CrdInfo(
    kind="GPUPoolConfig",
    plural="gpupoolconfigs",
    singular="gpupoolconfig",
    scope="Cluster",
    short_names=("gpcfg",),
    categories=("gpupool",),
    description=(GPUPoolConfig.__doc__ or "").replace("\n    ", " "),
    printer_columns=(
        PrinterColumn("MIG", "string", ".spec.mig.policy", "MIG repartitioning policy"),
        PrinterColumn("Strategy", "string", ".spec.defaults.placementStrategy", "Default placement strategy"),
        PrinterColumn(
            "Accepted", "string", '.status.conditions[?(@.type=="Accepted")].status', "Loaded by the operator"
        ),
        PrinterColumn("Age", "date", ".metadata.creationTimestamp", "Time since creation"),
    ),
    root_rules=(_root_rule(),),
)
