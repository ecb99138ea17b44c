"""Robustness: the operator killed at any point converges on restart; two replicas give one active.

The operator runs as real processes here (``gpupool operator``), so SIGKILL is a real crash: no
cleanup handler runs and its Lease must expire before the next one takes over.
"""

from __future__ import annotations

import signal
from pathlib import Path

from operator_builders import PoolBuilder
from operator_helpers import (
    OperatorProcess,
    apply,
    lease_holder,
    live_pods,
    replica_indices,
    settled,
    wait_until,
)

from gpupool_operator.local.cluster import LocalCluster

TIMEOUT = 90


def _patch_replicas(cluster: LocalCluster, namespace: str, name: str, index: int, n: int) -> None:
    cluster.kubectl("patch", "inferencepool", name, "-n", namespace, "--type=json",
                    "-p", f'[{{"op":"replace","path":"/spec/models/{index}/maxReplicas","value":{n + 10}}},'
                          f'{{"op":"replace","path":"/spec/models/{index}/minReplicas","value":{n}}}]')


def test_killed_midway_converges_without_duplicates(
    control_plane: LocalCluster, namespace: str, tmp_path: Path
) -> None:
    kubeconfig = str(control_plane.kubeconfig)
    apply(control_plane, PoolBuilder("crash").cpu("c", replicas=24).mig("m", "1g.10gb", replicas=3).obj(), namespace)
    first = OperatorProcess(kubeconfig, tmp_path / "first.log", "op-first")
    wait_until(lambda: live_pods(control_plane, namespace), TIMEOUT, "the first replica")
    first.kill(signal.SIGKILL)  # crash while creating
    with OperatorProcess(kubeconfig, tmp_path / "second.log", "op-second") as second:
        wait_until(lambda: settled(control_plane, namespace, "crash", 27), TIMEOUT, "27 replicas after a restart")
        assert replica_indices(control_plane, namespace, "crash") == sorted([*range(24), *range(3)])
        _patch_replicas(control_plane, namespace, "crash", 0, 40)
        wait_until(lambda: len(live_pods(control_plane, namespace)) > 27, TIMEOUT, "scale-up under way")
        second.kill(signal.SIGKILL)  # crash while scaling up
    with OperatorProcess(kubeconfig, tmp_path / "third.log", "op-third"):
        wait_until(lambda: settled(control_plane, namespace, "crash", 43), TIMEOUT, "43 replicas after a restart")
        assert replica_indices(control_plane, namespace, "crash") == sorted([*range(40), *range(3)])
        _patch_replicas(control_plane, namespace, "crash", 0, 2)
        wait_until(lambda: settled(control_plane, namespace, "crash", 5), TIMEOUT, "scaled down to 5")
        control_plane.kubectl("delete", "inferencepool", "crash", "-n", namespace, "--timeout=60s")
        wait_until(lambda: not live_pods(control_plane, namespace), TIMEOUT, "everything deleted")


def test_two_replicas_one_active(control_plane: LocalCluster, namespace: str, tmp_path: Path) -> None:
    kubeconfig = str(control_plane.kubeconfig)
    a = OperatorProcess(kubeconfig, tmp_path / "a.log", "op-a")
    b = OperatorProcess(kubeconfig, tmp_path / "b.log", "op-b")
    try:
        holder = wait_until(lambda: lease_holder(control_plane), TIMEOUT, "a Lease holder")
        leader, standby = (a, b) if holder.startswith("op-a_") else (b, a)
        apply(control_plane, PoolBuilder("ha").cpu("c", replicas=3).obj(), namespace)
        wait_until(lambda: settled(control_plane, namespace, "ha", 3), TIMEOUT, "3 replicas")
        assert "cycle" in leader.log()
        assert "cycle" not in standby.log()
        assert "acquired leadership" not in standby.log()

        leader.kill(signal.SIGTERM)  # a clean stop releases the Lease: the standby takes over at once
        wait_until(lambda: (lease_holder(control_plane) or "").startswith(standby.name + "_"), TIMEOUT,
                   "the standby holding the Lease")
        _patch_replicas(control_plane, namespace, "ha", 0, 5)
        wait_until(lambda: settled(control_plane, namespace, "ha", 5), TIMEOUT, "5 replicas by the new leader")
        assert "acquired leadership" in standby.log()
        assert replica_indices(control_plane, namespace, "ha") == list(range(5))
    finally:
        a.kill(signal.SIGTERM)
        b.kill(signal.SIGTERM)
