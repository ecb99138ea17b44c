"""The API group and version every gpupool resource is served under."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["API_VERSION", "GROUP", "VERSION", "CrdInfo", "PrinterColumn"]

GROUP = "gpupool.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"


@dataclass(frozen=True, slots=True)
class PrinterColumn:
    """An ``additionalPrinterColumns`` entry: one column of ``kubectl get``."""

    name: str
    type: str
    json_path: str
    description: str
    priority: int = 0

    def to_crd(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "type": self.type,
            "jsonPath": self.json_path,
            "description": self.description,
        }
        if self.priority:
            out["priority"] = self.priority
        return out


@dataclass(frozen=True, slots=True)
class CrdInfo:
    """What a CustomResourceDefinition says besides the schema: names, scope, columns."""

    kind: str
    plural: str
    singular: str
    scope: str
    short_names: tuple[str, ...]
    categories: tuple[str, ...]
    description: str
    printer_columns: tuple[PrinterColumn, ...] = field(default=())
    root_rules: tuple[dict[str, str], ...] = field(default=())

    @property
    def name(self) -> str:
        return f"{self.plural}.{GROUP}"
