"""A stand-in for NVIDIA's MIG manager, for tests only (the emulated one in ``gpupool_operator.local``
replaces it).

The real one (part of the NVIDIA GPU Operator) watches its node's ``nvidia.com/mig.config`` label;
when the value changes it sets ``nvidia.com/mig.config.state=pending`` itself, applies the named
entry of its mig-parted ConfigMap to the GPUs, restarts the device plugin and reports ``success``
or ``failed``. It alone writes the state label. On a fake KWOK node there are no GPUs, so this
stand-in does what the device plugin and GFD would then show: after ``delay_s`` it rewrites the
node's allocatable (``nvidia.com/gpu`` = GPUs with MIG disabled, ``nvidia.com/mig-<profile>`` =
instances) and the per-profile count labels, and reports ``success``, or ``failed`` (changing
nothing) for nodes listed in ``fail_nodes``; nodes in ``silent_nodes`` get no answer at all (a MIG
manager that hangs), so the operator's timeout is what ends the request. Its writes carry the field
manager ``nvidia-mig-manager``, so a node's managedFields show who wrote the state label.

It watches nodes (a bounded watch, re-listed when it expires) and remembers the value each node
came up with, so only changes made afterwards are applied; ``poll_s`` bounds how long it takes
to notice ``stop()``. It must never hang a test.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import yaml

CONFIG_LABEL = "nvidia.com/mig.config"
STATE_LABEL = "nvidia.com/mig.config.state"
REQUEST_ANNOTATION = "gpupool.io/mig-request"
FIELD_MANAGER = "nvidia-mig-manager"


@dataclass
class MigManagerStandIn:
    api_client: Any
    namespace: str
    config_map: str = "gpupool-mig-parted-config"
    delay_s: float = 0.5
    poll_s: float = 0.2
    fail_nodes: set[str] = field(default_factory=set)
    silent_nodes: set[str] = field(default_factory=set)
    history: list[tuple[str, str, str]] = field(default_factory=list)  # (node, config, result)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _applied: dict[str, str] = field(default_factory=dict)  # node -> the config in force
    _busy: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _pool: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(4, "mig-manager-apply"))

    def start(self) -> MigManagerStandIn:
        self._thread = threading.Thread(target=self._loop, name="mig-manager-stand-in", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=15)
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _loop(self) -> None:
        from kubernetes import client, watch

        core = client.CoreV1Api(self.api_client)
        while not self._stop.is_set():
            try:
                listed = core.list_node()
                for node in listed.items:
                    self._see(core, node)
                stream = watch.Watch()
                for event in stream.stream(core.list_node, resource_version=listed.metadata.resource_version,
                                           timeout_seconds=max(1, round(self.poll_s * 10)),
                                           _request_timeout=30):
                    if self._stop.is_set():
                        stream.stop()
                        break
                    if event["type"] in ("ADDED", "MODIFIED"):
                        self._see(core, event["object"])
            except Exception as err:  # a stand-in must not die silently: tests read .errors
                if getattr(err, "status", None) not in (404, 410):  # gone meanwhile / watch expired: re-list
                    self.errors.append(repr(err))
                self._stop.wait(self.poll_s)

    def _see(self, core: Any, node: Any) -> None:
        name = node.metadata.name
        labels = node.metadata.labels or {}
        wanted = labels.get(CONFIG_LABEL)
        with self._lock:
            if name not in self._applied:  # first sight: the layout it came up with is in force
                asked = REQUEST_ANNOTATION in (node.metadata.annotations or {})
                self._applied[name] = "" if asked else wanted or ""
            if not wanted or wanted == self._applied[name] or name in self._busy or name in self.silent_nodes:
                return
            self._busy.add(name)
        self._pool.submit(self._work, core, name, wanted)

    def _work(self, core: Any, name: str, wanted: str) -> None:
        try:
            core.patch_node(name, {"metadata": {"labels": {STATE_LABEL: "pending"}}}, field_manager=FIELD_MANAGER)
            time.sleep(self.delay_s)
            result = self._apply(core, name, wanted)
            with self._lock:
                self._applied[name] = wanted
            self.history.append((name, wanted, result))
        except Exception as err:
            if getattr(err, "status", None) != 404:  # a node deleted while it worked on it
                self.errors.append(repr(err))
        finally:
            with self._lock:
                self._busy.discard(name)

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

    def _apply(self, core: Any, name: str, config: str) -> str:
        node = core.read_node(name)
        labels = node.metadata.labels or {}
        gpus = int(labels.get("nvidia.com/gpu.count", "0"))
        layouts = self._layouts(core, config, gpus)
        if name in self.fail_nodes or layouts is None:
            core.patch_node(name, {"metadata": {"labels": {STATE_LABEL: "failed"}}}, field_manager=FIELD_MANAGER)
            return "failed"
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
        core.patch_node_status(name, {"status": {"allocatable": allocatable, "capacity": capacity}},
                               field_manager=FIELD_MANAGER)
        count_labels: dict[str, str | None] = {
            k: None for k in labels if k.startswith("nvidia.com/mig-") and k.endswith(".count")
        }
        for profile, n in totals.items():
            count_labels["nvidia.com/mig-" + profile.replace("+", ".") + ".count"] = str(n)
        core.patch_node(name, {"metadata": {"labels": {**count_labels, STATE_LABEL: "success"}}},
                        field_manager=FIELD_MANAGER)
        return "success"
