"""Hypothesis strategies for random clusters and demands (bounded, so property tests stay fast)."""

from __future__ import annotations

from hypothesis import strategies as st

from gpupool_operator.core import catalog, mig
from gpupool_operator.core.cost import DEFAULT_GPU_PRICES, PriceTier
from gpupool_operator.core.demand import Accelerator, Demand, ShapeKind
from gpupool_operator.core.inventory import Gpu, Holding, MigStrategy, Node, Snapshot

PRODUCTS = ("A100-40GB", "A100-80GB", "H100-80GB", "H200-141GB", "B200-180GB")
MEMORY_GIB = (1, 3, 8, 15, 19, 30, 39, 60, 75, 120, 170, 300)


@st.composite
def gpu_nodes(draw: st.DrawFn, name: str) -> Node:
    key = draw(st.sampled_from(PRODUCTS))
    prod = catalog.by_key(key)
    count = draw(st.integers(1, 8))
    layouts = mig.valid_layouts(key)
    gpus = []
    holdings = []
    for i in range(count):
        mode = draw(st.sampled_from(["whole", "whole", "mig", "busy"]))
        layout = None
        if mode == "mig":
            counts = draw(st.sampled_from(layouts))
            layout = mig.place(prod, dict(counts))
            if layout and draw(st.booleans()):
                name_, start = layout[0]
                holdings.append(Holding(f"other/{name}-{i}", instance=(i, name_, start)))
        elif mode == "busy":
            holdings.append(Holding(f"other/{name}-{i}", gpus=(i,)))
        gpus.append(Gpu(i, layout))
    tier = draw(st.sampled_from([PriceTier.ON_DEMAND, PriceTier.ON_DEMAND, PriceTier.SPOT]))
    price = DEFAULT_GPU_PRICES[key] * (0.35 if tier is PriceTier.SPOT else 1.0)
    return Node(
        name=name, cpu_millis=64000, memory_mib=512 * 1024, product=key, product_label=prod.product_label,
        gpu_memory_mib=prod.memory_mib, gpus=tuple(gpus), mig_strategy=MigStrategy.MIXED, price_tier=tier,
        gpu_price=round(price, 4), holdings=tuple(holdings),
    )


@st.composite
def snapshots(draw: st.DrawFn, max_gpu_nodes: int = 4) -> Snapshot:
    n = draw(st.integers(1, max_gpu_nodes))
    nodes = [draw(gpu_nodes(f"g{i}")) for i in range(n)]
    for i in range(draw(st.integers(0, 2))):
        nodes.append(Node(name=f"c{i}", cpu_millis=draw(st.sampled_from([8000, 32000, 64000])),
                          memory_mib=256 * 1024))
    return Snapshot(tuple(nodes))


@st.composite
def demands(draw: st.DrawFn, max_models: int = 5, max_replicas: int = 5) -> list[Demand]:
    out = []
    for i in range(draw(st.integers(1, max_models))):
        memory = draw(st.sampled_from(MEMORY_GIB)) * 1024
        tp = draw(st.sampled_from([1, 1, 1, 2, 4])) if memory > 60 * 1024 else 1
        accs = [Accelerator(ShapeKind.GPU)]
        if tp == 1 and draw(st.booleans()):
            accs.append(Accelerator(ShapeKind.MIG))
        if tp == 1 and memory <= 16 * 1024 and draw(st.booleans()):
            accs.append(Accelerator(ShapeKind.CPU, cpu_millis=draw(st.sampled_from([2000, 8000, 24000]))))
        out.append(Demand(
            key=f"ns/m{i}", replicas=draw(st.integers(0, max_replicas)), memory_mib=memory,
            accelerators=tuple(accs), tensor_parallel=tp, allow_spot=draw(st.booleans()),
            min_off_spot=draw(st.sampled_from([0, 0, 1])),
        ))
    return out
