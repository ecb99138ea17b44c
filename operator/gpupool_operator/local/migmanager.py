"""An emulated NVIDIA MIG manager that speaks exactly the GPU Operator's label protocol.

The real one (a DaemonSet of the NVIDIA GPU Operator) watches its node's ``nvidia.com/mig.config``
label. When the value changes it sets ``nvidia.com/mig.config.state=pending``, stops the GPU's
clients (the device plugin: label ``nvidia.com/gpu.deploy.device-plugin=paused-for-mig-change``),
applies the named entry of its mig-parted ConfigMap, restarts them and reports ``success``, or
``failed`` when the config is unknown or invalid or a GPU it must re-lay is still in use. It
alone writes the state label; the operator writes only ``nvidia.com/mig.config`` and the ConfigMap.

This emulation does the same for two kinds of node:

- **real kubelet nodes** with emulated GPUs (``gpus.Hardware`` files, served by the emulated
  device plugin): it pauses the plugin, asks the kubelet's pod-resources API which devices
  containers hold, refuses when one of them sits on a GPU whose layout changes, rewrites the
  hardware file (as ``nvidia-smi mig -cgi`` changes the GPU), resumes the plugin and reports
  success once the new devices are in allocatable;
- **KWOK nodes** (nothing runs there): after the delay it rewrites allocatable and the per-profile
  count labels directly, so scale tests keep working.

Every wait is bounded and an API error never kills it (``errors`` collects them for tests).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import yaml

from gpupool_operator.adapters import names
from gpupool_operator.api.types import mig_resource_name
from gpupool_operator.core import catalog, mig
from gpupool_operator.local.deviceplugin import DEPLOY_LABEL, PAUSED
from gpupool_operator.local.gpus import Gpu, Hardware

CONFIG_LABEL = names.LABEL_MIG_CONFIG
STATE_LABEL = names.LABEL_MIG_CONFIG_STATE
#: The operator's marker that it asked for the config a node came up with (so it is applied).
REQUEST_ANNOTATION = names.ANN_MIG_REQUEST
CONFIG_KEY = "config.yaml"
#: The field manager of its writes, so a node's managedFields show who wrote the state label.
FIELD_MANAGER = "nvidia-mig-manager"


class MigConfigError(ValueError):
    """The requested config cannot be applied; the message says why (it goes to the node's Event)."""


def layouts_for(config_yaml: str, name: str, gpus: int, product: catalog.GpuProduct | None) -> list[dict[str, int]]:
    """Per-GPU {profile: count} (``{}`` = MIG disabled) for mig-parted config ``name``."""
    if name == "all-disabled":
        return [{} for _ in range(gpus)]
    doc = yaml.safe_load(config_yaml or "") or {}
    entries = (doc.get("mig-configs") or {}).get(name)
    if entries is None:
        raise MigConfigError(f"mig-parted config {name!r} is not in the ConfigMap")
    layouts: list[dict[str, int]] = [{} for _ in range(gpus)]
    for entry in entries:
        devices: Iterable[int] = range(gpus) if entry.get("devices") == "all" else entry.get("devices", [])
        for d in devices:
            if not 0 <= int(d) < gpus:
                raise MigConfigError(f"config {name!r} names GPU {d}; the node has {gpus}")
            layout = {str(k): int(v) for k, v in (entry.get("mig-devices") or {}).items()}
            if entry.get("mig-enabled") and product is not None:
                problem = mig.layout_problem(product, layout)
                if problem:
                    raise MigConfigError(f"config {name!r}, GPU {d}: {problem}")
            layouts[int(d)] = layout if entry.get("mig-enabled") else {}
    return layouts


@dataclass
class MigManager:
    """One emulated MIG manager for every node of a cluster (a thread; ``start``/``stop``)."""

    api_client: Any
    namespace: str
    config_map: str = "gpupool-mig-parted-config"
    delay_s: float = 0.5
    poll_s: float = 0.2
    fail_nodes: set[str] = field(default_factory=set)
    #: nodes it never answers (a MIG manager that hangs: the operator's timeout ends the request)
    silent_nodes: set[str] = field(default_factory=set)
    #: real nodes: node name -> (hardware file, the kubelet's pod-resources socket)
    real_nodes: Mapping[str, tuple[Path, Path]] | Callable[[], Mapping[str, tuple[Path, Path]]] = field(
        default_factory=dict)
    resume_timeout_s: float = 60.0
    history: list[tuple[str, str, str]] = field(default_factory=list)  # (node, config, result)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _applied: dict[str, str] = field(default_factory=dict)  # node -> the config in force
    _busy: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _pool: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(4, "mig-manager-apply"))

    def start(self) -> MigManager:
        self._thread = threading.Thread(target=self._loop, name="mig-manager", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=15)
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _real(self) -> Mapping[str, tuple[Path, Path]]:
        return self.real_nodes() if callable(self.real_nodes) else self.real_nodes

    # -- watching --------------------------------------------------------------------------
    def _loop(self) -> None:
        from kubernetes import client, watch

        core = client.CoreV1Api(self.api_client)
        while not self._stop.is_set():
            try:
                listed = core.list_node()
                for node in listed.items:
                    self._see(core, node)
                stream = watch.Watch()  # type: ignore[no-untyped-call]
                for event in stream.stream(core.list_node, resource_version=listed.metadata.resource_version,  # type: ignore[union-attr,no-untyped-call]
                                           timeout_seconds=max(1, round(self.poll_s * 10)), _request_timeout=30):
                    if self._stop.is_set():
                        stream.stop()  # type: ignore[no-untyped-call]
                        break
                    if event["type"] in ("ADDED", "MODIFIED"):
                        self._see(core, event["object"])
            except Exception as err:  # never die silently: tests read .errors
                if getattr(err, "status", None) not in (404, 410):
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
            self._label(core, name, {STATE_LABEL: "pending"})
            try:
                if name in self._real():
                    self._apply_real(core, name, wanted)
                else:
                    self._stop.wait(self.delay_s)
                    self._apply_kwok(core, name, wanted)
                result = "success"
            except MigConfigError as err:
                self._event(core, name, "MigConfigFailed", str(err))
                result = "failed"
            self._label(core, name, {STATE_LABEL: result})
            if result == "success":
                self._event(core, name, "MigConfigApplied", f"applied mig-parted config {wanted!r}", "Normal")
            with self._lock:
                self._applied[name] = wanted
            self.history.append((name, wanted, result))
        except Exception as err:
            if getattr(err, "status", None) != 404:  # a node deleted while it worked on it
                self.errors.append(repr(err))
        finally:
            with self._lock:
                self._busy.discard(name)

    # -- API helpers -----------------------------------------------------------------------
    @staticmethod
    def _label(core: Any, name: str, labels: Mapping[str, str | None]) -> None:
        core.patch_node(name, {"metadata": {"labels": dict(labels)}}, field_manager=FIELD_MANAGER)

    def _config_yaml(self, core: Any) -> str:
        try:
            cm = core.read_namespaced_config_map(self.config_map, self.namespace)
        except Exception as err:
            if getattr(err, "status", None) == 404:
                return ""
            raise
        return str((cm.data or {}).get(CONFIG_KEY, ""))

    def _event(self, core: Any, node: str, reason: str, message: str, kind: str = "Warning") -> None:
        from kubernetes import client

        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        body = client.CoreV1Event(
            metadata=client.V1ObjectMeta(generate_name=f"{node}.mig-manager.", namespace="default"),
            involved_object=client.V1ObjectReference(kind="Node", name=node, api_version="v1"),
            reason=reason, message=message, type=kind, first_timestamp=now, last_timestamp=now, count=1,
            source=client.V1EventSource(component="nvidia-mig-manager (emulated)", host=node),
        )
        try:
            core.create_namespaced_event("default", body)
        except Exception as err:
            self.errors.append(f"event: {err!r}")

    # -- KWOK nodes ------------------------------------------------------------------------
    def _apply_kwok(self, core: Any, name: str, config: str) -> None:
        node = core.read_node(name)
        labels = node.metadata.labels or {}
        gpus = int(labels.get("nvidia.com/gpu.count", "0"))
        product = catalog.by_product_label(labels.get("nvidia.com/gpu.product", ""))
        if name in self.fail_nodes:
            raise MigConfigError(f"the GPUs of {name} refused the change (fault injected)")
        layouts = layouts_for(self._config_yaml(core), config, gpus, product)
        totals: Counter[str] = Counter()
        for layout in layouts:
            totals.update(layout)
        allocatable = dict(node.status.allocatable or {})
        for key in [k for k in allocatable if k.startswith(catalog.MIG_RESOURCE_PREFIX)]:
            allocatable[key] = "0"
        allocatable["nvidia.com/gpu"] = str(sum(1 for x in layouts if not x))
        for profile, n in totals.items():
            allocatable[mig_resource_name(profile)] = str(n)
        capacity = dict(node.status.capacity or {})
        capacity.update(allocatable)
        core.patch_node_status(name, {"status": {"allocatable": allocatable, "capacity": capacity}},
                               field_manager=FIELD_MANAGER)
        count_labels: dict[str, str | None] = {
            k: None for k in labels if k.startswith(catalog.MIG_RESOURCE_PREFIX) and k.endswith(".count")
        }
        for profile, n in totals.items():
            count_labels[mig_resource_name(profile) + ".count"] = str(n)
        self._label(core, name, count_labels)

    # -- real nodes ------------------------------------------------------------------------
    def _apply_real(self, core: Any, name: str, config: str) -> None:
        hw_file, pod_resources = self._real()[name]
        hw = Hardware.load(hw_file)
        if name in self.fail_nodes:
            raise MigConfigError(f"the GPUs of {name} refused the change (fault injected)")
        layouts = layouts_for(self._config_yaml(core), config, len(hw.gpus), hw.spec)
        current = hw.layouts()
        changing = [i for i, (old, new) in enumerate(zip(current, layouts, strict=True))
                    if old != new or (not new) != (hw.gpus[i].mig is None)]
        # stop the GPU's clients first, as the GPU Operator does
        self._label(core, name, {DEPLOY_LABEL: PAUSED})
        try:
            self._stop.wait(self.delay_s)
            held = held_devices(pod_resources)
            busy = sorted({d for d in held if _gpu_of(d, hw) in changing})
            if busy:
                raise MigConfigError(
                    f"GPU(s) {sorted({_gpu_of(d, hw) for d in busy})} of {name} are in use by running containers "
                    f"({', '.join(busy)}): stop them before re-laying")
            new_gpus = [Gpu(i, hw.gpus[i].mig) if i not in changing
                        else Gpu(i, hw.placed(layouts[i]) if layouts[i] else None) for i in range(len(hw.gpus))]
            Hardware(node=hw.node, product=hw.product, gpus=new_gpus, strategy=hw.strategy).save(hw_file)
        finally:
            self._label(core, name, {DEPLOY_LABEL: "true"})
        # success only once the device plugin's new devices are in allocatable
        want = {r: str(len(ds)) for r, ds in Hardware.load(hw_file).by_resource().items()}
        deadline = time.monotonic() + self.resume_timeout_s
        while time.monotonic() < deadline and not self._stop.is_set():
            alloc = core.read_node(name).status.allocatable or {}
            stale = [k for k, v in alloc.items() if k.startswith("nvidia.com/") and k not in want and v != "0"]
            if all(alloc.get(r) == n for r, n in want.items()) and not stale:
                return
            time.sleep(0.3)
        raise MigConfigError(f"the device plugin on {name} did not advertise the new devices within "
                             f"{self.resume_timeout_s:.0f}s")


