"""Cluster specs: the examples are valid, and every mistake names its pool and field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gpupool_operator.local.spec import PriceTier, SpecError, load, parse

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "clusters"


def test_small_example_is_heterogeneous() -> None:
    spec = load(EXAMPLES / "small-hetero.yaml")
    products = {p.product.key if p.product else "cpu" for p in spec.pools}
    assert products == {"A100-80GB", "H100-80GB", "B200-180GB", "cpu"}
    assert any(p.mig is not None for p in spec.pools)
    assert any(p.price_tier is PriceTier.SPOT for p in spec.pools)


def test_large_example_has_at_least_1000_gpu_nodes() -> None:
    spec = load(EXAMPLES / "large-fleet.yaml")
    gpu_nodes = sum(p.count for p in spec.pools if p.gpu)
    assert gpu_nodes >= 1000
    assert spec.gpu_count == sum(p.count * p.gpus_per_node for p in spec.pools)


def _pool(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {"name": "p1", "count": 1, "gpu": "A100-80GB", "gpusPerNode": 2}
    base.update(overrides)
    return base


@pytest.mark.parametrize(
    ("pool", "expected"),
    [
        (_pool(gpu="V100-16GB"), ["pool 'p1'", "gpu", "unknown GPU product 'V100-16GB'"]),
        (
            _pool(mig={"layout": {"4g.40gb": 1, "3g.40gb": 2}}),
            ["pool 'p1'", "mig.layout", "impossible MIG layout", "10 compute slices"],
        ),
        (_pool(mig={"layout": {"1g.10gb": 8}}), ["pool 'p1'", "mig.layout", "exceeds the maximum of 7"]),
        (_pool(mig={"layout": {"5g.50gb": 1}}), ["pool 'p1'", "mig.layout", "no MIG profile '5g.50gb'"]),
        (
            _pool(mig={"layout": {"3g.40gb": 2, "1g.10gb": 1}}),
            ["pool 'p1'", "mig.layout", "impossible MIG layout", "9 memory slots"],
        ),
        (_pool(mig={"gpus": [{"7g.80gb": 1}]}), ["pool 'p1'", "mig.gpus: has 1 entries but gpusPerNode is 2"]),
        (_pool(mig={"gpus": [{}, {"3g.40gb": 3}]}), ["pool 'p1'", "mig.gpus[1]", "impossible"]),
        (
            _pool(mig={"strategy": "single", "gpus": [{"1g.10gb": 7}, {"2g.20gb": 3}]}),
            ["pool 'p1'", "single needs every GPU partitioned into one and the same profile"],
        ),
        (_pool(mig={"layout": {"1g.10gb": 7}, "gpus": [{}, {}]}), ["pool 'p1'", "exactly one of"]),
        (_pool(gpusPerNode=0), ["pool 'p1'", "gpusPerNode must be >= 1"]),
        (_pool(count=-1), ["pool 'p1'", "count", "greater than or equal to 0"]),
        (_pool(priceTier="cheap"), ["pool 'p1'", "priceTier"]),
        (_pool(colour="blue"), ["pool 'p1'", "colour", "Extra inputs are not permitted"]),
        ({"name": "cpu", "count": 1, "mig": {"layout": {"1g.10gb": 1}}}, ["pool 'cpu'", "CPU-only pool"]),
        (_pool(name="Bad_Name"), ["pool 'Bad_Name'", "name: String should match pattern"]),
        ({"count": 1}, ["pools[0]", "name: Field required"]),
    ],
)
def test_bad_pool_is_rejected_naming_pool_and_field(pool: dict[str, object], expected: list[str]) -> None:
    with pytest.raises(SpecError) as err:
        parse({"name": "c", "pools": [pool]}, "spec.yaml")
    message = str(err.value)
    assert message.startswith("spec.yaml: ")
    for fragment in expected:
        assert fragment in message, message


def test_duplicate_pool_names_are_rejected() -> None:
    assert parse({"name": "c", "pools": [_pool()]}).pools[0].name == "p1"
    with pytest.raises(SpecError, match="duplicate pool name 'p1'"):
        parse({"name": "c", "pools": [_pool(), _pool()]})


def test_load_reports_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="no such cluster spec"):
        load(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load(bad)
    bad.write_text(yaml.safe_dump(["a", "list"]))
    with pytest.raises(SpecError, match="expected a mapping"):
        load(bad)


def test_real_product_label_values_are_accepted() -> None:
    spec = parse({"name": "c", "pools": [_pool(gpu="NVIDIA-H100-80GB-HBM3", mig={"layout": {"7g.80gb": 1}})]})
    assert spec.pools[0].product is not None
    assert spec.pools[0].product.key == "H100-80GB"
