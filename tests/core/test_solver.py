"""The placement heuristic on small hand-made clusters whose optimum is known."""

from __future__ import annotations

import pytest
from placement_builders import GPU, MIG, cpu, cpu_node, demand, gpu_node, snapshot

from gpupool_operator.core.cost import PriceTier
from gpupool_operator.core.demand import Accelerator, ShapeKind
from gpupool_operator.core.inventory import Holding, MigStrategy
from gpupool_operator.core.plan import ActionKind, actions, mig_parted_config
from gpupool_operator.core.solver import Options, solve
from gpupool_operator.core.verify import problems


def _solve(snap, demands, **kw):  # type: ignore[no-untyped-def]
    plan = solve(snap, demands, Options(**kw))
    assert problems(snap, demands, plan) == []
    return plan


def test_seven_small_models_share_one_mig_gpu() -> None:
    snap = snapshot(gpu_node("a", "A100-80GB", 2))
    demands = [demand(f"ns/m{i}", 1, 8) for i in range(7)]
    plan = _solve(snap, demands)
    assert plan.gpus_used == 1
    assert plan.cost_per_hour == pytest.approx(3.43)
    assert {a.shape.profile for a in plan.assignments} == {"1g.10gb"}
    assert len(plan.layout_changes) == 1
    assert plan.layout_changes[0].before is None  # MIG enabled on a whole GPU


def test_big_models_get_whole_gpus_and_tensor_parallel_stays_on_one_node() -> None:
    snap = snapshot(gpu_node("a", "H100-80GB", 4), gpu_node("b", "H100-80GB", 8))
    plan = _solve(snap, [demand("ns/llm", 1, 300, GPU, tp=8), demand("ns/mid", 2, 70, GPU)])
    llm = plan.for_demand("ns/llm")
    assert llm[0].node == "b"
    assert len(llm[0].gpus) == 8
    assert all(a.node == "a" for a in plan.for_demand("ns/mid"))


def test_tensor_parallel_best_fit_keeps_a_full_node_free() -> None:
    snap = snapshot(gpu_node("a", "H100-80GB", 8), gpu_node("b", "H100-80GB", 8))
    plan = _solve(snap, [demand("ns/a", 1, 300, GPU, tp=4), demand("ns/b", 1, 300, GPU, tp=4),
                         demand("ns/c", 1, 600, GPU, tp=8)])
    assert not plan.unplaced
    assert len({a.node for a in plan.assignments if a.demand in ("ns/a", "ns/b")}) == 1


def test_cheaper_product_wins() -> None:
    snap = snapshot(gpu_node("h", "H100-80GB", 8), gpu_node("a", "A100-80GB", 8))
    plan = _solve(snap, [demand("ns/m", 3, 60, GPU)])
    assert {a.node for a in plan.assignments} == {"a"}


def test_cpu_fallback_when_cheaper_than_opening_a_gpu() -> None:
    snap = snapshot(gpu_node("h", "H100-80GB", 1), cpu_node("c", 64))
    plan = _solve(snap, [demand("ns/emb", 2, 2, MIG, cpu(2))])
    assert {a.shape.kind for a in plan.assignments} == {ShapeKind.CPU}
    assert plan.cost_per_hour == pytest.approx(2 * 2 * 0.048)


def test_cpu_fallback_when_gpus_are_full() -> None:
    snap = snapshot(gpu_node("h", "H100-80GB", 1, holdings=[Holding("x/p", gpus=(0,))]), cpu_node("c", 64))
    plan = _solve(snap, [demand("ns/m", 1, 8, GPU, MIG, cpu(16))])
    assert plan.assignments[0].shape.kind is ShapeKind.CPU


def test_many_small_cpu_replicas_move_to_a_shared_gpu_when_cheaper() -> None:
    # 7 x 1g.10gb share = one A100 ($3.43) < 7 x 16 cores ($5.38)
    snap = snapshot(gpu_node("a", "A100-80GB", 1), cpu_node("c", 128))
    plan = _solve(snap, [demand("ns/m", 7, 8, MIG, cpu(16))])
    assert plan.cost_per_hour == pytest.approx(3.43)


def test_spot_is_used_but_one_replica_stays_off_spot() -> None:
    snap = snapshot(gpu_node("od", "H100-80GB", 8), gpu_node("sp", "H100-80GB", 8, price=2.0, tier=PriceTier.SPOT))
    plan = _solve(snap, [demand("ns/m", 3, 60, GPU, min_off_spot=1)])
    nodes = sorted(a.node for a in plan.assignments)
    assert nodes == ["od", "sp", "sp"]


def test_spot_forbidden() -> None:
    snap = snapshot(gpu_node("sp", "H100-80GB", 8, price=2.0, tier=PriceTier.SPOT))
    plan = _solve(snap, [demand("ns/m", 1, 60, GPU, allow_spot=False)])
    assert plan.unplaced[0].count == 1
    assert "spot" in plan.unplaced[0].reason


def test_existing_layout_is_reused_without_change() -> None:
    snap = snapshot(gpu_node("a", "H100-80GB", 2, layouts={"3g.40gb": 1, "2g.20gb": 1, "1g.10gb": 2}))
    plan = _solve(snap, [demand("ns/m", 1, 30, MIG)])
    assert plan.layout_changes == ()
    assert plan.assignments[0].shape.profile == "3g.40gb"


def test_running_replica_is_kept() -> None:
    held = Holding("ns/m-0", owner="ns/m", instance=(0, "3g.40gb", 4))
    snap = snapshot(gpu_node("a", "H100-80GB", 2, layouts={"3g.40gb": 2}, holdings=[held]))
    plan = _solve(snap, [demand("ns/m", 2, 30, MIG)])
    kept = [a for a in plan.assignments if a.pod]
    assert kept[0].pod == "ns/m-0"
    assert kept[0].start == 4
    assert plan.gpus_used == 1
    assert plan.evictions == ()


