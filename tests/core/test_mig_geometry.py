"""MIG geometry: validity, enumeration, and the smallest change between layouts."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpupool_operator.core import catalog, mig

A100 = catalog.by_key("A100-40GB")
H100 = catalog.by_key("H100-80GB")


@pytest.mark.parametrize(
    ("counts", "valid"),
    [
        ({"1g.5gb": 7}, True),
        ({"1g.5gb": 8}, False),  # more than 7 instances
        ({"3g.20gb": 2}, True),
        ({"4g.20gb": 1, "3g.20gb": 1}, True),  # allowed since R510
        ({"4g.20gb": 1, "2g.10gb": 2}, False),  # 8 compute slices
        ({"3g.20gb": 1, "2g.10gb": 1, "1g.5gb": 2}, True),  # all-balanced
        ({"1g.10gb": 4}, True),
        ({"1g.10gb": 4, "1g.5gb": 1}, False),  # 9 memory slots
        ({"2g.10gb": 3, "1g.5gb": 1}, True),
        ({"2g.10gb": 3, "1g.10gb": 1}, True),  # 1g.10gb at slot 6
        ({"3g.20gb": 1, "2g.10gb": 2}, True),
        ({"3g.20gb": 2, "1g.5gb": 1}, False),  # compute 7, but no slot left
        ({"7g.40gb": 1}, True),
        ({"7g.40gb": 1, "1g.5gb": 1}, False),
        ({"1g.5gb+me": 2}, False),  # max one +me
        ({"5g.25gb": 1}, False),
    ],
)
def test_layout_validity(counts: dict[str, int], valid: bool) -> None:
    assert (mig.layout_problem(A100, counts) is None) is valid
    assert mig.is_valid(A100, counts) is valid


def test_problem_says_why() -> None:
    assert "compute slices" in (mig.layout_problem(A100, {"4g.20gb": 1, "2g.10gb": 2}) or "")
    assert "maximum" in (mig.layout_problem(A100, {"1g.5gb": 8}) or "")
    assert "not MIG-capable" in (mig.layout_problem(catalog.GpuProduct("X", ("X",), 1, "x", 1, 0, 1), {}) or "")


def test_place_puts_3g_at_slot_4() -> None:
    assert mig.place(A100, {"3g.20gb": 1}) == (("3g.20gb", 4),)


def test_enumeration_is_exactly_the_valid_layouts() -> None:
    layouts = mig.valid_layouts("A100-40GB")
    assert () in layouts
    assert len(set(layouts)) == len(layouts)
    for layout in layouts:
        assert mig.layout_problem(A100, dict(layout)) is None
    # Exhaustive cross-check over bounded counts.
    names = [p.name for p in A100.mig_profiles]
    valid = set(layouts)
    import itertools

    for combo in itertools.product(*(range(0, min(p.max_count, 4) + 1) for p in A100.mig_profiles)):
        counts = {n: c for n, c in zip(names, combo, strict=True) if c}
        assert (mig.counts_key(counts) in valid) == (mig.layout_problem(A100, counts) is None), counts


def test_maximal_layouts_cannot_grow() -> None:
    profs = frozenset({"1g.10gb", "2g.20gb", "3g.40gb"})
    for layout in mig.maximal_layouts("H100-80GB", profs):
        for p in profs:
            assert mig.add("H100-80GB", layout, p) is None


def test_room_for() -> None:
    assert mig.room_for("H100-80GB", (), "1g.10gb") == 7
    assert mig.room_for("H100-80GB", (("3g.40gb", 1),), "3g.40gb") == 1
    assert mig.room_for("H100-80GB", (("7g.80gb", 1),), "1g.10gb") == 0


BALANCED = (("1g.10gb", 0), ("1g.10gb", 1), ("2g.20gb", 2), ("3g.40gb", 4))


def test_smallest_change_reuses_free_instances() -> None:
    assert mig.smallest_change(H100, BALANCED, (), {"2g.20gb": 1}) == BALANCED


def test_smallest_change_keeps_occupied_instance_and_compatible_free_ones() -> None:
    after = mig.smallest_change(H100, BALANCED, (("3g.40gb", 4),), {"2g.20gb": 2})
    assert after is not None
    assert ("3g.40gb", 4) in after
    assert Counter(n for n, _ in after)["2g.20gb"] == 2


def test_smallest_change_impossible_with_pinned_instance() -> None:
    assert mig.smallest_change(H100, BALANCED, (("1g.10gb", 0),), {"4g.40gb": 1}) is None


def test_smallest_change_from_empty() -> None:
    assert mig.smallest_change(H100, (), (), {"3g.40gb": 2}) == (("3g.40gb", 0), ("3g.40gb", 4))


@settings(max_examples=150, deadline=None)
@given(
    current=st.sampled_from(mig.valid_layouts("H100-80GB")),
    need=st.dictionaries(st.sampled_from(["1g.10gb", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb"]),
                         st.integers(1, 3), max_size=2),
)
def test_smallest_change_properties(current: mig.Counts, need: dict[str, int]) -> None:
    cur = mig.place(H100, dict(current))
    assert cur is not None
    after = mig.smallest_change(H100, cur, (), need)
    if after is None:  # nothing is pinned, so only an impossible `need` has no answer
        assert not mig.is_valid(H100, need)
        return
    counts = Counter(n for n, _ in after)
    assert all(counts[k] >= v for k, v in need.items())
    assert mig.layout_problem(H100, dict(counts)) is None
    # No layout containing `need` is closer to the current one than the answer.
    dist = sum((Counter(cur) - Counter(after)).values()) + sum((Counter(after) - Counter(cur)).values())
    if all(Counter(n for n, _ in cur)[k] >= v for k, v in need.items()):
        assert dist == 0


def test_describe() -> None:
    assert mig.describe(None) == "MIG disabled"
    assert mig.describe({}) == "empty"
    assert mig.describe({"1g.10gb": 2, "3g.40gb": 1}) == "1x3g.40gb + 2x1g.10gb"
