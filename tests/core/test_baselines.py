"""The baselines the benchmarks compare against, on hand-worked clusters (what a KAI/Kueue-like
scheduler does without gpupool: existing or all-balanced MIG layouts, cheapest slice first)."""

from __future__ import annotations

import dataclasses

import pytest
from placement_builders import GPU, MIG, cpu_node, demand, gpu_node, snapshot

from gpupool_operator.core.baselines import first_fit_cheapest_slice
from gpupool_operator.core.cost import PriceTier
from gpupool_operator.core.solver import solve
from gpupool_operator.core.taints import Taint


def test_keeps_layouts_and_takes_the_cheapest_free_slice() -> None:
    snap = snapshot(gpu_node("a", "A100-80GB", 2, price=3.43, layouts=[{"1g.10gb": 7}, None]))
    result = first_fit_cheapest_slice(snap, [demand("ns/p/m", 3, 8, MIG, GPU)])
    assert result.placed == 3
    assert result.gpus_used == 1  # three 1g.10gb on the sliced GPU, never the whole one
    assert result.cost_per_hour == pytest.approx(3.43)
    # a model needing more than a 1g.10gb takes the whole GPU: no re-layout ever
    big = first_fit_cheapest_slice(snap, [demand("ns/p/big", 2, 15, MIG, GPU)])
    assert big.placed == 1
    assert big.unplaced == 1
    assert solve(snap, [demand("ns/p/big", 2, 15, MIG, GPU)]).assignments  # gpupool re-lays instead


def test_all_balanced_partitions_idle_gpus_and_leaves_no_whole_one() -> None:
    snap = snapshot(gpu_node("a", "H100-80GB", 1, price=6.88))
    whole = [demand("ns/p/w", 1, 60, GPU)]
    assert first_fit_cheapest_slice(snap, whole).placed == 1
    assert first_fit_cheapest_slice(snap, whole, "all-balanced").placed == 0
    small = [demand("ns/p/s", 4, 8, MIG)]
    balanced = first_fit_cheapest_slice(snap, small, "all-balanced")
    assert balanced.placed == 4  # 2x 1g.10gb, a 2g.20gb and a 3g.40gb: cheapest first
    assert balanced.cost_per_hour == pytest.approx(6.88)


def test_honours_taints_cordons_and_spot() -> None:
    tainted = dataclasses.replace(gpu_node("a", "A100-80GB", 1, price=1.0), taints=(Taint("x", "NoSchedule"),))
    cordoned = dataclasses.replace(gpu_node("b", "A100-80GB", 1, price=1.0), schedulable=False)
    spot = gpu_node("c", "A100-80GB", 1, price=0.5, tier=PriceTier.SPOT)
    snap = snapshot(tainted, cordoned, spot, gpu_node("d", "A100-80GB", 1, price=3.0), cpu_node("e", 8))
    result = first_fit_cheapest_slice(snap, [demand("ns/p/m", 2, 40, GPU, min_off_spot=1)])
    assert result.placed == 2
    assert result.cost_per_hour == pytest.approx(3.5)  # d off spot first, then c on spot