def test_scale_down_stops_the_extra_replica() -> None:
    helds = [Holding(f"ns/m-{i}", owner="ns/m", gpus=(i,)) for i in range(3)]
    snap = snapshot(gpu_node("a", "H100-80GB", 4, holdings=helds))
    plan = _solve(snap, [demand("ns/m", 2, 60, GPU)])
    assert [e.reason for e in plan.evictions] == ["scaled down"]


def test_foreign_pods_are_never_moved() -> None:
    snap = snapshot(gpu_node("a", "A100-80GB", 1, layouts={"3g.40gb": 2},
                             holdings=[Holding("other/x", instance=(0, "3g.40gb", 0))]))
    plan = _solve(snap, [demand("ns/m", 2, 30, MIG)])
    assert len(plan.assignments) == 1
    assert plan.assignments[0].start == 4
    assert plan.unplaced[0].count == 1
    assert plan.layout_changes == ()


def test_node_reconfiguring_mig_takes_no_new_mig_work() -> None:
    snap = snapshot(gpu_node("a", "A100-80GB", 1, layouts={"1g.10gb": 7}, mig_ready=False))
    plan = _solve(snap, [demand("ns/m", 1, 8, MIG)])
    assert plan.unplaced
    assert "no free capacity" in plan.unplaced[0].reason


@pytest.mark.parametrize(
    ("d", "reason"),
    [
        (demand("ns/huge", 1, 900, GPU), "needs 900 GiB per GPU"),
        (demand("ns/tp", 1, 200, GPU, tp=16), "needs 12.5 GiB per GPU"),  # fits per GPU, but 16 GPUs
        (demand("ns/slow", 1, 8, Accelerator(ShapeKind.CPU, cpu_millis=4000, throughput=2.0), min_throughput=10),
         "below the 10 req/s needed"),
    ],
)
def test_impossible_demands_say_why(d, reason) -> None:  # type: ignore[no-untyped-def]
    snap = snapshot(gpu_node("a", "H100-80GB", 8), cpu_node("c"))
    plan = _solve(snap, [d])
    assert plan.unplaced
    if d.key == "ns/tp":
        assert "at most 8 free on one node" in plan.unplaced[0].reason
    else:
        assert reason in plan.unplaced[0].reason


def test_empty_cluster() -> None:
    plan = _solve(snapshot(), [demand("ns/m")])
    assert plan.unplaced[0].reason


def test_duplicate_keys_rejected() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        solve(snapshot(), [demand("ns/m"), demand("ns/m")])


def test_single_strategy_slices_are_not_used() -> None:
    snap = snapshot(gpu_node("a", "A100-80GB", 1, layouts={"1g.10gb": 7}, strategy=MigStrategy.SINGLE))
    plan = _solve(snap, [demand("ns/m", 1, 8, MIG)])
    assert plan.unplaced


def test_actions_order_and_mig_parted_config() -> None:
    held = Holding("ns/old-0", owner="ns/old", gpus=(1,))
    snap = snapshot(gpu_node("a", "A100-80GB", 2, holdings=[held]))
    plan = _solve(snap, [demand(f"ns/m{i}", 1, 8, MIG) for i in range(3)])
    steps = actions(plan)
    kinds = [s.kind for s in steps]
    assert kinds[0] is ActionKind.STOP
    assert kinds.index(ActionKind.SET_MIG_LAYOUT) < kinds.index(ActionKind.START)
    layouts = next(s.layouts for s in steps if s.kind is ActionKind.SET_MIG_LAYOUT)
    config = mig_parted_config(layouts)
    assert config[0]["mig-enabled"] is True
    assert config[0]["mig-devices"] == {"1g.10gb": 7}  # filled up: the next replicas need no re-layout


def test_plan_json_schema_fields() -> None:
    snap = snapshot(gpu_node("a", "A100-80GB", 1))
    doc = _solve(snap, [demand("ns/m", 2, 8)]).to_dict()
    assert doc["schema"] == "gpupool.io/plan/v1"
    assert set(doc) == {"schema", "costPerHour", "idleCostPerHour", "gpusUsed", "models", "placements",
                        "migChanges", "evictions", "unplaced", "notes"}
    p = doc["placements"][0]
    assert p["resources"] == {"nvidia.com/mig-1g.10gb": "1"}
    assert doc["migChanges"][0]["after"]["counts"] == {"1g.10gb": 7}


def test_planner_replan_keeps_everything_else_in_place() -> None:
    from gpupool_operator.core.solver import Planner

    snap = snapshot(gpu_node("a", "A100-80GB", 2), gpu_node("h", "H100-80GB", 4), cpu_node("c"))
    demands = [demand("ns/small", 3, 8), demand("ns/big", 1, 70, GPU), demand("ns/cpu", 1, 2, cpu(2))]
    planner = Planner(snap)
    first = planner.plan(demands)
    where = {(a.demand, a.node, a.gpus, a.start) for a in first.assignments}
    more = [demand("ns/small", 5, 8), demand("ns/big", 1, 70, GPU)]  # ns/cpu removed, ns/small +2
    second = planner.replan(more)
    again = {(a.demand, a.node, a.gpus, a.start) for a in second.assignments}
    assert {w for w in where if w[0] != "ns/cpu"} <= again
    assert len(second.for_demand("ns/small")) == 5
    assert second.for_demand("ns/cpu") == ()
    assert second.layout_changes == ()  # the two new 1g.10gb fit the layout the first plan made
