"""The one writer of NVIDIA mig-parted's ConfigMap: adds the operator's layouts, keeps everything else.

The ConfigMap usually belongs to someone else (Helm installed it, or it is the GPU Operator's own
in its namespace), so the operator only ever adds entries under ``data["config.yaml"]`` and never
replaces the object: the update is a merge patch guarded by ``resourceVersion`` (a concurrent
writer makes it retry, never lose an entry), and labels and annotations it did not set (Helm's
``app.kubernetes.io/managed-by``, ``meta.helm.sh/*``) stay, so ``helm upgrade`` keeps owning it.
Blocking calls; the act stage runs them in its thread pool, one at a time (a lock).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import yaml

from gpupool_operator.adapters import names
from gpupool_operator.adapters.kube import Kube, KubeError, path_for
from gpupool_operator.core.migparted import mig_parted_devices
from gpupool_operator.core.observed import PerGpu

__all__ = ["CONFIG_KEY", "MigConfigWriter", "merged_document"]

CONFIG_KEY = "config.yaml"
OURS = "gpupool-"
"""Only configs named ``gpupool-<hash>`` are the operator's to write; NVIDIA's defaults
(``all-disabled``, ``all-<profile>``, ``all-balanced``) and AllowList names are the platform's."""


def merged_document(existing: str | None, additions: Mapping[str, PerGpu]) -> tuple[str, bool]:
    """mig-parted's ``config.yaml`` with ``additions`` merged in; whether it changed. Existing
    entries (the platform's own, NVIDIA's defaults) are kept as they are."""
    doc: dict[str, Any] = {}
    if existing:
        loaded = yaml.safe_load(existing)
        if isinstance(loaded, dict):
            doc = loaded
    doc.setdefault("version", "v1")
    configs = doc.setdefault("mig-configs", {})
    changed = False
    for name, layouts in additions.items():
        if name not in configs:
            configs[name] = mig_parted_devices(layouts)
            changed = True
    return yaml.safe_dump(doc, sort_keys=True), changed


class MigConfigWriter:
    """Adds named layouts to the ConfigMap ``namespace/name``, creating it when it is missing."""

    def __init__(self, kube: Kube, namespace: str, name: str) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self._lock = threading.Lock()
        self._known: tuple[str | None, str | None] | None = None  # (config.yaml, resourceVersion)

    @property
    def path(self) -> str:
        return path_for("v1", "configmaps", self.name, self.namespace)

    def ensure(self, config: str, layouts: PerGpu) -> None:
        """Make sure ``config`` is in the ConfigMap (a no-op for configs that are not the operator's)."""
        if not config.startswith(OURS):
            return
        with self._lock:
            for _attempt in range(5):
                if self._try(config, layouts):
                    return
                self._known = None  # somebody else wrote it meanwhile: read again
        raise KubeError(409, f"could not update ConfigMap {self.namespace}/{self.name}: conflicts", "Conflict")

    def _try(self, config: str, layouts: PerGpu) -> bool:
        if self._known is None:
            current = self.kube.get(self.path)
            content = None if current is None else (current.get("data") or {}).get(CONFIG_KEY)
            version = None if current is None else current["metadata"]["resourceVersion"]
            self._known = (content, version)
        content, version = self._known
        doc, changed = merged_document(content, {config: layouts})
        if not changed:
            return True
        try:
            if version is None:
                result = self.kube.create(path_for("v1", "configmaps", namespace=self.namespace), {
                    "apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": self.name, "namespace": self.namespace,
                                 "labels": {names.LABEL_MANAGED_BY: names.MANAGED_BY}},
                    "data": {CONFIG_KEY: doc},
                })
                if result is None:
                    return False
            else:
                result = self.kube.merge_patch(self.path, {"metadata": {"resourceVersion": version},
                                                           "data": {CONFIG_KEY: doc}})
        except KubeError as err:
            if err.status == 409:
                return False
            raise
        self._known = (doc, result["metadata"]["resourceVersion"])
        return True
