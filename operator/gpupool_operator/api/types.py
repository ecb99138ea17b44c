"""Scalar wire types shared by every gpupool resource, with the parsers the operator needs.

Kubernetes API conventions keep floats out of specs, so money and rates travel as decimal strings
(``"6.88"``), memory as resource quantities (``"40Gi"``) and durations as Gateway API durations
(``"300ms"``, ``"5m"``). Each type carries its JSON schema (pattern, bounds) so the generated CRD
and the Python validation agree; the regular expressions are RE2-compatible because the API server
evaluates them with Go's regexp.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, PlainSerializer, StringConstraints, WithJsonSchema

__all__ = [
    "DNS_1035_LABEL_PATTERN",
    "DNS_LABEL_PATTERN",
    "DURATION_PATTERN",
    "GPU_PRODUCT_PATTERN",
    "LABEL_VALUE_PATTERN",
    "MIG_PROFILE_PATTERN",
    "QUANTITY_PATTERN",
    "DnsLabel",
    "Duration",
    "GpuProduct",
    "LabelValue",
    "MigProfileName",
    "ModelName",
    "PositiveDecimal",
    "Quantity",
    "Rate",
    "Timestamp",
    "UsdAmount",
    "format_decimal",
    "mig_resource_name",
    "parse_duration",
    "parse_quantity",
]

DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
"""RFC 1123 label: what Kubernetes accepts as a name inside a Deployment or Service name."""

DNS_1035_LABEL_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
"""RFC 1035 label: what a Service name must be (starts with a letter)."""

DURATION_PATTERN = r"^([0-9]{1,5}(h|m|s|ms)){1,4}$"
"""The Gateway API Duration (GEP-2257): ``1h``, ``5m``, ``300ms``, ``1m30s``."""

QUANTITY_PATTERN = r"^([1-9][0-9]{0,8}(\.[0-9]{1,3})?|0\.[0-9]{0,2}[1-9])(Ki|Mi|Gi|Ti|k|M|G|T)?$"
"""A positive memory quantity in Kubernetes notation (``512Mi``, ``40Gi``, ``1.5Ti``, ``80G``)."""

MIG_PROFILE_PATTERN = r"^[1-7]g\.[0-9]{1,3}gb(\+(me|gfx|me\.all))?$"
"""A MIG GPU-instance profile as ``nvidia-smi mig -lgip`` names it: ``1g.10gb``, ``3g.40gb``,
``1g.10gb+me`` (and the ``+gfx`` / ``+me.all`` variants of newer GPUs)."""

GPU_PRODUCT_PATTERN = (
    r"^([A-Z][A-Z0-9]*(-[A-Z0-9]+)*"
    r"|(NVIDIA|Tesla|Quadro|GRID|TITAN)-[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)$"
)
"""A catalog short name (``H100-80GB``) or a real ``nvidia.com/gpu.product`` label value, which GPU
Feature Discovery derives from the NVML device name (``NVIDIA-H100-80GB-HBM3``, ``Tesla-T4``)."""

LABEL_VALUE_PATTERN = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
"""A Kubernetes label value (at most 63 characters)."""

DECIMAL_PATTERN = r"^[0-9]{1,9}(\.[0-9]{1,6})?$"
"""A non-negative decimal with at most 9 integer and 6 fractional digits (``"2.74"``)."""

_MEMORY_SUFFIXES: dict[str, int] = {
    "": 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}
_QUANTITY_RE = re.compile(QUANTITY_PATTERN)
_QUANTITY_MAX = 2**63 - 1  # what the API server turns a larger binary-SI quantity into
_DURATION_RE = re.compile(DURATION_PATTERN)
_DURATION_PART_RE = re.compile(r"([0-9]+)(ms|h|m|s)")
_DURATION_UNITS: dict[str, Fraction] = {
    "h": Fraction(3600),
    "m": Fraction(60),
    "s": Fraction(1),
    "ms": Fraction(1, 1000),
}
_DECIMAL_RE = re.compile(DECIMAL_PATTERN)
_SIX_PLACES = Decimal("0.000001")


def parse_quantity(quantity: str) -> int:
    """Bytes in a memory quantity such as ``"40Gi"``, as Kubernetes' ``resource.Quantity`` reads it:
    rounded up to a whole byte (``Quantity.Value()``); with a binary suffix (Ki Mi Gi Ti) at most
    2^63 - 1, about 8 EiB (``ParseQuantity`` caps binary-SI amounts there; decimal ones it keeps).

    Only the CRD's ``QUANTITY_PATTERN`` (positive, at most three decimals, k M G T Ki Mi Gi Ti) is
    accepted, where exact rational arithmetic is all it takes; the api may not import the Kubernetes
    client. ``tests/api/test_quantity_apiserver.py`` holds it to the API server's canonical forms.
    A purely computational function with no side-effects; raises ``ValueError`` on a malformed value.
    """
    if not _QUANTITY_RE.match(quantity):
        raise ValueError(f"{quantity!r} is not a positive memory quantity such as 512Mi or 40Gi")
    number = quantity.rstrip("KMGTik")
    suffix = quantity[len(number):]
    value = Fraction(number) * _MEMORY_SUFFIXES[suffix]
    whole = -(-value.numerator // value.denominator)
    return min(whole, _QUANTITY_MAX) if suffix.endswith("i") else whole


def parse_duration(duration: str) -> float:
    """Seconds in a Gateway API duration such as ``"1m30s"`` or ``"5ms"``."""
    if not _DURATION_RE.match(duration):
        raise ValueError(f"{duration!r} is not a duration such as 300ms, 30s, 5m or 1h")
    total = sum(
        (int(n) * _DURATION_UNITS[unit] for n, unit in _DURATION_PART_RE.findall(duration)), Fraction(0)
    )
    return float(total)


def mig_resource_name(profile: str) -> str:
    """The device plugin's extended resource for a MIG profile under the ``mixed`` strategy."""
    return "nvidia.com/mig-" + profile.replace("+", ".")


