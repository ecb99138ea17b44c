"""Properties of the placement heuristic on random clusters (hypothesis, bounded examples)."""

from __future__ import annotations

import dataclasses

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from placement_strategies import demands, snapshots

from gpupool_operator.core.baselines import whole_gpu_first_fit
from gpupool_operator.core.demand import Demand
from gpupool_operator.core.exact import solve_exact
from gpupool_operator.core.inventory import Snapshot
from gpupool_operator.core.solver import solve
from gpupool_operator.core.verify import problems

SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(snap=snapshots(), ds=demands())
def test_plans_never_overcommit_and_layouts_are_valid(snap: Snapshot, ds: list[Demand]) -> None:
    plan = solve(snap, ds)
    assert problems(snap, ds, plan) == []


@SETTINGS
@given(snap=snapshots(), ds=demands(), seed=st.randoms(use_true_random=False))
def test_same_input_same_plan_whatever_the_order(snap: Snapshot, ds: list[Demand], seed) -> None:  # type: ignore[no-untyped-def]
    plan = solve(snap, ds)
    assert solve(snap, ds) == plan
    nodes = list(snap.nodes)
    seed.shuffle(nodes)
    shuffled = list(ds)
    seed.shuffle(shuffled)
    assert solve(dataclasses.replace(snap, nodes=tuple(nodes)), shuffled) == plan


@SETTINGS
@given(snap=snapshots(), ds=demands())
def test_never_costlier_than_one_whole_gpu_per_replica(snap: Snapshot, ds: list[Demand]) -> None:
    plan = solve(snap, ds)
    base = whole_gpu_first_fit(snap, ds)
    if base.unplaced == 0 and not plan.unplaced:
        assert plan.cost_per_hour <= base.cost_per_hour + 1e-6


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(snap=snapshots(max_gpu_nodes=3), ds=demands(max_models=4, max_replicas=4))
def test_exact_is_a_lower_bound_and_places_at_least_as_much(snap: Snapshot, ds: list[Demand]) -> None:
    plan = solve(snap, ds)
    exact = solve_exact(snap, ds, time_limit=20)
    placed = len(plan.assignments)
    exact_placed = sum(d.replicas for d in ds) - sum(exact.unplaced.values())
    assert exact_placed >= placed
    if exact.optimal and exact_placed == placed:
        assert exact.cost_per_hour <= plan.cost_per_hour + 1e-6
