"""The live-scaling scenario on the real local control plane, shared by the end-to-end test and
benchmarks/live/bench_surge.py.

What is real: kube-apiserver, etcd, controller-manager and kube-scheduler (built from Go modules),
the operator as its own process (``gpupool operator``), the workers (``gpupool-worker serve``
processes serving all-MiniLM-L6-v2 on this host) and the gRPC load (tritonclient).

What is not: the nodes are KWOK's, so a replica pod runs nothing. The operator is told through its
documented ``GPUPOOL_SCRAPE_OVERRIDE`` setting to read replica ``i``'s metrics from host worker
``i``, and the load generator sends requests only to the workers whose replica pods are Ready (the
routing the model's Service would do). A KWOK pod is never what serves or what is measured.
On a cluster whose nodes are all real kubelets the override is left unset: the operator reads
the pods themselves (their metrics ports, from the pods' annotations) and the load goes to the
pods' own gRPC ports; there the replicas are the real worker in containers, on a real CPU node and
on emulated MIG slices of a real A100 node (``real_pool_body``; tests/live/test_autoscale_real.py).
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from operator_helpers import OperatorProcess, apply, get_json

from gpupool_operator.local.cluster import LocalCluster

from .conftest import MODEL, Load, Worker

POOL = "live"
#: Short policy windows so a test sees the whole cycle in a couple of minutes.
PARAMS = {"stable_window_s": 6.0, "panic_window_s": 2.0, "panic_decay_half_life_s": 2.0, "hold_startups": 0.0,
          "startup_guess_s": 2.0, "stale_after_s": 6.0}
MAX_REPLICAS = 4


def pool_body(namespace: str) -> dict[str, Any]:
    """A CPU tier of 48-core replicas (one per 64-core CPU node: three fit) and whole A100s: the
    fourth replica can only be a GPU, so a scale-up to four lands on a new shape. The declared
    throughputs are below what the host's workers do under the load generator (about 25-30
    requests/s on this machine), so under load the pool stays at maxReplicas."""
    return {
        "apiVersion": "gpupool.io/v1alpha1", "kind": "InferencePool",
        "metadata": {"name": POOL, "namespace": namespace},
        "spec": {
            "scaling": {"scaleDownStabilizationWindow": "4s"},
            "models": [{
                "name": MODEL,
                "source": {"uri": "hf://sentence-transformers/all-MiniLM-L6-v2", "format": "SafeTensors"},
                "acceleratorMemory": "1Gi", "minReplicas": 1, "maxReplicas": MAX_REPLICAS,
                "hardware": [
                    {"type": "CPU", "cpu": {"cores": 48}, "inferencesPerSecond": "2"},
                    {"type": "GPU", "gpu": {"product": "A100-80GB"}, "inferencesPerSecond": "5"},
                ],
            }],
        },
    }


#: The real-node variant: one CPU replica fills the 2-core real CPU node, so added replicas go on
#: the real A100 node's two emulated 1g.10gb slices (a new shape).
REAL_MAX_REPLICAS = 3


def real_pool_body(namespace: str) -> dict[str, Any]:
    """The same scenario for real kubelet nodes: the built-in MiniLM (no download), a 2-core CPU
    tier (the real CPU node has this machine's 2 cores: one replica fills it, and it is the
    cheapest shape, so it holds the first replica) and MIG 1g.10gb slices, whose emulated engine
    serves what the pool declares (5/s, batches of 8). The CPU tier's declared 2/s is below what
    the real worker does under the load generator, so under load the pool stays at maxReplicas;
    idle, it goes back to the one CPU replica."""
    return {
        "apiVersion": "gpupool.io/v1alpha1", "kind": "InferencePool",
        "metadata": {"name": POOL, "namespace": namespace},
        "spec": {
            "scaling": {"scaleDownStabilizationWindow": "4s"},
            "models": [{
                "name": MODEL,
                "source": {"uri": "builtin://all-minilm-l6-v2", "format": "Builtin"},
                "engine": {"precision": "fp32", "tritonKernels": False, "maxBatchSize": 8},
                "acceleratorMemory": "1Gi", "minReplicas": 1, "maxReplicas": REAL_MAX_REPLICAS,
                "hardware": [
                    {"type": "CPU", "cpu": {"cores": 2, "memory": "1Gi"}, "inferencesPerSecond": "2"},
                    {"type": "MIG", "mig": {"profile": "1g.10gb"}, "inferencesPerSecond": "5"},
                ],
            }],
        },
    }


def real_nodes(cluster: LocalCluster) -> bool:
    """Whether every node is a kubelet that runs pods (none is KWOK's fake); a mixed cluster runs
    the scenario the KWOK way, since its replicas may land on either."""
    nodes = get_json(cluster, "nodes")["items"]
    return bool(nodes) and all((n["metadata"].get("annotations") or {}).get("kwok.x-k8s.io/node") != "fake"
                               for n in nodes)


@dataclass
class Sample:
    at: float  # time.time()
    pods: int
    ready: int
    gpu_pods: int
    desired: int | None
    decision: str
    queue: float | None


@dataclass
class Scenario:
    cluster: LocalCluster
    namespace: str
    workers: list[Worker]
    log_dir: Path
    samples: list[Sample] = field(default_factory=list)
    load: Load | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    real: bool = False
    #: more operator settings (real nodes: the worker image)
    env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.real = real_nodes(self.cluster)

    @property
    def max_replicas(self) -> int:
        return REAL_MAX_REPLICAS if self.real else MAX_REPLICAS

    @property
    def demand(self) -> str:
        return f"{self.namespace}/{POOL}/{MODEL}"

    def operator(self, name: str) -> OperatorProcess:
        env = {"GPUPOOL_SCALING_PARAMS": json.dumps(PARAMS), "GPUPOOL_SCALING_STATE_SECONDS": "2",
               "GPUPOOL_RESYNC_SECONDS": "10", "GPUPOOL_NAMESPACE": "gpupool-system", **self.env}
        if not self.real:
            env["GPUPOOL_SCRAPE_OVERRIDE"] = json.dumps({self.demand: [w.metrics_url for w in self.workers]})
        return OperatorProcess(str(self.cluster.kubeconfig), self.log_dir / f"{name}.log", name, env)

    def apply(self) -> None:
        body = real_pool_body if self.real else pool_body
        apply(self.cluster, body(self.namespace), self.namespace)

    # -- what the cluster shows -------------------------------------------------------------
    def pods(self) -> list[dict[str, Any]]:
        items = get_json(self.cluster, "pods", "-n", self.namespace)["items"]
        return [p for p in items if not p["metadata"].get("deletionTimestamp")]

    @staticmethod
    def ready(pod: dict[str, Any]) -> bool:
        return any(c.get("type") == "Ready" and c.get("status") == "True"
                   for c in (pod.get("status") or {}).get("conditions") or [])

    def scaling(self) -> dict[str, Any]:
        obj = get_json(self.cluster, "inferencepool", POOL, "-n", self.namespace)
        models = ((obj.get("status") or {}).get("scaling") or {}).get("models") or []
        return dict(models[0]) if models else {}

    def routes(self, pods: list[dict[str, Any]]) -> list[str]:
        """Where the Service would send requests: the Ready replicas' servers."""
        out = []
        for p in pods:
            if not self.ready(p):
                continue
            if self.real:
                out.append(f"{p['status']['podIP']}:8001")
                continue
            index = int(p["metadata"]["labels"]["gpupool.io/replica"])
            if index < len(self.workers):
                out.append(self.workers[index].url)
        return out

    def sample(self) -> Sample:
        pods = self.pods()
        scaling = self.scaling()
        if self.load is not None:
            self.load.targets[:] = self.routes(pods)
        queue = scaling.get("queueDepth")
        return Sample(time.time(), len(pods), sum(self.ready(p) for p in pods),
                      sum(1 for p in pods if (p["spec"].get("nodeName") or "").startswith("a100")),
                      scaling.get("desiredReplicas"), str(scaling.get("lastDecision", "")),
                      float(queue) if queue is not None else None)

    # -- a background recorder: the cluster every ~0.25 s, and the load's routing ---------------
    def record(self) -> Scenario:
        def run() -> None:
            while not self._stop.is_set():
                try:
                    self.samples.append(self.sample())
                except Exception:  # a kubectl hiccup: try again next round
                    time.sleep(0.2)
                time.sleep(0.25)

        self._thread = threading.Thread(target=run, name="recorder", daemon=True)
        self._thread.start()
        return self

    def stop_recording(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)

    def wait(self, check: Callable[[Sample], bool], timeout_s: float, what: str) -> Sample:
        deadline = time.monotonic() + timeout_s
        seen = len(self.samples)
        while time.monotonic() < deadline:
            for s in self.samples[seen:]:
                if check(s):
                    return s
            seen = len(self.samples)
            time.sleep(0.1)
        last = self.samples[-1] if self.samples else None
        raise AssertionError(f"timed out after {timeout_s}s waiting for {what}; last sample: {last}")

    def metrics_url(self, pod: dict[str, Any]) -> str:
        """Where the operator reads a replica's metrics: its host worker on KWOK, the pod itself on
        real nodes (address and port from the pod and its annotations)."""
        if not self.real:
            return self.workers[int(pod["metadata"]["labels"]["gpupool.io/replica"])].metrics_url
        ann = pod["metadata"].get("annotations") or {}
        return (f"http://{pod['status']['podIP']}:{ann['gpupool.io/metrics-port']}"
                f"{ann.get('gpupool.io/metrics-path', '/metrics')}")

    def queue_probe(self, worker: Worker | str) -> float:
        """The worker's own queue, read directly (the same endpoint the operator reads)."""
        url = worker if isinstance(worker, str) else worker.metrics_url
        with urllib.request.urlopen(url, timeout=2) as rsp:
            for line in rsp.read().decode().splitlines():
                if line.startswith("gpupool_worker_queue_depth{") and f'model="{MODEL}"' in line:
                    return float(line.rsplit(" ", 1)[1])
        return 0.0

    def events(self, reason: str) -> list[dict[str, Any]]:
        items = get_json(self.cluster, "events", "-n", self.namespace)["items"]
        return [e for e in items if e.get("reason") == reason]


def start_real_nodes(cluster: LocalCluster, nodes: Any, root: Path) -> Any:
    """The real-node variant's cluster, on ``nodes`` (a ``RealNodes``, which the caller tears down
    whatever happens): a real CPU node (this machine's cores) and a real A100 node with emulated
    GPUs (one with 3g.40gb + 2x 1g.10gb, one whole), the CRDs, the default GPUPoolConfig and
    NVIDIA's MIG manager (emulated), which is returned (the caller stops it)."""
    from gpupool_operator.local.gpus import Hardware
    from gpupool_operator.local.migmanager import MigManager

    nodes.add("cpu-real-0", {"gpupool.io/pool": "cpu"})
    hw = Hardware.create("a100-real-0", "A100-80GB", [{"3g.40gb": 1, "1g.10gb": 2}, None])
    nodes.add("a100-real-0", {"gpupool.io/pool": "a100", "nvidia.com/mig.config": "custom-per-gpu",
                              "nvidia.com/mig.config.state": "success"},
              hardware=hw, taints=["nvidia.com/gpu=present:NoSchedule"])
    cluster.kubectl("apply", "--server-side", "-f", str(root / "crds"))
    cluster.wait_established()
    cluster.kubectl("create", "namespace", "gpupool-system", check=False)
    cluster.kubectl("apply", "-f", str(root / "examples" / "pools" / "gpupoolconfig-default.yaml"))
    return MigManager(cluster.api_client(), "gpupool-system", delay_s=1.0, real_nodes=nodes.mig_targets).start()


def freeze(worker: Worker) -> Callable[[], None]:
    """SIGSTOP a worker (its metrics stop answering); returns the thaw."""
    worker.proc.send_signal(signal.SIGSTOP)
    return lambda: worker.proc.send_signal(signal.SIGCONT)


def silence(pod: dict[str, Any]) -> Callable[[], None]:
    """A replica pod on a real node stops reporting: the host drops what it sends to the pod's
    metrics port (the operator scrapes from this host), while the pod keeps serving gRPC and stays
    Ready (its readiness probe is gRPC). Returns the undo."""
    ip = pod["status"]["podIP"]
    port = pod["metadata"]["annotations"]["gpupool.io/metrics-port"]
    rule = ["OUTPUT", "-d", ip, "-p", "tcp", "--dport", str(port), "-j", "DROP"]
    subprocess.run(["iptables", "-w", "-I", *rule], check=True, capture_output=True, timeout=30)

    def undo() -> None:
        with contextlib.suppress(subprocess.SubprocessError):
            subprocess.run(["iptables", "-w", "-D", *rule], check=False, capture_output=True, timeout=30)

    return undo


def surge_restart_silence_and_idle(scene: Scenario, operators: list[OperatorProcess], timeout_s: float,
                                   stop_reporting: Callable[[], Callable[[], None]]) -> None:
    """The end-to-end scenario on a pool already applied and recorded: a surge scales it to
    maxReplicas with a replica on a new shape (a GPU or MIG slice once the CPU tier is full); the
    operator is SIGKILLed mid-burst and the next leader keeps every replica and the window; a
    replica that stops reporting (``stop_reporting()``, which returns the undo) holds the count;
    idle, it goes back to one replica on the CPU tier, with ScaledUp and ScaledDown Events.
    ``operators`` holds the running operator; the next one is appended (the caller stops them)."""
    top = scene.max_replicas
    scene.wait(lambda s: s.ready == 1, timeout_s, "the first replica Ready")
    scene.wait(lambda s: s.desired == 1, timeout_s, "the scaling loop measuring the idle replica")
    assert scene.samples[-1].gpu_pods == 0, "the first replica is on the CPU tier (cheapest)"

    scene.load = Load(scene.routes(scene.pods()), concurrency=32).start()
    up = scene.wait(lambda s: (s.desired or 0) > 1, timeout_s, "a scale-up decision")
    assert up.decision.startswith("scale up 1 -> "), up.decision
    scene.wait(lambda s: s.pods == top and s.ready == top, timeout_s, f"{top} replicas Ready")
    scene.wait(lambda s: s.gpu_pods >= 1, timeout_s, "a replica on a GPU (the CPU nodes are full)")
    assert scene.events("ScaledUp"), "a ScaledUp Event"

    # the operator dies mid-burst; a new one takes the Lease and continues from status.scaling
    operators[-1].kill(signal.SIGKILL)
    killed = time.time()
    operators.append(scene.operator("live-op-2"))
    scene.wait(lambda s: s.at > killed + 12 and s.decision != "", timeout_s, "the new leader deciding")
    after = [s for s in scene.samples if s.at > killed]
    assert min(s.pods for s in after) == top, "the restart dropped replicas"
    assert "warming up" not in scene.samples[-1].decision, scene.samples[-1].decision
    scene.load.stop()
    assert scene.load.answered > 0
    assert not scene.load.errors, scene.load.errors

    # a replica that stops reporting holds the count
    undo = stop_reporting()
    try:
        silent = time.time()
        scene.wait(lambda s: "reported" in s.decision, timeout_s, "the policy noticing the silent replica")
        time.sleep(14)  # over twice the stable window, idle: it would scale down if it trusted the silence
        held = [s for s in scene.samples if s.at > silent + 1]
        assert all(s.pods == top for s in held), [s.pods for s in held]
    finally:
        undo()
    # reporting again, idle: back to minReplicas after the window, the GPU replica first
    scene.wait(lambda s: s.desired == 1, timeout_s, "the scale-down decision")
    scene.wait(lambda s: s.pods == 1 and s.gpu_pods == 0, timeout_s, "the pool back at one replica, on a CPU node")
    assert scene.events("ScaledDown"), "a ScaledDown Event"
