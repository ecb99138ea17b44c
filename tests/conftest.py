"""Shared fixtures. The ``cluster`` fixture is a real control plane (see gpupool_operator.local).

Tests that use ``cluster`` are marked ``cluster`` automatically, so ``-m "not cluster"`` runs the
rest on a machine without the Go-built binaries. The binaries are built by ``make setup`` before
pytest starts (a first build takes tens of minutes; pytest's per-test timeout must not include it).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpupool_operator.local.cluster import LocalCluster, running
from gpupool_operator.local.nodes import build_nodes, register_nodes
from gpupool_operator.local.spec import ClusterSpec, load

ROOT = Path(__file__).resolve().parents[1]
SMALL_CLUSTER = ROOT / "examples" / "clusters" / "small-hetero.yaml"

os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.cluster)


def wait_nodes_ready(cluster: LocalCluster, names: set[str], timeout_s: float = 60) -> None:
    """Wait (bounded) until every named node reports Ready=True."""
    import json

    deadline = time.monotonic() + timeout_s
    pending = set(names)
    while pending and time.monotonic() < deadline:
        items = json.loads(cluster.kubectl("get", "nodes", "-o", "json").stdout)["items"]
        ready = {
            n["metadata"]["name"]
            for n in items
            if any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"].get("conditions", []))
        }
        pending -= ready
        if pending:
            time.sleep(0.3)
    if pending:
        raise AssertionError(f"nodes not Ready after {timeout_s}s: {sorted(pending)[:10]}")


@pytest.fixture(scope="session")
def small_spec() -> ClusterSpec:
    return load(SMALL_CLUSTER)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory, small_spec: ClusterSpec) -> Iterator[LocalCluster]:
    """One real control plane for the session, with the small heterogeneous example pools registered."""
    directory = tmp_path_factory.mktemp("cluster")
    with running(directory) as c:
        nodes = build_nodes(small_spec)
        register_nodes(c.api_client(), nodes, progress=None)
        wait_nodes_ready(c, {n["metadata"]["name"] for n in nodes})
        yield c
