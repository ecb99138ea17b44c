"""The local cluster serves for real: the operator, unchanged, places pools on real kubelet nodes
whose GPUs come from the emulated NVIDIA device plugin; replicas run the worker in containers,
answer tritonclient requests through their endpoints, heal when a worker dies, and a MIG
re-layout goes through the emulated MIG manager to success and to failed.

Its own cluster (only real nodes, so every replica lands on one); root and the node binaries.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from support.polling import wait_until
from support.real_cluster import operator_on, real_node_cluster

from gpupool_operator.local import endpoints, realnodes
from gpupool_operator.local.cluster import LocalCluster
from gpupool_operator.local.gpus import Hardware
from gpupool_operator.local.migmanager import MigManager

pytestmark = [pytest.mark.real_nodes, pytest.mark.cluster]

ROOT = Path(__file__).resolve().parents[2]
NS = "serving"

MIG_POOL = """\
apiVersion: gpupool.io/v1alpha1
kind: InferencePool
metadata: {name: slices}
spec:
  models:
    - name: minilm-mig
      source: {uri: "builtin://all-minilm-l6-v2", format: Builtin}
      engine: {precision: fp16, tritonKernels: false, maxBatchSize: 8}
      acceleratorMemory: 2Gi
      hardware:
        - type: MIG
          mig: {profile: 1g.10gb}
          inferencesPerSecond: "200"
      minReplicas: 1
      maxReplicas: 1
