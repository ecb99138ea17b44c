"""The GPU catalog as data: products, their real GFD label values and their MIG geometry.

Why data and not code: every placement decision, node generator and validation rule reads the same
facts, so they live in one table. Values come from NVIDIA's MIG user guide (``nvidia-smi mig
-lgipp``) and GPU Feature Discovery labels (see shared notes/domain.md). Memory sizes are the nominal
ones; real usable memory is below the name, so adapters prefer the ``nvidia.com/mig-<p>.memory``
and ``nvidia.com/gpu.memory`` labels when a node carries them.

A MIG-capable GPU has 7 compute slices and 8 memory slots; a GPU instance occupies the contiguous
memory slots ``[start, start + memory_slots)`` and may start only at the listed slots.
"""

from __future__ import annotations

from dataclasses import dataclass

COMPUTE_SLICES = 7
MEMORY_SLOTS = 8
MAX_INSTANCES = 7


@dataclass(frozen=True, slots=True)
class MigProfile:
    """One GPU-instance profile of one GPU product (e.g. ``3g.40gb`` on an H100-80GB)."""

    name: str
    compute_slices: int
    memory_slots: int
    max_count: int
    starts: tuple[int, ...]
    memory_mib: int
    multiprocessors: int

    @property
    def resource_name(self) -> str:
        """The device plugin's extended resource under the ``mixed`` strategy (``+`` becomes ``.``)."""
        return "nvidia.com/mig-" + self.name.replace("+", ".")

    @property
    def is_media_extension(self) -> bool:
        return self.name.endswith("+me")


@dataclass(frozen=True, slots=True)
class GpuProduct:
    """A GPU model as the placement engine sees it."""

    key: str  # short catalog key, e.g. "H100-80GB"
    product_labels: tuple[str, ...]  # real nvidia.com/gpu.product values; the first is canonical
    memory_mib: int
    family: str
    compute_major: int
    compute_minor: int
    multiprocessors: int
    mig_profiles: tuple[MigProfile, ...] = ()

    @property
    def mig_capable(self) -> bool:
        return bool(self.mig_profiles)

    @property
    def product_label(self) -> str:
        return self.product_labels[0]

    def profile(self, name: str) -> MigProfile:
        for prof in self.mig_profiles:
            if prof.name == name:
                return prof
        known = ", ".join(p.name for p in self.mig_profiles) or "none (not MIG-capable)"
        raise KeyError(f"{self.key} has no MIG profile {name!r}; its profiles are: {known}")


def _profiles(
    memory_mib: int, sm_total: int, sizes: tuple[int, int, int, int, int], me: bool = True
) -> tuple[MigProfile, ...]:
    """The seven standard profiles of a 7-slice/8-slot GPU, named by ``sizes`` (GB in the name).

    ``sizes`` = (1g, 1g-double, 2g, 3g/4g, 7g) nominal GB figures as NVIDIA names them.
    """
    one, one_double, two, three_four, seven = sizes
    slot_mib = memory_mib // MEMORY_SLOTS
    sm_per_slice = sm_total // COMPUTE_SLICES

    def prof(name: str, c: int, m: int, mx: int, starts: tuple[int, ...]) -> MigProfile:
        sms = sm_total if c == COMPUTE_SLICES else c * sm_per_slice
        return MigProfile(name, c, m, mx, starts, m * slot_mib, sms)

    out = [prof(f"1g.{one}gb", 1, 1, 7, (0, 1, 2, 3, 4, 5, 6))]
    if me:
        out.append(prof(f"1g.{one}gb+me", 1, 1, 1, (0, 1, 2, 3, 4, 5, 6)))
    out += [
        prof(f"1g.{one_double}gb", 1, 2, 4, (0, 2, 4, 6)),
        prof(f"2g.{two}gb", 2, 2, 3, (0, 2, 4)),
        prof(f"3g.{three_four}gb", 3, 4, 2, (0, 4)),
        prof(f"4g.{three_four}gb", 4, 4, 1, (0,)),
        prof(f"7g.{seven}gb", 7, 8, 1, (0,)),
    ]
    return tuple(out)


PRODUCTS: tuple[GpuProduct, ...] = (
    GpuProduct("A100-40GB", ("NVIDIA-A100-SXM4-40GB", "NVIDIA-A100-PCIE-40GB"), 40960, "ampere", 8, 0, 108,
               _profiles(40960, 108, (5, 10, 10, 20, 40))),
    GpuProduct("A100-80GB", ("NVIDIA-A100-SXM4-80GB", "NVIDIA-A100-80GB-PCIe"), 81920, "ampere", 8, 0, 108,
               _profiles(81920, 108, (10, 20, 20, 40, 80))),
    GpuProduct("H100-80GB", ("NVIDIA-H100-80GB-HBM3", "NVIDIA-H100-PCIe"), 81559, "hopper", 9, 0, 132,
               _profiles(81559, 132, (10, 20, 20, 40, 80))),
    GpuProduct("H100-NVL-94GB", ("NVIDIA-H100-NVL",), 95830, "hopper", 9, 0, 132,
               _profiles(95830, 132, (12, 24, 24, 47, 94))),
    GpuProduct("H200-141GB", ("NVIDIA-H200", "NVIDIA-H200-NVL"), 143771, "hopper", 9, 0, 132,
               _profiles(143771, 132, (18, 35, 35, 71, 141))),
    GpuProduct("B200-180GB", ("NVIDIA-B200",), 183359, "blackwell", 10, 0, 148,
               _profiles(183359, 148, (23, 45, 45, 90, 180))),
    GpuProduct("GB200", ("NVIDIA-GB200",), 189471, "blackwell", 10, 0, 152,
               _profiles(189471, 152, (23, 47, 47, 93, 186), me=False)),  # no +me profile listed
)

_BY_KEY = {p.key: p for p in PRODUCTS}
_BY_LABEL = {label: p for p in PRODUCTS for label in p.product_labels}


def product_keys() -> tuple[str, ...]:
    return tuple(_BY_KEY)


def by_key(key: str) -> GpuProduct:
    try:
        return _BY_KEY[key]
    except KeyError:
        raise KeyError(f"unknown GPU product {key!r}; known products: {', '.join(_BY_KEY)}") from None


def by_product_label(label: str) -> GpuProduct | None:
    """Map a ``nvidia.com/gpu.product`` label value to the catalog, or ``None`` when unknown.

    Under the MIG ``single`` strategy GFD appends ``-MIG-<profile>`` to the product; that suffix is
    ignored here. Unknown products are the caller's to handle (as a non-MIG GPU sized from labels).
    """
    base = label.split("-MIG-", 1)[0]
    return _BY_LABEL.get(base)


def lookup(name: str) -> GpuProduct:
    """Find a product by catalog key or by any of its real product label values."""
    product = _BY_KEY.get(name) or by_product_label(name)
    if product is None:
        raise KeyError(
            f"unknown GPU product {name!r}; known: {', '.join(_BY_KEY)} "
            f"(or their nvidia.com/gpu.product values: {', '.join(_BY_LABEL)})"
        )
    return product
