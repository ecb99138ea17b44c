"""The GPU catalog as data: products, their real GFD label values and their MIG geometry.

Why data and not code: every placement decision, node generator and validation rule reads the same
facts, so they live in one table. Values come from NVIDIA's MIG user guide (``nvidia-smi mig
-lgipp``) and GPU Feature Discovery labels (see shared notes/domain.md). Instance memory is what the
device really has (below the name: see :class:`MigProfile`); adapters still prefer the
``nvidia.com/mig-<p>.memory`` and ``nvidia.com/gpu.memory`` labels when a node carries them.

A MIG-capable GPU has 7 compute slices and 8 memory slots; a GPU instance occupies the contiguous
memory slots ``[start, start + memory_slots)`` and may start only at the listed slots.
"""

from __future__ import annotations

from dataclasses import dataclass

from gpupool_operator.api.types import mig_resource_name

COMPUTE_SLICES = 7
#: The device plugin's resource prefix for MIG instances under the ``mixed`` strategy; the full
#: name is :func:`gpupool_operator.api.types.mig_resource_name`, the one rule for it.
MIG_RESOURCE_PREFIX = "nvidia.com/mig-"
MEMORY_SLOTS = 8
MAX_INSTANCES = 7


@dataclass(frozen=True, slots=True)
class MigProfile:
    """One GPU-instance profile of one GPU product (e.g. ``3g.40gb`` on an H100-80GB).

    ``memory_mib`` is the memory an instance really has (what ``nvidia-smi mig -lgip`` and GFD's
    ``nvidia.com/mig-<profile>.memory`` report), below the nominal figure in the name: an A100-40GB
    ``1g.5gb`` holds 4864 MiB, not 5 GiB. ``memory_estimated`` marks figures derived by rule
    rather than read from a published device listing (see :data:`PRODUCTS`).
    """

    name: str
    compute_slices: int
    memory_slots: int
    max_count: int
    starts: tuple[int, ...]
    memory_mib: int
    multiprocessors: int
    memory_estimated: bool = False

    @property
    def resource_name(self) -> str:
        """The device plugin's extended resource under the ``mixed`` strategy (``+`` becomes ``.``)."""
        return mig_resource_name(self.name)

    @property
    def is_media_extension(self) -> bool:
        return self.name.endswith("+me")


@dataclass(frozen=True, slots=True)
class GpuProduct:
    """A GPU model as the placement engine sees it."""

    key: str  # short catalog key, e.g. "H100-80GB"
    product_labels: tuple[str, ...]  # real nvidia.com/gpu.product values; the first is canonical
    memory_mib: int  # what GFD's nvidia.com/gpu.memory reports for it
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

    def profile_for_resource(self, suffix: str) -> MigProfile | None:
        """The profile behind a device-plugin resource suffix (``1g.10gb.me`` -> ``1g.10gb+me``), or
        ``None`` when this product has no such profile; the inverse of :func:`mig_resource_name`."""
        for prof in self.mig_profiles:
            if mig_resource_name(prof.name) == MIG_RESOURCE_PREFIX + suffix:
                return prof
        return None


#: Memory slots per profile size, in the order :func:`_profiles` names them.
_SLOTS = (1, 2, 2, 4, 4, 8)


def _profiles(
    sizes: tuple[int, int, int, int, int],
    usable: tuple[int, int, int, int],
    sms: tuple[int, int, int, int, int, int],
    measured: frozenset[int] = frozenset({1, 2, 4, 8}),
    me: bool = True,
) -> tuple[MigProfile, ...]:
    """The seven standard profiles of a 7-slice/8-slot GPU.

    ``sizes`` = (1g, 1g-double, 2g, 3g/4g, 7g) nominal GB figures as NVIDIA names them;
    ``usable`` = real MiB of an instance spanning 1, 2, 4 and 8 memory slots (an instance's memory
    depends only on its memory slots); ``measured`` = the slot counts whose figure was read from a
    device listing (the others are estimated as a multiple of a smaller measured instance, which
    every published listing shows to be a lower bound); ``sms`` = multiprocessors of the 1g,
    1g-double, 2g, 3g, 4g and 7g instances.
    """
    one, one_double, two, three_four, seven = sizes
    mib = dict(zip((1, 2, 4, 8), usable, strict=True))

    def prof(name: str, c: int, m: int, mx: int, starts: tuple[int, ...], sm: int) -> MigProfile:
        return MigProfile(name, c, m, mx, starts, mib[m], sm, memory_estimated=m not in measured)

    out = [prof(f"1g.{one}gb", 1, 1, 7, (0, 1, 2, 3, 4, 5, 6), sms[0])]
    if me:
        out.append(prof(f"1g.{one}gb+me", 1, 1, 1, (0, 1, 2, 3, 4, 5, 6), sms[0]))
    out += [
        prof(f"1g.{one_double}gb", 1, 2, 4, (0, 2, 4, 6), sms[1]),
        prof(f"2g.{two}gb", 2, 2, 3, (0, 2, 4), sms[2]),
        prof(f"3g.{three_four}gb", 3, 4, 2, (0, 4), sms[3]),
        prof(f"4g.{three_four}gb", 4, 4, 1, (0,), sms[4]),
        prof(f"7g.{seven}gb", 7, 8, 1, (0,), sms[5]),
    ]
    assert [p.memory_slots for p in out if not p.is_media_extension] == list(_SLOTS)
    return tuple(out)


