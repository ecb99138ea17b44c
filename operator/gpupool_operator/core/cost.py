"""The cost model: hourly prices of GPUs, MIG slices and CPU cores (pure functions over data).

Defaults are the API's on-demand list prices in USD per GPU-hour (AWS column where it has a
figure, else Lambda; shared notes/domain.md); every figure is overridable by the cluster's pricing config, by a
node's ``gpupool.io/price-per-gpu-hour`` annotation, or on the command line. No cloud sells MIG
slices, so a slice is charged a share of its GPU: by default the neutral ``GPU price x
max(compute/7, memory/8)``, or its compute or memory share (GPUPoolConfig ``migSlicePricing``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from gpupool_operator.api.config import DEFAULT_PROVIDER, DEFAULT_USD_PER_VCPU_HOUR, PRICE_TABLES
from gpupool_operator.core import catalog
from gpupool_operator.core.catalog import COMPUTE_SLICES, MEMORY_SLOTS, MigProfile
from gpupool_operator.core.mig import fraction

if TYPE_CHECKING:
    from gpupool_operator.api.config import GPUPoolConfig


class PriceTier(StrEnum):
    """The ``gpupool.io/price-tier`` node label."""

    ON_DEMAND = "on-demand"
    SPOT = "spot"
    RESERVED = "reserved"


#: USD per GPU-hour, on demand: the API's default price table (one source of truth). Products it
#: leaves out (H100-NVL, GB200) are estimated from their memory (``UNKNOWN_GPU_PRICE_PER_GIB``).
DEFAULT_GPU_PRICES: Mapping[str, float] = {
    product: float(price) for product, price, _source in PRICE_TABLES[DEFAULT_PROVIDER]
}
#: USD per vCPU-hour (the middle of the 0.045-0.052 range).
DEFAULT_CPU_PRICE = float(DEFAULT_USD_PER_VCPU_HOUR)
#: Price multipliers per tier, applied when no explicit per-tier price is configured.
DEFAULT_TIER_FACTORS: Mapping[PriceTier, float] = {
    PriceTier.ON_DEMAND: 1.0,
    PriceTier.SPOT: 0.35,
    PriceTier.RESERVED: 0.6,
}
#: Price of a GPU the catalog does not know, per GiB of its memory (A100-80GB's rate).
UNKNOWN_GPU_PRICE_PER_GIB = 3.43 / 80


@dataclass(frozen=True, slots=True)
class NodeOverride:
    """A price rule for nodes whose labels include ``selector`` (first match wins)."""

    name: str
    selector: Mapping[str, str]
    tier: PriceTier | None = None
    gpu_hour: float | None = None
    cpu_hour: float | None = None
    multiplier: float | None = None


@dataclass(frozen=True, slots=True)
class Prices:
    """Everything the cost model needs; build it from the cluster pricing config or use defaults."""

    gpu: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_GPU_PRICES))
    cpu_per_core_hour: float = DEFAULT_CPU_PRICE
    tier_factors: Mapping[PriceTier, float] = field(default_factory=lambda: dict(DEFAULT_TIER_FACTORS))
    #: Explicit per-tier prices, (product key, tier) -> USD per GPU-hour; wins over the factors.
    tiered: Mapping[tuple[str, PriceTier], float] = field(default_factory=dict)
    overrides: tuple[NodeOverride, ...] = ()

    def known(self, product_key: str | None) -> bool:
        return product_key is not None and product_key in self.gpu

    def node_override(self, labels: Mapping[str, str]) -> NodeOverride | None:
        for rule in self.overrides:
            if all(labels.get(k) == v for k, v in rule.selector.items()):
                return rule
        return None

    def gpu_hour(self, product_key: str | None, tier: PriceTier, memory_mib: int = 0) -> float:
        """USD per hour of one whole GPU of ``product_key`` on a node of ``tier``."""
        if product_key is not None and (product_key, tier) in self.tiered:
            return self.tiered[(product_key, tier)]
        base = self.gpu.get(product_key) if product_key is not None else None
        if base is None:
            base = UNKNOWN_GPU_PRICE_PER_GIB * memory_mib / 1024
        return round(base * self.tier_factors.get(tier, 1.0), 6)


class SlicePricing(StrEnum):
    """How a MIG slice's price is derived from its GPU's (GPUPoolConfig ``migSlicePricing``)."""

    MAX_SHARE = "MaxShare"  # max(compute slices / 7, memory slots / 8): the neutral default
    COMPUTE_SHARE = "ComputeShare"  # compute slices / 7
    MEMORY_SHARE = "MemoryShare"  # memory slots / 8


def slice_share(profile: MigProfile, pricing: SlicePricing = SlicePricing.MAX_SHARE) -> float:
    """The share of its GPU's price one instance of ``profile`` is charged under ``pricing``."""
    if pricing is SlicePricing.COMPUTE_SHARE:
        return profile.compute_slices / COMPUTE_SLICES
    if pricing is SlicePricing.MEMORY_SHARE:
        return profile.memory_slots / MEMORY_SLOTS
    return fraction(profile)


def mig_share(gpu_price: float, profile: MigProfile, pricing: SlicePricing = SlicePricing.MAX_SHARE) -> float:
    """USD per hour charged to one MIG instance: the GPU's price times its share under ``pricing``."""
    return gpu_price * slice_share(profile, pricing)


def cpu_cost(prices: Prices, cpu_millis: int) -> float:
    return prices.cpu_per_core_hour * cpu_millis / 1000


_CAPACITY_TIERS = {"OnDemand": PriceTier.ON_DEMAND, "Spot": PriceTier.SPOT, "Reserved": PriceTier.RESERVED}


def prices_from_config(config: GPUPoolConfig) -> Prices:
    """The cost model's view of a ``GPUPoolConfig`` (products resolved to catalog keys)."""
    gpu: dict[str, float] = {}
    for entry in config.spec.gpu_prices:
        try:
            key = catalog.lookup(entry.product).key
        except KeyError:
            key = entry.product  # an unknown product priced by its label value
        gpu[key] = float(entry.usd_per_gpu_hour)
    overrides = tuple(
        NodeOverride(
            name=o.name,
            selector=dict(o.node_selector),
            tier=_CAPACITY_TIERS.get(o.capacity_type.value) if o.capacity_type is not None else None,
            gpu_hour=float(o.usd_per_gpu_hour) if o.usd_per_gpu_hour is not None else None,
            cpu_hour=float(o.usd_per_vcpu_hour) if o.usd_per_vcpu_hour is not None else None,
            multiplier=float(o.price_multiplier) if o.price_multiplier is not None else None,
        )
        for o in config.spec.node_overrides
    )
    return Prices(gpu=gpu, cpu_per_core_hour=float(config.spec.usd_per_vcpu_hour), overrides=overrides)


def default_prices() -> Prices:
    """Prices of the API's default configuration (one source of truth for the list prices)."""
    from gpupool_operator.api.config import default_config

    return prices_from_config(default_config())
