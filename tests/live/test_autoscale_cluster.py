"""End to end on the real local control plane: a queue surge on real workers becomes replicas on a
new shape, an operator killed mid-burst is replaced without losing the window, a replica that
stops reporting holds the count, and idle load scales back down after the window.

See tests/live/live_cluster.py for exactly what is real here: on KWOK nodes the replicas' metrics
come from real worker processes on this host through the operator's GPUPOOL_SCRAPE_OVERRIDE
setting, and the load goes only to the workers of Ready replicas; no KWOK pod is counted as
serving. With real kubelet nodes the same scenario runs without the override.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

from gpupool_operator.local.cluster import LocalCluster

from .conftest import Load, Worker
from .live_cluster import MAX_REPLICAS, Scenario, freeze

TIMEOUT = 120


def test_surge_scale_up_restart_silent_replica_and_scale_down(
        control_plane: LocalCluster, namespace: str, worker_factory: Callable[[], Worker], tmp_path: Path) -> None:
    workers = [worker_factory() for _ in range(MAX_REPLICAS)]
    scene = Scenario(control_plane, namespace, workers, tmp_path)
    first = scene.operator("live-op-1")
    second = None
    try:
        scene.apply()
        scene.record()
        scene.wait(lambda s: s.ready == 1, TIMEOUT, "the first replica Ready")
        scene.wait(lambda s: s.desired == 1, TIMEOUT, "the scaling loop measuring the idle replica")

        scene.load = Load(scene.routes(scene.pods()), concurrency=32).start()
        up = scene.wait(lambda s: (s.desired or 0) > 1, TIMEOUT, "a scale-up decision")
        assert up.decision.startswith("scale up 1 -> "), up.decision
        scene.wait(lambda s: s.pods == MAX_REPLICAS and s.ready == MAX_REPLICAS, TIMEOUT,
                   f"{MAX_REPLICAS} replicas Ready")
        scene.wait(lambda s: s.gpu_pods >= 1, TIMEOUT, "a replica on a GPU (the CPU nodes are full)")
        assert scene.events("ScaledUp"), "a ScaledUp Event"

        # the operator dies mid-burst; a new one takes the Lease and continues from status.scaling
        first.kill(signal.SIGKILL)
        killed = time.time()
        second = scene.operator("live-op-2")
        scene.wait(lambda s: s.at > killed + 12 and s.decision != "", TIMEOUT, "the new leader deciding")
        after = [s for s in scene.samples if s.at > killed]
        assert min(s.pods for s in after) == MAX_REPLICAS, "the restart dropped replicas"
        assert "warming up" not in scene.samples[-1].decision, scene.samples[-1].decision
        scene.load.stop()
        assert scene.load.answered > 0
        assert not scene.load.errors, scene.load.errors

        # a replica that stops reporting holds the count
        thaw = freeze(workers[1])
        try:
            frozen = time.time()
            scene.wait(lambda s: "reported" in s.decision, TIMEOUT, "the policy noticing the silent replica")
            time.sleep(14)  # over twice the stable window, idle: it would scale down if it trusted the silence
            held = [s for s in scene.samples if s.at > frozen + 1]
            assert all(s.pods == MAX_REPLICAS for s in held), [s.pods for s in held]
        finally:
            thaw()
        # reporting again, idle: back to minReplicas after the window, the GPU replica first
        scene.wait(lambda s: s.desired == 1, TIMEOUT, "the scale-down decision")
        scene.wait(lambda s: s.pods == 1 and s.gpu_pods == 0, TIMEOUT, "the pool back at one replica, on a CPU node")
        assert scene.events("ScaledDown"), "a ScaledDown Event"
    finally:
        if scene.load is not None:
            scene.load.stop()
        scene.stop_recording()
        first.kill(signal.SIGTERM)
        if second is not None:
            second.kill(signal.SIGTERM)
