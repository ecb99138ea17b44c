"""The GPU catalog against the published MIG geometry (shared notes/domain.md)."""

from __future__ import annotations

import pytest

from gpupool_operator.core import catalog

A100_40GB_TABLE = {  # nvidia-smi mig -lgipp on A100-SXM4-40GB: compute, memory slots, max, starts
    "1g.5gb": (1, 1, 7, (0, 1, 2, 3, 4, 5, 6)),
    "1g.5gb+me": (1, 1, 1, (0, 1, 2, 3, 4, 5, 6)),
    "1g.10gb": (1, 2, 4, (0, 2, 4, 6)),
    "2g.10gb": (2, 2, 3, (0, 2, 4)),
    "3g.20gb": (3, 4, 2, (0, 4)),
    "4g.20gb": (4, 4, 1, (0,)),
    "7g.40gb": (7, 8, 1, (0,)),
}

NAMES = {
    "A100-80GB": ["1g.10gb", "1g.10gb+me", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"],
    "H100-80GB": ["1g.10gb", "1g.10gb+me", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"],
    "H100-NVL-94GB": ["1g.12gb", "1g.12gb+me", "1g.24gb", "2g.24gb", "3g.47gb", "4g.47gb", "7g.94gb"],
    "H200-141GB": ["1g.18gb", "1g.18gb+me", "1g.35gb", "2g.35gb", "3g.71gb", "4g.71gb", "7g.141gb"],
    "B200-180GB": ["1g.23gb", "1g.23gb+me", "1g.45gb", "2g.45gb", "3g.90gb", "4g.90gb", "7g.180gb"],
    "GB200": ["1g.23gb", "1g.47gb", "2g.47gb", "3g.93gb", "4g.93gb", "7g.186gb"],
}


def test_a100_40gb_matches_nvidia_table() -> None:
    product = catalog.by_key("A100-40GB")
    got = {p.name: (p.compute_slices, p.memory_slots, p.max_count, p.starts) for p in product.mig_profiles}
    assert got == A100_40GB_TABLE


@pytest.mark.parametrize(("key", "names"), sorted(NAMES.items()))
def test_profile_names_per_product(key: str, names: list[str]) -> None:
    assert sorted(p.name for p in catalog.by_key(key).mig_profiles) == sorted(names)


@pytest.mark.parametrize("key", catalog.product_keys())
def test_same_geometry_as_a100(key: str) -> None:
    reference = sorted(A100_40GB_TABLE.values())
    mine = sorted((p.compute_slices, p.memory_slots, p.max_count, p.starts) for p in catalog.by_key(key).mig_profiles)
    assert all(m in reference for m in mine)


@pytest.mark.parametrize(
    ("label", "key"),
    [
        ("NVIDIA-A100-SXM4-80GB", "A100-80GB"),
        ("NVIDIA-A100-SXM4-40GB", "A100-40GB"),
        ("NVIDIA-H100-80GB-HBM3", "H100-80GB"),
        ("NVIDIA-H200", "H200-141GB"),
        ("NVIDIA-B200", "B200-180GB"),
        ("NVIDIA-A100-SXM4-40GB-MIG-1g.5gb", "A100-40GB"),  # strategy single suffix
    ],
)
def test_product_labels(label: str, key: str) -> None:
    product = catalog.by_product_label(label)
    assert product is not None
    assert product.key == key
    assert catalog.lookup(label).key == key


def test_unknown_product_is_none_and_lookup_names_the_known_ones() -> None:
    assert catalog.by_product_label("NVIDIA-L4") is None
    with pytest.raises(KeyError, match="known"):
        catalog.lookup("NVIDIA-L4")


def test_resource_name_turns_plus_into_dot() -> None:
    prof = catalog.by_key("A100-80GB").profile("1g.10gb+me")
    assert prof.resource_name == "nvidia.com/mig-1g.10gb.me"
