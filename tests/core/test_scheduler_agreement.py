"""Placement only where kube-scheduler will agree (issue 16 item 5), on the pure core and the
inventory adapter: taints and tolerations, allocatable over labels, a pending MIG change, real
slice memory, and repairs that run to a fixpoint (nothing stays unplaced where room is left)."""

from __future__ import annotations

import dataclasses
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from placement_builders import GPU, MIG, cpu_node, demand, gpu_node, snapshot
from placement_strategies import demands, snapshots

from gpupool_operator.adapters.inventory import node_from_object, snapshot_from_objects
from gpupool_operator.core import catalog
from gpupool_operator.core.demand import Accelerator, Demand, ShapeKind, candidates
from gpupool_operator.core.inventory import Holding, Snapshot
from gpupool_operator.core.plan import Plan
from gpupool_operator.core.reasons import UnplacedCode
from gpupool_operator.core.solver import Options, products_of, solve
from gpupool_operator.core.taints import GPU_TOLERATION, Taint, Toleration, admission
from gpupool_operator.core.verify import problems


def a100_node(alloc: dict[str, str], labels: dict[str, str] | None = None,
              annotations: dict[str, str] | None = None, taints: list[dict[str, str]] | None = None) -> dict[str, Any]:
    base = {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB", "nvidia.com/gpu.count": "2",
            "nvidia.com/gpu.memory": "81920", "nvidia.com/mig.capable": "true", "nvidia.com/mig.strategy": "mixed",
            "nvidia.com/mig.config.state": "success", **(labels or {})}
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "a", "labels": base, "annotations": annotations or {}},
            "spec": {"taints": taints or []},
            "status": {"allocatable": {"cpu": "96", "memory": "1152Gi", **alloc}}}


# ------------------------------------------------------------------------------------ taints
def test_taint_matching_is_kubernetes_tolerates_taint() -> None:
    gpu = Taint("nvidia.com/gpu", "NoSchedule", "present")
    soft = Taint("team", "PreferNoSchedule", "a")
    evict = Taint("maintenance", "NoExecute")
    assert admission((), ()) == 0
    assert admission((), (gpu,)) is None
    assert admission((GPU_TOLERATION,), (gpu,)) == 0  # Exists with a key: any value
    assert admission((Toleration("nvidia.com/gpu", "Equal", "absent"),), (gpu,)) is None
    assert admission((Toleration("nvidia.com/gpu", "Equal", "present", "NoExecute"),), (gpu,)) is None
    assert admission((), (soft,)) == 1  # soft: allowed, ranked after
    assert admission((Toleration(operator="Exists"),), (gpu, soft, evict)) == 0  # empty key + Exists: all
    assert admission((GPU_TOLERATION,), (gpu, evict)) is None


def test_a_cpu_replica_never_lands_on_a_tainted_gpu_node_but_gpu_replicas_do() -> None:
    tainted = dataclasses.replace(gpu_node("g", "A100-80GB", 1), taints=(Taint("nvidia.com/gpu", "NoSchedule"),))
    snap = snapshot(tainted, cpu_node("c", 4))
    cpu_only = demand("ns/p/cpu", 3, 1, Accelerator(ShapeKind.CPU, cpu_millis=2000))
    gpu = demand("ns/p/gpu", 1, 40, GPU)
    plan = solve(snap, [cpu_only, gpu])
    assert not problems(snap, [cpu_only, gpu], plan)
    assert {a.node for a in plan.for_demand("ns/p/cpu")} == {"c"}  # two fit; the GPU node's cores are off limits
    assert [a.node for a in plan.for_demand("ns/p/gpu")] == ["g"]
    (u,) = plan.unplaced
    assert u.demand == "ns/p/cpu"
    assert u.count == 1


def test_prefer_no_schedule_is_avoided_when_an_equal_node_is_free() -> None:
    soft = dataclasses.replace(gpu_node("a-soft", "H100-80GB", 1), taints=(Taint("team", "PreferNoSchedule", "x"),))
    plan = solve(snapshot(soft, gpu_node("b-plain", "H100-80GB", 1)), [demand("ns/p/m", 1, 40, GPU)])
    assert [a.node for a in plan.assignments] == ["b-plain"]
    plan = solve(snapshot(soft, gpu_node("b-plain", "H100-80GB", 1)), [demand("ns/p/m", 2, 40, GPU)])
    assert {a.node for a in plan.assignments} == {"a-soft", "b-plain"}  # soft: used when needed


def test_no_execute_moves_a_kept_replica_the_taint_would_evict() -> None:
    node = dataclasses.replace(
        gpu_node("g", "H100-80GB", 1, holdings=[Holding("ns/r0", owner="ns/p/m", gpus=(0,))]),
        taints=(Taint("maintenance", "NoExecute"),))
    snap = snapshot(node, gpu_node("h", "H100-80GB", 1))
    plan = solve(snap, [demand("ns/p/m", 1, 40, GPU)])
    assert [a.node for a in plan.assignments] == ["h"]
    assert [e.pod for e in plan.evictions] == ["ns/r0"]


