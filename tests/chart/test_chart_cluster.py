"""``helm install``, ``upgrade`` and ``uninstall`` of the chart on the real control plane.

The chart's operator pods are KWOK pods there (scheduled and reported Running, nothing runs), so
the operator itself runs beside the cluster exactly as the installed Deployment says: its args and
environment are read back from the Deployment, and it authenticates with a token the API server
issued for the chart's ServiceAccount, so the chart's RBAC is what it gets. A pool applied after
the install is served; an upgrade keeps the MIG ConfigMap (with the layout the operator added to
it) and the running replicas; uninstalling after the pools are gone leaves nothing the operator or
the chart made except what the chart keeps on purpose (CRDs, the MIG ConfigMap).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from gpupool_operator.adapters.kube import Kube
from gpupool_operator.adapters.migconfig import MigConfigWriter
from gpupool_operator.local.cluster import LocalCluster

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "gpupool"
TIMEOUT = 90
T = TypeVar("T")


def _wait(check: Callable[[], T | None], what: str, timeout_s: float = TIMEOUT) -> T:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()
    except OSError as err:
        return 0, str(err)


def _json(cluster: LocalCluster, *args: str) -> Any:
    return json.loads(cluster.kubectl(*args, "-o", "json").stdout)


class Release:
    def __init__(self, cluster: LocalCluster, name: str, namespace: str) -> None:
        self.cluster, self.name, self.namespace = cluster, name, namespace

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([str(self.cluster.binaries.helm), "--kubeconfig", str(self.cluster.kubeconfig),
                               "--namespace", self.namespace, *args],
                              capture_output=True, text=True, timeout=240, check=False)
        if check:
            assert proc.returncode == 0, proc.stderr
        return proc


class OperatorAsDeployed:
    """``gpupool operator`` with the installed Deployment's args and env, as its ServiceAccount."""

    def __init__(self, cluster: LocalCluster, namespace: str, deployment: str, log: Path) -> None:
        dep = _json(cluster, "get", "deployment", deployment, "-n", namespace)
        (container,) = dep["spec"]["template"]["spec"]["containers"]
        self.pod = f"{deployment}-local-{uuid.uuid4().hex[:5]}"
        refs = {"metadata.name": self.pod, "metadata.namespace": namespace, "status.podIP": "127.0.0.1"}
        env = {e["name"]: refs[e["valueFrom"]["fieldRef"]["fieldPath"]] if "valueFrom" in e else e.get("value", "")
               for e in container["env"]}  # the API server drops an empty value
        args = [a.replace("$(POD_NAMESPACE)", namespace).replace("$(POD_IP)", "127.0.0.1") for a in container["args"]]
        self.args = args
        sa = dep["spec"]["template"]["spec"]["serviceAccountName"]
        kubeconfig = self._token_kubeconfig(cluster, namespace, sa, log.with_suffix(".kubeconfig"))
        self.health = next(a.split("=", 1)[1] for a in args if a.startswith("--health-address="))
        self._log = open(log, "wb")  # noqa: SIM115 (closed in stop)
        self.log_path = log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gpupool_operator", "operator", "--kubeconfig", str(kubeconfig), *args],
            env={**{k: v for k, v in os.environ.items() if k != "KUBECONFIG"}, **env,
                 "PYTHONPATH": os.pathsep.join(str(ROOT / p) for p in ("operator", "worker", "proto")),
                 "NO_PROXY": "127.0.0.1,localhost"},
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    @staticmethod
    def _token_kubeconfig(cluster: LocalCluster, namespace: str, sa: str, path: Path) -> Path:
        token = cluster.kubectl("create", "token", sa, "-n", namespace, "--duration=1h").stdout.strip()
        server = yaml.safe_load(cluster.kubeconfig.read_text())["clusters"][0]["cluster"]
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "clusters": [{"name": "local", "cluster": server}],
            "users": [{"name": sa, "user": {"token": token}}],
            "contexts": [{"name": "sa", "context": {"cluster": "local", "user": sa}}], "current-context": "sa",
        }))
        return path

    def ready(self) -> tuple[int, str]:
        return _get(f"http://{self.health}/readyz")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def release(cluster: LocalCluster) -> Iterator[Release]:
    suffix = uuid.uuid4().hex[:6]
    rel = Release(cluster, f"gp{suffix}", f"gpupool-chart-{suffix}")
    yield rel
    rel.helm("uninstall", rel.name, "--wait", check=False)
    cluster.kubectl("delete", "namespace", rel.namespace, "--wait=false", check=False)


