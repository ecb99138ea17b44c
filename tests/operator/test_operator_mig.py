"""MIG re-layout through NVIDIA's label protocol, against the MIG manager stand-in (tests/support).

Each test brings its own MIG-capable node of a product no other test uses, so the plan has exactly
one place to go and the shared cluster's layouts stay as they are.
"""

from __future__ import annotations

import json
import time
from typing import Any

from operator_builders import PoolBuilder, fake_gpu_node
from operator_helpers import PodVersions, apply, condition, get_json, live_pods, pool, settled, wait_until
from support.mig_manager import MigManagerStandIn

from gpupool_operator.local.cluster import LocalCluster
from gpupool_operator.local.nodes import register_nodes

TIMEOUT = 60


def test_relayout_keeps_replicas_gated_until_the_layout_is_applied(
    control_plane: LocalCluster, operator: Any, mig_manager: MigManagerStandIn, namespace: str
) -> None:
    node_name = "nvl-mig-0000"
    register_nodes(control_plane.api_client(), [fake_gpu_node(node_name, "H100-NVL-94GB", gpus=2,
                                                              mig_strategy="mixed")], progress=None)
    try:
        with PodVersions(control_plane, namespace) as watched:
            apply(control_plane, PoolBuilder("slices").mig("m", "2g.24gb", replicas=2).obj(), namespace)
            deadline = time.monotonic() + TIMEOUT
            while time.monotonic() < deadline and not settled(control_plane, namespace, "slices", 2):
                seen = live_pods(control_plane, namespace)  # pods first: a pod bound now was bound after
                node = get_json(control_plane, "node", node_name)  # success, so this read shows success
                labels = node["metadata"]["labels"]
                for pod in seen:
                    if pod["spec"].get("nodeName"):  # bound only after success, with the slices in allocatable
                        assert labels.get("nvidia.com/mig.config.state") == "success", labels
                        assert int(node["status"]["allocatable"].get("nvidia.com/mig-2g.24gb", "0")) >= 1
                time.sleep(0.1)
        assert settled(control_plane, namespace, "slices", 2)
        gated = [v for v in watched.versions if (v["spec"].get("schedulingGates") or [])]
        assert gated, "replicas were never held behind the scheduling gate"
        assert not any(v["spec"].get("nodeName") for v in gated)

        node = get_json(control_plane, "node", node_name)
        ann = node["metadata"]["annotations"]
        layout = json.loads(ann["gpupool.io/mig-layout"])
        assert sum(g.get("2g.24gb", 0) for g in layout) >= 2
        assert "gpupool.io/mig-layout-target" not in ann
        assert node["metadata"]["labels"]["nvidia.com/mig.config"].startswith("gpupool-")
        assert (node_name, node["metadata"]["labels"]["nvidia.com/mig.config"], "success") in mig_manager.history
        for pod in live_pods(control_plane, namespace):
            assert pod["spec"]["nodeName"] == node_name
            assert "gpupool.io/mig-instance" in pod["metadata"]["annotations"]
        cm = get_json(control_plane, "configmap", "gpupool-mig-parted-config", "-n", "gpupool-system")
        assert node["metadata"]["labels"]["nvidia.com/mig.config"] in cm["data"]["config.yaml"]
        reasons = {e["reason"] for e in get_json(control_plane, "events", "-n", "default")["items"]
                   if e["involvedObject"].get("name") == node_name}
        assert {"MigReconfigure", "MigReconfigured"} <= reasons
    finally:
        control_plane.kubectl("delete", "inferencepools", "--all", "-n", namespace, "--timeout=60s", check=False)
        control_plane.kubectl("delete", "node", node_name, "--ignore-not-found", check=False)