# ------------------------------------------------------------------------------------ allocatable wins
def test_allocatable_offering_fewer_slices_than_the_layout_wins_and_is_reported() -> None:
    # The annotation says seven 1g.10gb on each GPU; the device plugin offers nine in all.
    obj = a100_node({"nvidia.com/mig-1g.10gb": "9"},
                    annotations={"gpupool.io/mig-layout": '[{"1g.10gb": 7}, {"1g.10gb": 7}]'})
    node = node_from_object(obj)
    assert sum(len(g.withheld) for g in node.gpus) == 5
    assert node.capacity_conflicts
    assert "allocatable offers 9" in " ".join(node.capacity_conflicts)
    snap = Snapshot((node,))
    plan = solve(snap, [demand("ns/p/m", 14, 8, MIG)])
    assert len(plan.assignments) == 9  # never a replica on a slice the scheduler cannot give
    assert any("allocatable" in n for n in plan.notes)  # the conflict reaches the plan's notes


def test_allocatable_offering_fewer_whole_gpus_than_the_labels_wins() -> None:
    node = node_from_object(a100_node({"nvidia.com/gpu": "1"}, labels={"nvidia.com/mig.config": "all-disabled"}))
    assert sum(1 for g in node.gpus if not g.unusable) == 1
    assert node.capacity_conflicts
    plan = solve(Snapshot((node,)), [demand("ns/p/m", 2, 40, GPU)])
    assert len(plan.assignments) == 1


def test_allocatable_offering_more_than_the_labels_is_used() -> None:
    node = node_from_object(a100_node({"nvidia.com/mig-3g.40gb": "2", "nvidia.com/gpu": "1"},
                                      labels={"nvidia.com/mig.config": "custom"},
                                      annotations={"gpupool.io/mig-layout": "[{}, {}]"}))
    assert "allocatable wins" in " ".join(node.capacity_conflicts)  # the annotation said MIG off
    plan = solve(Snapshot((node,)), [demand("ns/p/m", 3, 30, MIG, GPU)])
    assert len(plan.assignments) == 3
    assert sum(1 for a in plan.assignments if a.gpus == (0,) and a.shape.profile == "3g.40gb") == 2


def test_a_pending_mig_change_offers_nothing_it_removes() -> None:
    # Asked for all-1g.10gb, the MIG manager pending; the plugin still offers two whole GPUs: both
    # are about to be re-laid, so neither takes a whole-GPU replica.
    node = node_from_object(a100_node({"nvidia.com/gpu": "2"}, labels={
        "nvidia.com/mig.config": "all-1g.10gb", "nvidia.com/mig.config.state": "pending"}))
    assert all(g.unusable for g in node.gpus)
    assert not node.capacity_conflicts  # not a conflict: the MIG manager is on its way
    assert not solve(Snapshot((node,)), [demand("ns/p/m", 1, 40, GPU)]).assignments
    # The same label while the manager says success, allocatable still whole: the change has not
    # reached the device plugin; the GPUs still take nothing, and the disagreement is reported.
    node = node_from_object(a100_node({"nvidia.com/gpu": "2"}, labels={"nvidia.com/mig.config": "all-1g.10gb"}))
    assert all(g.unusable for g in node.gpus)
    assert node.capacity_conflicts
    # A change to a custom config while pending: its target is unknown, so every GPU may change.
    node = node_from_object(a100_node(
        {"nvidia.com/gpu": "1", "nvidia.com/mig-3g.40gb": "2"},
        labels={"nvidia.com/mig.config": "custom", "nvidia.com/mig.config.state": "pending"},
        annotations={"gpupool.io/mig-layout": '[{}, {"3g.40gb": 2}]'}))
    assert not node.mig_ready
    assert all(g.unusable for g in node.gpus)
    assert not solve(Snapshot((node,)), [demand("ns/p/m", 1, 30, MIG, GPU)]).assignments
    # A change that keeps one GPU as it is leaves that GPU usable.
    node = node_from_object(a100_node(
        {"nvidia.com/gpu": "1", "nvidia.com/mig-1g.10gb": "7"},
        labels={"nvidia.com/mig.config": "all-1g.10gb", "nvidia.com/mig.config.state": "pending"},
        annotations={"gpupool.io/mig-layout": '[{"1g.10gb": 7}, {}]'}))
    assert [bool(g.unusable) for g in node.gpus] == [False, True]


