"""The live-scaling scenario on the real local control plane, shared by the end-to-end test and
benchmarks/live/bench_surge.py.

What is real: kube-apiserver, etcd, controller-manager and kube-scheduler (built from Go modules),
the operator as its own process (``gpupool operator``), the workers (``gpupool-worker serve``
processes serving all-MiniLM-L6-v2 on this host) and the gRPC load (tritonclient).

What is not: the nodes are KWOK's, so a replica pod runs nothing. The operator is told through its
documented ``GPUPOOL_SCRAPE_OVERRIDE`` setting to read replica ``i``'s metrics from host worker
``i``, and the load generator sends requests only to the workers whose replica pods are Ready (the
routing the model's Service would do). A KWOK pod is never what serves or what is measured.
On a cluster whose nodes are all real kubelets (issue 15) the override is left unset: the
operator reads the pods themselves and the load goes to the pods' own gRPC ports
(``real_nodes``); that path has not run here yet (no such cluster existed when it was written).
"""

from __future__ import annotations

import json
import signal
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

    def __post_init__(self) -> None:
        self.real = real_nodes(self.cluster)

    @property
    def demand(self) -> str:
        return f"{self.namespace}/{POOL}/{MODEL}"

    def operator(self, name: str) -> OperatorProcess:
        env = {"GPUPOOL_SCALING_PARAMS": json.dumps(PARAMS), "GPUPOOL_SCALING_STATE_SECONDS": "2",
               "GPUPOOL_RESYNC_SECONDS": "10", "GPUPOOL_NAMESPACE": "gpupool-system"}
        if not self.real:
            env["GPUPOOL_SCRAPE_OVERRIDE"] = json.dumps({self.demand: [w.metrics_url for w in self.workers]})
        return OperatorProcess(str(self.cluster.kubeconfig), self.log_dir / f"{name}.log", name, env)

    def apply(self) -> None:
        apply(self.cluster, pool_body(self.namespace), self.namespace)

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

    def queue_probe(self, worker: Worker) -> float:
        """The worker's own queue, read directly (the same endpoint the operator reads)."""
        with urllib.request.urlopen(worker.metrics_url, timeout=2) as rsp:
            for line in rsp.read().decode().splitlines():
                if line.startswith("gpupool_worker_queue_depth{") and f'model="{MODEL}"' in line:
                    return float(line.rsplit(" ", 1)[1])
        return 0.0

    def events(self, reason: str) -> list[dict[str, Any]]:
        items = get_json(self.cluster, "events", "-n", self.namespace)["items"]
        return [e for e in items if e.get("reason") == reason]


def freeze(worker: Worker) -> Callable[[], None]:
    """SIGSTOP a worker (its metrics stop answering); returns the thaw."""
    worker.proc.send_signal(signal.SIGSTOP)
    return lambda: worker.proc.send_signal(signal.SIGCONT)
