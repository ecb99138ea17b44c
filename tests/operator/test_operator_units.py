"""Fast tests of the operator's adapters with plain data (no cluster): naming, store, MIG protocol,
snapshot building, demands, pod manifests and status."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from operator_builders import PoolBuilder, fake_gpu_node

from gpupool_operator.adapters import names
from gpupool_operator.adapters.demands import MinReplicas, demands_for, parse_pool, prices_from
from gpupool_operator.adapters.inventory import node_from_object, parse_cpu, parse_memory_mib
from gpupool_operator.adapters.migconfig import merged_document
from gpupool_operator.adapters.snapshot import build_snapshot
from gpupool_operator.adapters.status import pool_status, status_differs
from gpupool_operator.adapters.store import Kind, Store
from gpupool_operator.adapters.workloads import WorkerSettings, replica_pod
from gpupool_operator.api import ConditionReason, InferencePool, default_config
from gpupool_operator.core.demand import Shape, ShapeKind
from gpupool_operator.core.migparted import config_name
from gpupool_operator.core.observed import MigNode, per_gpu
from gpupool_operator.core.plan import Assignment, Plan, Unplaced
from gpupool_operator.core.solver import solve

NOW = datetime(2026, 1, 1, tzinfo=UTC)
OWNER = {"apiVersion": "gpupool.io/v1alpha1", "kind": "InferencePool", "name": "p", "uid": "uid-1"}
POOLS = {"uid-1": "ns/p"}


def _pool(builder: PoolBuilder, namespace: str = "ns") -> InferencePool:
    body = builder.obj()
    body["metadata"].update(namespace=namespace, uid="uid-1", generation=3)
    parsed = parse_pool(body)
    assert parsed.pool is not None, parsed.error
    return parsed.pool


def test_pod_names_are_deterministic_and_valid() -> None:
    name = names.pod_name("ns", "p", "uid-1", "m", 0)
    assert name == names.pod_name("ns", "p", "uid-1", "m", 0)
    assert name.startswith("p-m-")
    assert name.endswith("-0")
    long = names.pod_name("ns", "x" * 250, "uid-1", "model", 12)
    assert len(long) <= 63
    assert long.endswith("-12")
    assert names.service_name("ns", "pool", "uid-1", "model").startswith("pool-model-")
    assert len(names.service_name("ns", "p" * 80, "uid-1", "model")) <= 63
    assert len(names.label_value("v" * 100)) == 63


def test_store_keeps_newest_and_tombstones() -> None:
    store = Store()
    pod = {"metadata": {"name": "a", "namespace": "n", "resourceVersion": "5"}, "spec": {}}
    assert store.apply_event(Kind.POD, "ADDED", pod)
    older = {"metadata": {"name": "a", "namespace": "n", "resourceVersion": "4"}, "spec": {"nodeName": "x"}}
    assert not store.apply_event(Kind.POD, "MODIFIED", older)
    assert store.apply_event(Kind.POD, "DELETED", {"metadata": {"name": "a", "namespace": "n", "resourceVersion": "6"}})
    store.seed(Kind.POD, [pod], "6")  # a late list cannot resurrect it
    assert store.get(Kind.POD, "n/a") is None


def test_store_ignores_changes_the_loop_does_not_react_to() -> None:
    store = Store()
    node = {"metadata": {"name": "n", "resourceVersion": "1", "labels": {"a": "b"}},
            "status": {"conditions": [{"type": "Ready", "status": "True", "lastHeartbeatTime": "t1"}]}}
    assert store.apply_event(Kind.NODE, None, node)
    beat = json.loads(json.dumps(node))
    beat["metadata"]["resourceVersion"] = "2"
    beat["status"]["conditions"][0]["lastHeartbeatTime"] = "t2"
    assert not store.apply_event(Kind.NODE, "MODIFIED", beat)
    beat = json.loads(json.dumps(beat))
    beat["metadata"]["resourceVersion"] = "3"
    beat["metadata"]["labels"]["a"] = "c"
    assert store.apply_event(Kind.NODE, "MODIFIED", beat)


def test_quantities() -> None:
    assert parse_cpu("500m") == 500
    assert parse_cpu("96") == 96000
    assert parse_memory_mib("1Gi") == 1024
    assert parse_memory_mib("1152Gi") == 1152 * 1024


def test_mig_protocol_helpers() -> None:
    layouts = per_gpu([{"3g.40gb": 2}, {}, {"1g.10gb": 7}, {}])
    name = config_name(layouts)
    assert name is not None
    assert name.startswith("gpupool-")
    assert name == config_name(per_gpu([{"3g.40gb": 2}, {}, {"1g.10gb": 7}, {}]))
    assert config_name(per_gpu([{}, {}])) == "all-disabled"
    doc, changed = merged_document(None, {name: layouts})
    assert changed
    again, changed_again = merged_document(doc, {name: layouts})
    assert not changed_again
    assert again == doc
    node = MigNode("n", 4, None, None, None, None, None, None, None, None,
                   mig_allocatable=(("1g.10gb", 7), ("3g.40gb", 2)), whole_allocatable=2)
    assert node.allocatable_matches(layouts)
    assert not node.allocatable_matches(per_gpu([{"3g.40gb": 1}, {}, {"1g.10gb": 7}, {}]))


def test_snapshot_reads_layouts_holdings_and_prices() -> None:
    node = fake_gpu_node("a100-0000", "A100-80GB", gpus=2, mig_strategy="mixed",
                         layouts=[{"1g.10gb": 7}, {}])
    node["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
    pod = {
        "metadata": {"name": "p-m-0", "namespace": "ns", "labels": {names.LABEL_MANAGED_BY: names.MANAGED_BY},
                     "annotations": {names.ANN_DEMAND: "ns/p/m", names.ANN_NODE: "a100-0000",
                                     names.ANN_MIG_INSTANCE: "0:1g.10gb:3"}, "ownerReferences": [OWNER]},
        "spec": {"containers": [{"resources": {"limits": {"nvidia.com/mig-1g.10gb": "1"}}}]},
        "status": {"phase": "Pending"},
    }
    snap = build_snapshot([node], [pod], prices_from(default_config()), now=0.0, pools=POOLS)
    (n,) = snap.nodes
    assert n.product == "A100-80GB"
    assert n.mig_ready
    assert n.gpu_price == pytest.approx(3.43)
    assert n.gpus[1].layout is None
    assert len(n.gpus[0].layout or ()) == 7
    (h,) = n.holdings
    assert h.owner == "ns/p/m"
    assert h.instance == (0, "1g.10gb", 3)


def test_snapshot_reads_mig_memory_labels_as_gpupool_plan_does() -> None:
    node = fake_gpu_node("a100-0000", "A100-80GB", gpus=2, mig_strategy="mixed", layouts=[{"1g.10gb": 7}, {}])
    node["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
    node["metadata"]["labels"].update({"nvidia.com/mig-1g.10gb.memory": "9728",
                                       "nvidia.com/mig-1g.10gb.me.memory": "9700"})
    (n,) = build_snapshot([node], [], prices_from(default_config()), now=0.0).nodes
    assert dict(n.mig_memory) == {"1g.10gb": 9728, "1g.10gb+me": 9700}
    plain = node_from_object(node)
    assert (n.gpus, n.mig_memory, n.gpu_price, n.price_tier) == (plain.gpus, plain.mig_memory, plain.gpu_price,
                                                                  plain.price_tier)


def test_snapshot_counts_a_pending_target_and_leaves_cordoned_replicas_uncounted() -> None:
    node = fake_gpu_node("a100-0001", "A100-80GB", gpus=2, mig_strategy="mixed", layouts=[{}, {}])
    node["metadata"]["annotations"][names.ANN_MIG_LAYOUT_TARGET] = json.dumps([{"3g.40gb": 2}, {}])
    node["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
    snap = build_snapshot([node], [], prices_from(default_config()), now=0.0)
    assert not snap.nodes[0].mig_ready
    assert snap.nodes[0].gpus[0].layout is not None
    node["spec"]["unschedulable"] = True
    pod = {"metadata": {"name": "x", "namespace": "ns", "labels": {names.LABEL_MANAGED_BY: names.MANAGED_BY},
                        "annotations": {names.ANN_DEMAND: "ns/p/m", names.ANN_GPUS: "1"}, "ownerReferences": [OWNER]},
           "spec": {"nodeName": "a100-0001", "containers": [{"resources": {"limits": {"nvidia.com/gpu": "1"}}}]},
           "status": {"phase": "Running"}}
    snap = build_snapshot([node], [pod], prices_from(default_config()), now=0.0, pools=POOLS)
    assert not snap.nodes[0].schedulable
    assert snap.nodes[0].holdings[0].owner is None


def test_demands_and_plan_to_pod() -> None:
    pool = _pool(PoolBuilder("p").mig("m", "1g.10gb", replicas=2).cpu("c", cores=2))
    demands = demands_for([pool], MinReplicas())
    assert [(d.key, d.replicas) for d in demands] == [("ns/p/c", 1), ("ns/p/m", 2)]
    node = fake_gpu_node("a100-0000", "A100-80GB", gpus=1, mig_strategy="mixed", layouts=[{"1g.10gb": 7}])
    node["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
    cpu = {"metadata": {"name": "cpu-0"}, "status": {"allocatable": {"cpu": "8", "memory": "32Gi"},
                                                       "conditions": [{"type": "Ready", "status": "True"}]}}
    snap = build_snapshot([node, cpu], [], prices_from(default_config()), now=0.0)
    plan = solve(snap, demands)
    assert not plan.unplaced
    assert len(plan.assignments) == 3
    mig_assignment = next(a for a in plan.assignments if a.demand == "ns/p/m")
    pod = replica_pod(pool, "uid-1", pool.spec.model("m"), mig_assignment, 0, "NVIDIA-A100-SXM4-80GB", 3.43,
                      gated=True, settings=WorkerSettings())
    container = pod["spec"]["containers"][0]
    assert container["resources"]["limits"] == {"nvidia.com/mig-1g.10gb": "1"}
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["GPUPOOL_MIG_PROFILE"] == "1g.10gb"
    assert env["GPUPOOL_ACCELERATOR"] == "NVIDIA-A100-SXM4-80GB"
    assert float(env["GPUPOOL_DEVICE_SHARE"]) == pytest.approx(1 / 7)
    assert pod["spec"]["schedulingGates"] == [{"name": names.MIG_GATE}]
    assert pod["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    term = pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["nodeSelectorTerms"][0]["matchFields"][0]["values"] == [mig_assignment.node]


def test_status_reports_unplaceable_as_degraded() -> None:
    pool = _pool(PoolBuilder("p").gpu("llm", "H200-141GB"))
    plan = Plan(assignments=(), unplaced=(Unplaced("ns/p/llm", 1, "no shape in this cluster meets the model's needs"),))
    status = pool_status(pool, plan, {}, {}, {"ns/p/llm": 1}, None, NOW)
    conds = {c.type: c for c in status.conditions}
    assert conds["Degraded"].status == "True"
    assert conds["Degraded"].reason == ConditionReason.UNPLACEABLE
    assert conds["Placed"].status == "False"
    assert "no shape" in conds["Placed"].message
    assert status.models[0].message
    assert "unplaced" in status.models[0].message
    assert not status_differs(status.to_wire(), status)


def test_status_counts_ready_replicas_and_cost() -> None:
    pool = _pool(PoolBuilder("p").cpu("c", cores=2, replicas=1))
    a = Assignment("ns/p/c", 0, Shape(ShapeKind.CPU, cpu_millis=2000, memory_mib=1024), "cpu-0", cost=0.096)
    pod = {"metadata": {"name": "p-c-0"}, "spec": {"nodeName": "cpu-0"},
           "status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    status = pool_status(pool, Plan(assignments=(a,)), {"ns/p/c": [pod]}, {("ns/p/c", 0): "p-c-0"},
                         {"ns/p/c": 1}, None, NOW)
    assert status.ready_replicas == 1
    assert str(status.usd_per_hour) == "0.0960"
    assert {c.type: c.status for c in status.conditions}["Ready"] == "True"


def test_ready_replicas_on_kwok_fake_nodes_are_not_counted_as_serving() -> None:
    """A KWOK node (local/nodes.py: annotation kwok.x-k8s.io/node: fake, label type: kwok) makes its
    pods Ready though nothing runs there: readyReplicas counts them, servingReplicas does not."""
    from gpupool_operator.adapters.status import fake_nodes
    from gpupool_operator.local.nodes import build_node
    from gpupool_operator.local.spec import ClusterSpec

    spec = ClusterSpec.model_validate({"name": "c", "pools": [{"name": "cpu", "count": 1, "cpu": 4}]})
    kwok = build_node(spec, spec.pools[0], 0)
    real = {"metadata": {"name": "real-0", "labels": {"kubernetes.io/hostname": "real-0"}, "annotations": {}},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    nodes = {kwok["metadata"]["name"]: kwok, "real-0": real}
    assert fake_nodes(nodes) == {kwok["metadata"]["name"]}
    only_label = {"metadata": {"name": "l", "labels": {"type": "kwok"}}}
    assert fake_nodes({"l": only_label}) == {"l"}
    pool = _pool(PoolBuilder("p").cpu("c", cores=2, replicas=2))
    shape = Shape(ShapeKind.CPU, cpu_millis=2000, memory_mib=1024)
    plan = Plan(assignments=(Assignment("ns/p/c", 0, shape, kwok["metadata"]["name"], cost=0.1),
                             Assignment("ns/p/c", 1, shape, "real-0", cost=0.1)))
    ready = {"conditions": [{"type": "Ready", "status": "True"}]}
    pods = [{"metadata": {"name": "p-c-0"}, "spec": {"nodeName": kwok["metadata"]["name"]}, "status": ready},
            {"metadata": {"name": "p-c-1"}, "spec": {"nodeName": "real-0"}, "status": ready}]
    status = pool_status(pool, plan, {"ns/p/c": pods}, {("ns/p/c", 0): "p-c-0", ("ns/p/c", 1): "p-c-1"},
                         {"ns/p/c": 2}, None, NOW, fake=fake_nodes(nodes))
    assert (status.ready_replicas, status.serving_replicas) == (2, 1)
    assert (status.models[0].ready_replicas, status.models[0].serving_replicas) == (2, 1)
    wire = status.to_wire()
    assert (wire["readyReplicas"], wire["servingReplicas"]) == (2, 1)
    assert wire["models"][0]["servingReplicas"] == 1
    only_kwok = pool_status(pool, plan, {"ns/p/c": pods[:1]}, {("ns/p/c", 0): "p-c-0"}, {"ns/p/c": 2}, None, NOW,
                            fake=fake_nodes(nodes))
    assert (only_kwok.ready_replicas, only_kwok.serving_replicas) == (1, 0)


def test_a_config_without_relayouts_reports_what_needed_one() -> None:
    from gpupool_operator.core.plan import LayoutChange
    from gpupool_operator.core.relayout import MigRules, restrict

    shape = Shape(ShapeKind.MIG, "A100-80GB", gpus=1, profile="4g.40gb")
    new = Assignment("ns/p/m", 0, shape, "n1", gpus=(4,), start=0, cost=1.0)
    kept = Assignment("ns/p/m", 1, shape, "n1", gpus=(3,), start=0, cost=1.0, pod="ns/p-m-0")
    plan = Plan(assignments=(new, kept), layout_changes=(LayoutChange("n1", 4, None, (("4g.40gb", 0),)),))
    node = MigNode("n1", 8, None, None, None, None, None, None, None, None, (), 8)
    out, why = restrict(plan, {"n1": node}, (), MigRules(disabled=True), now=0.0)
    assert out.assignments == (kept,)
    assert not out.layout_changes
    assert [(u.demand, u.count) for u in out.unplaced] == [("ns/p/m", 1)]
    assert "mig.policy Disabled" in out.unplaced[0].reason
    assert "Disabled" in why["n1"]


def test_readiness_changes_need_no_new_plan() -> None:
    store = Store()
    pod = {"metadata": {"name": "a", "namespace": "n", "resourceVersion": "1"}, "spec": {"nodeName": "x"},
           "status": {"phase": "Pending"}}
    store.upsert(Kind.POD, pod)
    before = store.placement_version
    ready = json.loads(json.dumps(pod))
    ready["metadata"]["resourceVersion"] = "2"
    ready["status"] = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
    assert store.apply_event(Kind.POD, "MODIFIED", ready)  # the status changes: the loop looks again
    assert store.placement_version == before  # but the plan cannot: no new solve
    gone = json.loads(json.dumps(ready))
    gone["metadata"]["resourceVersion"] = "3"
    gone["status"]["phase"] = "Failed"
    store.apply_event(Kind.POD, "MODIFIED", gone)
    assert store.placement_version > before
