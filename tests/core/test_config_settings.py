"""Every GPUPoolConfig and InferencePool placement setting acts (issue 16 item 7, the core's part):
``migSlicePricing`` enters cost, ``mig.policy`` AllowList and Disabled, ``allowSpot``, and a
budget the cheapest plan exceeds. Pure core: plain snapshots in, plans out."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from placement_builders import GPU, MIG, cpu_node, demand, gpu_node, snapshot

from gpupool_operator.api.config import GPUPoolConfig, default_config
from gpupool_operator.api.inferencepool import InferencePool
from gpupool_operator.core import catalog, mig
from gpupool_operator.core.cost import PriceTier, SlicePricing, slice_share
from gpupool_operator.core.demand import Accelerator, ShapeKind, from_pool
from gpupool_operator.core.reasons import UnplacedCode
from gpupool_operator.core.solver import MigPolicy, Options, options_from_config, solve
from gpupool_operator.core.verify import problems


def config(**spec: Any) -> GPUPoolConfig:
    base = default_config().to_wire()
    base["spec"].update(spec)
    return GPUPoolConfig.model_validate(base)


def pool(*models: dict[str, Any], **spec: Any) -> InferencePool:
    return InferencePool.model_validate({
        "apiVersion": "gpupool.io/v1alpha1", "kind": "InferencePool", "metadata": {"name": "p", "namespace": "ns"},
        "spec": {"models": [{"source": {"uri": "hf://x/y"}, "maxReplicas": 10, **m} for m in models], **spec},
    })


# ------------------------------------------------------------------------------------ migSlicePricing
@pytest.mark.parametrize("pricing", ["MaxShare", "ComputeShare", "MemoryShare"])
def test_mig_slice_pricing_enters_the_attributed_cost(pricing: str) -> None:
    # A 3g.40gb is 3/7 of the compute and 4/8 of the memory of an A100-80GB.
    snap = snapshot(gpu_node("a", "A100-80GB", 1, price=3.5, layouts={"3g.40gb": 2}))
    options, unusable = options_from_config(config(migSlicePricing=pricing))
    assert options.slice_pricing is SlicePricing(pricing)
    assert unusable == ()
    plan = solve(snap, [demand("ns/p/m", 2, 30, Accelerator(ShapeKind.MIG, profiles=("3g.40gb",)))], options)
    assert not problems(snap, [demand("ns/p/m", 2, 30, Accelerator(ShapeKind.MIG, profiles=("3g.40gb",)))], plan)
    share = {"MaxShare": 4 / 8, "ComputeShare": 3 / 7, "MemoryShare": 4 / 8}[pricing]
    assert plan.cost_by_demand["ns/p/m"] == pytest.approx(2 * 3.5 * share)
    assert all(a.cost == pytest.approx(3.5 * share) for a in plan.assignments)
    assert plan.cost_per_hour == pytest.approx(3.5)  # the GPU itself costs what it costs
    assert slice_share(catalog.by_key("A100-80GB").profile("3g.40gb"), SlicePricing(pricing)) == pytest.approx(share)


def test_slice_pricing_follows_compute_or_memory_where_they_differ() -> None:
    # A 1g.10gb is 1/7 of the compute and 1/8 of the memory; a 1g.20gb 1/7 and 2/8.
    snap = snapshot(gpu_node("a", "A100-80GB", 1, price=7.0, layouts={"1g.20gb": 1, "1g.10gb": 1}))
    costs = {}
    for pricing in ("MaxShare", "ComputeShare", "MemoryShare"):
        options = options_from_config(config(migSlicePricing=pricing))[0]
        plan = solve(snap, [demand("ns/p/a", 1, 8, MIG), demand("ns/p/b", 1, 15, MIG)], options)
        assert {a.demand: a.shape.profile for a in plan.assignments} == {"ns/p/a": "1g.10gb", "ns/p/b": "1g.20gb"}
        costs[pricing] = (plan.cost_by_demand["ns/p/a"], plan.cost_by_demand["ns/p/b"])
    assert costs["MaxShare"] == pytest.approx((1.0, 1.75))
    assert costs["ComputeShare"] == pytest.approx((1.0, 1.0))
    assert costs["MemoryShare"] == pytest.approx((0.875, 1.75))


# ------------------------------------------------------------------------------------ mig.policy
def _mig_only(replicas: int) -> Any:
    return demand("ns/p/small", replicas, 8, Accelerator(ShapeKind.MIG, profiles=("1g.10gb",)))


def test_allow_list_sets_only_allowed_configs_resolved_per_product() -> None:
    snap = snapshot(gpu_node("a80", "A100-80GB", 2), gpu_node("a40", "A100-40GB", 2, price=1.0))
    options, unusable = options_from_config(
        config(mig={"policy": "AllowList", "allowedLayouts": ["all-1g.10gb", "all-disabled"]}))
    assert options.mig_policy is MigPolicy.ALLOW_LIST
    assert unusable == ()
    d = _mig_only(9)
    plan = solve(snap, [d], options)
    assert not problems(snap, [d], plan)
    assert len(plan.assignments) == 9
    assert plan.layout_changes
    assert {c.config for c in plan.layout_changes} == {"all-1g.10gb"}
    for change in plan.layout_changes:
        product = catalog.by_key("A100-80GB" if change.node == "a80" else "A100-40GB")
        # all-1g.10gb is seven 1g.10gb on an A100-80GB and four on an A100-40GB (NVIDIA's file)
        assert change.after is not None
        assert dict(mig.placement_counts(change.after)) == {"1g.10gb": 7 if product.key == "A100-80GB" else 4}
    # every GPU of a re-laid node gets the config: mig-parted's `devices: all`
    for node in {c.node for c in plan.layout_changes}:
        assert {c.gpu for c in plan.layout_changes if c.node == node} == {0, 1}


def test_allow_list_never_sets_a_layout_it_does_not_list() -> None:
    snap = snapshot(gpu_node("a", "A100-80GB", 1))
    options, _ = options_from_config(config(mig={"policy": "AllowList", "allowedLayouts": ["all-3g.40gb"]}))
    plan = solve(snap, [_mig_only(2)], options)  # needs 1g.10gb; only all-3g.40gb is allowed
    assert plan.layout_changes == ()
    assert not plan.assignments
    assert plan.unplaced[0].code == UnplacedCode.MIG_RELAYOUT_FORBIDDEN
    assert "mig.policy" in plan.unplaced[0].reason


def test_allow_list_custom_names_need_their_layout() -> None:
    cfg = config(mig={"policy": "AllowList", "allowedLayouts": ["team-small", "all-balanced"]})
    options, unusable = options_from_config(cfg)
    assert unusable == ("team-small",)
    assert options.allowed_layouts is not None
    assert set(options.allowed_layouts) == {"all-balanced"}
    options, unusable = options_from_config(cfg, configs={"team-small": {"1g.10gb": 3, "4g.40gb": 1}})
    assert unusable == ()
    plan = solve(snapshot(gpu_node("a", "A100-80GB", 1)), [_mig_only(3)], options)
    assert [c.config for c in plan.layout_changes] == ["team-small"]
    assert len(plan.assignments) == 3


def test_all_balanced_is_nvidias_layout() -> None:
    known, layout = mig.named_layout(catalog.by_key("H100-80GB"), "all-balanced")
    assert known
    assert layout is not None
    assert dict(mig.placement_counts(layout)) == {"1g.10gb": 2, "2g.20gb": 1, "3g.40gb": 1}
    assert mig.named_layout(catalog.by_key("H100-80GB"), "my-own") == (False, None)


def test_disabled_still_places_whole_gpus_and_existing_slices() -> None:
    snap = snapshot(
        gpu_node("whole", "A100-80GB", 2),
        gpu_node("sliced", "A100-80GB", 1, layouts={"1g.10gb": 7}),
    )
    options, _ = options_from_config(config(mig={"policy": "Disabled"}))
    assert options.mig_policy is MigPolicy.DISABLED
    big = demand("ns/p/big", 2, 40, GPU)
    small = _mig_only(9)
    plan = solve(snap, [big, small], options)
    assert not problems(snap, [big, small], plan)
    assert plan.layout_changes == ()
    assert {a.node for a in plan.for_demand("ns/p/big")} == {"whole"}
    assert len(plan.for_demand("ns/p/big")) == 2
    assert len(plan.for_demand("ns/p/small")) == 7  # the existing slices, as they are
    (left,) = plan.unplaced
    assert left.count == 2
    assert left.code == UnplacedCode.MIG_RELAYOUT_FORBIDDEN
    # under Any the same cluster re-lays a whole GPU for them instead (one more replica placed)
    anyway = solve(snap, [big, _mig_only(9)], Options())
    assert anyway.layout_changes
    assert len(anyway.assignments) == 10


# ------------------------------------------------------------------------------------ allowSpot
def _spot_only_cluster() -> Any:
    return snapshot(gpu_node("b200-spot", "B200-180GB", 8, tier=PriceTier.SPOT, price=2.3), cpu_node("c"))


_B200 = {"name": "m", "acceleratorMemory": "100Gi", "minReplicas": 2,
         "hardware": [{"type": "GPU", "gpu": {"product": "B200-180GB"}}]}


def test_allow_spot_unset_keeps_one_replica_off_spot_and_says_how_to_change_it() -> None:
    snap = _spot_only_cluster()
    (d,) = from_pool(pool(_B200))
    assert d.allow_spot
    assert d.min_off_spot == 1
    plan = solve(snap, [d])
    assert not plan.assignments
    (u,) = plan.unplaced
    assert u.code == UnplacedCode.SPOT_ONLY
    assert "allowSpot: true" in u.reason  # the field exists and does what the message says


def test_allow_spot_true_lets_a_spot_only_product_run() -> None:
    snap = _spot_only_cluster()
    (d,) = from_pool(pool({**_B200, "allowSpot": True}))
    assert d.allow_spot
    assert d.min_off_spot == 0
    plan = solve(snap, [d])
    assert not problems(snap, [d], plan)
    assert [a.node for a in plan.assignments] == ["b200-spot", "b200-spot"]
    assert not plan.unplaced


def test_allow_spot_false_keeps_every_replica_off_spot() -> None:
    snap = snapshot(gpu_node("spot", "H100-80GB", 8, tier=PriceTier.SPOT, price=1.0),
                    gpu_node("od", "H100-80GB", 1))
    (d,) = from_pool(pool({**_B200, "allowSpot": False, "acceleratorMemory": "40Gi",
                           "hardware": [{"type": "GPU", "gpu": {"product": "H100-80GB"}}]}))
    assert not d.allow_spot
    plan = solve(snap, [d])
    assert [a.node for a in plan.assignments] == ["od"]
    (u,) = plan.unplaced
    assert "allowSpot is false" in u.reason


# ------------------------------------------------------------------------------------ budget
def test_a_budget_below_the_cheapest_plan_places_what_fits_and_says_budget_exceeded() -> None:
    # Cheapest shape: a 1g.10gb slice at 3.43/8 = $0.43/h; a $2/h budget affords four of ten.
    snap = snapshot(gpu_node("a", "A100-80GB", 2, price=3.43), cpu_node("c", 8))
    (d,) = from_pool(pool({"name": "m", "acceleratorMemory": "8Gi", "minReplicas": 10,
                           "hardware": [{"type": "GPU", "gpu": {"product": "A100-80GB"}},
                                        {"type": "MIG", "mig": {"minMemory": "8Gi"}}]},
                          budget={"maxUsdPerHour": "2"}))
    d = dataclasses.replace(d, guaranteed=0)  # what the budget may cut (minReplicas are never cut)
    plan = solve(snap, [d])
    assert not problems(snap, [d], plan)
    placed = plan.for_demand("ns/p/m")
    assert len(placed) == 4
    assert {a.shape.kind for a in placed} == {ShapeKind.MIG}
    assert plan.cost_by_demand["ns/p/m"] <= 2.0 + 1e-9
    (u,) = plan.unplaced
    assert u.count == 6
    assert u.code == UnplacedCode.BUDGET_EXCEEDED
    assert "$2.00/h" in u.reason


# ------------------------------------------------------------------------------------ tolerations
def test_model_tolerations_decide_which_tainted_nodes_replicas_use() -> None:
    from gpupool_operator.core.taints import Taint

    tainted = dataclasses.replace(gpu_node("dedicated", "H100-80GB", 8),
                                  taints=(Taint("dedicated", "NoSchedule", "ml"),))
    gpu_tainted = dataclasses.replace(cpu_node("gpu-host", 64), taints=(Taint("nvidia.com/gpu", "NoSchedule"),))
    snap = snapshot(tainted, gpu_tainted, cpu_node("plain", 8))
    model = {"name": "m", "acceleratorMemory": "40Gi", "minReplicas": 1,
             "hardware": [{"type": "GPU", "gpu": {"product": "H100-80GB"}}]}
    (refused,) = from_pool(pool(model))
    plan = solve(snap, [refused])
    assert not plan.assignments
    assert plan.unplaced[0].code == UnplacedCode.TAINTED
    assert "dedicated=ml:NoSchedule" in plan.unplaced[0].reason
    (allowed,) = from_pool(pool({**model, "tolerations": [
        {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}]}))
    assert [a.node for a in solve(snap, [allowed]).assignments] == ["dedicated"]
    # a CPU replica never lands on a node tainted for GPUs unless the model tolerates it
    cpu_model = {"name": "c", "acceleratorMemory": "1Gi", "minReplicas": 2,
                 "hardware": [{"type": "CPU", "cpu": {"cores": 4}}]}
    (c,) = from_pool(pool(cpu_model))
    assert {a.node for a in solve(snap, [c]).assignments} == {"plain"}
    (c2,) = from_pool(pool({**cpu_model, "minReplicas": 10, "tolerations": [{"key": "nvidia.com/gpu",
                                                                             "operator": "Exists"}]}))
    tolerated = solve(snap, [c2])
    assert len(tolerated.assignments) == 10
    assert "gpu-host" in {a.node for a in tolerated.assignments}
