"""A local cluster of real kubelet nodes, and gpupool's operator running on it, for the tests that
need real pods (tests/local, tests/live). One place for what each such test must do around its
own scenario: skip, saying why, without root or the node binaries; stop what it started before the
nodes go; and prove afterwards that the host is as it was found."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import pytest

from gpupool_operator.local import realnodes, toolchain
from gpupool_operator.local.cluster import LocalCluster, running
from gpupool_operator.local.migmanager import MigManager

ROOT = Path(__file__).resolve().parents[2]
OPERATOR_NAMESPACE = "gpupool-system"


@contextmanager
def real_node_cluster(directory: Path) -> Iterator[tuple[LocalCluster, realnodes.RealNodes]]:
    """A control plane in ``directory`` and a handle on its real nodes (none started yet). On the
    way out the nodes are torn down, then the host must equal its snapshot from before."""
    missing = realnodes.prerequisites()
    if missing:
        pytest.skip("real nodes cannot run here: missing " + "; ".join(missing))
    before = realnodes.host_snapshot()
    with running(directory) as cluster:
        nodes = realnodes.RealNodes(cluster, toolchain.ensure_node_binaries())
        try:
            yield cluster, nodes
        finally:
            nodes.teardown()
    assert realnodes.host_snapshot() == before


@contextmanager
def operator_on(cluster: LocalCluster, nodes: realnodes.RealNodes, namespace: str,
                env: Mapping[str, str] | None = None) -> Iterator[MigManager]:
    """gpupool's CRDs, the default GPUPoolConfig, the emulated MIG manager for the real nodes and
    the operator (kopf, in this process) with short test periods plus ``env``; yields the MIG
    manager. On the way out the pools in ``namespace`` are deleted while the operator still runs
    (so it removes its replicas), the operator must have ended without an exception, and the
    environment and the MIG manager are restored and stopped whatever happened."""
    from kopf.testing import KopfRunner

    cluster.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
    cluster.wait_established(timeout_s=60)
    for ns in (OPERATOR_NAMESPACE, namespace):
        cluster.kubectl("create", "namespace", ns)
    cluster.kubectl("apply", "-f", str(ROOT / "examples" / "pools" / "gpupoolconfig-default.yaml"))
    manager = MigManager(cluster.api_client(), OPERATOR_NAMESPACE, delay_s=1.0,
                         real_nodes=nodes.mig_targets).start()
    saved = dict(os.environ)
    try:
        os.environ.update({
            "KUBECONFIG": str(cluster.kubeconfig), "GPUPOOL_NAMESPACE": OPERATOR_NAMESPACE,
            "GPUPOOL_WORKER_IMAGE": nodes.host.tag, "GPUPOOL_LEASE_SECONDS": "6",
            "GPUPOOL_RESYNC_SECONDS": "10", "GPUPOOL_STATS_SECONDS": "3", "NO_PROXY": "127.0.0.1,localhost",
            **(env or {}),
        })
        with KopfRunner(["run", "-A", "--standalone", "-m", "gpupool_operator.handlers"], timeout=120) as runner:
            yield manager
            cluster.kubectl("delete", "inferencepools", "--all", "-n", namespace, "--wait=true", "--timeout=90s",
                            check=False)
        assert runner.exception is None, runner.exception
    finally:
        os.environ.clear()
        os.environ.update(saved)
        manager.stop()
