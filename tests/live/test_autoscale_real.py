"""The live-scaling scenario end to end on real kubelet nodes: the replicas are the real worker in
containers (a real CPU node, emulated MIG slices of a real A100 node behind the emulated NVIDIA
device plugin), the operator reads their metrics from the pods themselves (no
GPUPOOL_SCRAPE_OVERRIDE) and tritonclient load goes to the Ready pods' own gRPC ports.

A load generator raises the pool's queue; the operator scales it up through placement, onto a new
shape (MIG slices once the CPU node is full); it is SIGKILLed mid-burst and the next leader keeps
the replicas and the window; a replica whose metrics stop answering (the host drops what goes to
its metrics port; it keeps serving and stays Ready) holds the count; idle, the pool goes back to
one CPU replica after the window, with ScaledUp and ScaledDown Events.

Its own cluster of real nodes only; needs root and the node binaries (skipped, saying what is
missing, otherwise). Run it under ``flock /tmp/gpupool-realnodes.lock`` beside other real-node runs.
The KWOK variant of the same scenario is tests/live/test_autoscale_cluster.py.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support.real_cluster import real_node_cluster

from gpupool_operator.local import realnodes
from gpupool_operator.local.cluster import LocalCluster

from .conftest import ROOT
from .live_cluster import Scenario, silence, start_real_nodes, surge_restart_silence_and_idle

pytestmark = [pytest.mark.real_nodes, pytest.mark.cluster, pytest.mark.timeout(1500)]

#: a real pod starts in tens of seconds on this shared 2-core machine (the KWOK variant waits 120 s)
TIMEOUT = 300


@pytest.fixture(scope="module")
def real_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    with real_node_cluster(tmp_path_factory.mktemp("live-real")) as (cluster, nodes):
        manager = start_real_nodes(cluster, nodes, ROOT)
        try:
            yield {"cluster": cluster, "nodes": nodes, "manager": manager}
        finally:
            manager.stop()


def _mig_pod(scene: Scenario) -> dict[str, Any]:
    pods = [p for p in scene.pods() if scene.ready(p) and (p["spec"].get("nodeName") or "").startswith("a100")]
    assert pods, "a Ready replica on the A100 node"
    return pods[0]


def test_real_nodes_surge_scale_up_restart_silent_replica_and_scale_down(
        real_cluster: dict[str, Any], tmp_path: Path) -> None:
    cluster: LocalCluster = real_cluster["cluster"]
    nodes: realnodes.RealNodes = real_cluster["nodes"]
    namespace = "live-real"
    cluster.kubectl("create", "namespace", namespace)
    scene = Scenario(cluster, namespace, [], tmp_path,
                     env={"GPUPOOL_WORKER_IMAGE": nodes.host.tag, "GPUPOOL_STATS_SECONDS": "3"})
    assert scene.real, "every node is a real kubelet: the scenario reads and loads the pods themselves"
    operators = [scene.operator("live-op-1")]
    started = time.monotonic()
    try:
        scene.apply()
        scene.record()
        stop_reporting: Callable[[], Callable[[], None]] = lambda: silence(_mig_pod(scene))  # noqa: E731
        surge_restart_silence_and_idle(scene, operators, TIMEOUT, stop_reporting)
        assert scene.load is not None
        assert scene.load.answered > 0
        full = next(s.at for s in scene.samples if s.ready == scene.max_replicas)
        print(f"\nMEASURED real nodes: {scene.load.answered} requests answered by the pods; all "
              f"{scene.max_replicas} replicas Ready {full - scene.load.started_at:.1f}s after the load started; "
              f"whole scenario {time.monotonic() - started:.0f}s", file=sys.__stderr__)
        assert not real_cluster["manager"].errors, real_cluster["manager"].errors
    finally:
        if scene.load is not None:
            scene.load.stop()
        scene.stop_recording()
        for op in operators:
            op.kill(signal.SIGTERM)
        cluster.kubectl("delete", "inferencepools", "--all", "-n", namespace, "--wait=true", "--timeout=90s",
                        check=False)
