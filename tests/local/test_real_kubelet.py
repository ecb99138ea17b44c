"""Real kubelet nodes in the local cluster: Ready, real pods, the emulated NVIDIA device plugin and
MIG manager, the worker serving from a container, and a host restored after teardown.

Needs root and the node binaries (``gpupool local build --nodes``); skipped with what is missing
named otherwise. One module-scoped pair of nodes (a CPU node and an A100 node with emulated GPUs).
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from support.polling import wait_until

from gpupool_operator.local import realnodes, toolchain
from gpupool_operator.local.cluster import LocalCluster
from gpupool_operator.local.gpus import Hardware
from gpupool_operator.local.migmanager import CONFIG_LABEL, STATE_LABEL, MigManager

pytestmark = pytest.mark.real_nodes

NAMESPACE = "default"
MIG_PARTED = """\
version: v1
mig-configs:
  gpu0-whole:
    - devices: [0]
      mig-enabled: true
      mig-devices: {"7g.80gb": 1}
    - devices: [1]
      mig-enabled: false
  gpu1-sliced:
    - devices: [0]
      mig-enabled: true
      mig-devices: {"3g.40gb": 1, "1g.10gb": 2}
    - devices: [1]
      mig-enabled: true
      mig-devices: {"3g.40gb": 2}
  bad-profile:
    - devices: all
      mig-enabled: true
      mig-devices: {"5g.50gb": 1}
