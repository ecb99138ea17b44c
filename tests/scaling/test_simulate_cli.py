"""``gpupool simulate`` end to end on a slice of the Azure code trace, and its bad-input errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gpupool_operator.cli import main

ROOT = Path(__file__).resolve().parents[2]
POOL = ROOT / "benchmarks" / "scaling" / "pools" / "code-completion.yaml"
AZURE_HEAD = Path(__file__).parent / "data" / "azure-llm-2023-code-head400.csv"


def simulate(*args: str) -> int:
    return main(["simulate", "--cluster", "small-hetero", *args])


def test_simulate_writes_the_table_json_and_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = simulate("--pools", str(POOL), "--trace", str(AZURE_HEAD), "--out", str(tmp_path),
                  "--policy", "gpupool", "--policy", "kpa", "--policy", "oracle", "--pod-start", "30")
    out = capsys.readouterr().out
    assert rc == 0
    assert "POLICY" in out
    assert "gpupool" in out
    assert "oracle" in out
    assert "CC-BY 4.0" in out  # the trace's attribution goes wherever its results are shown
    doc = json.loads((tmp_path / "results.json").read_text())
    assert doc["schema"] == "gpupool.io/simulate/v1"
    assert [r["policy"] for r in doc["results"]] == ["gpupool", "kpa", "oracle"]
    gp = doc["results"][0]
    assert gp["requests"] == 400
    assert 0.0 <= gp["withinObjective"] <= 1.0
    assert gp["usd"] > 0
    assert set(gp["timeline"]) == {"t", "arrivalsPerSecond", "queue", "replicas", "usdPerHour"}
    assert doc["scenario"]["baselineShape"] == "1x A100-80GB"
    assert any("2g.20gb: cannot meet" in why for why in doc["scenario"]["rejected"])
    assert (tmp_path / "timeline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_generated_traces_run_without_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = simulate("--pools", str(POOL), "--trace", "onoff:on_rate=10,on=20,off=60,duration=300,seed=2",
                  "--out", str(tmp_path), "--policy", "gpupool", "--no-plot", "-o", "json")
    assert rc == 0
    assert json.loads(capsys.readouterr().out)["results"][0]["policy"] == "gpupool"
    assert not (tmp_path / "timeline.png").exists()


@pytest.mark.parametrize(("csv", "message"), [
    ("time\n1\n0.5\n", "t.csv: row 3: time: 0.5 is earlier than the row before"),
    ("time\n-2\n", "t.csv: row 2: time: negative time -2"),
    ("TIMESTAMP,ContextTokens\n2023-11-16 18:17:03,1\nsoon,2\n", "t.csv: row 3: TIMESTAMP: 'soon' is not a time"),
    ("", "t.csv: empty file"),
    ("TIMESTAMP,ContextTokens,GeneratedTokens\n", "t.csv: no requests"),
])
def test_bad_traces_exit_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], csv: str,
                                         message: str) -> None:
    (tmp_path / "t.csv").write_text(csv)
    rc = simulate("--pools", str(POOL), "--trace", str(tmp_path / "t.csv"), "--out", str(tmp_path))
    err = capsys.readouterr().err
    assert rc == 2
    assert message in err
    assert err.count("\n") == 1
    assert err.startswith("gpupool simulate: ")


@pytest.mark.parametrize(("flags", "message"), [
    (["--panic-threshold", "0.5"], "--panic-threshold: must be at least 1"),
    (["--stable-window", "0"], "--stable-window: must be a positive number of seconds, got 0"),
    (["--panic-window", "-6"], "--panic-window: must be a positive number of seconds"),
    (["--tolerance", "2"], "--tolerance: must be in [0, 1)"),
    (["--pod-start", "-1"], "--pod-start: must be a non-negative number of seconds"),
])
def test_policy_parameters_out_of_range_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               flags: list[str], message: str) -> None:
    rc = simulate("--pools", str(POOL), "--trace", str(AZURE_HEAD), "--out", str(tmp_path), *flags)
    err = capsys.readouterr().err
    assert rc == 2
    assert message in err
    assert err.count("\n") == 1


def test_a_pool_naming_a_product_the_cluster_lacks_exits_2(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    # The example reranker prefers A100-40GB, which small-hetero does not have.
    pool = ROOT / "examples" / "pools" / "gpu-with-cpu-fallback.yaml"
    rc = simulate("--pools", str(pool), "--trace", str(AZURE_HEAD), "--out", str(tmp_path))
    err = capsys.readouterr().err
    assert rc == 2
    assert "gpu-with-cpu-fallback.yaml: InferencePool reranker: spec.models[0].hardware[1].gpu.product: " \
           "A100-40GB: no node of cluster small-hetero has this product" in err


def test_a_missing_file_and_an_unknown_model_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert simulate("--pools", str(POOL), "--trace", str(tmp_path / "nope.csv"), "--out", str(tmp_path)) == 2
    assert "nope.csv: No such file or directory" in capsys.readouterr().err
    assert simulate("--pools", str(POOL), "--trace", str(AZURE_HEAD), "--model", "gpt", "--out", str(tmp_path)) == 2
    assert "--model: no model 'gpt' (models: code-completion)" in capsys.readouterr().err