def test_failed_relayout_releases_the_replicas_and_degrades_the_pool(
    control_plane: LocalCluster, operator: Any, mig_manager: MigManagerStandIn, namespace: str
) -> None:
    node_name = "h200-mig-0000"
    mig_manager.fail_nodes.add(node_name)
    register_nodes(control_plane.api_client(), [fake_gpu_node(node_name, "H200-141GB", gpus=1,
                                                              mig_strategy="mixed")], progress=None)
    try:
        apply(control_plane, PoolBuilder("doomed").mig("m", "3g.71gb").obj(), namespace)

        # The pool is Degraded for a moment before the operator's cache has seen the new node (nowhere
        # to place yet), so wait for the failure itself first; only the Degraded that follows counts.
        def failed() -> tuple[str, str, str] | None:
            return next((h for h in list(mig_manager.history) if h[0] == node_name and h[2] == "failed"), None)

        wait_until(failed, TIMEOUT, "the MIG manager to report the re-layout as failed")

        def degraded() -> dict[str, Any] | None:
            cond = condition(pool(control_plane, namespace, "doomed"), "Degraded")
            annotations = get_json(control_plane, "node", node_name)["metadata"]["annotations"]
            if "gpupool.io/mig-failed" not in annotations:
                return None
            return cond if cond and cond["status"] == "True" and not live_pods(control_plane, namespace) else None

        cond = wait_until(degraded, TIMEOUT, "Degraded after the MIG manager failed")
        assert cond["reason"] == "InsufficientCapacity"
        node = get_json(control_plane, "node", node_name)
        failed_config = node["metadata"]["annotations"]["gpupool.io/mig-failed"].split(" ")[1]
        assert failed_config.startswith("gpupool-")
        assert (node_name, failed_config, "failed") in mig_manager.history
        assert "gpupool.io/mig-layout-target" not in node["metadata"]["annotations"]
        # the label is rolled back to what the node had, so a retry after the cool-down is a change again
        assert node["metadata"]["labels"]["nvidia.com/mig.config"] != failed_config
        events = [e for e in get_json(control_plane, "events", "-n", "default")["items"]
                  if e["involvedObject"].get("name") == node_name]
        assert any(e["reason"] == "MigReconfigureFailed" and e["type"] == "Warning" for e in events)
    finally:
        mig_manager.fail_nodes.discard(node_name)
        control_plane.kubectl("delete", "inferencepools", "--all", "-n", namespace, "--timeout=60s", check=False)
        control_plane.kubectl("delete", "node", node_name, "--ignore-not-found", check=False)


def test_a_gpu_holding_a_replica_is_not_relaid_until_it_is_free_and_nothing_waits_gated(
    control_plane: LocalCluster, operator: Any, mig_manager: MigManagerStandIn, namespace: str
) -> None:
    """One A100-40GB laid out as two 3g.20gb slices, one running a replica. A pool that needs the
    whole GPU as 7g.40gb cannot have it while that replica runs (no other node has the slice to
    move it to): the plan does not re-lay it, the pool says why in status, the label stays, and no
    pod of the waiting pool is made, so none can sit behind the gate. Once the replica's pool is deleted the
    GPU is re-laid and the waiting pool runs."""
    node_name = "a100s-hold-0000"
    register_nodes(control_plane.api_client(), [fake_gpu_node(node_name, "A100-40GB", gpus=1, mig_strategy="mixed",
                                                              layouts=[{"3g.20gb": 2}])], progress=None)
    try:
        apply(control_plane, PoolBuilder("holder").mig("m", "3g.20gb").obj(), namespace)
        wait_until(lambda: settled(control_plane, namespace, "holder", 1), TIMEOUT, "the holder's replica running")
        config_before = get_json(control_plane, "node", node_name)["metadata"]["labels"].get("nvidia.com/mig.config")
        with PodVersions(control_plane, namespace) as watched:
            apply(control_plane, PoolBuilder("whole").mig("w", "7g.40gb", memory="30Gi").obj(), namespace)

            def waiting() -> dict[str, Any] | None:
                cond = condition(pool(control_plane, namespace, "whole"), "Degraded") or {}
                return cond if cond.get("status") == "True" else None

            cond = wait_until(waiting, TIMEOUT, "the waiting pool Degraded with the reason")
            assert cond["reason"] == "InsufficientCapacity", cond  # the GPU is taken: no re-layout under a replica
            assert "7g.40gb" in cond["message"], cond
            time.sleep(2)  # a few cycles: still nothing written for it
            node = get_json(control_plane, "node", node_name)
            assert node["metadata"]["labels"].get("nvidia.com/mig.config") == config_before
            assert "gpupool.io/mig-layout-target" not in node["metadata"]["annotations"]
            assert not [p for p in live_pods(control_plane, namespace)
                        if p["metadata"]["labels"].get("gpupool.io/inferencepool") == "whole"]

            seen_before = list(watched.versions)
            control_plane.kubectl("delete", "inferencepool", "holder", "-n", namespace, "--timeout=60s")
            wait_until(lambda: settled(control_plane, namespace, "whole", 1), TIMEOUT,
                       "the whole-GPU replica running once the GPU was free and re-laid")
        (pod,) = live_pods(control_plane, namespace)
        assert pod["spec"]["nodeName"] == node_name
        annotations = get_json(control_plane, "node", node_name)["metadata"]["annotations"]
        assert json.loads(annotations["gpupool.io/mig-layout"]) == [{"7g.40gb": 1}]
        # no pod of the waiting pool existed, gated or not, while the GPU held the other replica
        assert not [v for v in seen_before if v["metadata"]["labels"].get("gpupool.io/inferencepool") == "whole"]
    finally:
        control_plane.kubectl("delete", "inferencepools", "--all", "-n", namespace, "--timeout=60s", check=False)
        control_plane.kubectl("delete", "node", node_name, "--ignore-not-found", check=False)
