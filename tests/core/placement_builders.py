"""Readable builders for placement tests (Kueue style): ``gpu_node("h1", "H100-80GB", 8)``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from gpupool_operator.core import catalog, mig
from gpupool_operator.core.cost import DEFAULT_GPU_PRICES, PriceTier
from gpupool_operator.core.demand import Accelerator, Demand, ShapeKind
from gpupool_operator.core.inventory import Gpu, Holding, MigStrategy, Node, Snapshot

GPU = Accelerator(ShapeKind.GPU)
MIG = Accelerator(ShapeKind.MIG)


def cpu(cores: int = 4, throughput: float | None = None) -> Accelerator:
    return Accelerator(ShapeKind.CPU, cpu_millis=cores * 1000, throughput=throughput)


def gpu_node(
    name: str,
    product: str = "H100-80GB",
    gpus: int = 8,
    *,
    price: float | None = None,
    layouts: Sequence[Mapping[str, int] | None] | Mapping[str, int] | None = None,
    strategy: MigStrategy = MigStrategy.MIXED,
    tier: PriceTier = PriceTier.ON_DEMAND,
    holdings: Sequence[Holding] = (),
    cpu_cores: int = 96,
    mig_ready: bool = True,
    schedulable: bool = True,
) -> Node:
    prod = catalog.lookup(product)
    if layouts is None or isinstance(layouts, Mapping):
        per_gpu: list[Mapping[str, int] | None] = [layouts] * gpus  # type: ignore[list-item]
    else:
        per_gpu = list(layouts)
    gpu_list = []
    for i in range(gpus):
        counts = per_gpu[i] if i < len(per_gpu) else None
        placement = mig.place(prod, counts) if counts else None
        if counts and placement is None:
            raise ValueError(f"invalid layout {counts}")
        gpu_list.append(Gpu(i, placement))
    base = DEFAULT_GPU_PRICES.get(prod.key, 5.0) if price is None else price
    return Node(
        name=name, cpu_millis=cpu_cores * 1000, memory_mib=1 << 20, product=prod.key,
        product_label=prod.product_label, gpu_memory_mib=prod.memory_mib, gpus=tuple(gpu_list),
        mig_strategy=strategy, mig_ready=mig_ready, price_tier=tier, gpu_price=base,
        holdings=tuple(holdings), schedulable=schedulable,
    )


def cpu_node(name: str, cores: int = 32, memory_gib: int = 128, holdings: Sequence[Holding] = ()) -> Node:
    return Node(name=name, cpu_millis=cores * 1000, memory_mib=memory_gib * 1024, holdings=tuple(holdings))


def snapshot(*nodes: Node, cpu_price: float = 0.048) -> Snapshot:
    return Snapshot(tuple(nodes), cpu_price=cpu_price)


def demand(
    key: str,
    replicas: int = 1,
    memory_gib: float = 8,
    *accelerators: Accelerator,
    tp: int = 1,
    allow_spot: bool = True,
    min_off_spot: int = 0,
    min_throughput: float | None = None,
) -> Demand:
    return Demand(
        key=key, replicas=replicas, memory_mib=int(memory_gib * 1024),
        accelerators=tuple(accelerators) or (GPU, MIG), tensor_parallel=tp, allow_spot=allow_spot,
        min_off_spot=min_off_spot, min_throughput=min_throughput,
    )
