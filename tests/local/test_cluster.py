"""The local cluster is real: kube-scheduler binds by extended resources, kubectl works, teardown is clean."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from gpupool_operator.local import cluster as cluster_mod
from gpupool_operator.local.cluster import COMPONENTS, LocalCluster
from gpupool_operator.local.spec import ClusterSpec

NS = "default"
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def _pod_spec(resources: dict[str, str]) -> dict[str, Any]:
    return {
        "tolerations": [GPU_TOLERATION],
        "containers": [
            {
                "name": "worker",
                "image": "registry.k8s.io/pause:3.10",
                "resources": {"limits": resources, "requests": resources},
            }
        ],
    }


@pytest.fixture
def core(cluster: LocalCluster) -> Iterator[client.CoreV1Api]:
    api = cluster.api_client()
    try:
        yield client.CoreV1Api(api)
    finally:
        api.close()  # type: ignore[attr-defined]


def _wait(predicate: Any, timeout_s: float = 60, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def _create_pods(core: client.CoreV1Api, prefix: str, n: int, resources: dict[str, str]) -> list[str]:
    names = [f"{prefix}-{i}" for i in range(n)]
    for name in names:
        core.create_namespaced_pod(
            NS,
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "labels": {"test": prefix}},
                "spec": _pod_spec(resources),
            },
        )
    return names


def _delete_pods(core: client.CoreV1Api, prefix: str) -> None:
    core.delete_collection_namespaced_pod(NS, label_selector=f"test={prefix}", grace_period_seconds=0)


def test_kubectl_talks_to_a_real_v1_36_api_server(cluster: LocalCluster, small_spec: ClusterSpec) -> None:
    version = json.loads(cluster.kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"] == "v1.36.3"
    names = cluster.kubectl("get", "nodes", "-o", "name").stdout.split()
    assert len(names) == small_spec.node_count
    # RBAC is enforced: an anonymous ServiceAccount may not list nodes.
    denied = cluster.kubectl(
        "auth", "can-i", "list", "nodes", "--as=system:serviceaccount:default:default", check=False
    )
    assert denied.stdout.strip() == "no"
    assert cluster.kubectl("auth", "can-i", "list", "nodes").stdout.strip() == "yes"


def test_deployment_requesting_a_gpu_runs_on_a_gpu_node(cluster: LocalCluster, core: client.CoreV1Api) -> None:
    apps = client.AppsV1Api(core.api_client)
    labels = {"app": "one-gpu"}
    body = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "one-gpu"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": _pod_spec({"nvidia.com/gpu": "1"})},
        },
    }
    apps.create_namespaced_deployment(NS, body)
    try:

        def running() -> Any:
            pods = core.list_namespaced_pod(NS, label_selector="app=one-gpu").items
            return [p for p in pods if p.status.phase == "Running"]

        (pod,) = _wait(running, what="the Deployment's pod to be Running")
        node = core.read_node(pod.spec.node_name)
        assert int(node.status.allocatable["nvidia.com/gpu"]) >= 1
        assert node.metadata.labels["nvidia.com/gpu.product"].startswith("NVIDIA-")
        ready = _wait(
            lambda: apps.read_namespaced_deployment("one-gpu", NS).status.ready_replicas,
            what="the Deployment to report ready",
        )
        assert ready == 1
    finally:
        apps.delete_namespaced_deployment("one-gpu", NS, propagation_policy="Foreground")


def test_mig_pods_land_only_on_nodes_advertising_the_profile(cluster: LocalCluster, core: client.CoreV1Api) -> None:
    resource = "nvidia.com/mig-3g.40gb"
    advertising = {n.metadata.name for n in core.list_node().items if int(n.status.allocatable.get(resource, "0")) > 0}
    assert advertising, "the example cluster must advertise 3g.40gb slices"
    names = _create_pods(core, "mig3g", 6, {resource: "1"})
    try:

        def bound() -> Any:
            pods = [core.read_namespaced_pod(n, NS) for n in names]
            return pods if all(p.status.phase == "Running" for p in pods) else None

        pods = _wait(bound, what="MIG pods Running")
        assert {p.spec.node_name for p in pods} <= advertising
    finally:
        _delete_pods(core, "mig3g")


def test_pod_bigger_than_any_node_stays_pending_with_the_schedulers_reason(core: client.CoreV1Api) -> None:
    (name,) = _create_pods(core, "too-big", 1, {"nvidia.com/gpu": "9"})
    try:

        def unschedulable() -> Any:
            pod = core.read_namespaced_pod(name, NS)
            for cond in pod.status.conditions or []:
                if cond.type == "PodScheduled" and cond.status == "False" and cond.reason == "Unschedulable":
                    return pod, cond
            return None

        pod, cond = _wait(unschedulable, what="the scheduler to give up on the pod")
        assert pod.status.phase == "Pending"
        assert pod.spec.node_name is None
        assert "Insufficient nvidia.com/gpu" in cond.message
    finally:
        _delete_pods(core, "too-big")


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _processes_mentioning(directory: Path) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(directory) in cmdline and int(entry.name) != os.getpid():
            found.append(int(entry.name))
    return found


def test_busy_port_is_retried_and_teardown_leaves_nothing_running(
    cluster: LocalCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second cluster whose first etcd port is taken still starts; stopping it leaves no process."""
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    taken = blocker.getsockname()[1]
    real_free_ports = cluster_mod._free_ports
    calls = []

    def first_call_hands_out_a_busy_port(n: int) -> list[int]:
        ports = real_free_ports(n)
        calls.append(ports)
        return [taken, *ports[1:]] if len(calls) == 1 else ports

    monkeypatch.setattr(cluster_mod, "_free_ports", first_call_hands_out_a_busy_port)
    second = LocalCluster(tmp_path / "second", cluster.binaries)
    try:
        second.start(timeout_s=90)
        assert len(calls) == 2, "the busy port must have caused exactly one retry"
        assert second.is_up()
        pids = dict(second.state.pids)
        ports = dict(second.state.ports)
        assert set(pids) == set(COMPONENTS)
    finally:
        second.stop()
        blocker.close()
    assert not any(cluster_mod._alive(pid) for pid in pids.values())
    assert not [p for name, p in ports.items() if name != "etcd-peer" and _listening(p)]
    assert _processes_mentioning(second.directory) == []
    assert second.state.pids == {}