def _gpu_of(device_id: str, hw: Hardware) -> int:
    for d in hw.devices():
        if d.id == device_id:
            return d.gpu
    # an id of a layout no longer served (MIG-emulated-<node>-<gpu>-...): read the GPU from it
    parts = device_id.removeprefix("MIG-emulated-").removeprefix("GPU-emulated-").removeprefix(hw.node + "-")
    return int(parts.split("-")[0]) if parts.split("-")[0].isdigit() else -1


def held_devices(pod_resources_socket: Path) -> list[str]:
    """Device IDs that containers hold, from the kubelet's pod-resources API (v1 List)."""
    from gpupool_proto import podresources_v1_pb2 as pr
    from gpupool_proto import podresources_v1_pb2_grpc as pr_grpc

    with grpc.insecure_channel(f"unix://{pod_resources_socket}") as channel:
        stub = pr_grpc.PodResourcesListerStub(channel)  # type: ignore[no-untyped-call]
        resp = stub.List(pr.ListPodResourcesRequest(), timeout=10)
    return [i for pod in resp.pod_resources for c in pod.containers for d in c.devices
            if d.resource_name.startswith("nvidia.com/") for i in d.device_ids]


def main(argv: list[str] | None = None) -> int:
    """``python -m gpupool_operator.local.migmanager``: the emulated MIG manager of a local cluster."""
    import argparse
    import logging
    import signal

    parser = argparse.ArgumentParser(prog="gpupool-emulated-mig-manager", description=__doc__.split("\n")[0])
    parser.add_argument("--cluster-dir", type=Path, required=True)
    parser.add_argument("--namespace", default="gpupool-system", help="namespace of the mig-parted ConfigMap")
    parser.add_argument("--config-map", default="gpupool-mig-parted-config")
    parser.add_argument("--delay", type=float, default=2.0, help="seconds a re-layout takes")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    from gpupool_operator.local.cluster import LocalCluster
    from gpupool_operator.local.realnodes import RealNodes

    cluster = LocalCluster(args.cluster_dir)
    nodes = RealNodes(cluster)
    manager = MigManager(cluster.api_client(), args.namespace, args.config_map, delay_s=args.delay,
                         real_nodes=nodes.mig_targets).start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    seen = 0
    while not stop.wait(1):
        for node, config, result in manager.history[seen:]:
            logging.info("node %s: mig-parted config %s: %s", node, config, result)
        seen = len(manager.history)
        for err in manager.errors:
            logging.warning("%s", err)
        manager.errors.clear()
    manager.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
