"""Seeded random placement instances for the benchmarks (clusters + demands), varied in size and mix.

Mixes:
* ``small``: embedding/vision/reranker-sized models (1-20 GiB) that accept MIG slices, whole GPUs
  and often CPU: the case MIG packing is for;
* ``mixed``: small plus mid-size models (30-80 GiB) that need big slices or whole GPUs;
* ``llm``: mostly large models, some tensor parallel (2-8 GPUs), a few small ones.

Clusters mix A100/H100/H200/B200 nodes (4 or 8 GPUs), some spot, some with existing MIG layouts,
some with foreign pods already holding GPUs, plus CPU nodes. Capacity is sized from the demand
so most instances are feasible, some tight.

Families (:data:`FAMILIES`) add what real clusters have on top of the same seeded instance:
``tainted`` (NVIDIA's ``nvidia.com/gpu`` taint, ``dedicated`` NoSchedule taints some models
tolerate, PreferNoSchedule taints, tainted CPU nodes), ``pending-mig`` (GPUs a pending MIG change
takes away), ``cordoned`` (cordoned and NotReady nodes, some holding other pods), and ``all`` (every
one of them at once). :func:`large` is the fleet-scale instance (5,000 nodes of mixed products).
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass

from gpupool_operator.core import catalog, mig
from gpupool_operator.core.cost import DEFAULT_GPU_PRICES, PriceTier
from gpupool_operator.core.demand import Accelerator, Demand, ShapeKind
from gpupool_operator.core.inventory import Gpu, Holding, MigStrategy, Node, Snapshot
from gpupool_operator.core.taints import Taint, Toleration

PRODUCTS = ("A100-40GB", "A100-80GB", "H100-80GB", "H200-141GB", "B200-180GB")
MIXES = ("small", "mixed", "llm")
FAMILIES = ("base", "tainted", "pending-mig", "cordoned", "all")


@dataclass(frozen=True)
class Instance:
    name: str
    mix: str
    snapshot: Snapshot
    demands: list[Demand]


def _demands(rng: random.Random, mix: str, models: int) -> list[Demand]:
    out = []
    for i in range(models):
        roll = rng.random()
        if mix == "small" or (mix == "mixed" and roll < 0.6) or (mix == "llm" and roll < 0.25):
            memory = rng.choice([1, 2, 3, 4, 6, 8, 9, 12, 16, 18, 20])
            accs = [Accelerator(ShapeKind.MIG), Accelerator(ShapeKind.GPU)]
            if rng.random() < 0.5:
                accs.append(Accelerator(ShapeKind.CPU, cpu_millis=rng.choice([2000, 4000, 8000, 16000])))
            tp = 1
            replicas = rng.randint(1, 6)
        elif mix == "mixed" or roll < 0.6:
            memory = rng.choice([30, 35, 40, 60, 70, 75, 100, 130])
            accs = [Accelerator(ShapeKind.GPU)] + ([Accelerator(ShapeKind.MIG)] if rng.random() < 0.7 else [])
            tp = 1
            replicas = rng.randint(1, 4)
        else:
            memory = rng.choice([140, 160, 280, 320, 600])
            tp = rng.choice([2, 4, 8]) if memory > 150 else rng.choice([1, 2])
            accs = [Accelerator(ShapeKind.GPU)]
            replicas = rng.randint(1, 2)
        out.append(Demand(
            key=f"ns/{mix}-{i}", replicas=replicas, memory_mib=memory * 1024, accelerators=tuple(accs),
            tensor_parallel=tp, allow_spot=rng.random() < 0.8, min_off_spot=1 if rng.random() < 0.3 else 0,
        ))
    return out


def _node(rng: random.Random, name: str, key: str, gpus: int, spot: bool, mig_share: float,
          foreign: float) -> Node:
    prod = catalog.by_key(key)
    layouts = [c for c in mig.valid_layouts(key) if c]
    gpu_list = []
    holdings = []
    for i in range(gpus):
        layout = None
        if rng.random() < mig_share:
            layout = mig.place(prod, dict(rng.choice(layouts)))
        if rng.random() < foreign:
            if layout:
                name_, start = layout[0]
                holdings.append(Holding(f"other/{name}-{i}", instance=(i, name_, start)))
            else:
                holdings.append(Holding(f"other/{name}-{i}", gpus=(i,)))
        gpu_list.append(Gpu(i, layout))
    tier = PriceTier.SPOT if spot else PriceTier.ON_DEMAND
    price = DEFAULT_GPU_PRICES[key] * (0.35 if spot else 1.0)
    return Node(
        name=name, cpu_millis=96000, memory_mib=1 << 20, product=key, product_label=prod.product_label,
        gpu_memory_mib=prod.memory_mib, gpus=tuple(gpu_list), mig_strategy=MigStrategy.MIXED,
        price_tier=tier, gpu_price=round(price, 4), holdings=tuple(holdings),
    )


def instance(seed: int, mix: str | None = None, size: str | None = None, family: str = "base") -> Instance:
    rng = random.Random(seed)
    mix = mix or rng.choice(MIXES)
    size = size or rng.choice(["small", "small", "medium"])
    models = rng.randint(2, 6) if size == "small" else rng.randint(6, 14)
    nodes_n = rng.randint(2, 4) if size == "small" else rng.randint(4, 9)
    demands = _demands(rng, mix, models)
    products = rng.sample(PRODUCTS, rng.randint(1, 3))
    mig_share = rng.choice([0.0, 0.0, 0.3, 0.7])
    foreign = rng.choice([0.0, 0.0, 0.1])
    nodes = []
    for i in range(nodes_n):
        key = rng.choice(products)
        nodes.append(_node(rng, f"g{i:02d}", key, rng.choice([4, 8]), rng.random() < 0.2, mig_share, foreign))
    for i in range(rng.randint(0, 2)):
        nodes.append(Node(name=f"c{i}", cpu_millis=rng.choice([16000, 32000, 64000]), memory_mib=256 * 1024))
    inst = Instance(f"seed{seed}-{mix}-{size}", mix, Snapshot(tuple(nodes)), demands)
    return with_family(inst, family, random.Random(seed * 7919 + FAMILIES.index(family)))


_GPU_TAINT = Taint("nvidia.com/gpu", "NoSchedule", "present")
_SOFT = Taint("gpupool.io/prefer-not", "PreferNoSchedule", "batch")


def with_family(inst: Instance, family: str, rng: random.Random) -> Instance:
    """``inst`` with the features of ``family`` drawn by ``rng`` (``base``: unchanged)."""
    if family == "base":
        return inst
    parts = ("tainted", "pending-mig", "cordoned") if family == "all" else (family,)
    nodes = list(inst.snapshot.nodes)
    demands = list(inst.demands)
    if "tainted" in parts:
        teams = ("research", "search")
        for i, n in enumerate(nodes):
            taints: list[Taint] = []
            if n.gpus and rng.random() < 0.6:
                taints.append(_GPU_TAINT)
            if rng.random() < 0.25:
                taints.append(Taint("dedicated", "NoSchedule", rng.choice(teams)))
            if rng.random() < 0.2:
                taints.append(_SOFT)
            nodes[i] = dataclasses.replace(n, taints=tuple(sorted(set(taints))))
        for j, d in enumerate(demands):
            if rng.random() < 0.4:
                team = rng.choice(teams)
                demands[j] = dataclasses.replace(d, tolerations=(Toleration("dedicated", "Equal", team, "NoSchedule"),))
    if "pending-mig" in parts:
        for i, n in enumerate(nodes):
            if n.gpus and rng.random() < 0.4:
                gpus = tuple(dataclasses.replace(g, unusable="a pending MIG change re-lays it")
                             if rng.random() < 0.5 else g for g in n.gpus)
                nodes[i] = dataclasses.replace(n, gpus=gpus)
    if "cordoned" in parts:
        for i, n in enumerate(nodes):
            if rng.random() < 0.2:
                taint = rng.choice([Taint("node.kubernetes.io/unschedulable", "NoSchedule"),
                                    Taint("node.kubernetes.io/not-ready", "NoExecute")])
                nodes[i] = dataclasses.replace(n, schedulable=False, taints=tuple(sorted({*n.taints, taint})))
    return Instance(f"{inst.name}-{family}", inst.mix, dataclasses.replace(inst.snapshot, nodes=tuple(nodes)),
                    demands)


def suite(per_family: int, first_seed: int = 1) -> list[Instance]:
    """The broad suite: ``per_family`` seeded instances of every family (different seeds per family)."""
    out = []
    for k, family in enumerate(FAMILIES):
        start = first_seed + k * per_family
        out += [instance(seed, family=family) for seed in range(start, start + per_family)]
    return out


def large(seed: int, nodes: int = 5000, replicas: int = 10000) -> Instance:
    """A fleet-scale instance: ``nodes`` 8-GPU nodes (plus CPU nodes) and ~``replicas`` replicas."""
    rng = random.Random(seed)
    node_list = []
    for i in range(nodes):
        key = rng.choice(PRODUCTS)
        node_list.append(_node(rng, f"g{i:05d}", key, 8, rng.random() < 0.15, 0.25, 0.05))
    for i in range(nodes // 20):
        node_list.append(Node(name=f"c{i:04d}", cpu_millis=64000, memory_mib=256 * 1024))
    demands: list[Demand] = []
    total = 0
    i = 0
    while total < replicas:
        mix = rng.choice(MIXES)
        d = _demands(rng, mix, 1)[0]
        d = Demand(f"ns/model-{i:05d}", min(d.replicas * 4, replicas - total), d.memory_mib, d.accelerators,
                   d.tensor_parallel, allow_spot=d.allow_spot, min_off_spot=d.min_off_spot)
        demands.append(d)
        total += d.replicas
        i += 1
    return Instance(f"large-{nodes}n-{replicas}r", "all", Snapshot(tuple(node_list)), demands)
