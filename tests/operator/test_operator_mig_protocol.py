"""NVIDIA's MIG protocol on the real control plane, with the operator as a real process.

The operator runs with a short MIG timeout and cool-down and with the mig-parted ConfigMap in the
GPU Operator's own namespace (a Helm-installed object it must only add entries to). The MIG
manager stand-in (tests/support) first never answers, then answers: the request times out, the
pool is Degraded, the waiting replica is stopped (nothing stays behind the gate), the label is
rolled back, and after the cool-down the node is asked again and the replica runs. Who wrote what
is read from the node's managedFields, which the API server keeps per field manager.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from operator_builders import PoolBuilder, fake_gpu_node
from operator_helpers import OperatorProcess, apply, condition, get_json, live_pods, pool, settled, wait_until
from support import mig_manager as stand_in_module
from support.mig_manager import MigManagerStandIn

from gpupool_operator.adapters.names import FIELD_MANAGER
from gpupool_operator.local.cluster import LocalCluster
from gpupool_operator.local.nodes import register_nodes

TIMEOUT = 90
MIG_TIMEOUT_S = 6
COOLDOWN_S = 12
GPU_OPERATOR_NAMESPACE = "gpu-operator"
CONFIG_MAP = "default-mig-parted-config"
HELM_LABELS = {"app.kubernetes.io/managed-by": "Helm", "app.kubernetes.io/part-of": "gpu-operator"}
HELM_ANNOTATIONS = {"meta.helm.sh/release-name": "gpu-operator", "meta.helm.sh/release-namespace": "gpu-operator"}
NVIDIA_CONFIGS = {"version": "v1", "mig-configs": {
    "all-disabled": [{"devices": "all", "mig-enabled": False}],
    "all-balanced": [{"devices": "all", "mig-enabled": True, "mig-devices": {"1g.5gb": 2, "2g.10gb": 1, "3g.20gb": 1}}],
}}


@pytest.fixture
def helm_config_map(control_plane: LocalCluster) -> Iterator[str]:
    control_plane.kubectl("create", "namespace", GPU_OPERATOR_NAMESPACE, check=False)
    body = {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": CONFIG_MAP, "namespace": GPU_OPERATOR_NAMESPACE, "labels": HELM_LABELS,
                         "annotations": HELM_ANNOTATIONS},
            "data": {"config.yaml": yaml.safe_dump(NVIDIA_CONFIGS)}}
    apply(control_plane, body)
    yield CONFIG_MAP
    control_plane.kubectl("delete", "configmap", CONFIG_MAP, "-n", GPU_OPERATOR_NAMESPACE, check=False)


@pytest.fixture
def slow_mig_manager(mig_manager: MigManagerStandIn, helm_config_map: str) -> Iterator[MigManagerStandIn]:
    """The session's stand-in, reading the GPU Operator's ConfigMap for the duration of a test."""
    saved = (mig_manager.namespace, mig_manager.config_map)
    mig_manager.namespace, mig_manager.config_map = GPU_OPERATOR_NAMESPACE, helm_config_map
    yield mig_manager
    mig_manager.namespace, mig_manager.config_map = saved
    mig_manager.silent_nodes.clear()


def _owners(node: dict[str, Any], label: str) -> set[str]:
    """The field managers whose managedFields entry holds ``metadata.labels[label]``."""
    key = f"f:{label}"
    return {m["manager"] for m in node["metadata"].get("managedFields") or []
            if key in (((m.get("fieldsV1") or {}).get("f:metadata") or {}).get("f:labels") or {})}


def test_a_relayout_that_times_out_degrades_the_pool_and_is_retried_after_the_cool_down(
    control_plane: LocalCluster, slow_mig_manager: MigManagerStandIn, namespace: str, tmp_path: Path
) -> None:
    node_name = f"a100s-mig-{uuid.uuid4().int % 10000:04d}"
    slow_mig_manager.silent_nodes.add(node_name)
    register_nodes(control_plane.api_client(), [fake_gpu_node(node_name, "A100-40GB", gpus=1,
                                                              mig_strategy="mixed")], progress=None)
    env = {"GPUPOOL_MIG_CONFIGMAP_NAMESPACE": GPU_OPERATOR_NAMESPACE, "GPUPOOL_MIG_CONFIGMAP": CONFIG_MAP,
           "GPUPOOL_MIG_TIMEOUT_SECONDS": str(MIG_TIMEOUT_S),
           "GPUPOOL_MIG_FAILURE_COOLDOWN_SECONDS": str(COOLDOWN_S)}
    try:
        with OperatorProcess(str(control_plane.kubeconfig), tmp_path / "op.log", "op-mig", env) as op:
            apply(control_plane, PoolBuilder("slices").mig("m", "3g.20gb").obj(), namespace)

            def asked() -> str | None:
                labels = get_json(control_plane, "node", node_name)["metadata"]["labels"]
                config = labels.get("nvidia.com/mig.config", "")
                return config if config.startswith("gpupool-") else None

            config = wait_until(asked, TIMEOUT, "the operator to set nvidia.com/mig.config")
            asked_at = time.monotonic()
            gated = wait_until(lambda: live_pods(control_plane, namespace), TIMEOUT, "the replica's pod")
            assert all(p["spec"].get("schedulingGates") for p in gated), gated  # it waits for the layout

            def degraded() -> dict[str, Any] | None:
                annotations = get_json(control_plane, "node", node_name)["metadata"]["annotations"]
                cond = condition(pool(control_plane, namespace, "slices"), "Degraded") or {}
                if "gpupool.io/mig-failed" in annotations and cond.get("status") == "True" \
                        and not live_pods(control_plane, namespace):
                    return cond
                return None

            cond = wait_until(degraded, TIMEOUT, "Degraded once the re-layout timed out, with no gated pod left")
            gave_up_after = time.monotonic() - asked_at
            assert cond["reason"] == "InsufficientCapacity", cond  # no MIG room on that node during the cool-down
            assert "3g.20gb" in cond["message"], cond
            assert f"retried after a cool-down: {node_name} after " in cond["message"], cond  # why a free GPU waits
            stopped = [e for e in get_json(control_plane, "events", "-n", namespace)["items"]
                       if e["reason"] == "MigReconfigureFailed" and e["type"] == "Warning"]
            assert stopped, "the waiting replica was stopped without a Warning on its pool"
            assert node_name in stopped[0]["message"]
            assert f"was not applied within {MIG_TIMEOUT_S}s" in stopped[0]["message"]
            node = get_json(control_plane, "node", node_name)
            assert node["metadata"]["labels"].get("nvidia.com/mig.config") != config  # rolled back
            assert "gpupool.io/mig-layout-target" not in node["metadata"]["annotations"]
            failed = node["metadata"]["annotations"]["gpupool.io/mig-failed"]
            assert f"was not applied within {MIG_TIMEOUT_S}s" in failed, failed
            events = [e for e in get_json(control_plane, "events", "-n", "default")["items"]
                      if e["involvedObject"].get("name") == node_name]
            assert any(e["reason"] == "MigReconfigureFailed" and e["type"] == "Warning" for e in events)

            slow_mig_manager.silent_nodes.discard(node_name)  # the MIG manager answers again
            wait_until(lambda: settled(control_plane, namespace, "slices", 1), TIMEOUT,
                       "the replica running after the cool-down's retry")
            retried_after = time.monotonic() - asked_at
            assert retried_after >= MIG_TIMEOUT_S + COOLDOWN_S - 2, retried_after  # not before the cool-down
            assert (condition(pool(control_plane, namespace, "slices"), "Degraded") or {})["status"] == "False"
            assert any(h[0] == node_name and h[2] == "success" for h in slow_mig_manager.history)
            (pod,) = live_pods(control_plane, namespace)
            assert pod["spec"]["nodeName"] == node_name
            assert not pod["spec"].get("schedulingGates")

            node = get_json(control_plane, "node", node_name)
            (layout,) = json.loads(node["metadata"]["annotations"]["gpupool.io/mig-layout"])
            assert layout.get("3g.20gb", 0) >= 1, layout
            # the protocol's two halves, by the API server's own record of who wrote which field
            node = get_json(control_plane, "node", node_name, "--show-managed-fields")
            assert _owners(node, "nvidia.com/mig.config.state") == {stand_in_module.FIELD_MANAGER}
            assert FIELD_MANAGER in _owners(node, "nvidia.com/mig.config")

            cm = get_json(control_plane, "configmap", CONFIG_MAP, "-n", GPU_OPERATOR_NAMESPACE)
            assert HELM_LABELS.items() <= cm["metadata"]["labels"].items()  # helm upgrade still owns it
            assert HELM_ANNOTATIONS.items() <= cm["metadata"]["annotations"].items()
            doc = yaml.safe_load(cm["data"]["config.yaml"])
            assert NVIDIA_CONFIGS["mig-configs"].items() <= doc["mig-configs"].items()  # NVIDIA's entries kept
            assert node["metadata"]["labels"]["nvidia.com/mig.config"] in doc["mig-configs"]
            assert "acquired leadership" in op.log()
        print(f"gave up {gave_up_after:.1f}s after the request (timeout {MIG_TIMEOUT_S}s); "
              f"running {retried_after:.1f}s after it (cool-down {COOLDOWN_S}s)")
    finally:
        control_plane.kubectl("delete", "inferencepools", "--all", "-n", namespace, "--timeout=60s", check=False)
        control_plane.kubectl("delete", "node", node_name, "--ignore-not-found", check=False)
