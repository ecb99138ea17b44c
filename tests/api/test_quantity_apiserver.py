"""``api.types.parse_quantity`` against the real kube-apiserver's ``resource.Quantity``.

The api package may not import the Kubernetes client (import-linter: the core and the api stay
pure, and the core parses ``acceleratorMemory`` through it), so it keeps its own parser for the
memory quantities the CRD's pattern admits (``QUANTITY_PATTERN``: positive, at most three
decimals, the suffixes k M G T Ki Mi Gi Ti). This holds it to Kubernetes' own semantics: every
quantity of a table and of a seeded sample of the pattern's language is sent to the API server
inside a ResourceQuota (a server-side dry run: nothing is stored), the server answers with its
canonical form, and the bytes that form denotes, rounded up to a whole byte as
``Quantity.Value()`` does, must be what ``parse_quantity`` returns. (That found one difference,
now matched: the server caps a binary-SI amount at 2^63 - 1 bytes.)
"""

from __future__ import annotations

import json
import math
import random
import re
from decimal import Decimal
from typing import Any

import pytest
from kubernetes.utils import parse_quantity as client_quantity

from gpupool_operator.api.types import QUANTITY_PATTERN, parse_quantity

pytestmark = pytest.mark.cluster

#: Every suffix and form the pattern admits, its edges (the smallest, the longest) and values
#: whose bytes are not whole (rounded up).
TABLE = [
    "1", "7", "1000", "123456789", "999999999", "0.001", "0.5", "0.999", "0.01", "1.5", "100.125", "999999999.999",
    "1k", "1.5k", "0.001k", "999999999.999k", "1M", "2.5M", "0.333M", "1G", "80G", "1.001G", "1T", "0.7T",
    "1Ki", "0.5Ki", "0.001Ki", "1.333Ki", "512Mi", "1.5Mi", "0.1Mi", "1.333Mi", "40Gi", "0.5Gi", "1.25Gi",
    "0.001Gi", "1.5Gi", "1Ti", "1.5Ti", "0.999Ti", "8388607Ti", "8388608Ti", "999999999.999Ti", "999999999.999T",
    "141Gi", "180Gi", "4864Mi",
]
SUFFIXES = ["", "k", "M", "G", "T", "Ki", "Mi", "Gi", "Ti"]
KEYS = ["requests.memory", "limits.memory", "requests.storage", "requests.ephemeral-storage",
        "limits.ephemeral-storage"]


def _sample(n: int, seed: int = 20261204) -> list[str]:
    """``n`` strings of the pattern's language, drawn with a fixed seed (the same every run)."""
    rng = random.Random(seed)
    out: list[str] = []
    while len(out) < n:
        if rng.random() < 0.8:
            number = str(rng.choice([rng.randint(1, 9), rng.randint(1, 999), rng.randint(1, 999_999_999)]))
            if rng.random() < 0.5:
                number += "." + str(rng.randint(0, 999)).zfill(rng.randint(1, 3))[:3]
        else:
            number = f"0.{rng.randint(1, 999):03d}".rstrip("0")
        text = number + rng.choice(SUFFIXES)
        if re.fullmatch(QUANTITY_PATTERN, text):
            out.append(text)
    return out


def _canonical(cluster: Any, quantities: list[str]) -> dict[str, str]:
    """What the API server makes of each quantity: its canonical form, read back from a dry run."""
    items = []
    for n in range(0, len(quantities), len(KEYS)):
        chunk = quantities[n:n + len(KEYS)]
        items.append({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": f"quantity-{n}"},
                      "spec": {"hard": dict(zip(KEYS, chunk, strict=False))}})
    body = {"apiVersion": "v1", "kind": "List", "items": items}
    proc = cluster.kubectl("create", "--dry-run=server", "-n", "default", "-o", "json", "-f", "-",
                           input=json.dumps(body))
    answered: list[dict[str, Any]] = []  # kubectl prints one JSON object per item
    decoder, text, at = json.JSONDecoder(), proc.stdout, 0
    while text[at:].strip():
        obj, end = decoder.raw_decode(text, at + len(text[at:]) - len(text[at:].lstrip()))
        answered += obj["items"] if obj.get("kind") == "List" else [obj]
        at = end
    got: dict[str, str] = {}
    for sent, back in zip(items, answered, strict=True):
        assert back["metadata"]["name"] == sent["metadata"]["name"]
        for key, value in sent["spec"]["hard"].items():
            got[value] = back["spec"]["hard"][key]
    return got


def _bytes(canonical: str) -> int:
    """Bytes of a canonical quantity, rounded up to a whole byte (``Quantity.Value()``)."""
    value: Decimal = client_quantity(canonical)  # type: ignore[no-untyped-call]
    return math.ceil(value)


def test_every_quantity_means_what_the_api_server_says(cluster: Any) -> None:
    quantities = list(dict.fromkeys(TABLE + _sample(160)))
    assert all(re.fullmatch(QUANTITY_PATTERN, q) for q in quantities)
    canonical = _canonical(cluster, quantities)
    wrong = {q: (parse_quantity(q), canonical[q], _bytes(canonical[q])) for q in quantities
             if parse_quantity(q) != _bytes(canonical[q])}
    assert not wrong, wrong
    # The forms differ (the server writes 1.5Gi as 1536Mi, 0.5 as 500m); the values do not.
    assert canonical["1.5Gi"] == "1536Mi"
    assert canonical["0.5"] == "500m"
    assert parse_quantity("0.5") == 1  # half a byte reserves a whole one, as Quantity.Value() rounds up
    # Past 2^63 - 1 bytes the server caps a binary-SI amount (8388608Ti is 2^63) and keeps a decimal one.
    assert canonical["8388607Ti"] == "8388607Ti"
    assert canonical["8388608Ti"] == canonical["999999999.999Ti"] == str(2**63 - 1)
    assert canonical["999999999.999T"] == "999999999.999T"
