"""The Helm chart: lints, renders with no extra flags, refuses bad values, and carries the same facts
as the Python sources of truth.

The chart cannot run Python, so some things exist twice and these tests fail when a copy drifts:
the CRDs (``charts/gpupool/crds/`` is a byte copy of ``crds/``), the default GPUPoolConfig
(``values.yaml`` mirrors the price table in ``gpupool_operator.api.config``), the values schema
(``scripts/chart_schema.py`` generates it), the operator's flags and environment (parsed here by the
operator's own parsers) and the metric names on the dashboard. Installing, upgrading and
uninstalling on the real control plane is ``test_chart_cluster.py``.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

import gpupool_operator
from gpupool_operator.adapters.autoscale import AutoscaleSettings, autoscale_settings
from gpupool_operator.adapters.health import parse_address
from gpupool_operator.adapters.settings import settings_from_env
from gpupool_operator.api import GPUPoolConfig, default_config
from gpupool_operator.cli import build_parser
from gpupool_operator.local import toolchain

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "gpupool"


@pytest.fixture(scope="module")
def helm() -> Path:
    return toolchain.build_helm() / "helm"  # cached by `make setup`; builds once otherwise


def _run(helm: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(helm), *args], capture_output=True, text=True, timeout=120, check=False)


def _helm(helm: Path, *args: str) -> str:
    proc = _run(helm, *args)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _render(helm: Path, *args: str, namespace: str = "gpupool-system") -> list[dict[str, Any]]:
    out = _helm(helm, "template", "gp", str(CHART), "--namespace", namespace, *args)
    return [doc for doc in yaml.safe_load_all(out) if doc]


def _one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    (doc,) = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    return doc


def _env(container: dict[str, Any], pod_namespace: str = "gpupool-system") -> dict[str, str]:
    refs = {"metadata.name": "gp-operator-0", "metadata.namespace": pod_namespace, "status.podIP": "10.1.2.3"}
    return {e["name"]: e["value"] if "value" in e else refs[e["valueFrom"]["fieldRef"]["fieldPath"]]
            for e in container["env"]}


@pytest.fixture(scope="module")
def rendered(helm: Path) -> list[dict[str, Any]]:
    return _render(helm)


def test_helm_is_stamped_with_its_version_and_the_kubernetes_it_targets(helm: Path) -> None:
    assert _helm(helm, "version", "--template", "{{.Version}}") == toolchain.HELM_VERSION
    # Offline `helm template` assumes the Kubernetes version helm was stamped with.
    out = _helm(helm, "template", "x", str(CHART), "--show-only", "templates/lease.yaml")
    assert "kind: Lease" in out


def test_chart_lints_strictly(helm: Path) -> None:
    out = _helm(helm, "lint", "--strict", str(CHART))
    assert "1 chart(s) linted, 0 chart(s) failed" in out, out


def test_chart_renders_the_operator_and_what_it_needs(rendered: list[dict[str, Any]]) -> None:
    kinds = sorted(doc["kind"] for doc in rendered)
    assert kinds == sorted([
        "ClusterRole", "ClusterRoleBinding", "ConfigMap", "Deployment", "GPUPoolConfig", "Lease",
        "PodDisruptionBudget", "Role", "RoleBinding", "Service", "ServiceAccount",
    ])
    for doc in rendered:
        if doc["kind"] not in ("ClusterRole", "ClusterRoleBinding", "GPUPoolConfig"):
            assert doc["metadata"]["namespace"] == "gpupool-system", doc["metadata"]


def test_operator_deployment_is_hardened_and_probed(rendered: list[dict[str, Any]]) -> None:
    deployment = _one(rendered, "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 2
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["serviceAccountName"] == "gpupool-operator"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert container["resources"]["requests"] == {"cpu": "100m", "memory": "128Mi"}
    assert container["resources"]["limits"] == {"memory": "512Mi"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": 8081}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": 8081}
    (term,) = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"] == spec["selector"]["matchLabels"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    # The image's entrypoint is `gpupool operator` (Dockerfile); the chart's args must be flags the
    # real CLI accepts, so a renamed flag breaks this test rather than a rollout.
    assert 'ENTRYPOINT ["gpupool", "operator"]' in (ROOT / "Dockerfile").read_text()
    args = [a.replace("$(POD_NAMESPACE)", "gpupool-system") for a in container["args"]]
    parsed = build_parser().parse_args(["operator", *args])
    assert parsed.command == "operator"
    assert parse_address(parsed.health_address) == parse_address("0.0.0.0:8081")
    assert parse_address(parsed.metrics_address) == parse_address("0.0.0.0:8080")
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": 8080, "health": 8081}
    # The environment, read by the operator's own settings parser.
    settings = settings_from_env(_env(container))
    assert settings.mig_namespace == "gpupool-system"
    assert settings.mig_config_map == "gpupool-mig-parted-config"
    assert settings.worker.image == "ghcr.io/gpupool/worker:0.1.0"
    assert settings.worker.cuda_image == "ghcr.io/gpupool/worker-cuda:0.1.0"  # GPU/MIG and torch models
    assert settings.worker.defaults.pod_security_context["runAsNonRoot"] is True
    assert settings.worker.defaults.security_context["readOnlyRootFilesystem"] is True
    assert settings.worker.defaults.resources == {"requests": {"memory": "1Gi"}}


def test_pdb_and_metrics_service_select_the_operator_pods(rendered: list[dict[str, Any]]) -> None:
    selector = _one(rendered, "Deployment")["spec"]["selector"]["matchLabels"]
    pdb = _one(rendered, "PodDisruptionBudget")
    assert pdb["spec"] == {"maxUnavailable": 1, "selector": {"matchLabels": selector}}
    service = _one(rendered, "Service")
    assert service["spec"]["selector"] == selector
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 8080, "targetPort": "metrics", "protocol": "TCP"}]


def test_listeners_bind_where_the_values_say(helm: Path) -> None:
    docs = _render(helm, "--set", "operator.metrics.bindAddress=podIP", "--set", "operator.health.bindAddress=::",
                   "--set", "operator.health.port=9001", "--set", "operator.metrics.port=9000")
    (container,) = _one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    args = [a.replace("$(POD_NAMESPACE)", "gpupool-system").replace("$(POD_IP)", _env(container)["POD_IP"])
            for a in container["args"]]
    parsed = build_parser().parse_args(["operator", *args])
    assert str(parse_address(parsed.metrics_address)) == "10.1.2.3:9000"
    assert str(parse_address(parsed.health_address)) == "[::]:9001"
    assert container["readinessProbe"]["httpGet"]["port"] == 9001
    assert _one(docs, "Service")["spec"]["ports"][0]["targetPort"] == "metrics"
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"metrics": 9000, "health": 9001}


def test_mig_configmap_namespace_comes_from_values(helm: Path) -> None:
    docs = _render(helm, "--set", "migManager.namespace=gpu-operator")
    assert _one(docs, "ConfigMap")["metadata"]["namespace"] == "gpu-operator"
    roles = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Role"}
    assert roles["gp-operator-mig-config"]["metadata"]["namespace"] == "gpu-operator"
    assert roles["gp-operator-mig-config"]["rules"] == [
        {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["gpupool-mig-parted-config"],
         "verbs": ["get", "patch"]}]
    assert all(r.get("resources") != ["configmaps"] for r in roles["gp-operator"]["rules"])
    (container,) = _one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert settings_from_env(_env(container)).mig_namespace == "gpu-operator"


def test_worker_images_come_from_values(helm: Path) -> None:
    def worker(*values: str) -> tuple[str, str]:
        (container,) = _one(_render(helm, *values), "Deployment")["spec"]["template"]["spec"]["containers"]
        w = settings_from_env(_env(container)).worker
        return w.image, w.cuda_image

    assert worker("--set", "worker.image=r.example/w:1", "--set", "worker.cudaImage=r.example/w-cuda:1") == (
        "r.example/w:1", "r.example/w-cuda:1")
    assert worker("--set", "worker.image=r.example/w:1", "--set", "worker.cudaImage=") == ("r.example/w:1", "")


def test_namespace_creation_is_optional(helm: Path, rendered: list[dict[str, Any]]) -> None:
    assert not [d for d in rendered if d["kind"] == "Namespace"]
    docs = _render(helm, "--set", "namespace.create=true", "--set", "namespace.name=gpupool-ops", namespace="default")
    ns = _one(docs, "Namespace")
    assert ns["metadata"]["name"] == "gpupool-ops"
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for doc in docs:
        if "namespace" in doc["metadata"]:
            assert doc["metadata"]["namespace"] == "gpupool-ops", doc["metadata"]
    proc = _run(helm, "template", "gp", str(CHART), "-n", "gpupool-system", "--set", "namespace.create=true")
    assert proc.returncode != 0
    assert "namespace.create" in proc.stderr
    assert "--create-namespace" in proc.stderr


@pytest.mark.parametrize(
    ("values", "field", "why"),
    [
        ({"operator": {"replicas": -1}}, "/operator/replicas", "minimum"),
        ({"config": {"mig": {"policy": "Sometimes"}}}, "/config/mig/policy", "Any"),
        ({"config": {"usdPerVcpuHour": "cheap"}}, "/config/usdPerVcpuHour", "does not match pattern"),
        ({"config": {"gpuPrices": [{"product": "H100-80GB", "usdPerGpuHour": "-6.88"}]}},
         "/config/gpuPrices/0/usdPerGpuHour", "does not match pattern"),
        ({"operator": {"health": {"bindAddress": "localhost", "port": 8081}}}, "/operator/health/bindAddress",
         "does not match pattern"),
        ({"operator": {"replcas": 2}}, "/operator", "replcas"),
        ({"operator": {"podAntiAffinity": "strict"}}, "/operator/podAntiAffinity", "soft"),
        ({"metrics": {"serviceMonitor": {"interval": "often"}}}, "/metrics/serviceMonitor/interval",
         "does not match pattern"),
    ],
)
def test_wrong_values_fail_with_the_field_named(
    helm: Path, tmp_path: Path, values: dict[str, Any], field: str, why: str
) -> None:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    proc = _run(helm, "template", "gp", str(CHART), "-n", "gpupool-system", "-f", str(path))
    assert proc.returncode != 0
    assert "values don't meet the specifications of the schema" in proc.stderr
    assert f"'{field}'" in proc.stderr, proc.stderr
    assert why in proc.stderr, proc.stderr


def test_values_schema_is_generated_and_current() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "chart_schema.py"), "--check"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    schema = json.loads((CHART / "values.schema.json").read_text())
    config = schema["properties"]["config"]["properties"]
    assert config["migSlicePricing"]["enum"] == ["MaxShare", "ComputeShare", "MemoryShare"]
    assert "x-kubernetes-validations" not in json.dumps(schema)


def test_monitoring_objects_render_when_enabled(helm: Path) -> None:
    docs = _render(helm, "--set", "metrics.serviceMonitor.enabled=true", "--set", "metrics.podMonitor.enabled=true",
                   "--set", "metrics.serviceMonitor.labels.release=prom", "--set", "metrics.dashboard.enabled=true",
                   "--set", "metrics.dashboard.namespace=monitoring")
    selector = _one(docs, "Deployment")["spec"]["selector"]["matchLabels"]
    monitor = _one(docs, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["selector"]["matchLabels"] == selector
    assert monitor["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "30s",
                                             "scrapeTimeout": "10s"}]
    assert _one(docs, "PodMonitor")["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    dashboard = _one(docs, "ConfigMap", "gp-dashboard")
    assert dashboard["metadata"]["namespace"] == "monitoring"
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = json.loads((CHART / "dashboards" / "gpupool.json").read_text())
    assert json.loads(dashboard["data"]["gpupool.json"]) == shipped


def _exported_metric_names() -> set[str]:
    """Every metric family name the operator and the worker export, as Prometheus sees it."""
    from prometheus_client import REGISTRY, generate_latest

    import gpupool_operator.adapters.autoscale_record
    import gpupool_operator.adapters.metrics  # noqa: F401  (these register the operator's metrics)
    from gpupool_worker.engine.costing import CostModel
    from gpupool_worker.engine.metrics import WorkerMetrics

    text = generate_latest(REGISTRY).decode()
    worker = WorkerMetrics(CostModel(price_per_hour_usd=1.0, device_share=1.0))
    worker.model("m")
    text += worker.exposition().decode()
    return {m.group(1) for m in re.finditer(r"^# TYPE (\S+) ", text, re.M)}


def test_dashboard_has_the_panels_and_only_metrics_that_exist() -> None:
    dashboard = json.loads((CHART / "dashboards" / "gpupool.json").read_text())
    titles = [p["title"] for p in dashboard["panels"]]
    for wanted in ("Placements", "$ per hour", "$ per million inferences", "Queue depth", "Scale events",
                   "MIG re-layouts"):
        assert any(t.startswith(wanted) for t in titles), (wanted, titles)
    names = _exported_metric_names()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            used = set(re.findall(r"\b(gpupool_[a-z_]+)", target["expr"]))
            for name in used:
                family = re.sub(r"_(total|bucket|sum|count)$", "", name)
                assert name in names or family in names, (panel["title"], name)


def test_versions_agree() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert chart["appVersion"] == project["version"] == gpupool_operator.__version__
    worker = yaml.safe_load((CHART / "values.yaml").read_text())["worker"]
    assert worker["image"].endswith(":" + chart["appVersion"])
    assert worker["cudaImage"] == worker["image"].replace("/worker:", "/worker-cuda:")


def test_default_config_in_the_chart_equals_the_python_price_table(rendered: list[dict[str, Any]]) -> None:
    config = _one(rendered, "GPUPoolConfig")
    config["metadata"].pop("labels", None)
    from_chart = GPUPoolConfig.model_validate(config)
    assert from_chart.spec == default_config().spec


def test_chart_crds_are_byte_copies_of_the_generated_ones() -> None:
    generated = sorted(p.name for p in (ROOT / "crds").glob("*.yaml"))
    copied = sorted(p.name for p in (CHART / "crds").glob("*.yaml"))
    assert generated
    assert generated == copied
    for name in generated:
        assert (CHART / "crds" / name).read_bytes() == (ROOT / "crds" / name).read_bytes(), name


def test_live_scaling_settings_are_values(helm: Path, rendered: list[dict[str, Any]]) -> None:
    (container,) = _one(rendered, "Deployment")["spec"]["template"]["spec"]["containers"]
    default = autoscale_settings(_env(container))
    assert default == AutoscaleSettings()  # the chart's defaults are the operator's
    docs = _render(helm, "--set", "operator.autoscale.enabled=false",
                   "--set-json", "operator.autoscale.tickSeconds=0.5",
                   "--set", "operator.autoscale.scrapeTimeoutSeconds=3", "--set", "operator.autoscale.stateSeconds=30",
                   "--set-json", 'operator.autoscale.params={"stable_window_s": 20, "pending_topup": false}')
    (container,) = _one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    got = autoscale_settings(_env(container))
    assert not got.enabled
    assert (got.tick_s, got.scrape_timeout_s, got.persist_s) == (0.5, 3.0, 30.0)
    assert got.params.stable_window_s == 20.0
    assert got.params.pending_topup is False
    proc = _run(helm, "template", "gp", str(CHART), "-n", "gpupool-system",
                "--set-json", 'operator.autoscale.params={"stable_windw_s": 20}')
    assert proc.returncode != 0
    assert "stable_windw_s" in proc.stderr