"""


@pytest.fixture(scope="module")
def real(cluster: LocalCluster) -> Iterator[dict[str, Any]]:
    missing = realnodes.prerequisites()
    if missing:
        pytest.skip("real nodes cannot run here: missing " + "; ".join(missing))
    before = realnodes.host_snapshot()
    nodes = realnodes.RealNodes(cluster, toolchain.ensure_node_binaries())
    try:
        t0 = time.monotonic()
        nodes.add("real-cpu-0", {"gpupool.io/pool": "real-cpu"})
        cpu_ready = time.monotonic() - t0
        hw = Hardware.create("real-gpu-0", "A100-80GB", [{"3g.40gb": 1, "1g.10gb": 2}, None])
        t0 = time.monotonic()
        nodes.add("real-gpu-0", {"gpupool.io/pool": "real-gpu"}, hardware=hw,
                  taints=["nvidia.com/gpu=present:NoSchedule"])
        gpu_ready = time.monotonic() - t0
        print(f"\nreal nodes Ready: cpu {cpu_ready:.1f}s, gpu (with device plugin) {gpu_ready:.1f}s")
        yield {"nodes": nodes, "before": before, "hw": hw}
    finally:
        nodes.teardown()


def _apply(cluster: LocalCluster, obj: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-f", "-", input=json.dumps(obj))


def _pod(name: str, node: str, image: str, *, args: list[str] | None = None, command: list[str] | None = None,
         limits: dict[str, str] | None = None, env: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "c", "image": image, "imagePullPolicy": "Never"}
    if args is not None:
        container["args"] = args
    if command is not None:
        container["command"] = command
    if limits:
        container["resources"] = {"limits": limits}
    if env:
        container["env"] = [{"name": k, "value": v} for k, v in env.items()]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"nodeName": node, "terminationGracePeriodSeconds": 1,
                     "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}],
                     "containers": [container], **spec}}



def _wait(what: str, check: Callable[[], Any], timeout_s: float = 90, every: float = 0.5,
          why: Callable[[], str] | None = None) -> Any:
    return wait_until(what, check, timeout_s, every, why)


def _pod_json(cluster: LocalCluster, name: str) -> dict[str, Any]:
    proc = cluster.kubectl("get", "pod", name, "-n", NAMESPACE, "-o", "json", check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 else {}


def _phase(cluster: LocalCluster, name: str) -> str:
    return str(_pod_json(cluster, name).get("status", {}).get("phase", ""))


def _node(cluster: LocalCluster, name: str) -> dict[str, Any]:
    return json.loads(cluster.kubectl("get", "node", name, "-o", "json").stdout)


def test_a_real_node_is_ready_runs_pods_and_kwok_leaves_it_alone(cluster: LocalCluster, real: dict[str, Any]) -> None:
    nodes = real["nodes"]
    node = _node(cluster, "real-cpu-0")
    assert "kwok.x-k8s.io/node" not in (node["metadata"].get("annotations") or {})
    assert node["status"]["nodeInfo"]["kubeletVersion"] == toolchain.KUBERNETES_VERSION
    assert node["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://")
    addresses = {a["type"]: a["address"] for a in node["status"]["addresses"]}
    assert addresses["InternalIP"] == nodes.state.nodes["real-cpu-0"].gateway
    _apply(cluster, _pod("real-hello", "real-cpu-0", nodes.host.tag, args=["--help"], restartPolicy="Never"))
    assert _wait("the pod to finish", lambda: _phase(cluster, "real-hello") in ("Succeeded", "Failed"))
    assert _phase(cluster, "real-hello") == "Succeeded"
    # logs come from the kubelet itself (the API server reaches it at its InternalIP)
    assert "serve a model repository" in cluster.kubectl("logs", "real-hello", "-n", NAMESPACE).stdout
    cluster.kubectl("delete", "pod", "real-hello", "-n", NAMESPACE, "--wait=true", "--timeout=60s")


def test_the_emulated_device_plugin_advertises_and_allocates_nvidia_devices(
    cluster: LocalCluster, real: dict[str, Any]
) -> None:
    node = _node(cluster, "real-gpu-0")
    alloc = node["status"]["allocatable"]
    assert alloc["nvidia.com/gpu"] == "1"
    assert alloc["nvidia.com/mig-3g.40gb"] == "1"
    assert alloc["nvidia.com/mig-1g.10gb"] == "2"
    labels = node["metadata"]["labels"]
    assert labels["nvidia.com/gpu.product"] == "NVIDIA-A100-SXM4-80GB"
    assert labels["nvidia.com/mig-1g.10gb.count"] == "2"
    assert json.loads(node["metadata"]["annotations"]["gpupool.io/mig-layout"]) == [
        {"3g.40gb": 1, "1g.10gb": 2}, {}]
    pod = _pod("real-env", "real-gpu-0", real["nodes"].host.tag, command=["sh", "-c", "env | sort"],
               limits={"nvidia.com/mig-1g.10gb": "1"}, restartPolicy="Never")
    _apply(cluster, pod)
    assert _wait("the pod to finish", lambda: _phase(cluster, "real-env") in ("Succeeded", "Failed"))
    out = cluster.kubectl("logs", "real-env", "-n", NAMESPACE).stdout
    assert "NVIDIA_VISIBLE_DEVICES=MIG-emulated-real-gpu-0-0-1g.10gb-" in out
    assert "GPUPOOL_EMULATED=1" in out
    assert "GPUPOOL_EMULATED_MIG_PROFILE=1g.10gb" in out
    cluster.kubectl("delete", "pod", "real-env", "-n", NAMESPACE, "--wait=true", "--timeout=60s")


def test_a_restarted_device_plugin_registers_again(cluster: LocalCluster, real: dict[str, Any]) -> None:
    nodes = real["nodes"]
    pid = nodes.state.nodes["real-gpu-0"].pids["device-plugin"]
    os.kill(pid, signal.SIGKILL)
    nodes.start_device_plugin("real-gpu-0")
    assert nodes.state.nodes["real-gpu-0"].pids["device-plugin"] != pid
    nodes.wait_allocatable("real-gpu-0", Hardware.load(nodes.hardware_file("real-gpu-0")), time.monotonic() + 60)


def test_the_emulated_mig_manager_refuses_a_held_gpu_then_re_lays_it(
    cluster: LocalCluster, real: dict[str, Any]
) -> None:
    nodes = real["nodes"]
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "gpupool-mig-parted-config",
                                                                "namespace": NAMESPACE},
          "data": {"config.yaml": MIG_PARTED}}
    _apply(cluster, cm)
    manager = MigManager(cluster.api_client(), NAMESPACE, delay_s=0.5, real_nodes=nodes.mig_targets).start()
    try:
        # a running container holds a 1g.10gb slice of GPU 0
        holder = _pod("real-holder", "real-gpu-0", nodes.host.tag, command=["sh", "-c", "sleep 600"],
                      limits={"nvidia.com/mig-1g.10gb": "1"})
        _apply(cluster, holder)
        assert _wait("the holder to run", lambda: _phase(cluster, "real-holder") == "Running",
                     why=lambda: cluster.kubectl("describe", "pod", "real-holder", "-n", NAMESPACE).stdout[-1500:])

        def state() -> str:
            return str(_node(cluster, "real-gpu-0")["metadata"]["labels"].get(STATE_LABEL, ""))

        cluster.kubectl("label", "node", "real-gpu-0", "--overwrite", f"{CONFIG_LABEL}=gpu0-whole")
        assert _wait("failed", lambda: ("real-gpu-0", "gpu0-whole", "failed") in manager.history)
        assert state() == "failed"
        events = cluster.kubectl("get", "events", "-n", "default", "--field-selector",
                                 "involvedObject.name=real-gpu-0,reason=MigConfigFailed", "-o", "json").stdout
        assert "in use by running containers" in events
        # the plugin came back with the old devices
        nodes.wait_allocatable("real-gpu-0", Hardware.load(nodes.hardware_file("real-gpu-0")), time.monotonic() + 60)

        # an unknown profile in the config: failed, with the reason on the node's Event
        cluster.kubectl("label", "node", "real-gpu-0", "--overwrite", f"{CONFIG_LABEL}=bad-profile")
        assert _wait("failed", lambda: ("real-gpu-0", "bad-profile", "failed") in manager.history)

        # GPU 1 is free: slicing it succeeds while the holder keeps its slice on GPU 0
        cluster.kubectl("label", "node", "real-gpu-0", "--overwrite", f"{CONFIG_LABEL}=gpu1-sliced")
        assert _wait("success", lambda: ("real-gpu-0", "gpu1-sliced", "success") in manager.history, 120)
        assert state() == "success"
        alloc = _node(cluster, "real-gpu-0")["status"]["allocatable"]
        assert alloc["nvidia.com/mig-3g.40gb"] == "3"
        assert alloc.get("nvidia.com/gpu", "0") == "0"
        assert _phase(cluster, "real-holder") == "Running"
    finally:
        manager.stop()
        cluster.kubectl("delete", "pod", "real-holder", "-n", NAMESPACE, "--wait=true", "--timeout=60s",
                        check=False)
    assert not manager.errors, manager.errors


def test_the_worker_serves_from_a_container_on_a_real_node(cluster: LocalCluster, real: dict[str, Any]) -> None:
    import tritonclient.grpc as triton

    nodes = real["nodes"]
    pod = _pod("real-worker", "real-cpu-0", nodes.host.tag, args=["serve"],
               env={"GPUPOOL_BUILTIN_MODELS": "minilm", "GPUPOOL_TORCH_THREADS": "1", "GPUPOOL_GRPC_PORT": "8001",
                    "GPUPOOL_METRICS_PORT": "8002"})
    pod["spec"]["containers"][0]["readinessProbe"] = {"grpc": {"port": 8001}, "periodSeconds": 2}
    _apply(cluster, pod)
    try:
        def ready() -> str:
            p = _pod_json(cluster, "real-worker")
            conds = {c["type"]: c["status"] for c in p.get("status", {}).get("conditions", [])}
            return str(p["status"].get("podIP", "")) if conds.get("Ready") == "True" else ""

        ip = _wait("the worker to be Ready", ready, 240)
        client = triton.InferenceServerClient(f"{ip}:8001")
        text = triton.InferInput("text", [1], "BYTES")
        text.set_data_from_numpy(np.array([b"served from a real container"], dtype=object))
        emb = client.infer("minilm", [text]).as_numpy("embedding")
        client.close()
        assert emb.shape == (1, 384)
        assert abs(float(np.linalg.norm(emb)) - 1.0) < 1e-3
    finally:
        cluster.kubectl("delete", "pod", "real-worker", "-n", NAMESPACE, "--wait=true", "--timeout=60s",
                        check=False)


def test_kubelet_and_containerd_killed_and_restarted_the_pod_runs_on_once(
    cluster: LocalCluster, real: dict[str, Any]
) -> None:
    nodes = real["nodes"]
    _apply(cluster, _pod("real-sleeper", "real-cpu-0", nodes.host.tag, command=["sh", "-c", "sleep 600"]))
    try:
        assert _wait("the sleeper to run", lambda: _phase(cluster, "real-sleeper") == "Running")
        uid = _pod_json(cluster, "real-sleeper")["metadata"]["uid"]
        before = nodes.crictl("real-cpu-0", "ps", "-q", "--label", "io.kubernetes.pod.name=real-sleeper").stdout.split()
        assert len(before) == 1
        nodes.restart("real-cpu-0", "containerd")  # the container's shim outlives containerd
        nodes.restart("real-cpu-0", "kubelet")
        assert _wait("the sleeper Running after the restarts", lambda: _phase(cluster, "real-sleeper") == "Running")
        pod = _pod_json(cluster, "real-sleeper")
        assert pod["metadata"]["uid"] == uid
        assert pod["status"]["containerStatuses"][0]["restartCount"] == 0
        after = nodes.crictl("real-cpu-0", "ps", "-q", "--label", "io.kubernetes.pod.name=real-sleeper").stdout.split()
        assert after == before  # the same container: nothing duplicated
        sandboxes = nodes.crictl("real-cpu-0", "pods", "-q", "--label", "io.kubernetes.pod.name=real-sleeper",
                                 "--state", "ready").stdout.split()
        assert len(sandboxes) == 1
    finally:
        cluster.kubectl("delete", "pod", "real-sleeper", "-n", NAMESPACE, "--wait=true", "--timeout=60s",
                        check=False)


def test_a_wrong_image_and_a_crashing_worker_show_the_kubelets_reason(
    cluster: LocalCluster, real: dict[str, Any]
) -> None:
    nodes = real["nodes"]
    _apply(cluster, _pod("real-noimage", "real-cpu-0", "gpupool.local/no-such-image:1"))
    _apply(cluster, _pod("real-crash", "real-cpu-0", nodes.host.tag, args=["serve", "--no-such-flag"]))
    try:
        def waiting(name: str) -> str:
            statuses = _pod_json(cluster, name).get("status", {}).get("containerStatuses") or [{}]
            state = statuses[0].get("state", {})
            last = statuses[0].get("lastState", {}).get("terminated", {})
            return str(state.get("waiting", {}).get("reason", "")) + (f"/exit {last['exitCode']}" if last else "")

        assert _wait("ErrImageNeverPull", lambda: "ErrImageNeverPull" in waiting("real-noimage"))
        assert _wait("CrashLoopBackOff", lambda: "CrashLoopBackOff/exit 2" in waiting("real-crash"), 120)
        assert "unrecognized arguments" in cluster.kubectl("logs", "real-crash", "-n", NAMESPACE, "--previous",
                                                           check=False).stdout
    finally:
        for name in ("real-noimage", "real-crash"):
            cluster.kubectl("delete", "pod", name, "-n", NAMESPACE, "--wait=true", "--timeout=60s", check=False)


def test_zz_teardown_restores_the_host(cluster: LocalCluster, real: dict[str, Any]) -> None:
    nodes = real["nodes"]
    pids = [p for n in nodes.state.nodes.values() for p in n.pids.values()]
    nodes.teardown()
    assert realnodes.host_snapshot() == real["before"]
    assert not [p for p in pids if realnodes._alive(p)]
    assert not nodes.shim_pids()
    for name in ("real-cpu-0", "real-gpu-0"):
        assert cluster.kubectl("get", "node", name, check=False).returncode != 0
