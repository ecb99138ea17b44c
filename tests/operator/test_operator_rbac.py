"""The operator under the RBAC the Helm chart ships, against the RBAC-enforcing API server.

The chart is rendered with the real ``helm template``; its ServiceAccount, ClusterRole, Role and
bindings are applied; the operator then runs with a token the API server issued for that
ServiceAccount (TokenRequest), so every request it makes is authorized exactly as in the cluster.
What it must not be able to do is checked by impersonating the same ServiceAccount
(``kubectl auth can-i --as``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from operator_builders import PoolBuilder, fake_gpu_node
from operator_helpers import OperatorProcess, apply, settled, wait_until
from support.mig_manager import MigManagerStandIn

from gpupool_operator.local import toolchain
from gpupool_operator.local.cluster import LocalCluster
from gpupool_operator.local.nodes import register_nodes

ROOT = Path(__file__).resolve().parents[2]
SA = "system:serviceaccount:gpupool-system:gpupool-operator"
TIMEOUT = 90


def _helm() -> Path:
    binaries = toolchain.cache_root() / "bin"
    found = sorted(binaries.glob("helm-*/helm"))
    if not found:
        pytest.skip("helm is not built (make setup builds it)")
    return found[-1]


def _chart_rbac(cluster: LocalCluster) -> list[dict[str, object]]:
    import subprocess

    out = subprocess.run(
        [str(_helm()), "template", "gp", str(ROOT / "charts" / "gpupool"), "--namespace", "gpupool-system",
         "--kube-version", "1.36.3"],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout
    keep = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "ConfigMap"}
    return [d for d in yaml.safe_load_all(out) if d and d.get("kind") in keep]


def _token_kubeconfig(cluster: LocalCluster, path: Path) -> Path:
    token = cluster.kubectl("create", "token", "gpupool-operator", "-n", "gpupool-system",
                            "--duration=1h").stdout.strip()
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    server = admin["clusters"][0]["cluster"]
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "local", "cluster": server}],
        "users": [{"name": "gpupool-operator", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "local", "user": "gpupool-operator"}}],
        "current-context": "sa",
    }))
    return path


def test_chart_rbac_is_enough_and_no_more(
    control_plane: LocalCluster, mig_manager: MigManagerStandIn, namespace: str, tmp_path: Path
) -> None:
    for doc in _chart_rbac(control_plane):
        apply(control_plane, doc)
    kubeconfig = _token_kubeconfig(control_plane, tmp_path / "sa.kubeconfig")
    node_name = "nvlrbac-mig-0000"
    register_nodes(control_plane.api_client(), [fake_gpu_node(node_name, "H100-NVL-94GB", gpus=1,
                                                              mig_strategy="mixed")], progress=None)
    try:
        with OperatorProcess(str(kubeconfig), tmp_path / "op.log", "op-rbac") as op:
            body = PoolBuilder("rbac").cpu("c", replicas=2).mig("m", "1g.12gb", replicas=1).obj()
            apply(control_plane, body, namespace)
            wait_until(lambda: settled(control_plane, namespace, "rbac", 3), TIMEOUT,
                       "3 replicas placed by the ServiceAccount (one behind a MIG re-layout)")
            log = op.log()
            assert "Forbidden" not in log, log[-3000:]
            assert " 403" not in log, log[-3000:]
    finally:
        control_plane.kubectl("delete", "inferencepools", "--all", "-n", namespace, "--timeout=60s", check=False)
        control_plane.kubectl("delete", "node", node_name, "--ignore-not-found", check=False)

    def can(*args: str) -> bool:
        out = control_plane.kubectl("auth", "can-i", *args, f"--as={SA}", check=False)
        return out.stdout.strip() == "yes"

    allowed = [
        ("patch", "nodes"), ("create", "pods", "-n", namespace), ("delete", "pods", "-n", namespace),
        ("patch", "inferencepools", "--subresource=status", "-n", namespace),
        ("update", "leases/gpupool-operator", "-n", "gpupool-system"),
        ("patch", "configmaps/gpupool-mig-parted-config", "-n", "gpupool-system"),
        ("watch", "services", "-n", namespace), ("patch", "services", "-n", namespace),
        ("patch", "gpupoolconfigs", "--subresource=status"),
    ]
    denied = [
        ("delete", "nodes"), ("get", "secrets", "-n", namespace), ("get", "secrets", "-n", "gpupool-system"),
        ("create", "deployments", "-n", namespace), ("update", "inferencepools", "-n", namespace),
        ("delete", "inferencepools", "-n", namespace), ("delete", "services", "-n", namespace),
        ("update", "configmaps/kube-root-ca.crt", "-n", "gpupool-system"),
        ("patch", "configmaps/kube-root-ca.crt", "-n", "gpupool-system"),
        ("update", "configmaps/gpupool-mig-parted-config", "-n", "gpupool-system"),
        ("create", "configmaps", "-n", "gpupool-system"), ("update", "gpupoolconfigs", "--subresource=status"),
        ("update", "inferencepools", "--subresource=status", "-n", namespace),
        ("update", "leases/someone-else", "-n", "gpupool-system"), ("create", "leases", "-n", "default"),
        ("update", "gpupoolconfigs"), ("create", "clusterrolebindings"),
        ("create", "pods", "--subresource=exec", "-n", namespace),
    ]
    assert [a for a in allowed if not can(*a)] == []
    assert [d for d in denied if can(*d)] == []
