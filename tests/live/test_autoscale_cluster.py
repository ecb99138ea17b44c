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
from collections.abc import Callable
from pathlib import Path

from gpupool_operator.local.cluster import LocalCluster

from .conftest import Worker
from .live_cluster import MAX_REPLICAS, Scenario, freeze, surge_restart_silence_and_idle

TIMEOUT = 120


def test_surge_scale_up_restart_silent_replica_and_scale_down(
        control_plane: LocalCluster, namespace: str, worker_factory: Callable[[], Worker], tmp_path: Path) -> None:
    workers = [worker_factory() for _ in range(MAX_REPLICAS)]
    scene = Scenario(control_plane, namespace, workers, tmp_path)
    operators = [scene.operator("live-op-1")]
    try:
        scene.apply()
        scene.record()
        surge_restart_silence_and_idle(scene, operators, TIMEOUT, lambda: freeze(workers[1]))
    finally:
        if scene.load is not None:
            scene.load.stop()
        scene.stop_recording()
        for op in operators:
            op.kill(signal.SIGTERM)
