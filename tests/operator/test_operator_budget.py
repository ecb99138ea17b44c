"""A pool's ``budget.maxUsdPerHour`` on the real control plane.

Until the autoscaler lands the operator wants ``minReplicas`` of every model, which a budget never
removes; so this module runs the operator's reconciler in-process (no kopf operator: the module
does not use the ``operator`` fixture) with a replica policy that wants more than ``minReplicas``,
the seam the autoscaler will plug into.
"""

from __future__ import annotations

import asyncio

from operator_builders import PoolBuilder
from operator_helpers import apply, condition, get_json, live_pods, pool, wait_until

from gpupool_operator.adapters.demands import MinReplicas
from gpupool_operator.adapters.kube import Kube, load_client
from gpupool_operator.adapters.loop import PlacementLoop
from gpupool_operator.adapters.settings import settings_from_env
from gpupool_operator.adapters.store import Store
from gpupool_operator.local.cluster import LocalCluster

TIMEOUT = 60


async def _one_cycle(cluster: LocalCluster, policy: MinReplicas) -> None:
    kube = Kube(load_client(cluster.kubeconfig))
    try:
        reconciler = PlacementLoop(kube, Store(), settings_from_env({"GPUPOOL_NAMESPACE": "gpupool-system"}), policy)
        await reconciler.seed()
        await reconciler.cycle()
    finally:
        kube.close()


def test_a_pool_with_a_budget_gets_only_what_fits(control_plane: LocalCluster, namespace: str) -> None:
    # 1-core CPU replicas cost $0.048/h each (the default GPUPoolConfig): $0.10/h pays for two.
    body = PoolBuilder("capped").cpu("m", cores=1, replicas=1).obj()
    body["spec"]["budget"] = {"maxUsdPerHour": "0.10"}
    apply(control_plane, body, namespace)
    asyncio.run(_one_cycle(control_plane, MinReplicas({f"{namespace}/capped/m": 4})))

    wait_until(lambda: condition(pool(control_plane, namespace, "capped"), "Degraded") is not None,
               TIMEOUT, "status written")
    obj = pool(control_plane, namespace, "capped")
    assert len(live_pods(control_plane, namespace)) == 2
    degraded, placed = condition(obj, "Degraded"), condition(obj, "Placed")
    assert degraded is not None
    assert placed is not None
    assert degraded["status"] == "True"
    assert placed["status"] == "False"
    assert degraded["reason"] == placed["reason"] == "BudgetExceeded"
    for cond in (degraded, placed):
        assert "2 replica(s) unplaced" in cond["message"], cond
        assert "budget.maxUsdPerHour" in cond["message"], cond
        assert "$0.10/h" in cond["message"], cond
    # The pool's Event says the same reason as its conditions (the solver's code), not a generic one.
    events = [e for e in get_json(control_plane, "events", "-n", namespace)["items"]
              if e["involvedObject"].get("kind") == "InferencePool" and e["involvedObject"]["name"] == "capped"]
    unplaced = [e for e in events if "replica(s) unplaced" in e["message"]]
    assert unplaced, events
    assert {(e["reason"], e["type"]) for e in unplaced} == {("BudgetExceeded", "Warning")}, unplaced
    assert "budget.maxUsdPerHour" in unplaced[0]["message"]
