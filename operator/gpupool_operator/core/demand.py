"""The demand model: what each model replica needs, and the concrete shapes that satisfy it.

A :class:`Demand` is one InferencePool's wish (replicas, memory, tensor parallelism, throughput and
latency objectives, and the accelerators it accepts with their measured performance).
:func:`candidates` turns it into the concrete :class:`Shape` s a cluster's products allow, with the
reason every other shape was rejected, so "why not H100?" always has an answer.

Performance figures (throughput, latency) are per replica on the accelerator's shapes, as the
pool declares them (``inferencesPerSecond``); a shape whose figure misses the model's per-replica
objective is rejected with that reason. :func:`from_pool` converts the API's InferencePool.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from gpupool_operator.api.types import mig_resource_name
from gpupool_operator.core import catalog
from gpupool_operator.core.catalog import GpuProduct
from gpupool_operator.core.taints import GPU_TOLERATION, Toleration

if TYPE_CHECKING:
    from gpupool_operator.api.inferencepool import InferencePool


class ShapeKind(StrEnum):
    GPU = "gpu"  # whole GPU(s) of one product on one node
    MIG = "mig"  # one MIG instance of one profile
    CPU = "cpu"  # CPU cores (and host memory)


@dataclass(frozen=True, slots=True, order=True)
class Shape:
    """A concrete resource shape one replica occupies."""

    kind: ShapeKind
    product: str = ""  # catalog key (or raw product label for unknown GPUs); "" for CPU
    gpus: int = 0  # whole GPUs (tensor parallel degree) for GPU shapes
    profile: str = ""  # MIG profile for MIG shapes
    cpu_millis: int = 0  # CPU shapes
    memory_mib: int = 0  # host memory for CPU shapes

    def describe(self) -> str:
        if self.kind is ShapeKind.GPU:
            return f"{self.gpus}x {self.product}" if self.gpus > 1 else f"1x {self.product}"
        if self.kind is ShapeKind.MIG:
            return f"{self.product} MIG {self.profile}"
        return f"{self.cpu_millis / 1000:g} CPU cores"

    def resources(self) -> dict[str, str]:
        """The pod resource limits that request this shape from the device plugin."""
        if self.kind is ShapeKind.GPU:
            return {"nvidia.com/gpu": str(self.gpus)}
        if self.kind is ShapeKind.MIG:
            return {mig_resource_name(self.profile): "1"}
        return {"cpu": f"{self.cpu_millis}m", "memory": f"{self.memory_mib}Mi"}


@dataclass(frozen=True, slots=True)
class Accelerator:
    """One kind of hardware a model accepts, with its measured per-replica performance."""

    kind: ShapeKind
    products: tuple[str, ...] = ()  # catalog keys or product labels; empty = any
    profiles: tuple[str, ...] = ()  # MIG only; empty = any profile with enough memory
    cpu_millis: int = 0  # CPU only: cores per replica (millicores)
    throughput: float | None = None  # requests/s one replica sustains
    latency_ms: float | None = None  # p95 latency at that throughput
    min_memory_mib: int = 0  # MIG only: slices at least this large (on top of the model's memory)
    host_memory_mib: int = 0  # CPU only: host memory per replica (default: the model's memory)


class Strategy(StrEnum):
    """How one pool's replicas are placed (the InferencePool's ``placementStrategy``).

    * ``Cost``: the cheapest placement (the solver's global objective);
    * ``BinPack``: fewest GPUs, then fewest nodes touched, then cost: spare room on GPUs in use and
      nodes already in use come before anything cheaper that opens a GPU or touches a new node;
    * ``Spread``: the replicas of one model on distinct nodes wherever capacity allows, then cost.
    """

    COST = "Cost"
    BIN_PACK = "BinPack"
    SPREAD = "Spread"


@dataclass(frozen=True, slots=True)
class Budget:
    """A spending cap shared by every model of one pool (``budget.maxUsdPerHour``).

    Measured on the replicas' attributed cost (``Plan.cost_by_demand``: a whole GPU's price, a MIG
    slice's neutral share, CPU cores), so one pool's cap does not depend on who shares its GPUs.
    """

    pool: str  # "namespace/pool": demands with the same pool share the cap
    usd_per_hour: float


@dataclass(frozen=True, slots=True)
class Demand:
    """Everything the placement engine needs to know about one model (one InferencePool)."""

    key: str  # "namespace/name"
    replicas: int
    memory_mib: int  # accelerator memory per replica (host memory on CPU shapes)
    accelerators: tuple[Accelerator, ...] = field(default=(Accelerator(ShapeKind.GPU), Accelerator(ShapeKind.MIG)))
    tensor_parallel: int = 1
    min_throughput: float | None = None  # requests/s each replica must sustain
    max_latency_ms: float | None = None  # p95 objective
    allow_spot: bool = True
    min_off_spot: int = 0  # replicas that must run on non-spot capacity (spot nodes may vanish)
    strategy: Strategy = Strategy.COST
    budget: Budget | None = None
    #: Replicas the budget never removes (the model's ``minReplicas``: the API promises those).
    guaranteed: int = 0
    #: The model's pod tolerations (``spec.models[].tolerations``), on every replica pod.
    tolerations: tuple[Toleration, ...] = ()
    #: Tolerations the operator adds to GPU and MIG replica pods only (NVIDIA's GPU taint).
    gpu_tolerations: tuple[Toleration, ...] = (GPU_TOLERATION,)

    def tolerations_for(self, kind: ShapeKind) -> tuple[Toleration, ...]:
        """What a replica pod of this shape kind tolerates: CPU pods only the model's own."""
        if kind is ShapeKind.CPU:
            return self.tolerations
        return self.tolerations + self.gpu_tolerations


@dataclass(frozen=True, slots=True)
class Candidate:
    """A shape that satisfies a demand, with the performance expected on it."""

    shape: Shape
    throughput: float | None
    latency_ms: float | None


@dataclass(frozen=True, slots=True)
class Products:
    """The GPU products present in a cluster: catalog products plus unknown ones (label, MiB)."""

    known: tuple[str, ...]
    unknown: tuple[tuple[str, int], ...] = ()
    #: (product, MIG profile, MiB): usable instance memory the nodes report, the smallest over the
    #: product's nodes that label it; it replaces the catalog's figure when sizing slices.
    mig_memory: tuple[tuple[str, str, int], ...] = ()
    #: (product, MiB): a whole GPU's memory as the nodes report it (``nvidia.com/gpu.memory``),
    #: the smallest over the product's nodes; it replaces the catalog's figure when sizing GPUs.
    gpu_memory: tuple[tuple[str, int], ...] = ()

    def profile_memory(self, product: str, profile: str, default: int) -> int:
        """Usable memory of one ``profile`` instance of ``product`` in MiB (labels, else ``default``)."""
        for key, name, mib in self.mig_memory:
            if key == product and name == profile:
                return mib
        return default

    def whole_memory(self, product: str, default: int) -> int:
        """A whole GPU's memory of ``product`` in MiB (node labels, else ``default``)."""
        for key, mib in self.gpu_memory:
            if key == product:
                return mib
        return default


def candidates(demand: Demand, products: Products) -> tuple[tuple[Candidate, ...], tuple[str, ...]]:
    """The concrete shapes a demand accepts in a cluster with ``products``, and why others fail.

    A purely computational function with no side-effects; the order is deterministic.
    """
    found: dict[Shape, Candidate] = {}
    rejected: list[str] = []
    tp = max(1, demand.tensor_parallel)
    for acc in demand.accelerators:
        if acc.kind is ShapeKind.CPU:
            if tp > 1:
                rejected.append(f"CPU: tensor parallel {tp} needs GPUs")
                continue
            cores = acc.cpu_millis or 1000
            shape = Shape(ShapeKind.CPU, cpu_millis=cores, memory_mib=acc.host_memory_mib or demand.memory_mib)
            _consider(demand, shape, acc.throughput, acc.latency_ms, found, rejected)
            continue
        wanted = {_resolve(p) for p in acc.products} if acc.products else None
        for key in products.known:
            if wanted is not None and key not in wanted:
                continue
            product = catalog.by_key(key)
            if acc.kind is ShapeKind.GPU:
                per_gpu = math.ceil(demand.memory_mib / tp)
                has = products.whole_memory(key, product.memory_mib)
                if per_gpu > has:
                    rejected.append(f"{tp}x {key}: needs {_gib(per_gpu)} per GPU, a {key} has {_gib(has)}")
                    continue
                _consider(demand, Shape(ShapeKind.GPU, key, gpus=tp), acc.throughput, acc.latency_ms,
                          found, rejected)
            else:
                _mig_candidates(demand, acc, product, found, rejected, products)
        if acc.kind is ShapeKind.GPU:
            for label, mib in products.unknown:
                if wanted is not None and label not in wanted:
                    continue
                if math.ceil(demand.memory_mib / tp) > mib:
                    rejected.append(f"{tp}x {label}: needs {_gib(math.ceil(demand.memory_mib / tp))} per GPU")
                    continue
                _consider(demand, Shape(ShapeKind.GPU, label, gpus=tp), acc.throughput, acc.latency_ms,
                          found, rejected)
    return tuple(found[s] for s in sorted(found)), tuple(dict.fromkeys(rejected))


def shape_throughput(demand: Demand, shape: Shape, products: Products) -> float | None:
    """The inferences/s the demand's hardware options declare for ``shape`` (the profile the
    placement engine planned with: the first option that accepts the shape), else ``None``."""
    found, _ = candidates(demand, products)
    return next((c.throughput for c in found if c.shape == shape), None)


def _mig_candidates(
    demand: Demand, acc: Accelerator, product: GpuProduct, found: dict[Shape, Candidate], rejected: list[str],
    products: Products,
) -> None:
    if not product.mig_capable:
        rejected.append(f"{product.key} MIG: not MIG-capable")
        return
    if demand.tensor_parallel > 1:
        rejected.append(f"{product.key} MIG: tensor parallel {demand.tensor_parallel} needs whole GPUs")
        return
    names = acc.profiles or tuple(p.name for p in product.mig_profiles if not p.is_media_extension)
    need = max(demand.memory_mib, acc.min_memory_mib)
    for name in names:
        try:
            prof = product.profile(name)
        except KeyError:
            continue  # a profile of another product named in a multi-product accelerator
        label = f"{product.key} MIG {name}"
        usable = products.profile_memory(product.key, name, prof.memory_mib)
        if usable < need:
            rejected.append(f"{label}: needs {_gib(need)}, the instance has {_gib(usable)}")
            continue
        shape = Shape(ShapeKind.MIG, product.key, gpus=1, profile=name)
        _consider(demand, shape, acc.throughput, acc.latency_ms, found, rejected)


def _consider(
    demand: Demand, shape: Shape, thr: float | None, lat: float | None,
    found: dict[Shape, Candidate], rejected: list[str],
) -> None:
    label = shape.describe()
    if demand.min_throughput is not None and thr is not None and thr + 1e-9 < demand.min_throughput:
        rejected.append(f"{label}: {thr:g} req/s per replica, below the {demand.min_throughput:g} req/s needed")
        return
    if demand.max_latency_ms is not None and lat is not None and lat > demand.max_latency_ms + 1e-9:
        rejected.append(f"{label}: p95 {lat:g} ms exceeds the {demand.max_latency_ms:g} ms objective")
        return
    found.setdefault(shape, Candidate(shape, thr, lat))


def _resolve(name: str) -> str:
    try:
        return catalog.lookup(name).key
    except KeyError:
        return name


def _gib(mib: int) -> str:
    return f"{mib / 1024:.3g} GiB"


_MIB = 1 << 20


def from_pool(pool: InferencePool, replicas: Mapping[str, int] | None = None) -> list[Demand]:
    """One :class:`Demand` per model of an InferencePool (key ``namespace/pool/model``).

    ``replicas`` (model name -> count) is what the scaling policy wants now; without it the count
    is the status' ``desiredReplicas`` when the operator has set one, else ``minReplicas``. Spot
    capacity per the model's ``allowSpot``: unset, at least one replica stays off spot; true, every
    replica may run on spot; false, none does. The model's ``tolerations`` decide which tainted
    nodes its replicas may use (GPU replicas also tolerate NVIDIA's GPU taint). The pool's
    ``placementStrategy`` (default Cost) and ``budget`` are carried on every model's demand; the
    budget never removes a model's ``minReplicas``. A purely computational function with no
    side-effects.
    """
    from gpupool_operator.api.inferencepool import HardwareType

    namespace = pool.metadata.namespace or "default"
    strategy, budget = placement_policy(pool)
    desired = {m.name: m.desired_replicas for m in pool.status.models} if pool.status is not None else {}
    out: list[Demand] = []
    for model in pool.spec.models:
        count = (replicas or {}).get(model.name)
        if count is None:
            count = desired.get(model.name) or model.min_replicas
        accs: list[Accelerator] = []
        for option in model.hardware:
            ips = float(option.inferences_per_second) if option.inferences_per_second is not None else None
            if option.type is HardwareType.GPU and option.gpu is not None:
                accs.append(Accelerator(ShapeKind.GPU, products=(option.gpu.product,), throughput=ips))
            elif option.type is HardwareType.MIG and option.mig is not None:
                if option.mig.profile is not None:
                    accs.append(Accelerator(ShapeKind.MIG, profiles=(option.mig.profile,), throughput=ips))
                else:
                    least = -(-(option.mig.min_memory_bytes or 0) // _MIB)
                    accs.append(Accelerator(ShapeKind.MIG, min_memory_mib=least, throughput=ips))
            elif option.cpu is not None:
                host = -(-parse_memory(option.cpu.memory) // _MIB) if option.cpu.memory else 0
                accs.append(Accelerator(ShapeKind.CPU, cpu_millis=option.cpu.cores * 1000,
                                        host_memory_mib=host, throughput=ips))
        latency = model.latency_objective.target_seconds * 1000 if model.latency_objective else None
        tolerations = tuple(
            Toleration(key=t.key or "", operator=t.operator.value if t.operator else "Equal", value=t.value or "",
                       effect=t.effect.value if t.effect else "")
            for t in model.tolerations)
        out.append(Demand(
            key=f"{namespace}/{pool.metadata.name}/{model.name}",
            replicas=count,
            memory_mib=-(-model.accelerator_memory_bytes // _MIB),
            accelerators=tuple(accs),
            tensor_parallel=model.gpus_per_replica,
            max_latency_ms=latency,
            allow_spot=model.allow_spot is not False,
            min_off_spot=0 if model.allow_spot is not None else min(1, count),
            strategy=strategy,
            budget=budget,
            guaranteed=min(count, model.min_replicas),
            tolerations=tolerations,
        ))
    return out


def placement_policy(pool: InferencePool, default: Strategy = Strategy.COST) -> tuple[Strategy, Budget | None]:
    """The pool's ``placementStrategy`` (else ``default``, the cluster's GPUPoolConfig default) and
    its ``budget`` as the core's types, for every :class:`Demand` of the pool (with ``guaranteed``
    set to the model's ``minReplicas``). A purely computational function with no side-effects."""
    strategy = Strategy(pool.spec.placement_strategy.value) if pool.spec.placement_strategy else default
    budget = None
    if pool.spec.budget is not None:
        name = f"{pool.metadata.namespace or 'default'}/{pool.metadata.name}"
        budget = Budget(name, float(pool.spec.budget.max_usd_per_hour))
    return strategy, budget


def parse_memory(quantity: str) -> int:
    from gpupool_operator.api.types import parse_quantity

    return parse_quantity(quantity)
