"""A model's tolerations on the real control plane: the plan uses a tainted node only for a model
that tolerates its taint, the replica pod carries the toleration, and kube-scheduler agrees (the pod
runs where the plan put it, with no Unschedulable event); a model that does not tolerate it stays
unplaced with the reason, and no pod of it waits Pending (issue 16 item 5)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from operator_builders import PoolBuilder
from operator_helpers import apply, condition, get_json, live_pods, pool, running, wait_until

from gpupool_operator.adapters import names
from gpupool_operator.local.cluster import LocalCluster
from gpupool_operator.local.nodes import build_node, register_nodes
from gpupool_operator.local.spec import ClusterSpec

TIMEOUT = 90
NODE = "h200-dedicated-0000"
TAINT = {"key": "dedicated", "value": "research", "effect": "NoSchedule"}


@pytest.fixture
def dedicated_node(control_plane: LocalCluster) -> Iterator[str]:
    """An H200 node (no other node has H200s) tainted for one team, besides NVIDIA's GPU taint."""
    spec = ClusterSpec.model_validate({"name": "tests", "pools": [{
        "name": "h200-dedicated", "count": 1, "gpu": "H200-141GB", "gpusPerNode": 2, "cpu": 64, "memoryGiB": 512,
        "taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}, TAINT]}]})
    register_nodes(control_plane.api_client(), [build_node(spec, spec.pools[0], 0)], progress=None)
    try:
        yield NODE
    finally:
        control_plane.kubectl("delete", "node", NODE, "--ignore-not-found", check=False)


def _h200(name: str, tolerations: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    obj = PoolBuilder(name).gpu("m", "H200-141GB", replicas=1, memory="100Gi").obj()
    if tolerations is not None:
        obj["spec"]["models"][0]["tolerations"] = tolerations
    return obj


def test_only_a_model_that_tolerates_the_taint_runs_on_the_tainted_node(
    control_plane: LocalCluster, operator: Any, namespace: str, dedicated_node: str
) -> None:
    apply(control_plane, _h200("outsider"), namespace)
    apply(control_plane, _h200("research", [{"key": "dedicated", "operator": "Equal", "value": "research",
                                             "effect": "NoSchedule"}]), namespace)

    def research_running() -> dict[str, Any] | None:
        mine = [p for p in live_pods(control_plane, namespace)
                if p["metadata"]["labels"].get(names.LABEL_POOL) == "research"]
        return mine[0] if len(mine) == 1 and running(mine[0]) else None

    pod = wait_until(research_running, TIMEOUT, "the tolerating model's replica Running")
    assert pod["spec"]["nodeName"] == dedicated_node == pod["metadata"]["annotations"][names.ANN_NODE]
    tolerations = pod["spec"]["tolerations"]
    assert {"key": "dedicated", "operator": "Equal", "value": "research", "effect": "NoSchedule"} in tolerations
    assert any(t.get("key") == "nvidia.com/gpu" for t in tolerations)  # the operator's own, for GPU pods

    def outsider_refused() -> dict[str, Any] | None:
        cond = condition(pool(control_plane, namespace, "outsider"), "Placed") or {}
        # the core's code is NodesTainted; the status maps unplaced reasons to its own set for now
        refused = cond.get("reason") in ("NodesTainted", "InsufficientCapacity")
        return cond if cond.get("status") == "False" and refused else None

    cond = wait_until(outsider_refused, TIMEOUT, "the other model unplaced because of the taint")
    assert "dedicated=research:NoSchedule" in cond["message"]
    outsider = [p for p in live_pods(control_plane, namespace)
                if p["metadata"]["labels"].get(names.LABEL_POOL) == "outsider"]
    assert outsider == []  # never a pod left Pending where the scheduler would refuse it
    events = get_json(control_plane, "events", "-n", namespace)["items"]
    assert not [e["message"] for e in events if e["reason"] in ("Unschedulable", "FailedScheduling")]
