"""placementStrategy (Cost / BinPack / Spread) and budget.maxUsdPerHour in the solver."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from placement_builders import GPU, MIG, cpu, cpu_node, demand, gpu_node, snapshot
from placement_strategies import demands, snapshots

from gpupool_operator.api.inferencepool import InferencePool
from gpupool_operator.core.demand import Budget, Demand, Strategy, from_pool, placement_policy
from gpupool_operator.core.inventory import Holding
from gpupool_operator.core.solver import Planner, solve
from gpupool_operator.core.verify import problems


def _solve(snap, demands):  # type: ignore[no-untyped-def]
    plan = solve(snap, demands)
    assert problems(snap, demands, plan) == []
    assert solve(snap, demands) == plan  # deterministic
    return plan


def _with(d: Demand, **kw: object) -> Demand:
    return dataclasses.replace(d, **kw)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------ Spread
def test_cost_packs_replicas_of_one_model_onto_one_gpu() -> None:
    snap = snapshot(*(gpu_node(n, "A100-80GB", 2) for n in "abc"))
    plan = _solve(snap, [demand("ns/m", 3, 8, MIG)])
    assert len({a.node for a in plan.assignments}) == 1
    assert plan.gpus_used == 1


def test_spread_puts_replicas_on_distinct_nodes() -> None:
    snap = snapshot(*(gpu_node(n, "A100-80GB", 2) for n in "abc"))
    plan = _solve(snap, [_with(demand("ns/m", 3, 8, MIG), strategy=Strategy.SPREAD)])
    assert sorted(a.node for a in plan.assignments) == ["a", "b", "c"]
    assert all("Spread" in a.reason for a in plan.assignments)
    assert plan.cost_per_hour == pytest.approx(3 * 3.43)


def test_spread_reuses_nodes_only_when_it_must_and_then_stays_cheap() -> None:
    snap = snapshot(gpu_node("a", "A100-80GB", 2), gpu_node("b", "A100-80GB", 2))
    plan = _solve(snap, [_with(demand("ns/m", 4, 8, MIG), strategy=Strategy.SPREAD)])
    nodes = [a.node for a in plan.assignments]
    assert sorted(nodes) == ["a", "a", "b", "b"]
    assert plan.gpus_used == 2  # the second replica on a node takes spare room of its GPU
    assert sum("full" in a.reason for a in plan.assignments) == 2


def test_spread_prefers_a_new_node_over_cheaper_spare_room() -> None:
    snap = snapshot(gpu_node("a", "A100-80GB", 1), gpu_node("b", "H100-80GB", 1))
    plan = _solve(snap, [_with(demand("ns/m", 2, 8, MIG), strategy=Strategy.SPREAD)])
    assert sorted(a.node for a in plan.assignments) == ["a", "b"]
    assert plan.for_demand("ns/m")[0].node == "a"  # the cheaper node first


def test_spread_replicas_are_not_gathered_by_the_cost_repairs() -> None:
    snap = snapshot(*(gpu_node(n, "A100-80GB", 2) for n in "abcd"))
    demands = [_with(demand("ns/s", 3, 8, MIG), strategy=Strategy.SPREAD), demand("ns/c", 4, 8, MIG)]
    plan = _solve(snap, demands)
    assert len({a.node for a in plan.for_demand("ns/s")}) == 3
    # the Cost model fills spare room next to the spread replicas instead of opening a GPU
    assert plan.gpus_used == 3


# ------------------------------------------------------------------------------------ BinPack
def test_binpack_prefers_spare_room_on_a_gpu_in_use_over_cheaper_cpu() -> None:
    snap = snapshot(gpu_node("g", "A100-80GB", 1), cpu_node("c", 32))
    big = demand("ns/big", 1, 36, MIG)  # fits a 3g.40gb (40,192 MiB real)
    small = demand("ns/small", 2, 8, MIG, cpu(2))
    cost_plan = _solve(snap, [big, small])
    assert {a.shape.kind.value for a in cost_plan.for_demand("ns/small")} == {"mig"}  # room is free
    packed = _solve(snap, [big, _with(small, strategy=Strategy.BIN_PACK)])
    assert {a.node for a in packed.assignments} == {"g"}
    assert packed.gpus_used == 1
    assert all("BinPack" in a.reason for a in packed.for_demand("ns/small"))


def test_binpack_touches_fewer_nodes_than_cost() -> None:
    # Cost puts the CPU-capable model on the CPU-only node (CPU-only nodes first); BinPack keeps it
    # on the GPU node the plan already uses, at the same price.
    snap = snapshot(cpu_node("a-cpu", 32), gpu_node("g", "A100-80GB", 1))
    demands = [demand("ns/gpu", 1, 70, GPU), demand("ns/cpu", 2, 4, cpu(2))]
    cost_plan = _solve(snap, demands)
    assert {a.node for a in cost_plan.for_demand("ns/cpu")} == {"a-cpu"}
    packed = _solve(snap, [demands[0], _with(demands[1], strategy=Strategy.BIN_PACK)])
    assert {a.node for a in packed.assignments} == {"g"}
    assert packed.cost_per_hour == pytest.approx(cost_plan.cost_per_hour)


def test_binpack_whole_gpus_fill_one_node_first() -> None:
    snap = snapshot(gpu_node("a", "H100-80GB", 4), gpu_node("b", "H100-80GB", 4))
    plan = _solve(snap, [_with(demand("ns/m", 3, 70, GPU), strategy=Strategy.BIN_PACK)])
    assert len({a.node for a in plan.assignments}) == 1


# ------------------------------------------------------------------------------------ budget
def test_budget_caps_a_pool_and_says_why() -> None:
    snap = snapshot(gpu_node("a", "H100-80GB", 8, price=4.0))
    budget = Budget("ns/pool", 10.0)
    demands = [
        _with(demand("ns/pool/a", 2, 70, GPU), budget=budget, guaranteed=1),
        _with(demand("ns/pool/b", 2, 70, GPU), budget=budget, guaranteed=1),
        demand("other/x", 1, 70, GPU),
    ]
    plan = _solve(snap, demands)
    pool_cost = sum(plan.cost_by_demand[k] for k in ("ns/pool/a", "ns/pool/b"))
    assert pool_cost <= 10.0 + 1e-9
    assert len(plan.for_demand("ns/pool/a")) + len(plan.for_demand("ns/pool/b")) == 2
    assert len(plan.for_demand("other/x")) == 1  # another pool is not limited
    unplaced = {u.demand: u for u in plan.unplaced}
    assert sum(u.count for u in plan.unplaced) == 2
    for u in unplaced.values():
        assert "budget" in u.reason
        assert "$10.00/h" in u.reason


def test_budget_never_removes_guaranteed_replicas() -> None:
    snap = snapshot(gpu_node("a", "H100-80GB", 8, price=4.0))
    d = _with(demand("ns/pool/a", 3, 70, GPU), budget=Budget("ns/pool", 1.0), guaranteed=2)
    plan = _solve(snap, [d])
    assert len(plan.assignments) == 2
    assert plan.unplaced[0].count == 1


def test_budget_is_met_with_cheaper_shapes_first_then_cut() -> None:
    snap = snapshot(gpu_node("a", "A100-80GB", 1), cpu_node("c", 64))
    d = _with(demand("ns/p/m", 10, 4, MIG, cpu(4)), budget=Budget("ns/p", 1.0))
    plan = _solve(snap, [d])
    assert plan.cost_by_demand["ns/p/m"] <= 1.0 + 1e-9
    assert len(plan.assignments) + sum(u.count for u in plan.unplaced) == 10


def test_budget_stops_running_replicas_above_it() -> None:
    held = [Holding(f"p{i}", owner="ns/pool/a", gpus=(i,)) for i in range(3)]
    snap = snapshot(gpu_node("a", "H100-80GB", 8, price=4.0, holdings=held))
    d = _with(demand("ns/pool/a", 3, 70, GPU), budget=Budget("ns/pool", 9.0), guaranteed=1)
    plan = _solve(snap, [d])
    assert len(plan.assignments) == 2
    assert [e.reason for e in plan.evictions] == ["over the pool's budget of $9.00/h"]


def test_budget_holds_across_replans() -> None:
    snap = snapshot(gpu_node("a", "H100-80GB", 8, price=4.0))
    d = _with(demand("ns/pool/a", 2, 70, GPU), budget=Budget("ns/pool", 10.0))
    planner = Planner(snap)
    assert len(planner.plan([d]).assignments) == 2
    again = planner.replan([dataclasses.replace(d, replicas=5)])
    assert len(again.assignments) == 2
    assert again.unplaced[0].count == 3
    assert "budget" in again.unplaced[0].reason


# ------------------------------------------------------------------------------------ from_pool
def test_from_pool_carries_strategy_budget_and_min_replicas() -> None:
    pool = InferencePool.model_validate({
        "apiVersion": "gpupool.io/v1alpha1", "kind": "InferencePool",
        "metadata": {"name": "p", "namespace": "ns"},
        "spec": {
            "placementStrategy": "Spread", "budget": {"maxUsdPerHour": "12.5"},
            "models": [{"name": "m", "source": {"uri": "hf://x/y"}, "acceleratorMemory": "8Gi",
                        "hardware": [{"type": "MIG", "mig": {"minMemory": "8Gi"}}],
                        "minReplicas": 2, "maxReplicas": 4}],
        },
    })
    (d,) = from_pool(pool, {"m": 3})
    assert d.strategy is Strategy.SPREAD
    assert d.budget == Budget("ns/p", 12.5)
    assert d.guaranteed == 2
    (plain,) = from_pool(pool.model_copy(update={"spec": pool.spec.model_copy(
        update={"placement_strategy": None, "budget": None})}))
    assert plain.strategy is Strategy.COST
    assert plain.budget is None
    assert placement_policy(pool, Strategy.BIN_PACK) == (Strategy.SPREAD, Budget("ns/p", 12.5))
    bare = pool.model_copy(update={"spec": pool.spec.model_copy(update={"placement_strategy": None})})
    assert placement_policy(bare, Strategy.BIN_PACK)[0] is Strategy.BIN_PACK


# ------------------------------------------------------------------------------------ properties
PROPS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPS
@given(snap=snapshots(), ds=demands(), picks=st.lists(st.sampled_from(list(Strategy)), min_size=5, max_size=5),
       cap=st.floats(min_value=0.0, max_value=40.0), guaranteed=st.integers(min_value=0, max_value=2))
def test_strategies_and_budgets_keep_plans_valid(  # type: ignore[no-untyped-def]
    snap, ds, picks, cap, guaranteed
) -> None:
    budget = Budget("ns/pool", cap)
    ds = [dataclasses.replace(d, strategy=picks[k % len(picks)], budget=budget if k % 2 == 0 else None,
                              guaranteed=min(guaranteed, d.replicas))
          for k, d in enumerate(ds)]
    plan = solve(snap, ds)
    assert problems(snap, ds, plan) == []
    assert solve(snap, ds) == plan
    capped = [d for d in ds if d.budget is not None]
    spent = sum(plan.cost_by_demand.get(d.key, 0.0) for d in capped)
    if spent > cap + 1e-6:  # only when nothing but guaranteed replicas is left
        assert all(len(plan.for_demand(d.key)) <= d.guaranteed for d in capped)
    for u in plan.unplaced:
        assert u.count > 0
        assert u.reason
