"""Fixtures for the operator's tests on the real control plane (see tests/conftest.py).

* ``control_plane``: the session cluster with the CRDs, the operator namespace and the MIG
  manager's ConfigMap installed (once);
* ``mig_manager``: the stand-in for NVIDIA's MIG manager (tests/support), running for the session;
* ``operator``: the operator in this process under ``kopf.testing.KopfRunner`` (module scope; the
  restart, peering and RBAC tests run it as subprocesses instead);
* ``namespace``: a fresh namespace per test, deleted afterwards while the operator still runs.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.mig_manager import MigManagerStandIn

from gpupool_operator.local.cluster import LocalCluster

ROOT = Path(__file__).resolve().parents[2]
OPERATOR_NAMESPACE = "gpupool-system"
FAST_ENV = {
    "GPUPOOL_NAMESPACE": OPERATOR_NAMESPACE,
    "GPUPOOL_LEASE_SECONDS": "6",
    "GPUPOOL_RESYNC_SECONDS": "10",
    "GPUPOOL_MIG_FAILURE_COOLDOWN_SECONDS": "600",
    "GPUPOOL_UNSCHEDULABLE_SECONDS": "3",
    "NO_PROXY": "127.0.0.1,localhost",
}


@pytest.fixture(scope="session")
def control_plane(cluster: LocalCluster) -> LocalCluster:
    cluster.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
    cluster.wait_established(timeout_s=60)
    cluster.kubectl("create", "namespace", OPERATOR_NAMESPACE, check=False)
    cluster.kubectl("apply", "-f", str(ROOT / "examples" / "pools" / "gpupoolconfig-default.yaml"))
    return cluster


@pytest.fixture(scope="session")
def mig_manager(control_plane: LocalCluster) -> Iterator[MigManagerStandIn]:
    stand_in = MigManagerStandIn(control_plane.api_client(), OPERATOR_NAMESPACE, delay_s=1.0).start()
    yield stand_in
    stand_in.stop()
    assert not stand_in.errors, stand_in.errors


@pytest.fixture(scope="module")
def operator(control_plane: LocalCluster, mig_manager: MigManagerStandIn) -> Iterator[Any]:
    """The operator, in-process, as kopf's test runner runs it (standalone: the Lease elects)."""
    from kopf.testing import KopfRunner

    saved = {k: os.environ.get(k) for k in [*FAST_ENV, "KUBECONFIG"]}
    os.environ.update(FAST_ENV)
    os.environ["KUBECONFIG"] = str(control_plane.kubeconfig)
    try:
        with KopfRunner(
            ["run", "-A", "--standalone", "-m", "gpupool_operator.handlers"], timeout=90,
        ) as runner:
            yield runner
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    assert runner.exception is None, runner.exception


@pytest.fixture
def namespace(control_plane: LocalCluster) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    control_plane.kubectl("create", "namespace", name)
    yield name
    control_plane.kubectl("delete", "inferencepools", "--all", "-n", name, "--wait=true", "--timeout=60s",
                          check=False)
    control_plane.kubectl("delete", "namespace", name, "--wait=false", check=False)
