"""Real kubelet nodes (containerd, runc, a CNI bridge) beside the local control plane.

These need root and the node binaries (``gpupool local build --nodes``); without root they are
skipped with what is missing named. They run serially (one host, one set of bridges).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from gpupool_operator.local import realnodes, toolchain
from gpupool_operator.local.cluster import LocalCluster

pytestmark = pytest.mark.real_nodes


def _require_prerequisites() -> None:
    missing = realnodes.prerequisites()
    if missing:
        pytest.skip("real nodes cannot run here: missing " + "; ".join(missing))


@pytest.fixture(scope="module")
def runtime_binaries() -> toolchain.NodeBinaries:
    _require_prerequisites()
    return toolchain.ensure_node_binaries(kubelet=False)


def _pod_config(tmp: Path, name: str, cgroup_parent: str) -> Path:
    path = tmp / f"{name}-pod.json"
    logs = tmp / f"{name}-logs"
    logs.mkdir(exist_ok=True)
    path.write_text(json.dumps({
        "metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}", "attempt": 0},
        "log_directory": str(logs),
        "linux": {"cgroup_parent": f"{cgroup_parent}/{name}"},
    }))
    return path


def test_containerd_runs_the_worker_image_on_the_node_bridge_and_teardown_restores_the_host(
    tmp_path: Path, runtime_binaries: toolchain.NodeBinaries
) -> None:
    """The container runtime of a node, driven over CRI as the kubelet drives it."""
    before = realnodes.host_snapshot()
    nodes = realnodes.RealNodes(LocalCluster(tmp_path / "cluster"), runtime_binaries)
    try:
        node = nodes.prepare_runtime("rt-1")
        during = realnodes.host_snapshot()
        assert node.bridge in during["bridges"]
        assert any(node.bridge in r for r in during["forward_rules"])
        assert any(c.endswith(node.cgroup_root) for c in during["cgroups"])

        pod_cfg = _pod_config(tmp_path, "p1", node.cgroup_root)
        sandbox = nodes.crictl("rt-1", "runp", str(pod_cfg)).stdout.strip()
        assert sandbox, nodes.log_tail("rt-1", "containerd")
        info = json.loads(nodes.crictl("rt-1", "inspectp", sandbox).stdout)
        ip = info["status"]["network"]["ip"]
        assert ip.startswith(f"{realnodes.SUBNET_BASE}.{node.index}."), ip  # an address of the node's own /24

        ctr_cfg = tmp_path / "ctr.json"
        ctr_cfg.write_text(json.dumps({
            "metadata": {"name": "worker"},
            "image": {"image": nodes.host.tag},
            "args": ["--help"],
            "log_path": "worker.log",
            "linux": {},
        }))
        created = nodes.crictl("rt-1", "create", sandbox, str(ctr_cfg), str(pod_cfg))
        assert created.returncode == 0, created.stderr
        assert nodes.crictl("rt-1", "start", created.stdout.strip()).returncode == 0
        log = tmp_path / "p1-logs" / "worker.log"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "serve a model repository" not in (
            log.read_text() if log.exists() else ""
        ):
            time.sleep(0.3)
        # the worker's own CLI ran inside the container, from the venv mounted read-only
        assert "serve a model repository" in log.read_text()
    finally:
        nodes.teardown()
    after = realnodes.host_snapshot()
    assert after == before
    assert not nodes.shim_pids()
    nodes.teardown()  # idempotent: nothing left to do, nothing fails
    assert realnodes.host_snapshot() == before
