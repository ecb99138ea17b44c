"""Robustness: the operator killed at any point converges on restart; two replicas give one active;
a leader frozen by SIGSTOP is replaced within the Lease and, resumed, writes nothing.

The operator runs as real processes here (``gpupool operator``), so SIGKILL is a real crash: no
cleanup handler runs and its Lease must expire before the next one takes over. Each process
serves its own metrics, which count every request it sent.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

from operator_builders import PoolBuilder
from operator_helpers import (
    OperatorProcess,
    apply,
    free_port,
    lease_holder,
    live_pods,
    replica_indices,
    scrape,
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


LEASE_S = 4.0  # OperatorProcess runs with --lease-seconds 4
RETRY_S = max(0.5, LEASE_S / 5)  # adapters/runtime.py: the renew / retry period


def _writes(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> dict[str, float]:
    """Requests other than GET that one process sent, by resource."""
    out: dict[str, float] = {}
    for (name, labels), value in samples.items():
        d = dict(labels)
        if name == "gpupool_api_requests_total" and d.get("verb") != "GET":
            out[d["resource"]] = out.get(d["resource"], 0.0) + value
    return out


def _lease(cluster: LocalCluster) -> dict[str, Any]:
    from kubernetes import client

    api = client.CoordinationV1Api(cluster.api_client())
    spec = api.read_namespaced_lease("gpupool-operator", "gpupool-system").spec
    return {"holder": spec.holder_identity or "", "transitions": spec.lease_transitions}


def test_a_frozen_leader_is_replaced_within_the_lease_and_writes_nothing_when_it_wakes(
    control_plane: LocalCluster, namespace: str, tmp_path: Path
) -> None:
    kubeconfig = str(control_plane.kubeconfig)
    ports = {"op-a": free_port(), "op-b": free_port()}
    a, b = (OperatorProcess(kubeconfig, tmp_path / f"{n}.log", n, extra_args=["--metrics-address", f"127.0.0.1:{p}"])
            for n, p in ports.items())
    try:
        holder = wait_until(lambda: lease_holder(control_plane), TIMEOUT, "a Lease holder")
        leader, standby = (a, b) if holder.startswith("op-a_") else (b, a)
        apply(control_plane, PoolBuilder("frozen").cpu("c", replicas=2).obj(), namespace)
        wait_until(lambda: settled(control_plane, namespace, "frozen", 2), TIMEOUT, "2 replicas")

        def quiet() -> dict[str, float] | None:  # the leader has nothing left to write but its Lease
            first = _writes(scrape(ports[leader.name]))
            time.sleep(2 * RETRY_S)
            second = _writes(scrape(ports[leader.name]))
            drop = {k: v for k, v in first.items() if k != "leases"}
            return drop if drop == {k: v for k, v in second.items() if k != "leases"} else None

        before = wait_until(quiet, TIMEOUT, "the leader quiet")
        assert scrape(ports[leader.name])[("gpupool_leader", ())] == 1
        term = _lease(control_plane)

        leader.signal(signal.SIGSTOP)  # frozen: it neither renews nor releases
        frozen_at = time.monotonic()
        wait_until(lambda: _lease(control_plane)["holder"].startswith(standby.name + "_"), TIMEOUT,
                   "the standby holding the Lease", interval_s=0.05)
        took = time.monotonic() - frozen_at
        # client-go's bound: the record unchanged for the lease duration, seen at most one retry late
        # (the 1 s on top is this test's polling and a loaded machine's scheduling, not the operator's)
        assert took <= LEASE_S + RETRY_S + 1.0, f"takeover took {took:.2f}s"
        assert _lease(control_plane)["transitions"] == term["transitions"] + 1
        _patch_replicas(control_plane, namespace, "frozen", 0, 4)
        wait_until(lambda: settled(control_plane, namespace, "frozen", 4), TIMEOUT, "4 replicas by the new leader")

        leader.signal(signal.SIGCONT)  # it wakes with a stale view and an old Lease term
        _patch_replicas(control_plane, namespace, "frozen", 0, 3)  # events that would make a leader write
        wait_until(lambda: settled(control_plane, namespace, "frozen", 3), TIMEOUT, "3 replicas")
        time.sleep(3 * RETRY_S)
        woke = scrape(ports[leader.name])
        assert {k: v for k, v in _writes(woke).items() if k != "leases"} == before  # not one write
        assert woke[("gpupool_leader", ())] == 0
        lease = _lease(control_plane)
        assert lease["holder"].startswith(standby.name + "_")  # no Lease update of its went through
        assert lease["transitions"] == term["transitions"] + 1
        now_leading = scrape(ports[standby.name])
        assert now_leading[("gpupool_leader", ())] == 1
        model = (("model", "c"), ("namespace", namespace), ("pool", "frozen"))
        assert now_leading[("gpupool_desired_replicas", model)] == 3
        assert now_leading[("gpupool_ready_replicas", model)] == 3
        assert now_leading[("gpupool_placement_cycle_seconds_count", ())] >= 1
        assert len(replica_indices(control_plane, namespace, "frozen")) == 3
        print(f"takeover {took:.2f}s after SIGSTOP (lease {LEASE_S}s, retry {RETRY_S}s); the resumed replica "
              f"refused {woke.get(('gpupool_fenced_writes_total', ()), 0):.0f} write(s) locally")
    finally:
        a.kill(signal.SIGTERM)
        b.kill(signal.SIGTERM)
