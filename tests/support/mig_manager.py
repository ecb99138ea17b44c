"""A stand-in for NVIDIA's MIG manager, for tests only.

The real one (part of the NVIDIA GPU Operator) watches the ``nvidia.com/mig.config`` node label,
applies the named entry of its mig-parted ConfigMap to the GPUs, restarts the device plugin, and
reports ``nvidia.com/mig.config.state`` (pending -> success | failed). On a fake KWOK node there are
no GPUs, so this stand-in does what the device plugin and GFD would then show: after ``delay_s`` it
rewrites the node's allocatable (``nvidia.com/gpu`` = GPUs with MIG disabled,
``nvidia.com/mig-<profile>`` = instances) and the per-profile count labels, and sets the state to
``success``, or to ``failed`` (changing nothing) for nodes listed in ``fail_nodes``.

It polls (every ``poll_s``) for nodes in state ``pending`` instead of watching: cheap on a
thousand nodes, and it must never hang a test.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import yaml

CONFIG_LABEL = "nvidia.com/mig.config"
STATE_LABEL = "nvidia.com/mig.config.state"


@dataclass
class MigManagerStandIn:
    api_client: Any
    namespace: str
    config_map: str = "gpupool-mig-parted-config"
    delay_s: float = 0.5
    poll_s: float = 0.2
    fail_nodes: set[str] = field(default_factory=set)
    history: list[tuple[str, str, str]] = field(default_factory=list)  # (node, config, result)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    errors: list[str] = field(default_factory=list)

    def start(self) -> MigManagerStandIn:
        self._thread = threading.Thread(target=self._loop, name="mig-manager-stand-in", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        from kubernetes import client

        core = client.CoreV1Api(self.api_client)
        while not self._stop.is_set():
            try:
                # The real MIG manager watches its own node's label; a node asking for a change is
                # marked pending (gpupool does it with the label), so only those need looking at.
                for node in core.list_node(label_selector=f"{STATE_LABEL}=pending").items:
                    labels = node.metadata.labels or {}
                    wanted = labels.get(CONFIG_LABEL)
                    if wanted:
                        self._apply(core, node.metadata.name, wanted, node)
            except Exception as err:  # a stand-in must not die silently: tests read .errors
                if getattr(err, "status", None) != 404:  # a node deleted while it worked on it
                    self.errors.append(repr(err))
            self._stop.wait(self.poll_s)

    def _layouts(self, core: Any, config: str, gpus: int) -> list[dict[str, int]] | None:
        if config == "all-disabled":
            return [{} for _ in range(gpus)]
        cm = core.read_namespaced_config_map(self.config_map, self.namespace)
        doc = yaml.safe_load((cm.data or {}).get("config.yaml", "")) or {}
        entries = (doc.get("mig-configs") or {}).get(config)
        if entries is None:
            return None
        layouts: list[dict[str, int]] = [{} for _ in range(gpus)]
        for entry in entries:
            devices: Iterable[int] = range(gpus) if entry.get("devices") == "all" else entry.get("devices", [])
            for d in devices:
                layouts[d] = dict(entry.get("mig-devices") or {}) if entry.get("mig-enabled") else {}
        return layouts

    def _apply(self, core: Any, name: str, config: str, node: Any) -> None:
        time.sleep(self.delay_s)
        labels = node.metadata.labels or {}
        gpus = int(labels.get("nvidia.com/gpu.count", "0"))
        layouts = self._layouts(core, config, gpus)
        if name in self.fail_nodes or layouts is None:
            core.patch_node(name, {"metadata": {"labels": {STATE_LABEL: "failed"}}})
            self.history.append((name, config, "failed"))
            return
        totals: Counter[str] = Counter()
        for layout in layouts:
            totals.update(layout)
        allocatable = dict(node.status.allocatable or {})
        for key in [k for k in allocatable if k.startswith("nvidia.com/mig-")]:
            allocatable[key] = "0"
        allocatable["nvidia.com/gpu"] = str(sum(1 for x in layouts if not x))
        for profile, n in totals.items():
            allocatable["nvidia.com/mig-" + profile.replace("+", ".")] = str(n)
        capacity = dict(node.status.capacity or {})
        capacity.update(allocatable)
        core.patch_node_status(name, {"status": {"allocatable": allocatable, "capacity": capacity}})
        count_labels: dict[str, str | None] = {
            k: None for k in labels if k.startswith("nvidia.com/mig-") and k.endswith(".count")
        }
        for profile, n in totals.items():
            count_labels["nvidia.com/mig-" + profile.replace("+", ".") + ".count"] = str(n)
        core.patch_node(name, {"metadata": {"labels": {**count_labels, STATE_LABEL: "success"}}})
        self.history.append((name, config, "success"))
