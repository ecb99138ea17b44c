"""Surge to decision: how fast a queue surge on a real worker becomes new replicas, on the local
control plane, from timestamps (load start, queue seen, decision, pod created, pod Ready) and the
scale-down after the window.

Run: ``PYTHONPATH=operator:worker:proto python benchmarks/live/bench_surge.py [--repeat 3] [--real-nodes]``
(under ``flock /tmp/gpupool-bench.lock`` on shared machines, and ``flock /tmp/gpupool-realnodes.lock``
with ``--real-nodes``). It boots a fresh control plane with the
small-hetero KWOK nodes, starts the operator as its own process and four real workers on this host
(the scenario of tests/live/live_cluster.py: on KWOK the replicas' metrics come from those workers
through GPUPOOL_SCRAPE_OVERRIDE, and the load goes only to the workers of Ready replicas), then per
repeat: starts 32 concurrent tritonclient streams, waits for the pool at maxReplicas, stops the
load and waits for it to return to one replica.

With ``--real-nodes`` (root, node binaries built) the cluster is real kubelet nodes instead
(tests/live/test_autoscale_real.py's: a real CPU node and emulated MIG slices on a real A100 node):
the replicas are the worker in containers, read and loaded at their pods, so "pod Ready" includes a
real container start and model load. Results go to ``live-surge-real``.

Timestamps are this process's wall clock: the load start and the queue probe are taken here (the
probe reads the worker's metrics directly every 0.1 s); decision, pod created and pod Ready are
the first time a poll of the API server (every ~0.25 s, each poll a few kubectl calls) showed them,
so each figure is an upper bound with about 0.3-0.5 s of polling in it. The policy runs with the
short windows the test uses (stable 6 s, panic 2 s) and the default 2 s tick.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "operator"), str(ROOT / "tests"), str(ROOT / "tests" / "operator")]

from live.conftest import Load, repository, start_worker  # noqa: E402
from live.live_cluster import MAX_REPLICAS, PARAMS, Scenario, start_real_nodes  # noqa: E402

from benchmarks._results import write  # noqa: E402
from gpupool_operator.local import toolchain  # noqa: E402
from gpupool_operator.local.cluster import LocalCluster  # noqa: E402
from gpupool_operator.local.nodes import build_nodes, register_nodes  # noqa: E402
from gpupool_operator.local.spec import load  # noqa: E402


def surge(scene: Scenario, repeat: int) -> dict[str, Any]:
    scene.wait(lambda s: s.pods == 1 and s.ready == 1 and s.desired == 1, 180, "one idle replica")
    time.sleep(3)
    probe_at: list[float] = []
    stop = threading.Event()
    first = scene.metrics_url(scene.pods()[0])

    def probe() -> None:
        while not stop.is_set():
            try:
                if scene.queue_probe(first) >= 1:
                    probe_at.append(time.time())
                    return
            except OSError:
                pass
            time.sleep(0.1)

    prober = threading.Thread(target=probe, daemon=True)
    start = time.time()
    prober.start()
    scene.load = Load(scene.routes(scene.pods()), concurrency=32).start()
    decision = scene.wait(lambda s: s.at > start and (s.desired or 0) > 1, 120, "a scale-up decision")
    created = scene.wait(lambda s: s.at > start and s.pods > 1, 120, "a new pod")
    ready = scene.wait(lambda s: s.at > start and s.ready > 1, 120, "a new pod Ready")
    full = scene.wait(lambda s: s.at > start and s.ready == scene.max_replicas, 180, "maxReplicas Ready")
    stop.set()
    time.sleep(5)  # hold the load a moment at maxReplicas
    at_stop = scene.samples[-1]
    scene.load.stop()
    stopped = time.time()
    answered = scene.load.answered
    scene.load = None
    first_down = scene.wait(lambda s: s.at > stopped and s.pods < at_stop.pods, 300, "a first replica removed")
    down = scene.wait(lambda s: s.at > stopped and s.pods == 1, 300, "back to one replica")
    queue = probe_at[0] if probe_at else None
    return {
        "repeat": repeat, "first_decision_seen": decision.decision, "answered": answered,
        "queue_seen_s": None if queue is None else round(queue - start, 2),
        "decision_s": round(decision.at - start, 2), "pod_created_s": round(created.at - start, 2),
        "pod_ready_s": round(ready.at - start, 2), "max_replicas_ready_s": round(full.at - start, 2),
        "pods_at_load_stop": at_stop.pods,
        "first_removal_after_load_stop_s": round(first_down.at - stopped, 2),
        "one_replica_after_load_stop_s": round(down.at - stopped, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--real-nodes", action="store_true",
                        help="real kubelet nodes (root, node binaries) instead of KWOK nodes and host workers")
    args = parser.parse_args()
    binaries = toolchain.ensure_binaries()
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="gpupool-bench-live-") as tmp:
        cluster = LocalCluster(Path(tmp) / "c", binaries)
        cluster.start()
        workers = []
        op = None
        real: Any = None
        manager: Any = None
        env: dict[str, str] = {}
        try:
            if args.real_nodes:
                from gpupool_operator.local import realnodes

                real = realnodes.RealNodes(cluster, toolchain.ensure_node_binaries())
                manager = start_real_nodes(cluster, real, ROOT)
                env = {"GPUPOOL_WORKER_IMAGE": real.host.tag}
            else:
                register_nodes(cluster.api_client(), build_nodes(load(ROOT / "examples" / "clusters" /
                                                                      "small-hetero.yaml")), progress=None)
                cluster.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
                cluster.wait_established("inferencepools.gpupool.io", timeout_s=60)
                cluster.kubectl("create", "namespace", "gpupool-system")
                cluster.kubectl("apply", "-f", str(ROOT / "examples" / "pools" / "gpupoolconfig-default.yaml"))
                repo = repository(Path(tmp) / "models")
                workers = [start_worker(repo, Path(tmp)) for _ in range(MAX_REPLICAS)]
            cluster.kubectl("create", "namespace", "bench")
            scene = Scenario(cluster, "bench", workers, Path(tmp), env=env)
            assert scene.real == args.real_nodes, "real nodes only, or KWOK nodes only"
            op = scene.operator("bench-op")
            scene.apply()
            scene.record()
            for i in range(args.repeat):
                runs.append(surge(scene, i))
                print(runs[-1], flush=True)
            scene.stop_recording()
        finally:
            if op is not None:
                op.kill(15)
            for w in workers:
                w.stop()
            if manager is not None:
                manager.stop()
            if real is not None:
                real.teardown()
            cluster.stop()

    def stat(key: str) -> dict[str, float]:
        values = [r[key] for r in runs if r[key] is not None]
        return {"median": round(statistics.median(values), 2), "max": round(max(values), 2)} if values else {}

    keys = ["queue_seen_s", "decision_s", "pod_created_s", "pod_ready_s", "max_replicas_ready_s",
            "first_removal_after_load_stop_s", "one_replica_after_load_stop_s"]
    summary = {k: stat(k) for k in keys}
    rows = "\n".join(f"| {k} | {summary[k].get('median')} | {summary[k].get('max')} |" for k in keys)
    if args.real_nodes:
        name = "live-surge-real"
        where = ("real kubelet nodes (a real 2-core CPU node, emulated MIG 1g.10gb slices on a real A100 node): "
                 "the replicas are the worker in containers, their metrics read and their gRPC ports loaded at "
                 "the pods.")
        order = "here the CPU replica first, then two MIG slices"
    else:
        name = "live-surge"
        where = "KWOK nodes with the replicas' metrics read from real workers on this host (GPUPOOL_SCRAPE_OVERRIDE)."
        order = "here three CPU replicas, then a GPU"
    md = (f"Queue surge (32 concurrent tritonclient streams against one idle replica) to scaling decision "
          f"and new replicas, {len(runs)} repeats; seconds from load start (scale-down: from load stop). "
          f"Policy windows: {PARAMS}; 2 s tick; {where} Goal: decision within 5 s.\n\n"
          f"| step | median s | max s |\n|---|---|---|\n{rows}\n\n"
          f"queue_seen_s is this process's own probe of the first worker's queue (every 0.1 s, from a "
          f"thread sharing the interpreter with the load generator, so it lags under load); the "
          f"decision often comes first, from the panic on arrival rates, before any probe sees a queue. "
          f"The policy asks for its mix of shapes, but placement receives only the replica count and puts "
          f"replicas where they are cheapest per replica ({order}), "
          f"which may serve less than the policy's mix (see the first decision below).\n\n"
          f"Scale-down: the policy holds for its stable window (6 s here, 60 s by default) after the last "
          f"panic tick and the pool's scaleDownStabilizationWindow (4 s here), at most halving per "
          f"decision.\n\nFirst decision seen in status (first run): "
          f"`{runs[0]['first_decision_seen'] if runs else ''}`\n")
    write(name, {"real_nodes": args.real_nodes, "runs": runs, "summary": summary, "params": PARAMS, "tick_s": 2.0}, md)
    print(md)


if __name__ == "__main__":
    main()