def test_slices_are_sized_by_their_real_memory() -> None:
    a40 = catalog.by_key("A100-40GB")
    assert a40.profile("1g.5gb").memory_mib == 4864  # nvidia-smi's figure, not 5 GiB
    # a 4.9 GiB model does not fit a 1g.5gb: the candidates say so
    d = demand("ns/p/m", 1, 4.9, Accelerator(ShapeKind.MIG, profiles=("1g.5gb",)))
    cands, rejected = candidates(d, products_of(snapshot(gpu_node("g", "A100-40GB", 1))))
    assert not cands
    assert any("1g.5gb" in r for r in rejected)
    # the node's own label wins over the catalog
    labels = {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-40GB", "nvidia.com/gpu.count": "1",
              "nvidia.com/mig.strategy": "mixed", "nvidia.com/mig-1g.5gb.memory": "4800"}
    obj = {"metadata": {"name": "x", "labels": labels}, "status": {"allocatable": {"cpu": "8", "memory": "64Gi",
                                                                                "nvidia.com/mig-1g.5gb": "7"}}}
    snap = snapshot_from_objects([obj])
    assert dict(snap.nodes[0].mig_memory)["1g.5gb"] == 4800


# ------------------------------------------------------------------------------------ fixpoint
@st.composite
def scheduling_snapshots(draw: st.DrawFn) -> Snapshot:
    """Random clusters with taints (NVIDIA's, a dedicated one, soft ones), GPUs a pending MIG change
    takes away, and cordoned nodes."""
    snap = draw(snapshots())
    pool = [Taint("nvidia.com/gpu", "NoSchedule", "present"), Taint("dedicated", "NoSchedule", "ml"),
            Taint("team", "PreferNoSchedule", "a"), Taint("maintenance", "NoExecute")]
    nodes = []
    for node in snap.nodes:
        taints = tuple(sorted(draw(st.sets(st.sampled_from(pool), max_size=2))))
        gpus = tuple(dataclasses.replace(g, unusable="a pending MIG change re-lays it") if draw(st.booleans())
                     and draw(st.booleans()) else g for g in node.gpus)
        schedulable = draw(st.sampled_from([True, True, True, False]))
        nodes.append(dataclasses.replace(node, taints=taints, gpus=gpus, schedulable=schedulable))
    return dataclasses.replace(snap, nodes=tuple(nodes))


@st.composite
def tolerant_demands(draw: st.DrawFn) -> list[Demand]:
    tolerations = [Toleration("dedicated", "Equal", "ml", "NoSchedule"), Toleration("maintenance", "Exists"),
                   Toleration("nvidia.com/gpu", "Exists")]
    return [dataclasses.replace(d, tolerations=tuple(draw(st.sets(st.sampled_from(tolerations), max_size=2))))
            for d in draw(demands())]


def residual(snap: Snapshot, plan: Plan) -> Snapshot:
    """The cluster once ``plan`` runs: its layouts, and every replica as a pod nothing may move."""
    held: dict[str, list[Holding]] = {}
    for a in plan.assignments:
        pod = f"ns/{a.demand}-{a.replica}"
        if a.shape.kind is ShapeKind.MIG:
            h = Holding(pod, instance=(a.gpus[0], a.shape.profile, a.start or 0))
        elif a.shape.kind is ShapeKind.GPU:
            h = Holding(pod, gpus=a.gpus)
        else:
            h = Holding(pod, cpu_millis=a.shape.cpu_millis, memory_mib=a.shape.memory_mib)
        held.setdefault(a.node, []).append(h)
    after = {(c.node, c.gpu): c.after for c in plan.layout_changes}
    stopped = {e.pod for e in plan.evictions}
    nodes = []
    for n in snap.nodes:
        gpus = tuple(dataclasses.replace(g, layout=after.get((n.name, g.index), g.layout)) for g in n.gpus)
        kept = tuple(dataclasses.replace(h, owner=None) for h in n.holdings if h.pod not in stopped)
        nodes.append(dataclasses.replace(n, gpus=gpus, holdings=kept + tuple(held.get(n.name, ()))))
    return dataclasses.replace(snap, nodes=tuple(nodes))


def _off_spot(snap: Snapshot, plan: Plan, key: str) -> int:
    tiers = {n.name: n.price_tier.value for n in snap.nodes}
    return sum(1 for a in plan.for_demand(key) if tiers[a.node] != "spot")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(snap=scheduling_snapshots(), ds=tolerant_demands())
def test_nothing_stays_unplaced_where_the_plan_leaves_room(snap: Snapshot, ds: list[Demand]) -> None:
    """Repairs run to a fixpoint: for every model with replicas left unplaced, the room the plan
    leaves free (with its layouts applied and its replicas pinned) takes none of them either."""
    plan = solve(snap, ds)
    assert not problems(snap, ds, plan)
    after = residual(snap, plan)
    for u in plan.unplaced:
        if u.code == UnplacedCode.BUDGET_EXCEEDED:
            continue
        d = next(x for x in ds if x.key == u.demand)
        one = dataclasses.replace(d, key=d.key + "#one-more", replicas=1,
                                  min_off_spot=max(0, d.min_off_spot - _off_spot(snap, plan, d.key)))
        again = solve(after, [one], Options(move_penalty=1e9))
        assert not again.assignments, (u, again.assignments[0])
