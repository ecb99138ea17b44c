"""The operator honours a pool's ``placementStrategy`` on the real control plane."""

from __future__ import annotations

from typing import Any

from operator_builders import PoolBuilder
from operator_helpers import apply, live_pods, settled, wait_until

from gpupool_operator.local.cluster import LocalCluster

TIMEOUT = 60


def test_spread_puts_a_models_replicas_on_distinct_nodes(
    control_plane: LocalCluster, operator: Any, namespace: str
) -> None:
    # Cost would bin-pack three 1-core replicas onto one CPU node; Spread uses the three CPU nodes.
    body = PoolBuilder("spread").cpu("m", cores=1, replicas=3).obj()
    body["spec"]["placementStrategy"] = "Spread"
    apply(control_plane, body, namespace)
    wait_until(lambda: settled(control_plane, namespace, "spread", 3), TIMEOUT, "3 replicas ready")
    nodes = [p["spec"]["nodeName"] for p in live_pods(control_plane, namespace)]
    assert len(nodes) == 3
    assert len(set(nodes)) == 3, nodes
