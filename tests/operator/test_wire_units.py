"""Adapter tests with plain data (no cluster) for what the report, status, snapshot and pod
stages carry through from the inventory and the solver."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from operator_builders import PoolBuilder, fake_gpu_node

from gpupool_operator.adapters import names
from gpupool_operator.adapters.act import Actuator
from gpupool_operator.adapters.demands import MinReplicas, demands_for, parse_pool, prices_from
from gpupool_operator.adapters.events import EventRecorder
from gpupool_operator.adapters.inventory import pod_claim
from gpupool_operator.adapters.observe import Observation, Observer
from gpupool_operator.adapters.report import Reporter
from gpupool_operator.adapters.snapshot import build_snapshot
from gpupool_operator.adapters.status import pool_status, unplaced_reason
from gpupool_operator.adapters.store import Kind, Store
from gpupool_operator.adapters.workloads import WorkerSettings, replica_pod
from gpupool_operator.api import InferencePool, default_config
from gpupool_operator.core.demand import Shape, ShapeKind
from gpupool_operator.core.plan import Assignment, Unplaced
from gpupool_operator.core.reasons import UnplacedCode
from gpupool_operator.core.solver import solve
from gpupool_worker.engine.emulated import EmulatedDevice

NOW = datetime(2026, 1, 1, tzinfo=UTC)


async def _inline(func: Any, *args: Any) -> Any:
    return func(*args)


async def _observe(store: Store, observer: Observer) -> Observation:
    return await observer.observe(0.0, _inline)


_VERSIONS = iter(range(10, 10_000))


def _node(allocatable_gpus: int) -> dict[str, Any]:
    node = fake_gpu_node("h100-0000", "H100-80GB", gpus=2)
    node["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
    node["status"]["allocatable"]["nvidia.com/gpu"] = str(allocatable_gpus)
    node["metadata"]["resourceVersion"] = str(next(_VERSIONS))
    node["metadata"]["uid"] = "node-uid"
    return node


async def test_a_capacity_conflict_is_one_warning_on_the_node_per_change() -> None:
    store = Store()
    observer = Observer(store, MinReplicas(), 1800.0)
    events = EventRecorder(None)  # type: ignore[arg-type]  # nothing is posted here: take() shows the queue
    reporter = Reporter(None, store, events)  # type: ignore[arg-type]

    async def warnings(allocatable: int) -> list[tuple[Any, str, str, str]]:
        store.apply_event(Kind.NODE, "MODIFIED", _node(allocatable))
        seen = await _observe(store, observer)
        reporter._warn(seen)
        return [e for e in events.take() if e[2] == "CapacityConflict"]

    first = await warnings(1)
    assert len(first) == 1
    involved, type_, _, message = first[0]
    assert (involved["kind"], involved["name"], type_) == ("Node", "h100-0000", "Warning")
    assert "allocatable nvidia.com/gpu offers 1" in message, message
    assert await warnings(1) == []  # the same conflict next cycle: told once
    assert await warnings(2) == []  # resolved: nothing to tell
    again = await warnings(0)  # a new conflict: told again
    assert len(again) == 1
    assert "offers 0" in again[0][3]


def _parsed_pool(builder: PoolBuilder) -> InferencePool:
    body = builder.obj()
    body["metadata"].update(namespace="ns", uid="uid-1", generation=1)
    parsed = parse_pool(body)
    assert parsed.pool is not None, parsed.error
    return parsed.pool


def test_condition_reasons_are_the_solvers_codes_not_guesses_from_its_text() -> None:
    pool = _parsed_pool(PoolBuilder("p").gpu("llm", "H100-80GB"))
    demands = demands_for([pool], MinReplicas())
    node = fake_gpu_node("h100-0000", "H100-80GB", gpus=2)
    node["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
    node["spec"]["taints"] = [*node["spec"].get("taints", []),
                              {"key": "dedicated", "value": "ml", "effect": "NoSchedule"}]
    plan = solve(build_snapshot([node], [], prices_from(default_config()), now=0.0), demands)
    (u,) = plan.unplaced
    assert u.code == UnplacedCode.TAINTED
    status = pool_status(pool, plan, {}, {}, {"ns/p/llm": 1}, None, NOW)
    conds = {c.type: c for c in status.conditions}
    assert conds["Placed"].reason == "NodesTainted"
    assert conds["Degraded"].reason == "NodesTainted"
    assert "dedicated=ml:NoSchedule" in conds["Placed"].message

    for code, reason in [(UnplacedCode.SPOT_ONLY, "SpotOnlyCapacity"),
                         (UnplacedCode.MIG_RELAYOUT_FORBIDDEN, "MigRelayoutForbidden"),
                         (UnplacedCode.INSUFFICIENT_CAPACITY, "InsufficientCapacity"),
                         (UnplacedCode.BUDGET_EXCEEDED, "BudgetExceeded"),
                         (UnplacedCode.NO_NODES, "NoNodes"),
                         (UnplacedCode.NO_ACCEPTED_SHAPE, "Unplaceable")]:
        # the text says something else on purpose: only the code decides
        assert unplaced_reason(Unplaced("ns/p/llm", 1, "budget.maxUsdPerHour no free capacity", code=code)) == reason


def test_a_layout_target_keeps_what_allocatable_withholds() -> None:
    node = fake_gpu_node("a100-0000", "A100-80GB", gpus=2, mig_strategy="mixed", layouts=[{}, {"1g.10gb": 7}])
    node["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
    node["status"]["allocatable"]["nvidia.com/gpu"] = "0"  # the whole GPU 0 is not offered
    node["status"]["allocatable"]["nvidia.com/mig-1g.10gb"] = "5"  # two of GPU 1's seven slices are not
    plain = build_snapshot([node], [], prices_from(default_config()), now=0.0).nodes[0]
    assert plain.gpus[0].unusable
    assert len(plain.gpus[1].withheld) == 2
    # The operator asked for GPU 0 to be re-laid and GPU 1 to stay as it is.
    node["metadata"]["annotations"][names.ANN_MIG_LAYOUT_TARGET] = json.dumps([{"3g.40gb": 2}, {"1g.10gb": 7}])
    target = build_snapshot([node], [], prices_from(default_config()), now=0.0).nodes[0]
    assert not target.mig_ready
    assert target.gpus[0].layout is not None
    assert {p for p, _ in target.gpus[0].layout} == {"3g.40gb"}
    assert target.gpus[0].unusable == plain.gpus[0].unusable  # still not offered: allocatable wins
    assert target.gpus[1].withheld == plain.gpus[1].withheld
    assert target.capacity_conflicts == plain.capacity_conflicts


async def test_replica_pods_carry_the_shapes_throughput_and_say_when_the_engine_is_emulated() -> None:
    body = PoolBuilder("p").mig("m", "1g.10gb").obj()
    body["spec"]["models"][0]["hardware"] = [
        {"type": "MIG", "mig": {"profile": "1g.10gb"}, "inferencesPerSecond": "120"},
        {"type": "GPU", "gpu": {"product": "A100-80GB"}, "inferencesPerSecond": "900"},
    ]
    body["metadata"].update(namespace="ns", uid="uid-1", generation=1, resourceVersion="1")
    node = fake_gpu_node("a100-0000", "A100-80GB", gpus=1, mig_strategy="mixed", layouts=[{"1g.10gb": 7}])
    node["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
    node["metadata"]["labels"][names.LABEL_EMULATED] = "true"  # as the local cluster's real nodes are labelled
    node["metadata"]["resourceVersion"] = "1"
    store = Store()
    store.apply_event(Kind.POOL, "ADDED", body)
    store.apply_event(Kind.NODE, "ADDED", node)
    seen = await _observe(store, Observer(store, MinReplicas(), 1800.0))
    plan = solve(seen.snapshot, list(seen.demands))
    (a,) = plan.assignments
    assert a.shape.kind is ShapeKind.MIG
    actuator = Actuator(None, store, EventRecorder(None), None, WorkerSettings())  # type: ignore[arg-type]
    ips = actuator._throughput(seen, a)
    assert ips == 120.0
    entry = seen.pools["ns/p"]
    assert entry.pool is not None
    model = entry.pool.spec.model("m")
    pod = replica_pod(entry.pool, "uid-1", model, a, 0, "NVIDIA-A100-SXM4-80GB", 3.43, gated=False,
                      settings=WorkerSettings(), inferences_per_second=ips, emulated=True)
    env = {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"]}
    assert env["GPUPOOL_INFERENCES_PER_SECOND"] == "120"
    assert pod["metadata"]["annotations"][names.ANN_ENGINE] == "emulated"
    # what the worker makes of it, with the variables the emulated device plugin adds
    device = EmulatedDevice.from_env({**env, "GPUPOOL_EMULATED": "1", "GPUPOOL_EMULATED_PRODUCT": "A100-80GB"})
    assert device is not None
    assert device.declared
    assert device.throughput == 120.0
    # a real node: no annotation (the worker's gpupool_engine_emulated metric and log say what runs)
    real = replica_pod(entry.pool, "uid-1", model, a, 0, "NVIDIA-A100-SXM4-80GB", 3.43, gated=False,
                       settings=WorkerSettings(), inferences_per_second=ips, emulated=False)
    assert names.ANN_ENGINE not in real["metadata"]["annotations"]


def test_the_pool_label_the_operator_writes_is_the_one_the_inventory_reads() -> None:
    pool = _parsed_pool(PoolBuilder("p").gpu("m", "H100-80GB"))
    a = Assignment("ns/p/m", 0, Shape(ShapeKind.GPU, "H100-80GB", gpus=1), "h100-0000", gpus=(1,))
    pod = replica_pod(pool, "uid-1", pool.spec.model("m"), a, 0, "NVIDIA-H100-80GB-HBM3", 2.0, gated=False,
                      settings=WorkerSettings())
    assert pod["metadata"]["labels"][names.LABEL_POOL] == "p"
    # without the operator's demand annotation, only the pool and model labels say whose it is
    del pod["metadata"]["annotations"][names.ANN_DEMAND]
    pod["spec"]["nodeName"] = "h100-0000"
    assert pod_claim(pod).owner == "ns/p/m"