# Instance memory, from the lowest figure published for the product (drivers differ by up to
# 0.25 GiB; the lowest one is what every driver gives at least), in MiB = GiB x 1024:
# * A100-40GB: `nvidia-smi mig -lgip` 4.75 / 9.62 / 19.50 / 39.25 GiB (R450 drivers; later ones
#   9.75 / 19.62 / 39.50), GFD labels 1g.5gb 4864, 2g.10gb 9984, 3g.20gb 20096; gpu.memory 40537.
# * A100-80GB: GFD labels on an A100-80GB-PCIe 1g.10gb 9728, 2g.20gb 19968, 3g.40gb 40192;
#   7g.80gb 78.50-79.25 GiB in -lgip listings.
# * H100-80GB: -lgip 9.75 / 19.62 / 39.50 / 79.25 GiB, GFD 1g.10gb 9984 and 3g.40gb 40448.
# * H100 NVL: GFD (strategy single) 1g.12gb 11008; larger instances estimated.
# * H200: -lgip 1g.18gb 16.00, 2g.35gb 32.50, 7g.141gb 140.00 GiB; 3g/4g estimated.
# * B200: 1g.23gb 22.0 GiB on one driver and 20.5 GiB on a later one (shared notes/domain.md);
#   larger instances estimated. GB200: no listing found; estimated like B200.
PRODUCTS: tuple[GpuProduct, ...] = (
    GpuProduct("A100-40GB", ("NVIDIA-A100-SXM4-40GB", "NVIDIA-A100-PCIE-40GB"), 40537, "ampere", 8, 0, 108,
               _profiles((5, 10, 10, 20, 40), (4864, 9856, 19968, 40192), (14, 14, 28, 42, 56, 98))),
    GpuProduct("A100-80GB", ("NVIDIA-A100-SXM4-80GB", "NVIDIA-A100-80GB-PCIe"), 81920, "ampere", 8, 0, 108,
               _profiles((10, 20, 20, 40, 80), (9728, 19968, 40192, 80384), (14, 14, 28, 42, 56, 98))),
    GpuProduct("H100-80GB", ("NVIDIA-H100-80GB-HBM3", "NVIDIA-H100-PCIe"), 81559, "hopper", 9, 0, 132,
               _profiles((10, 20, 20, 40, 80), (9984, 20096, 40448, 81152), (16, 26, 32, 60, 64, 132))),
    GpuProduct("H100-NVL-94GB", ("NVIDIA-H100-NVL",), 95830, "hopper", 9, 0, 132,
               _profiles((12, 24, 24, 47, 94), (11008, 22016, 44032, 88064), (16, 26, 32, 60, 64, 132),
                         measured=frozenset({1}))),
    GpuProduct("H200-141GB", ("NVIDIA-H200", "NVIDIA-H200-NVL"), 143771, "hopper", 9, 0, 132,
               _profiles((18, 35, 35, 71, 141), (16384, 33280, 66560, 143360), (16, 26, 32, 60, 64, 132),
                         measured=frozenset({1, 2, 8}))),
    GpuProduct("B200-180GB", ("NVIDIA-B200",), 183359, "blackwell", 10, 0, 148,
               _profiles((23, 45, 45, 90, 180), (20992, 41984, 83968, 167936), (18, 18, 36, 54, 72, 148),
                         measured=frozenset({1}))),
    GpuProduct("GB200", ("NVIDIA-GB200",), 189471, "blackwell", 10, 0, 152,
               _profiles((23, 47, 47, 93, 186), (20992, 41984, 83968, 167936), (18, 18, 36, 54, 72, 152),
                         measured=frozenset(), me=False)),  # no +me profile listed
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
