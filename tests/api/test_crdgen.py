"""The generated CRDs: in sync with the models, structural, documented, bounded for CEL."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from api_cases import ROOT

from gpupool_operator.api import crdgen


def _crds() -> list[dict[str, Any]]:
    return [
        yaml.safe_load(text)
        for rel, text in crdgen.render().items()
        if rel.startswith("crds/")
    ]


def _walk(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for name, sub in node.get("properties", {}).items():
        yield from _walk(sub, f"{path}.{name}")
    if "items" in node:
        yield from _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk(node["additionalProperties"], f"{path}{{}}")


def _schema(crd: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def test_committed_files_match_the_models() -> None:
    drift = crdgen.check(ROOT)
    assert not drift, f"stale generated files {drift}: run `python -m gpupool_operator.api.crdgen`"


def test_chart_crds_are_byte_identical_copies() -> None:
    for path in sorted((ROOT / "crds").glob("*.yaml")):
        assert (ROOT / "charts" / "gpupool" / "crds" / path.name).read_bytes() == path.read_bytes()
    assert {p.name for p in (ROOT / "crds").glob("*.yaml")} == {
        p.name for p in (ROOT / "charts" / "gpupool" / "crds").glob("*.yaml")
    }


def test_check_mode_exit_codes(tmp_path: Path) -> None:
    env_path = str(ROOT / "operator")
    cmd = [sys.executable, "-m", "gpupool_operator.api.crdgen", "--check"]
    ok = subprocess.run(cmd, cwd=ROOT, env={"PYTHONPATH": env_path}, capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stderr
    stale = subprocess.run([*cmd, "--root", str(tmp_path)], env={"PYTHONPATH": env_path}, capture_output=True,
                           text=True, check=False)
    assert stale.returncode == 1
    assert "stale: crds/gpupool.io_inferencepools.yaml" in stale.stderr
    assert crdgen.main(["--root", str(tmp_path)]) == 0
    assert crdgen.check(tmp_path) == []
    (tmp_path / "charts/gpupool/crds/gpupool.io_inferencepools.yaml").write_text("edited by hand\n")
    assert crdgen.check(tmp_path) == ["charts/gpupool/crds/gpupool.io_inferencepools.yaml"]


def test_render_is_deterministic() -> None:
    assert crdgen.render() == crdgen.render()


def test_crd_identity() -> None:
    by_kind = {c["spec"]["names"]["kind"]: c for c in _crds()}
    assert set(by_kind) == {"InferencePool", "GPUPoolConfig"}
    pool = by_kind["InferencePool"]["spec"]
    assert pool["group"] == "gpupool.io"
    assert pool["scope"] == "Namespaced"
    assert pool["names"]["shortNames"] == ["ipool"]
    assert "infpool" not in pool["names"]["shortNames"]
    assert by_kind["GPUPoolConfig"]["spec"]["scope"] == "Cluster"
    for crd in by_kind.values():
        (version,) = crd["spec"]["versions"]
        assert version["name"] == "v1alpha1"
        assert version["served"]
        assert version["storage"]
        assert version["subresources"] == {"status": {}}


def test_printer_columns_show_models_replicas_and_cost() -> None:
    pool = next(c for c in _crds() if c["spec"]["names"]["kind"] == "InferencePool")
    columns = {c["name"]: c["jsonPath"] for c in pool["spec"]["versions"][0]["additionalPrinterColumns"]}
    assert columns["Models"] == ".status.modelCount"
    assert columns["Ready"] == ".status.readyReplicas"
    assert columns["Serving"] == ".status.servingReplicas"
    assert columns["$/h"] == ".status.usdPerHour"
    assert columns["$/1M"] == ".status.usdPerMillionInferences"
    schema = _schema(pool)
    for path in columns.values():
        if path.startswith((".status.", ".spec.")) and "[" not in path:
            node = schema
            for part in path.strip(".").split("."):
                node = node["properties"][part]


@pytest.mark.parametrize("kind", ["InferencePool", "GPUPoolConfig"])
def test_schema_is_structural_documented_and_bounded(kind: str) -> None:
    crd = next(c for c in _crds() if c["spec"]["names"]["kind"] == kind)
    for path, node in _walk(_schema(crd)):
        for forbidden in ("$ref", "anyOf", "allOf", "oneOf", "title", "const", "$defs"):
            assert forbidden not in node, f"{path}: {forbidden}"
        assert "type" in node, path
        if path.startswith((".spec", ".status")) and not path.endswith(("[]", "{}")):
            assert node.get("description"), f"{path}: no description for kubectl explain"
        if node["type"] == "string" and path not in (".apiVersion", ".kind"):
            assert "maxLength" in node or "enum" in node or node.get("format") == "date-time", path
        if node["type"] == "array":
            assert "maxItems" in node, path
        if node["type"] == "object" and "properties" in node:
            assert set(node.get("required", [])) <= set(node["properties"]), path


def test_cross_field_rules_are_in_the_schema() -> None:
    pool = next(c for c in _crds() if c["spec"]["names"]["kind"] == "InferencePool")
    rules = [r for _, node in _walk(_schema(pool)) for r in node.get("x-kubernetes-validations", [])]
    text = " ".join(r["rule"] for r in rules)
    assert "self.minReplicas <= self.maxReplicas" in text
    assert "quantity(" in text
    assert len(rules) >= 10
    for rule in rules:
        assert rule["message"]
        assert "\n" not in rule["rule"]
    models = _schema(pool)["properties"]["spec"]["properties"]["models"]
    assert models["x-kubernetes-list-type"] == "map"
    assert models["x-kubernetes-list-map-keys"] == ["name"]
    assert "name" in models["items"]["required"]


def test_enums_and_bounds() -> None:
    pool = next(c for c in _crds() if c["spec"]["names"]["kind"] == "InferencePool")
    model = _schema(pool)["properties"]["spec"]["properties"]["models"]["items"]["properties"]
    assert model["engine"]["properties"]["precision"]["enum"] == ["fp32", "fp16", "bf16", "int8", "fp8"]
    assert model["gpusPerReplica"]["maximum"] == 8
    assert model["hardware"]["items"]["properties"]["type"]["enum"] == ["GPU", "MIG", "CPU"]
    assert model["engine"]["default"] == {}
