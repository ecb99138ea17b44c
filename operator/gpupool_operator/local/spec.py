"""Cluster specs: a small YAML format describing node pools of a (fake) GPU cluster.

Why a format of our own: examples, tests and benchmarks need heterogeneous clusters (A100, H100,
B200, MIG mixed mode, CPU nodes, spot capacity) described in a dozen lines, while what reaches the
API server must be real Node objects with NVIDIA's labels. ``nodes.py`` does that translation; this
module only validates, so every mistake is reported with the pool and field that caused it.

Example::

    name: small-hetero
    pools:
      - name: h100-mig
        count: 2
        gpu: H100-80GB            # catalog key or a real nvidia.com/gpu.product value
        gpusPerNode: 8
        cpu: 192
        memoryGiB: 2048
        priceTier: on-demand      # on-demand | spot | reserved
        real: 1                   # plus one real kubelet node with emulated GPUs (--real-nodes)
        mig:
          strategy: mixed         # none | single | mixed
          layout: {"3g.40gb": 1, "2g.20gb": 1, "1g.10gb": 2}   # every GPU, or:
          # gpus: [{"7g.80gb": 1}, {}, ...]                      # one entry per GPU ({} = MIG off)
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gpupool_operator.core import catalog, mig


class SpecError(ValueError):
    """A cluster spec is invalid; the message names the pool and the field."""


class MigStrategy(StrEnum):
    NONE = "none"
    SINGLE = "single"
    MIXED = "mixed"


class PriceTier(StrEnum):
    ON_DEMAND = "on-demand"
    SPOT = "spot"
    RESERVED = "reserved"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


MigCounts = dict[str, Annotated[int, Field(ge=0)]]


class MigSpec(_Model):
    strategy: MigStrategy = MigStrategy.MIXED
    layout: MigCounts | None = Field(default=None, description="One layout applied to every GPU of the node.")
    gpus: list[MigCounts] | None = Field(default=None, description="One layout per GPU index; {} = MIG disabled.")

    @model_validator(mode="after")
    def _one_of(self) -> Self:
        if self.strategy is not MigStrategy.NONE and (self.layout is None) == (self.gpus is None):
            raise ValueError("give exactly one of `layout` (every GPU) or `gpus` (one layout per GPU)")
        return self


class Taint(_Model):
    key: str
    value: str = ""
    effect: str = Field(pattern=r"^(NoSchedule|PreferNoSchedule|NoExecute)$")


class PoolSpec(_Model):
    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=40)
    count: int = Field(ge=0, le=20000)
    real: int = Field(
        default=0, ge=0, le=8,
        description="Real kubelet nodes of this pool (emulated GPUs), beside `count` KWOK nodes; "
                    "started by `gpupool local up --real-nodes` (root only).",
    )
    gpu: str | None = Field(default=None, description="GPU product; omit for a CPU-only pool.")
    gpus_per_node: int = Field(default=0, alias="gpusPerNode", ge=0, le=16)
    cpu: int = Field(default=32, ge=1, le=4096)
    memory_gib: int = Field(default=256, alias="memoryGiB", ge=1, le=65536)
    max_pods: int = Field(default=250, alias="maxPods", ge=1, le=5000)
    price_tier: PriceTier = Field(default=PriceTier.ON_DEMAND, alias="priceTier")
    price_per_gpu_hour: float | None = Field(default=None, alias="pricePerGpuHour", ge=0)
    instance_type: str | None = Field(default=None, alias="instanceType")
    mig: MigSpec | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    taints: list[Taint] = Field(default_factory=list)

    @field_validator("gpu")
    @classmethod
    def _known_gpu(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                catalog.lookup(value)
            except KeyError as err:
                raise ValueError(str(err.args[0])) from None
        return value

    @property
    def product(self) -> catalog.GpuProduct | None:
        return catalog.lookup(self.gpu) if self.gpu else None

    def gpu_layouts(self) -> list[dict[str, int]]:
        """The MIG layout of each GPU index ({} = MIG disabled, a whole GPU)."""
        if self.mig is None or self.mig.strategy is MigStrategy.NONE:
            return [{} for _ in range(self.gpus_per_node)]
        if self.mig.layout is not None:
            return [dict(self.mig.layout) for _ in range(self.gpus_per_node)]
        return [dict(g) for g in self.mig.gpus or []]

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        product = self.product
        if product is None:
            if self.gpus_per_node:
                raise ValueError("gpusPerNode is set but `gpu` is missing")
            if self.mig is not None:
                raise ValueError("mig is set on a CPU-only pool (no `gpu`)")
            return self
        if self.gpus_per_node == 0:
            raise ValueError(f"gpusPerNode must be >= 1 for a {product.key} pool")
        if self.mig is None or self.mig.strategy is MigStrategy.NONE:
            return self
        if not product.mig_capable:
            raise ValueError(f"mig: {product.key} is not MIG-capable")
        if self.mig.gpus is not None and len(self.mig.gpus) != self.gpus_per_node:
            raise ValueError(f"mig.gpus: has {len(self.mig.gpus)} entries but gpusPerNode is {self.gpus_per_node}")
        layouts = self.gpu_layouts()
        for index, layout in enumerate(layouts):
            where = "mig.layout" if self.mig.layout is not None else f"mig.gpus[{index}]"
            problem = mig.layout_problem(product, layout) if layout else None
            if problem:
                raise ValueError(f"{where}: impossible MIG layout {layout} on {product.key}: {problem}")
        if self.mig.strategy is MigStrategy.SINGLE:
            kinds = {name for layout in layouts for name, n in layout.items() if n}
            if len(kinds) != 1 or any(not layout for layout in layouts):
                raise ValueError("mig.strategy single needs every GPU partitioned into one and the same profile")
        return self


class ClusterSpec(_Model):
    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=40)
    description: str = ""
    pools: list[PoolSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_pools(self) -> Self:
        seen: set[str] = set()
        for pool in self.pools:
            if pool.name in seen:
                raise ValueError(f"duplicate pool name {pool.name!r}")
            seen.add(pool.name)
        return self

    @property
    def node_count(self) -> int:
        return sum(p.count for p in self.pools)

    @property
    def real_node_count(self) -> int:
        return sum(p.real for p in self.pools)

    @property
    def gpu_count(self) -> int:
        return sum(p.count * p.gpus_per_node for p in self.pools)


def _describe(err: ValidationError, raw: object) -> str:
    """Turn pydantic's locations (``pools.2.mig``) into ``pool 'h100-mig': mig: ...``."""
    lines = []
    pools = raw.get("pools") if isinstance(raw, dict) else None
    for e in err.errors():
        loc = list(e["loc"])
        where = ""
        if len(loc) >= 2 and loc[0] == "pools" and isinstance(loc[1], int):
            name = (
                pools[loc[1]].get("name")
                if isinstance(pools, list) and loc[1] < len(pools) and isinstance(pools[loc[1]], dict)
                else None
            )
            where = f"pool {name!r}" if name else f"pools[{loc[1]}]"
            loc = loc[2:]
        field = ".".join(str(x) for x in loc)
        msg = e["msg"].removeprefix("Value error, ")
        lines.append(f"{where}{': ' if where and field else ''}{field}: {msg}" if field or where else msg)
    return "; ".join(lines)


def parse(raw: object, source: str = "cluster spec") -> ClusterSpec:
    if not isinstance(raw, dict):
        raise SpecError(f"{source}: expected a mapping with `name` and `pools`")
    try:
        return ClusterSpec.model_validate(raw)
    except ValidationError as err:
        raise SpecError(f"{source}: {_describe(err, raw)}") from None


def load(path: Path) -> ClusterSpec:
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise SpecError(f"{path}: no such cluster spec") from None
    except yaml.YAMLError as err:
        raise SpecError(f"{path}: not valid YAML: {err}") from None
    return parse(raw, str(path))