def format_decimal(value: Decimal) -> str:
    """A decimal as the wire carries it: plain notation, at most six places, no trailing zeros."""
    quantized = value.quantize(_SIX_PLACES)
    text = format(quantized, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


def _to_decimal(value: Any) -> Decimal:
    if isinstance(value, Decimal):
        if not value.is_finite() or value < 0:
            raise ValueError("must be a finite, non-negative decimal")
        return value
    if isinstance(value, str):
        if not _DECIMAL_RE.match(value):
            raise ValueError(f'{value!r} is not a decimal string such as "2.74"')
        try:
            return Decimal(value)
        except InvalidOperation as exc:  # pragma: no cover - the pattern excludes this
            raise ValueError(f"{value!r} is not a decimal") from exc
    raise ValueError('must be a decimal string such as "2.74" (quote it in YAML)')


def _positive(value: Decimal) -> Decimal:
    if value <= 0:
        raise ValueError("must be greater than zero")
    return value


def _utc_seconds(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("timestamps must carry a time zone (RFC 3339)")
    return value.astimezone(UTC).replace(microsecond=0)


_DECIMAL_SCHEMA: dict[str, Any] = {"type": "string", "pattern": DECIMAL_PATTERN, "maxLength": 16}

UsdAmount = Annotated[
    Decimal,
    BeforeValidator(_to_decimal),
    PlainSerializer(format_decimal, return_type=str),
    WithJsonSchema(_DECIMAL_SCHEMA),
]
"""US dollars as a decimal string (``"6.88"``): no float rounding on the wire."""

PositiveDecimal = Annotated[
    Decimal,
    BeforeValidator(_to_decimal),
    AfterValidator(_positive),
    PlainSerializer(format_decimal, return_type=str),
    WithJsonSchema(
        {
            **_DECIMAL_SCHEMA,
            "x-kubernetes-validations": [{"rule": "self.matches('[1-9]')", "message": "must be greater than zero"}],
        }
    ),
]
"""A decimal string that must be greater than zero (a budget, a multiplier)."""

Rate = PositiveDecimal
"""Inferences per second, as a positive decimal string (``"0.5"`` for a slow LLM)."""

Quantity = Annotated[str, StringConstraints(pattern=QUANTITY_PATTERN, max_length=20)]
"""A positive memory quantity (``40Gi``); ``parse_quantity`` gives bytes."""

Duration = Annotated[str, StringConstraints(pattern=DURATION_PATTERN, max_length=24)]
"""A Gateway API duration (``300ms``, ``5m``); ``parse_duration`` gives seconds."""

DnsLabel = Annotated[str, StringConstraints(pattern=DNS_LABEL_PATTERN, min_length=1, max_length=63)]
"""A lower-case RFC 1123 label."""

ModelName = Annotated[str, StringConstraints(pattern=DNS_1035_LABEL_PATTERN, min_length=1, max_length=40)]
"""A model name: an RFC 1035 label of at most 40 characters, so ``<pool>-<model>`` names still fit."""

MigProfileName = Annotated[str, StringConstraints(pattern=MIG_PROFILE_PATTERN, max_length=16)]
"""A MIG profile name (``3g.40gb``)."""

GpuProduct = Annotated[str, StringConstraints(pattern=GPU_PRODUCT_PATTERN, min_length=2, max_length=63)]
"""A GPU product: catalog short name (``H100-80GB``) or ``nvidia.com/gpu.product`` value."""

LabelValue = Annotated[str, StringConstraints(pattern=LABEL_VALUE_PATTERN, max_length=63)]
"""Any Kubernetes label value (what a node reports, not what a user may ask for)."""

Timestamp = Annotated[
    datetime,
    AfterValidator(_utc_seconds),
    PlainSerializer(lambda v: v.strftime("%Y-%m-%dT%H:%M:%SZ"), return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]
"""An RFC 3339 timestamp in UTC with second precision, as ``metav1.Time`` serialises."""
