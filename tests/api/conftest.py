"""Fixtures of the API tests: the generated CRDs installed on the session's real control plane."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from api_cases import CRD_FILES, CRD_NAMES, NS, wait_for


@pytest.fixture(scope="session")
def crds(cluster: Any) -> Iterator[Any]:
    """The cluster with the CRDs from crds/ installed (the committed files, as Helm installs them)."""
    for path in CRD_FILES:
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))
    cluster.wait_established(*CRD_NAMES, timeout_s=60)
    if cluster.kubectl("get", "namespace", NS, check=False).returncode != 0:
        cluster.kubectl("create", "namespace", NS)
    # kubectl explain and strict field validation read the published OpenAPI: wait until it has ours.
    wait_for(
        lambda: cluster.kubectl("explain", "inferencepools.spec", check=False).returncode == 0,
        timeout_s=60,
        what="OpenAPI publication of InferencePool",
    )
    yield cluster
    cluster.kubectl("delete", "inferencepools", "--all", "-n", NS, "--wait=false", check=False)
