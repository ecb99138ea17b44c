"""The placement loop's incremental path, with plain data (no cluster): the remembering snapshot
builder equals the from-scratch one, :meth:`Planner.adopt` makes started replicas count as running,
and a reconciler driven through an in-memory API re-plans only when the cluster is its last plan
applied (anything else: a full solve), ending where a full solve would."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import json
import time
from typing import Any

from fake_api import FakeKube
from operator_builders import PoolBuilder, fake_gpu_node

from gpupool_operator.adapters import names
from gpupool_operator.adapters.demands import demands_for, parse_pool, prices_from
from gpupool_operator.adapters.inventory import snapshot_from_objects
from gpupool_operator.adapters.loop import PlacementLoop
from gpupool_operator.adapters.settings import OperatorSettings
from gpupool_operator.adapters.snapshot import SnapshotBuilder, build_snapshot
from gpupool_operator.adapters.store import Kind, Store
from gpupool_operator.api import default_config
from gpupool_operator.core.demand import Accelerator, Demand, ShapeKind
from gpupool_operator.core.inventory import Node, Snapshot
from gpupool_operator.core.solver import Planner, solve
from gpupool_operator.local.nodes import build_node
from gpupool_operator.local.spec import ClusterSpec

Obj = dict[str, Any]
PRICES = prices_from(default_config())


def _ready(node: Obj) -> Obj:
    node["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
    return node


POOLS = {"uid-p": "ns/p"}


def _our_pod(name: str, node: str, demand: str, limits: dict[str, str], **ann: str) -> Obj:
    return {
        "metadata": {"name": name, "namespace": "ns", "resourceVersion": "1",
                     "labels": {names.LABEL_MANAGED_BY: names.MANAGED_BY},
                     "annotations": {names.ANN_DEMAND: demand, names.ANN_NODE: node, **ann},
                     "ownerReferences": [{"apiVersion": "gpupool.io/v1alpha1", "kind": "InferencePool",
                                          "name": "p", "uid": "uid-p"}]},
        "spec": {"nodeName": node, "containers": [{"resources": {"limits": limits}}]},
        "status": {"phase": "Running"},
    }


def test_snapshot_builder_equals_build_snapshot_through_changes() -> None:
    nodes = [
        _ready(fake_gpu_node("a100-0000", "A100-80GB", gpus=2, mig_strategy="mixed", layouts=[{"1g.10gb": 7}, {}])),
        _ready(fake_gpu_node("h100-0001", "H100-80GB", gpus=4)),
    ]
    pods = [
        _our_pod("p-m-0", "a100-0000", "ns/p/m", {"nvidia.com/mig-1g.10gb": "1"},
                 **{names.ANN_MIG_INSTANCE: "0:1g.10gb:3"}),
        _our_pod("p-g-0", "h100-0001", "ns/p/g", {"nvidia.com/gpu": "2"}, **{names.ANN_GPUS: "1,2"}),
    ]
    builder = SnapshotBuilder()

    def same(now: float = 0.0) -> Snapshot:
        got = builder.build(nodes, pods, PRICES, now, 600.0, POOLS)
        assert got == build_snapshot(nodes, pods, PRICES, now, 600.0, POOLS)
        return got

    first = same()
    assert same() == first
    base = builder.bases["a100-0000"]
    same()
    assert builder.bases["a100-0000"] is base  # nothing changed: nothing parsed again
    # a heartbeat (new object, same placement inputs) keeps the parsed node
    nodes[0] = copy.deepcopy(nodes[0])
    nodes[0]["status"]["conditions"][0]["lastHeartbeatTime"] = "later"
    same()
    assert builder.bases["a100-0000"] is base
    # a new pod, a pod leaving, a terminating pod
    pods.append(_our_pod("p-m-1", "a100-0000", "ns/p/m", {"nvidia.com/mig-1g.10gb": "1"},
                         **{names.ANN_MIG_INSTANCE: "0:1g.10gb:4"}))
    same()
    pods[0] = copy.deepcopy(pods[0])
    pods[0]["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert {h.pod: h.owner for h in same().nodes[0].holdings}["ns/p-m-0"] is None
    del pods[1]
    same()
    # node changes: a cordon, a layout target, a failed re-layout that ages out
    nodes[1] = copy.deepcopy(nodes[1])
    nodes[1]["spec"]["unschedulable"] = True
    assert not same().nodes[1].schedulable
    nodes[0] = copy.deepcopy(nodes[0])
    nodes[0]["metadata"]["annotations"][names.ANN_MIG_LAYOUT_TARGET] = json.dumps([{"3g.40gb": 2}, {}])
    nodes[0]["metadata"]["annotations"][names.ANN_MIG_FAILED] = "100 gpupool-x"
    assert builder.bases["a100-0000"] is base
    assert not same(now=200.0).nodes[0].mig_ready
    assert builder.bases["a100-0000"] is not base
    nodes[0] = copy.deepcopy(nodes[0])  # (store objects are replaced, never changed in place)
    nodes[0]["metadata"]["annotations"].pop(names.ANN_MIG_LAYOUT_TARGET)
    assert not same(now=200.0).nodes[0].mig_ready  # failed 100 s ago: still cooling down
    assert same(now=10_000.0).nodes[0].mig_ready
    # other prices: everything parsed again
    cheaper = dataclasses.replace(PRICES, cpu_per_core_hour=PRICES.cpu_per_core_hour / 2)
    assert builder.build(nodes, pods, cheaper, 0.0, 600.0, POOLS) == build_snapshot(nodes, pods, cheaper, 0.0,
                                                                                   600.0, POOLS)


def _cpu_snapshot() -> Snapshot:
    return Snapshot(nodes=(Node("cpu-0", cpu_millis=64_000, memory_mib=256_000),), cpu_price=0.05)


def test_planner_adopt_makes_a_started_replica_a_running_one() -> None:
    cpu = (Accelerator(ShapeKind.CPU, cpu_millis=1000),)
    planner = Planner(_cpu_snapshot())
    demand = Demand("ns/p/m", replicas=2, memory_mib=1024, accelerators=cpu)
    first = planner.plan([demand])
    assert [a.pod for a in first.assignments] == [None, None]
    assert planner.adopt({("ns/p/m", 0): "ns/p-m-0", ("ns/p/m", 1): "ns/p-m-1"}) == 2
    again = planner.replan([demand])
    assert sorted(a.pod or "" for a in again.assignments) == ["ns/p-m-0", "ns/p-m-1"]
    down = planner.replan([Demand("ns/p/m", replicas=1, memory_mib=1024, accelerators=cpu)])
    assert len(down.assignments) == 1
    assert [e.reason for e in down.evictions] == ["scaled down"]  # a running pod is stopped, not forgotten
    assert {e.pod for e in down.evictions} | {a.pod for a in down.assignments} == {"ns/p-m-0", "ns/p-m-1"}


def _loop() -> tuple[FakeKube, Store, PlacementLoop]:
    store = Store()
    kube = FakeKube(store)
    for i, gpu in enumerate(["A100-80GB", "H100-80GB", "A100-80GB"]):
        node = _ready(fake_gpu_node(f"gpu-{i:04d}", gpu, gpus=4, mig_strategy="mixed",
                                    layouts=[{"1g.10gb": 7}, {"3g.40gb": 2}, {}, {}]))
        node["metadata"]["uid"] = f"uid-node-{i}"
        store.apply_event(Kind.NODE, "ADDED", kube._stamp(node))
    # the GPU nodes carry NVIDIA's GPU taint, which CPU replica pods do not tolerate: a CPU node
    cpu_spec = ClusterSpec.model_validate({"name": "tests", "pools": [{"name": "cpu", "count": 1, "cpu": 32}]})
    cpu_node = _ready(build_node(cpu_spec, cpu_spec.pools[0], 0))
    cpu_node["metadata"]["uid"] = "uid-node-cpu"
    store.apply_event(Kind.NODE, "ADDED", kube._stamp(cpu_node))
    config = default_config().to_wire()
    store.apply_event(Kind.CONFIG, "ADDED", kube._stamp(config))
    pools = [
        PoolBuilder("a", "ns").mig("small", "1g.10gb", replicas=3).gpu("big", "H100-80GB", replicas=2,
                                                                        memory="60Gi").obj(),
        PoolBuilder("b", "ns").cpu("c", cores=1, replicas=2).mig("mid", "3g.40gb", replicas=1, memory="30Gi").obj(),
    ]
    for i, body in enumerate(pools):
        body["metadata"].update(uid=f"uid-pool-{i}", generation=1)
        store.apply_event(Kind.POOL, "ADDED", kube._stamp(body))
    reconciler = PlacementLoop(kube, store, OperatorSettings())
    reconciler._seeded = True
    kube.feed = reconciler.observer.feed
    return kube, store, reconciler


async def _settle(kube: FakeKube, reconciler: PlacementLoop, cycles: int = 6) -> list[str]:
    modes = []
    for _ in range(cycles):
        modes.append((await reconciler.cycle()).mode)
        kube.mig_manager()
        kube.bind_all()
    return modes


def _scale(kube: FakeKube, store: Store, pool: str, model: int, replicas: int) -> None:
    obj = copy.deepcopy(store.get(Kind.POOL, f"ns/{pool}"))
    assert obj is not None
    obj["spec"]["models"][model]["minReplicas"] = replicas
    obj["metadata"]["generation"] += 1
    store.apply_event(Kind.POOL, "MODIFIED", kube._stamp(obj))


def _live(store: Store, demand: str) -> list[Obj]:
    return [p for p in store.all(Kind.POD) if not p["metadata"].get("deletionTimestamp")
            and p["metadata"]["annotations"].get(names.ANN_DEMAND) == demand]


def _fresh_cost(store: Store) -> float:
    parsed = [parse_pool(o) for o in store.all(Kind.POOL)]
    index = {p.uid: f"{p.namespace}/{p.name}" for p in parsed}
    snapshot = build_snapshot(store.all(Kind.NODE), store.all(Kind.POD), PRICES, time.time(), pools=index)
    pools = [p.pool for p in parsed if p.pool is not None]
    return solve(snapshot, demands_for(pools)).cost_per_hour


def test_the_loop_replans_a_demand_change_and_ends_where_a_full_solve_would() -> None:
    async def scenario() -> None:
        kube, store, reconciler = _loop()
        modes = await _settle(kube, reconciler)
        assert modes[0] == "full"
        assert modes[-1] in ("kept", "cached")
        assert len(_live(store, "ns/a/small")) == 3

        _scale(kube, store, "a", 0, 5)  # up: a re-plan, two new pods
        report = await reconciler.cycle()
        assert report.mode == "replan"
        assert report.created == 2
        status = (store.get(Kind.POOL, "ns/a") or {}).get("status") or {}
        assert status.get("observedGeneration") == 2
        kube.bind_all()
        assert (await reconciler.cycle()).mode == "kept"  # the bound pods are the plan applied

        _scale(kube, store, "a", 0, 2)  # down: three of the (now running) pods are stopped
        report = await reconciler.cycle()
        assert report.mode == "replan"
        assert report.deleted == 3
        assert len(_live(store, "ns/a/small")) == 2
        kube.finish_deletions()
        assert (await reconciler.cycle()).mode == "kept"

        # a pod of ours vanishing behind the loop's back is not the plan applied: solve afresh
        victim = _live(store, "ns/b/c")[0]
        store.apply_event(Kind.POD, "DELETED", kube._stamp(copy.deepcopy(victim)))
        report = await reconciler.cycle()
        assert report.mode == "full"
        assert report.created >= 1  # (a full solve may also move a replica where that saves money)
        modes = await _settle(kube, reconciler, 3)
        assert modes[-1] in ("kept", "cached")
        plan = reconciler.last_plan
        assert plan is not None
        assert not plan.unplaced
        assert plan.cost_per_hour <= _fresh_cost(store) + 1e-6
        for key, want in {"ns/a/small": 2, "ns/a/big": 2, "ns/b/c": 2, "ns/b/mid": 1}.items():
            assert len(_live(store, key)) == want, key

    asyncio.run(scenario())


def test_a_node_change_forces_a_full_solve() -> None:
    async def scenario() -> None:
        kube, store, reconciler = _loop()
        await _settle(kube, reconciler)
        node = copy.deepcopy(store.get(Kind.NODE, "gpu-0001"))
        assert node is not None
        node["spec"]["unschedulable"] = True
        store.apply_event(Kind.NODE, "MODIFIED", kube._stamp(node))
        _scale(kube, store, "b", 0, 3)
        assert (await reconciler.cycle()).mode == "full"

    asyncio.run(scenario())


def test_gpupool_plan_and_the_operator_read_holdings_by_one_rule() -> None:
    """``gpupool plan --pods`` and the operator's snapshot place pods on GPUs alike: the MIG
    instance the operator wrote is kept, and a pod of someone else's asking for a whole GPU gets
    one without MIG (the MIG GPU's instances are not whole GPUs)."""
    node = _ready(fake_gpu_node("a100-0000", "A100-80GB", gpus=2, mig_strategy="mixed",
                                layouts=[{"1g.10gb": 7}, {}]))
    ours = _our_pod("p-m-0", "a100-0000", "ns/p/m", {"nvidia.com/mig-1g.10gb": "1"},
                    **{names.ANN_MIG_INSTANCE: "0:1g.10gb:5"})
    foreign = {"metadata": {"name": "train", "namespace": "ml"},
               "spec": {"nodeName": "a100-0000", "containers": [{"resources": {"limits": {"nvidia.com/gpu": "1"}}}]},
               "status": {"phase": "Running"}}
    operator_view = build_snapshot([node], [ours, foreign], PRICES, 0.0, pools=POOLS).nodes[0].holdings
    plan_view = snapshot_from_objects([node], [ours, foreign], PRICES).nodes[0].holdings
    assert operator_view == plan_view
    by_pod = {h.pod: h for h in operator_view}
    assert by_pod["ns/p-m-0"].instance == (0, "1g.10gb", 5)
    assert by_pod["ns/p-m-0"].owner == "ns/p/m"
    assert by_pod["ml/train"].gpus == (1,)
    assert by_pod["ml/train"].owner is None