def _operator_pods(cluster: LocalCluster, namespace: str) -> list[dict[str, Any]]:
    return list(_json(cluster, "get", "pods", "-n", namespace, "-l", "app.kubernetes.io/managed-by=gpupool")["items"])


def test_install_upgrade_uninstall(cluster: LocalCluster, release: Release, tmp_path: Path) -> None:
    # The examples' GPUPoolConfig applied by hand first (CRDs from crds/, as the README says to do
    # without Helm): the install must not fail on it.
    cluster.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
    _wait(lambda: cluster.kubectl("apply", "-f", str(ROOT / "examples" / "pools" / "gpupoolconfig-default.yaml"),
                                  check=False).returncode == 0, "the GPUPoolConfig CRD to be served")
    before = _json(cluster, "get", "gpupoolconfig", "default")
    # A wrong value fails `helm install` itself, with the field named, and installs nothing.
    bad = release.helm("install", release.name, str(CHART), "--create-namespace", "--set", "operator.replicas=-1",
                       "--set", "config.gpuPrices[0].product=H100-80GB", "--set", "config.gpuPrices[0].usdPerGpuHour=x",
                       check=False)
    assert bad.returncode != 0
    assert "- at '/operator/replicas': minimum: got -1, want 1" in bad.stderr, bad.stderr
    assert "'/config/gpuPrices/0/usdPerGpuHour'" in bad.stderr, bad.stderr
    assert release.helm("status", release.name, check=False).returncode != 0  # no release was made
    health, metrics = _free_port(), _free_port()
    install = release.helm(
        "install", release.name, str(CHART), "--create-namespace", "--wait", "--timeout", "120s",
        "--set", "operator.health.bindAddress=127.0.0.1", "--set", f"operator.health.port={health}",
        "--set", "operator.metrics.bindAddress=127.0.0.1", "--set", f"operator.metrics.port={metrics}",
    )
    assert "one already existed (applied by hand, not by this release): the chart left it" in install.stdout
    after = _json(cluster, "get", "gpupoolconfig", "default")
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    ns = release.namespace
    deployment = f"{release.name}-operator"
    dep = _json(cluster, "get", "deployment", deployment, "-n", ns)
    assert dep["status"].get("readyReplicas") == 2  # KWOK reports the two (fake) replicas ready
    pdb = _json(cluster, "get", "pdb", deployment, "-n", ns)
    assert pdb["spec"]["maxUnavailable"] == 1
    assert _json(cluster, "get", "lease", "gpupool-operator", "-n", ns)["metadata"]["labels"][
        "app.kubernetes.io/instance"] == release.name

    pools_ns = f"chart-pools-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", pools_ns)
    op = OperatorAsDeployed(cluster, ns, deployment, tmp_path / "operator.log")
    try:
        _, body = _wait(lambda: op.ready() if op.ready()[0] == 200 else None, "the operator to be ready")
        assert body.startswith("ok: leading;"), body
        holder = _json(cluster, "get", "lease", "gpupool-operator", "-n", ns)["spec"]["holderIdentity"]
        assert holder.startswith(op.pod + "_")
        metrics_status, text = _get(f"http://127.0.0.1:{metrics}/metrics")
        assert metrics_status == 200
        assert "gpupool_leader 1.0" in text

        cluster.kubectl("apply", "-n", pools_ns, "-f", str(ROOT / "examples" / "pools" / "quickstart-minilm-cpu.yaml"))
        pods = _wait(lambda: [p for p in _operator_pods(cluster, pools_ns) if p["status"].get("phase") == "Running"],
                     "the quickstart replica running")
        uids = {p["metadata"]["uid"] for p in pods}
        for pod in pods:  # the chart's replica defaults reached the pod the operator made
            assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
            (worker,) = [c for c in pod["spec"]["containers"] if c["name"] == "worker"]
            assert worker["securityContext"]["readOnlyRootFilesystem"] is True
            assert worker["resources"]["requests"]["memory"] == "1Gi"

        # The operator's own writer adds a planned layout to the chart's MIG ConfigMap.
        writer = MigConfigWriter(Kube(cluster.api_client()), ns, "gpupool-mig-parted-config")
        writer.ensure("gpupool-0123abcd", ((("1g.10gb", 7),),))
        planned = yaml.safe_load(_json(cluster, "get", "configmap", "gpupool-mig-parted-config", "-n", ns)
                                 ["data"]["config.yaml"])["mig-configs"]["gpupool-0123abcd"]

        upgrade = release.helm("upgrade", release.name, str(CHART), "--reuse-values", "--wait", "--timeout", "120s",
                               "--set", "operator.resyncSeconds=20")
        assert "STATUS: deployed" in upgrade.stdout
        configs = yaml.safe_load(_json(cluster, "get", "configmap", "gpupool-mig-parted-config", "-n", ns)
                                 ["data"]["config.yaml"])["mig-configs"]
        assert configs["gpupool-0123abcd"] == planned  # the operator's layout survived the upgrade
        assert {"all-disabled", "all-enabled", "all-balanced"} <= set(configs)
        env = {e["name"]: e.get("value") for e in _json(cluster, "get", "deployment", deployment, "-n", ns)
               ["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["GPUPOOL_RESYNC_SECONDS"] == "20"
        time.sleep(3)  # a cycle or two after the upgrade: nothing was replaced
        assert {p["metadata"]["uid"] for p in _operator_pods(cluster, pools_ns)} == uids
        assert op.ready()[0] == 200

        # Pools first (their replicas and Services belong to them), then the release.
        cluster.kubectl("delete", "ipool", "--all", "-n", pools_ns, "--wait=true", "--timeout=60s")
        _wait(lambda: not _operator_pods(cluster, pools_ns) or None, "the replicas garbage-collected")
    finally:
        op.stop()
        cluster.kubectl("delete", "namespace", pools_ns, "--wait=false", check=False)
    assert "Traceback" not in op.log(), op.log()[-3000:]

    uninstall = release.helm("uninstall", release.name, "--wait", "--timeout", "120s")
    assert "These resources were kept due to the resource policy" in uninstall.stdout
    assert "gpupool-mig-parted-config" in uninstall.stdout
    left = _json(cluster, "get", "deployments,replicasets,pods,services,serviceaccounts,roles,rolebindings,leases,"
                 "poddisruptionbudgets,configmaps", "-n", ns)["items"]
    standard = {("ServiceAccount", "default"), ("ConfigMap", "kube-root-ca.crt")}  # every namespace has these
    kinds = sorted(k for k in ((o["kind"], o["metadata"]["name"]) for o in left) if k not in standard)
    assert kinds == [("ConfigMap", "gpupool-mig-parted-config")], kinds
    cluster_wide = cluster.kubectl("get", "clusterroles,clusterrolebindings", "-o", "name").stdout
    assert f"{release.name}-operator" not in cluster_wide
    assert cluster.kubectl("get", "crd", "inferencepools.gpupool.io", check=False).returncode == 0  # CRDs stay
    assert _json(cluster, "get", "gpupoolconfig", "default")["metadata"]["uid"] == before["metadata"]["uid"]