"""



def _wait(what: str, check: Callable[[], Any], timeout_s: float = 120, every: float = 1.0,
          why: Callable[[], str] | None = None) -> Any:
    return wait_until(what, check, timeout_s, every, why)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    with real_node_cluster(tmp_path_factory.mktemp("serving")) as (cluster, nodes):
        t0 = time.monotonic()
        nodes.add("cpu-real-0", {"gpupool.io/pool": "cpu"})
        hw = Hardware.create("a100-real-0", "A100-80GB", [{"3g.40gb": 1, "1g.10gb": 2}, None])
        nodes.add("a100-real-0", {"gpupool.io/pool": "a100", "nvidia.com/mig.config": "custom-per-gpu",
                                  "nvidia.com/mig.config.state": "success"},
                  hardware=hw, taints=["nvidia.com/gpu=present:NoSchedule"])
        ready_s = time.monotonic() - t0
        with operator_on(cluster, nodes, NS, {"GPUPOOL_MIG_FAILURE_COOLDOWN_SECONDS": "600"}) as manager:
            yield {"cluster": cluster, "nodes": nodes, "manager": manager, "ready_s": ready_s}


def _pool(cluster: LocalCluster, name: str) -> dict[str, Any]:
    return json.loads(cluster.kubectl("get", "inferencepool", name, "-n", NS, "-o", "json").stdout)


def _pods(cluster: LocalCluster, pool: str) -> list[dict[str, Any]]:
    out = cluster.kubectl("get", "pods", "-n", NS, "-l", f"gpupool.io/inferencepool={pool}", "-o", "json").stdout
    return list(json.loads(out)["items"])


def _ready_pods(cluster: LocalCluster, pool: str) -> list[dict[str, Any]]:
    return [p for p in _pods(cluster, pool)
            if any(c["type"] == "Ready" and c["status"] == "True" for c in p.get("status", {}).get("conditions", []))]


def _infer(address: str, model: str) -> np.ndarray:
    import tritonclient.grpc as triton

    client = triton.InferenceServerClient(address)
    try:
        text = triton.InferInput("text", [2], "BYTES")
        text.set_data_from_numpy(np.array([b"GPU slices", b"cut inference cost"], dtype=object))
        return np.asarray(client.infer(model, [text]).as_numpy("embedding"))
    finally:
        client.close()


def test_pools_on_real_nodes_serve_heal_and_re_lay_mig(env: dict[str, Any]) -> None:
    cluster: LocalCluster = env["cluster"]
    nodes: realnodes.RealNodes = env["nodes"]
    manager: MigManager = env["manager"]
    api = cluster.api_client()
    started = time.monotonic()
    cluster.kubectl("apply", "-n", NS, "-f", str(ROOT / "examples" / "pools" / "quickstart-minilm-cpu.yaml"))
    cluster.kubectl("apply", "-n", NS, "-f", "-", input=MIG_POOL)

    # every replica Ready, on a real node, reached through its endpoints
    cpu_eps = endpoints.wait_for(api, NS, "quickstart", 1, timeout_s=240)
    mig_eps = endpoints.wait_for(api, NS, "slices", 1, timeout_s=240)
    all_ready_s = time.monotonic() - started
    assert {e.node for e in cpu_eps} == {"cpu-real-0"}
    assert {e.node for e in mig_eps} == {"a100-real-0"}
    cpu_emb = _infer(cpu_eps[0].address, "all-minilm-l6-v2")  # the real model on CPU
    assert cpu_emb.shape == (2, 384)
    assert abs(float(np.dot(cpu_emb[0], cpu_emb[1]))) < 0.99  # two different sentences, real embeddings
    mig_emb = _infer(mig_eps[0].address, "minilm-mig")  # emulated 1g.10gb slice: the real model's shape
    assert mig_emb.shape == (2, 384)
    (mig_pod,) = _ready_pods(cluster, "slices")
    logs = cluster.kubectl("logs", "-n", NS, mig_pod["metadata"]["name"]).stdout
    assert "EMULATED A100-80GB MIG 1g.10gb" in logs

    # kill one worker: the kubelet restarts the container and the pool heals (no duplicate pod)
    (cpu_pod,) = _ready_pods(cluster, "quickstart")
    name = cpu_pod["metadata"]["name"]
    cid = nodes.crictl("cpu-real-0", "ps", "-q", "--name", "worker", "--label",
                       f"io.kubernetes.pod.name={name}").stdout.split()[0]
    pid = json.loads(nodes.crictl("cpu-real-0", "inspect", cid).stdout)["info"]["pid"]
    os.kill(pid, signal.SIGKILL)

    def restarted() -> bool:
        pods = _pods(cluster, "quickstart")
        statuses = pods[0].get("status", {}).get("containerStatuses", []) if len(pods) == 1 else []
        return bool(statuses) and statuses[0]["restartCount"] >= 1 and statuses[0].get("ready", False)

    _wait("the kubelet to restart the worker", restarted, 180)
    assert [p["metadata"]["name"] for p in _pods(cluster, "quickstart")] == [name]
    assert _infer(endpoints.wait_for(api, NS, "quickstart", 1)[0].address, "all-minilm-l6-v2").shape == (2, 384)

    # a re-layout: a 2g.20gb slice the node does not have yet -> the operator asks, the manager applies
    pool = yaml.safe_load(MIG_POOL)
    pool["spec"]["models"][0]["hardware"] = [{"type": "MIG", "mig": {"profile": "2g.20gb"},
                                              "inferencesPerSecond": "300"}]
    cluster.kubectl("apply", "-n", NS, "-f", "-", input=json.dumps(pool))
    _wait("a MIG re-layout to succeed", lambda: any(h[0] == "a100-real-0" and h[2] == "success"
                                                    for h in manager.history), 240)
    eps = _wait("the 2g.20gb replica to serve", lambda: [
        e for e in endpoints.endpoints(api, NS, "slices")
        if "2g.20gb" in cluster.kubectl("logs", "-n", NS, e.pod, check=False).stdout], 240)
    assert _infer(eps[0].address, "minilm-mig").shape == (2, 384)
    alloc = json.loads(cluster.kubectl("get", "node", "a100-real-0", "-o", "json").stdout)["status"]["allocatable"]
    assert int(alloc.get("nvidia.com/mig-2g.20gb", "0")) >= 1

    # and one that fails: the GPUs refuse; the pool says so
    manager.fail_nodes.add("a100-real-0")
    pool["spec"]["models"][0]["hardware"] = [{"type": "MIG", "mig": {"profile": "3g.40gb"},
                                              "inferencesPerSecond": "500"}]
    pool["spec"]["models"][0]["minReplicas"] = pool["spec"]["models"][0]["maxReplicas"] = 2
    cluster.kubectl("apply", "-n", NS, "-f", "-", input=json.dumps(pool))
    _wait("a MIG re-layout to fail", lambda: any(h[0] == "a100-real-0" and h[2] == "failed"
                                                 for h in manager.history), 240)
    degraded = _wait("the pool to say Degraded", lambda: next(
        (c for c in _pool(cluster, "slices").get("status", {}).get("conditions", [])
         if c["type"] == "Degraded" and c["status"] == "True"), None), 120)
    assert degraded["message"]
    manager.fail_nodes.discard("a100-real-0")
    workers: dict[str, float] = {}
    uids = {p["metadata"]["uid"]: p["metadata"]["name"]
            for p in json.loads(cluster.kubectl("get", "pods", "-n", NS, "-o", "json").stdout)["items"]}
    for node in nodes.names():
        root = Path("/sys/fs/cgroup/memory") / nodes.state.nodes[node].cgroup_root.lstrip("/")
        for usage in root.rglob("pod*/memory.usage_in_bytes"):
            uid = usage.parent.name.removeprefix("pod").replace("_", "-")
            if uid in uids:
                workers[uids[uid]] = round(int(usage.read_text()) / 2**20, 1)
    # kopf's test runner captures stdout: the measurements go to the real stderr
    sys.__stderr__.write(f"\nMEASURED real nodes Ready in {env['ready_s']:.1f}s; both pools serving "
                         f"{all_ready_s:.1f}s after apply; node components (MiB): {json.dumps(nodes.memory_mib())}; "
                         f"containers' working set (MiB): {json.dumps(workers)}\n")
    assert not manager.errors, manager.errors
