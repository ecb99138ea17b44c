"""``gpupool plan`` end to end: files in, table / JSON / YAML out, clear errors on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from gpupool_operator.cli import main
from gpupool_operator.local.nodes import node_list
from gpupool_operator.local.spec import load

ROOT = Path(__file__).resolve().parents[2]

POOL = """
apiVersion: gpupool.io/v1alpha1
kind: InferencePool
metadata: {name: emb, namespace: team}
spec:
  models:
    - name: minilm
      source: {uri: hf://sentence-transformers/all-MiniLM-L6-v2}
      acceleratorMemory: 8Gi
      hardware:
        - {type: MIG, mig: {minMemory: 8Gi}}
        - {type: CPU, cpu: {cores: 16}}
      minReplicas: 3
      maxReplicas: 6
    - name: huge
      source: {uri: hf://example/huge}
      acceleratorMemory: 900Gi
      hardware: [{type: GPU, gpu: {product: H100-80GB}}]
      minReplicas: 1
      maxReplicas: 1
"""


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    nodes = tmp_path / "nodes.yaml"
    nodes.write_text(yaml.safe_dump(node_list(load(ROOT / "examples" / "clusters" / "small-hetero.yaml"))))
    pools = tmp_path / "pools.yaml"
    pools.write_text(POOL)
    return nodes, pools


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = main(["plan", *args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_table(files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "--nodes", str(files[0]), "--pools", str(files[1]))
    assert rc == 0
    assert out.startswith("Plan: $")
    for section in ("MODELS", "PLACEMENTS", "UNPLACED"):
        assert section in out
    assert "needs 900 GiB per GPU" in out


def test_json_schema(files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "--nodes", str(files[0]), "--pools", str(files[1]), "-o", "json")
    assert rc == 0
    doc = json.loads(out)
    assert doc["schema"] == "gpupool.io/plan/v1"
    assert [m["name"] for m in doc["models"]] == ["team/emb/huge", "team/emb/minilm"]
    assert len([p for p in doc["placements"] if p["model"] == "team/emb/minilm"]) == 3
    assert doc["unplaced"][0]["model"] == "team/emb/huge"
    assert doc["costPerHour"] == pytest.approx(sum(m["costPerHour"] for m in doc["models"]) + doc["idleCostPerHour"])


def test_yaml_and_json_agree(files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    _, as_json, _ = run(capsys, "--nodes", str(files[0]), "--pools", str(files[1]), "-o", "json")
    _, as_yaml, _ = run(capsys, "--nodes", str(files[0]), "--pools", str(files[1]), "-o", "yaml")
    assert yaml.safe_load(as_yaml) == json.loads(as_json)


def test_kubectl_json_nodes_and_provider_prices(files: tuple[Path, Path], tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    as_json = tmp_path / "nodes.json"
    as_json.write_text(json.dumps(yaml.safe_load(files[0].read_text())))
    rc_aws, out_aws, _ = run(capsys, "--nodes", str(as_json), "--pools", str(files[1]), "-o", "json")
    rc_lambda, out_lambda, _ = run(capsys, "--nodes", str(as_json), "--pools", str(files[1]), "-o", "json",
                                   "--prices", "lambda")
    assert rc_aws == rc_lambda == 0
    assert json.loads(out_lambda)["costPerHour"] <= json.loads(out_aws)["costPerHour"]


def test_price_map_file(files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prices = tmp_path / "prices.yaml"
    prices.write_text("A100-80GB: 0.01\nH100-80GB: 9\ncpu: 1.0\n")
    rc, out, _ = run(capsys, "--nodes", str(files[0]), "--pools", str(files[1]), "-o", "json", "--prices", str(prices))
    assert rc == 0
    mine = [p for p in json.loads(out)["placements"] if p["model"] == "team/emb/minilm"]
    assert {p["product"] for p in mine} == {"A100-80GB"}


def test_explain(files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "--nodes", str(files[0]), "--pools", str(files[1]), "--explain", "minilm")
    assert rc == 0
    assert "Accepted shapes" in out
    assert "Placed 3 of 3" in out
    rc, out, _ = run(capsys, "--nodes", str(files[0]), "--pools", str(files[1]), "--explain", "emb/huge")
    assert rc == 0
    assert "Rejected" in out
    assert "1 unplaced" in out


def test_fail_unplaced(files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, _ = run(capsys, "--nodes", str(files[0]), "--pools", str(files[1]), "--fail-unplaced")
    assert rc == 1


@pytest.mark.parametrize(
    ("pool_text", "message"),
    [
        ("kind: InferencePool\nmetadata: {name: x}\nspec: {models: []}\n", "InferencePool x: spec.models"),
        ("a: [unclosed\n", "not valid YAML/JSON"),
    ],
)
def test_bad_input_exit_2(files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
                          pool_text: str, message: str) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(pool_text)
    rc, _, err = run(capsys, "--nodes", str(files[0]), "--pools", str(bad))
    assert rc == 2
    assert message in err


def test_missing_file_and_unknown_model(files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = run(capsys, "--nodes", "/nonexistent.yaml", "--pools", str(files[1]))
    assert rc == 2
    assert "/nonexistent.yaml" in err
    rc, _, err = run(capsys, "--nodes", str(files[0]), "--pools", str(files[1]), "--explain", "nope")
    assert rc == 2
    assert "team/emb/minilm" in err
