"""``gpupool plan`` end to end: files in, table / JSON / YAML out, clear errors on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from gpupool_operator.cli import main
from gpupool_operator.cli import plan as plan_cli
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


# ------------------------------------------------------------------------- bad input: one line, exit 2
def _one_error(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    rc, out, err = run(capsys, *args)
    assert rc == 2, (out, err)
    assert out == ""
    assert "Traceback" not in err
    assert err.count("\n") == 1, err  # exactly one line
    return err


def test_bad_quantity_in_a_pool_names_file_object_and_field(files: tuple[Path, Path], tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "pools.yaml"
    bad.write_text(POOL.replace("acceleratorMemory: 900Gi", "acceleratorMemory: 4x"))
    err = _one_error(capsys, "--nodes", str(files[0]), "--pools", str(bad))
    assert f"{bad}: InferencePool emb: spec.models[1].acceleratorMemory: '4x'" in err


@pytest.mark.parametrize(("field", "path"), [
    ("cpu", ("status", "allocatable", "cpu")),
    ("nvidia.com/gpu", ("status", "allocatable", "nvidia.com/gpu")),
])
def test_bad_quantity_on_a_node_names_file_node_and_field(files: tuple[Path, Path], tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str], field: str,
                                                          path: tuple[str, ...]) -> None:
    nodes = yaml.safe_load(files[0].read_text())
    victim = next(n for n in nodes["items"] if "nvidia.com/gpu" in n["status"]["allocatable"])
    victim["status"]["allocatable"][field] = "4x"
    bad = tmp_path / "nodes.yaml"
    bad.write_text(yaml.safe_dump(nodes))
    err = _one_error(capsys, "--nodes", str(bad), "--pools", str(files[1]))
    assert f"{bad}: Node {victim['metadata']['name']}: {'.'.join(path)}: '4x' is not" in err


def test_bad_quantity_in_a_pod_names_the_pods_file(files: tuple[Path, Path], tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    node = yaml.safe_load(files[0].read_text())["items"][0]["metadata"]["name"]
    pods = tmp_path / "pods.yaml"
    pods.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": [{
        "kind": "Pod", "metadata": {"name": "p", "namespace": "other"},
        "spec": {"nodeName": node, "containers": [{"name": "c", "resources": {"requests": {"memory": "4x"}}}]},
        "status": {"phase": "Running"}}]}))
    err = _one_error(capsys, "--nodes", str(files[0]), "--pools", str(files[1]), "--pods", str(pods))
    assert f"{pods}: Pod other/p: spec.containers[0].resources.requests.memory: '4x'" in err


def test_negative_prices_name_file_and_field(files: tuple[Path, Path], tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    table = tmp_path / "prices.yaml"
    table.write_text("H100-80GB: -1\ncpu: 0.048\n")
    err = _one_error(capsys, "--nodes", str(files[0]), "--pools", str(files[1]), "--prices", str(table))
    assert f"{table}: H100-80GB: -1 is not a price" in err

    config = yaml.safe_load((ROOT / "examples" / "pools" / "gpupoolconfig-default.yaml").read_text())
    config["spec"]["gpuPrices"][1]["usdPerGpuHour"] = "-3.43"
    manifest = tmp_path / "config.yaml"
    manifest.write_text(yaml.safe_dump(config))
    err = _one_error(capsys, "--nodes", str(files[0]), "--pools", str(files[1]), "--prices", str(manifest))
    assert f"{manifest}: GPUPoolConfig default: spec.gpuPrices[1].usdPerGpuHour:" in err

    nodes = yaml.safe_load(files[0].read_text())
    victim = next(n for n in nodes["items"] if "nvidia.com/gpu" in n["status"]["allocatable"])
    victim["metadata"].setdefault("annotations", {})["gpupool.io/price-per-gpu-hour"] = "-2"
    bad = tmp_path / "nodes.yaml"
    bad.write_text(yaml.safe_dump(nodes))
    err = _one_error(capsys, "--nodes", str(bad), "--pools", str(files[1]))
    assert (f"{bad}: Node {victim['metadata']['name']}: "
            "metadata.annotations[gpupool.io/price-per-gpu-hour]: '-2' is not a non-negative number") in err


def test_unknown_gpu_product_names_file_pool_and_field(files: tuple[Path, Path], tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "pools.yaml"
    bad.write_text(POOL.replace("product: H100-80GB", "product: H900-80GB"))
    err = _one_error(capsys, "--nodes", str(files[0]), "--pools", str(bad))
    assert f"{bad}: InferencePool emb: spec.models[1].hardware[0].gpu.product: 'H900-80GB' is not a GPU product" in err
    # A catalog product the cluster lacks is a shortage, not a typo: planned, reported unplaced.
    ok = tmp_path / "ok.yaml"
    ok.write_text(POOL.replace("product: H100-80GB", "product: H200-141GB"))
    rc, out, _ = run(capsys, "--nodes", str(files[0]), "--pools", str(ok), "-o", "json")
    assert rc == 0
    assert json.loads(out)["unplaced"][0]["model"] == "team/emb/huge"


# ------------------------------------------------------------------------- the streaming reader
_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-10**12, 10**12),
    st.floats(allow_nan=False, allow_infinity=True, width=64),
    st.text(max_size=12),
    st.sampled_from(["yes", "no", "on", "off", "true", "null", "~", "0x1f", "0o17", "1e3", "08", "1_000",
                     "2026-12-04", "2026-12-04T18:00:00Z", "-.inf", ".nan", "=", "<<", "4x", "40Gi", ""]),
)
_VALUES = st.recursive(_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)), max_leaves=20)


@settings(max_examples=200, deadline=None)
@given(docs=st.lists(_VALUES, min_size=1, max_size=3), flow=st.sampled_from([None, True, False]),
       as_list=st.booleans())
def test_streaming_reader_reads_what_safe_load_reads(tmp_path_factory: pytest.TempPathFactory, docs: list[object],
                                                     flow: bool | None, as_list: bool) -> None:
    """The reader gives exactly PyYAML's safe_load_all values (a List's items one by one)."""
    path = tmp_path_factory.mktemp("y") / "in.yaml"
    if as_list:
        docs = [{"apiVersion": "v1", "kind": "List", "items": docs}]
    path.write_text(yaml.safe_dump_all(docs, default_flow_style=flow))
    want = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    want = list(want[0]["items"]) if as_list else [x for d in want for x in (d if isinstance(d, list) else [d])]
    got = list(plan_cli._documents(path))
    assert _nan_safe(got) == _nan_safe(want)


def _nan_safe(value: object) -> object:
    return json.dumps(value, default=str, sort_keys=True)


def test_streaming_reader_anchors_merge_keys_tags_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "a.yaml"
    path.write_text(
        "base: &b {cpu: '4', memory: 8Gi, n: 3}\n"
        "node: {<<: *b, memory: 16Gi, list: &l [1, 2], again: *l}\n"
        "quoted: '08'\nplain: 08\nblock: |\n  two\n  lines\nstr: !!str 12\nwhen: 2026-12-04\n"
        "---\n- {kind: Node, metadata: {name: x}}\n- {kind: Node, metadata: {name: y}}\n")
    assert list(plan_cli._documents(path)) == [
        d for doc in yaml.safe_load_all(path.read_text()) for d in (doc if isinstance(doc, list) else [doc])]
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: List\nitems:\n  - {a: *missing}\n")
    with pytest.raises(plan_cli.InputError, match=r"bad\.yaml: not valid YAML/JSON: .*undefined alias"):
        list(plan_cli._documents(bad))
    tagged = tmp_path / "tagged.yaml"
    tagged.write_text("!!set {a, b}\n")
    with pytest.raises(plan_cli.InputError, match=r"tagged\.yaml: line 1: a map tagged tag:yaml.org,2002:set"):
        list(plan_cli._documents(tagged))


def test_flow_style_yaml_that_is_not_json(files: tuple[Path, Path], tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    prices = tmp_path / "prices.yaml"
    prices.write_text("{A100-80GB: 0.01, H100-80GB: 9, cpu: 1.0}\n")
    rc, out, _ = run(capsys, "--nodes", str(files[0]), "--pools", str(files[1]), "-o", "json", "--prices", str(prices))
    assert rc == 0
    assert {p["product"] for p in json.loads(out)["placements"] if p["model"] == "team/emb/minilm"} == {"A100-80GB"}


def test_a_gpupoolconfig_beside_the_pools_sets_mig_policy_and_slice_pricing(
        files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    small = POOL.split("    - name: huge", maxsplit=1)[0]
    small = small.replace("minReplicas: 3", "minReplicas: 30").replace("maxReplicas: 6", "maxReplicas: 30")
    config = yaml.safe_load((ROOT / "examples" / "pools" / "gpupoolconfig-default.yaml").read_text())
    plain = tmp_path / "plain.yaml"
    plain.write_text(small)
    rc, out, _ = run(capsys, "--nodes", str(files[0]), "--pools", str(plain), "-o", "json")
    assert rc == 0
    assert json.loads(out)["migChanges"]  # 30 small replicas: worth re-laying GPUs
    config["spec"]["mig"] = {"policy": "Disabled"}
    config["spec"]["migSlicePricing"] = "ComputeShare"
    disabled = tmp_path / "disabled.yaml"
    disabled.write_text(small + "---\n" + yaml.safe_dump(config))
    rc, out, _ = run(capsys, "--nodes", str(files[0]), "--pools", str(disabled), "-o", "json")
    doc = json.loads(out)
    assert rc == 0
    assert doc["migChanges"] == []
    assert any(p["kind"] == "mig" for p in doc["placements"])  # the slices that exist, as they are
    for p in doc["placements"]:
        if p["kind"] == "mig":
            compute = int(p["profile"].split("g.")[0])
            gpu_price = {"A100-80GB": 3.43, "H100-80GB": 6.88}[p["product"]]
            assert p["costPerHour"] == pytest.approx(gpu_price * compute / 7, abs=1e-3)


def test_files_that_cannot_rewind_are_read(files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    """``--nodes <(kubectl get nodes -o yaml)``: a pipe, read whole (YAML and JSON alike)."""
    import os
    import threading

    for text in (files[0].read_text(), json.dumps(yaml.safe_load(files[0].read_text()))):
        read, write = os.pipe()

        def feed(fd: int = write, data: str = text) -> None:
            with os.fdopen(fd, "w") as out:
                out.write(data)

        threading.Thread(target=feed, daemon=True).start()
        rc, out, err = run(capsys, "--nodes", f"/dev/fd/{read}", "--pools", str(files[1]), "-o", "json")
        os.close(read)
        assert rc == 0, err
        assert len(json.loads(out)["placements"]) == 3
