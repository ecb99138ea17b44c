"""The base every wire model derives from, and the markers the CRD generator turns into schema.

Why a base: one place fixes how every gpupool object crosses the wire (camelCase JSON names,
snake_case Python attributes, unknown fields rejected as the API server rejects them under strict
field validation, field docstrings as the descriptions ``kubectl explain`` prints).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

__all__ = ["ApiModel", "CelRule", "list_map", "list_set", "schema_extra"]


class ApiModel(BaseModel):
    """A gpupool wire type: camelCase on the wire, snake_case in Python, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_attribute_docstrings=True,
        use_enum_values=False,
        validate_default=True,
    )

    def to_wire(self) -> dict[str, Any]:
        """This object as the API server stores it: camelCase keys, unset optionals left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


@dataclass(frozen=True, slots=True)
class CelRule:
    """One ``x-kubernetes-validations`` entry: a CEL rule the API server evaluates on every write.

    ``field_path`` (relative to the schema node carrying the rule, e.g. ``.minReplicas``) makes the
    server's error name the offending field instead of the node the rule hangs on.
    """

    rule: str
    message: str
    field_path: str | None = None
    reason: str | None = None

    def to_schema(self) -> dict[str, str]:
        out = {"rule": self.rule, "message": self.message}
        if self.field_path is not None:
            out["fieldPath"] = self.field_path
        if self.reason is not None:
            out["reason"] = self.reason
        return out


def schema_extra(*rules: CelRule, **extensions: Any) -> dict[str, Any]:
    """``json_schema_extra`` carrying CEL rules and other ``x-kubernetes-*`` extensions."""
    out: dict[str, Any] = {}
    if rules:
        out["x-kubernetes-validations"] = [r.to_schema() for r in rules]
    for key, value in extensions.items():
        out[key.replace("_", "-")] = value
    return out


def list_map(*keys: str, rules: tuple[CelRule, ...] = ()) -> dict[str, Any]:
    """A list the API server treats as a map keyed by ``keys`` (duplicate keys are rejected)."""
    return schema_extra(*rules, x_kubernetes_list_type="map", x_kubernetes_list_map_keys=list(keys))


def list_set(*rules: CelRule) -> dict[str, Any]:
    """A list of unique scalars (duplicates are rejected by the API server)."""
    return schema_extra(*rules, x_kubernetes_list_type="set")
