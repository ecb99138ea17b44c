"""The Helm chart: lints, renders, and carries the same facts as the Python sources of truth.

The chart cannot run Python, so two things exist twice: the CRDs (``charts/gpupool/crds/`` is a
byte copy of ``crds/``) and the default GPUPoolConfig (``values.yaml`` mirrors the price table in
``gpupool_operator.api.config``). These tests fail when either copy drifts.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from gpupool_operator.api import GPUPoolConfig, default_config
from gpupool_operator.cli import build_parser
from gpupool_operator.local import toolchain

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "gpupool"


@pytest.fixture(scope="module")
def helm() -> Path:
    return toolchain.build_helm() / "helm"  # cached by `make setup`; builds once otherwise


def _helm(helm: Path, *args: str) -> str:
    proc = subprocess.run([str(helm), *args], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.fixture(scope="module")
def rendered(helm: Path) -> list[dict[str, Any]]:
    out = _helm(helm, "template", "gp", str(CHART), "--namespace", "gpupool-system", "--kube-version", "1.36.3")
    return [doc for doc in yaml.safe_load_all(out) if doc]


def test_chart_lints(helm: Path) -> None:
    out = _helm(helm, "lint", str(CHART), "--kube-version", "1.36.3")
    assert "0 chart(s) failed" in out


def test_chart_renders_the_operator_and_its_rbac(rendered: list[dict[str, Any]]) -> None:
    kinds = sorted(doc["kind"] for doc in rendered)
    assert kinds == sorted(
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "ConfigMap",
            "Deployment",
            "GPUPoolConfig",
            "Role",
            "RoleBinding",
            "ServiceAccount",
        ]
    )
    (deployment,) = [d for d in rendered if d["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    # The image's entrypoint is `gpupool operator` (Dockerfile); the chart's args must be flags the
    # real CLI accepts, so a renamed flag breaks this test rather than a rollout.
    assert 'ENTRYPOINT ["gpupool", "operator"]' in (ROOT / "Dockerfile").read_text()
    args = [a.replace("$(POD_NAMESPACE)", "gpupool-system") for a in container.get("args", [])]
    parsed = build_parser().parse_args(["operator", *args])
    assert parsed.command == "operator"
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "gpupool-operator"


def test_default_config_in_the_chart_equals_the_python_price_table(rendered: list[dict[str, Any]]) -> None:
    (config,) = [d for d in rendered if d["kind"] == "GPUPoolConfig"]
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
