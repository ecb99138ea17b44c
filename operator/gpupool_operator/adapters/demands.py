"""InferencePools and the cluster's GPUPoolConfig, translated into what the placement core computes with.

One :class:`~gpupool_operator.core.demand.Demand` per model of every pool, keyed
``namespace/pool/model``; prices from the GPUPoolConfig (or its defaults when none exists). The
replica count comes from a :class:`ReplicaPolicy`: today the spec's ``minReplicas``; the
autoscaler (queue depth from worker statistics) plugs in here without touching the rest.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from pydantic import ValidationError

from gpupool_operator.adapters.names import demand_key
from gpupool_operator.api import GPUPoolConfig, InferencePool, ModelSpec, PoolDefaults, default_config
from gpupool_operator.core.cost import Prices, prices_from_config
from gpupool_operator.core.demand import Demand, Strategy, from_pool, placement_policy

__all__ = [
    "MinReplicas",
    "ParsedPool",
    "ReplicaPolicy",
    "config_from",
    "demands_for",
    "parse_pool",
    "prices_from",
]


class ReplicaPolicy(Protocol):
    """How many replicas a model should have now (the autoscaler's seam)."""

    def desired(self, pool: InferencePool, model: ModelSpec) -> int: ...


@dataclass(frozen=True)
class MinReplicas:
    """The policy before autoscaling: every model runs ``minReplicas``, or an override per demand key."""

    overrides: Mapping[str, int] = field(default_factory=dict)

    def desired(self, pool: InferencePool, model: ModelSpec) -> int:
        key = demand_key(pool.metadata.namespace or "default", pool.metadata.name or "", model.name)
        wanted = self.overrides.get(key, model.min_replicas)
        return max(model.min_replicas, min(model.max_replicas, wanted))


@dataclass(frozen=True)
class ParsedPool:
    """A pool as stored, parsed; ``error`` says why it could not be (then ``pool`` is ``None``)."""

    namespace: str
    name: str
    uid: str
    generation: int
    pool: InferencePool | None
    error: str | None = None
    deleting: bool = False


def parse_pool(obj: Mapping[str, Any]) -> ParsedPool:
    meta = obj.get("metadata", {})
    namespace, name = meta.get("namespace", "default"), meta.get("name", "")
    body = {k: v for k, v in obj.items() if k in ("apiVersion", "kind", "metadata", "spec")}
    body["metadata"] = {k: meta[k] for k in ("name", "namespace", "uid", "generation", "labels") if k in meta}
    try:
        pool = InferencePool.model_validate(body)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        return ParsedPool(namespace, name, meta.get("uid", ""), int(meta.get("generation", 0)), None,
                          f"invalid spec at {where}: {first.get('msg', err)}")
    return ParsedPool(namespace, name, meta.get("uid", ""), int(meta.get("generation", 0)), pool,
                      deleting=bool(meta.get("deletionTimestamp")))


def demands_for(
    pools: Iterable[InferencePool], policy: ReplicaPolicy | None = None, defaults: PoolDefaults | None = None
) -> list[Demand]:
    """One demand per model of every pool, in a stable order.

    Built by the core's :func:`~gpupool_operator.core.demand.from_pool` (so ``placementStrategy``,
    ``budget.maxUsdPerHour`` and ``minReplicas`` as the guaranteed share are honoured); the replica
    count comes from ``policy`` and a pool without a ``placementStrategy`` gets the one from the
    GPUPoolConfig's ``defaults``.
    """
    policy = policy or MinReplicas()
    defaults = defaults or PoolDefaults()
    out: list[Demand] = []
    for pool in pools:
        default = Strategy(defaults.apply(pool.spec).placement_strategy.value)
        strategy, _ = placement_policy(pool, default)
        wanted = {model.name: policy.desired(pool, model) for model in pool.spec.models}
        out += [replace(d, strategy=strategy) for d in from_pool(pool, wanted)]
    return sorted(out, key=lambda d: d.key)


def config_from(obj: Mapping[str, Any] | None) -> tuple[GPUPoolConfig, str | None]:
    """The cluster's GPUPoolConfig, or the defaults (and why) when it is missing or invalid."""
    if obj is None:
        return default_config(), None
    body = {k: v for k, v in obj.items() if k in ("apiVersion", "kind", "spec")}
    body["metadata"] = {"name": obj.get("metadata", {}).get("name")}
    try:
        return GPUPoolConfig.model_validate(body), None
    except ValidationError as err:
        first = err.errors()[0]
        where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in first.get("loc", ()))
        message = str(first.get("msg", "")).removeprefix("Value error, ")
        given = first.get("input")
        if isinstance(given, str | int | float) and repr(given) not in message:
            message = f"{given!r}: {message}"
        return default_config(), f"GPUPoolConfig {where.lstrip('.') or 'default'}: {message}"


def prices_from(config: GPUPoolConfig) -> Prices:
    """The core's price table from the GPUPoolConfig (products named by label or catalog key, node
    overrides included); products it does not price keep the built-in list prices."""
    prices = prices_from_config(config)
    return replace(prices, gpu={**Prices().gpu, **prices.gpu})
