"""The MIG re-layout counter the dashboard's "MIG re-layouts" panel reads, on a real re-layout.

The operator runs in this process (the ``operator`` fixture), so its Prometheus registry is this
process's: the counter is read exactly as /metrics would serve it.
"""

from __future__ import annotations

from typing import Any

from operator_builders import PoolBuilder, fake_gpu_node
from operator_helpers import apply, settled, wait_until
from prometheus_client import REGISTRY
from support.mig_manager import MigManagerStandIn

from gpupool_operator.local.cluster import LocalCluster
from gpupool_operator.local.nodes import register_nodes


def _steps() -> dict[str, float]:
    return {step: REGISTRY.get_sample_value("gpupool_mig_relayouts_total", {"step": step}) or 0.0
            for step in ("requested", "applied", "abandoned")}


def test_a_relayout_is_counted_requested_then_applied(
    control_plane: LocalCluster, operator: Any, mig_manager: MigManagerStandIn, namespace: str
) -> None:
    node_name = "nvlmetrics-mig-0000"  # its own product's profile: the plan has one place to go
    register_nodes(control_plane.api_client(), [fake_gpu_node(node_name, "H100-NVL-94GB", gpus=1,
                                                              mig_strategy="mixed")], progress=None)
    before = _steps()
    try:
        apply(control_plane, PoolBuilder("counted").mig("m", "1g.12gb", replicas=1).obj(), namespace)
        wait_until(lambda: settled(control_plane, namespace, "counted", 1), 60, "the MIG replica running")
        after = _steps()
        assert after["requested"] - before["requested"] >= 1, (before, after)
        assert after["applied"] - before["applied"] >= 1, (before, after)
        assert after["abandoned"] == before["abandoned"], (before, after)
    finally:
        control_plane.kubectl("delete", "inferencepools", "--all", "-n", namespace, "--timeout=60s", check=False)
        control_plane.kubectl("delete", "node", node_name, "--ignore-not-found", check=False)
