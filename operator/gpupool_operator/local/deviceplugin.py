"""An emulated NVIDIA device plugin that speaks the kubelet's real device plugin API (v1beta1).

Per resource (``nvidia.com/gpu``, ``nvidia.com/mig-<profile>`` under the mixed strategy) it serves
``DevicePlugin`` on its own socket in the kubelet's device-plugins directory and registers it on
``kubelet.sock``, as NVIDIA's plugin does; the devices come from the node's emulated hardware file
(``gpus.Hardware``). Allocate hands a container ``NVIDIA_VISIBLE_DEVICES`` and the device's shape
(``GPUPOOL_EMULATED_*``), so the worker knows what it runs on and that it is emulated.

As with the GPU Operator, the plugin stops while the node's ``nvidia.com/gpu.deploy.device-plugin``
label says ``paused-for-mig-change`` (the MIG manager sets it) and comes back with the devices of
the new layout when the label returns to ``true``. It also plays GPU Feature Discovery: it writes
the GFD labels and the ``gpupool.io/mig-layout`` annotation for the hardware it serves.

It re-registers when the kubelet recreates ``kubelet.sock`` (a kubelet restart wipes the
directory). ``python -m gpupool_operator.local.deviceplugin`` runs it as a process.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc

from gpupool_operator.adapters import names
from gpupool_operator.local.gpus import Device, Hardware
from gpupool_proto import deviceplugin_v1beta1_pb2 as pb
from gpupool_proto import deviceplugin_v1beta1_pb2_grpc as pb_grpc

log = logging.getLogger("gpupool.deviceplugin")

API_VERSION = "v1beta1"
KUBELET_SOCKET = "kubelet.sock"
DEPLOY_LABEL = "nvidia.com/gpu.deploy.device-plugin"
PAUSED = "paused-for-mig-change"
MIG_LAYOUT_ANNOTATION = names.ANN_MIG_LAYOUT


def status_file(hardware_file: Path) -> Path:
    return hardware_file.with_name(hardware_file.stem + ".plugin.json")


def socket_name(resource: str) -> str:
    return "gpupool-" + resource.replace("/", "_") + ".sock"


def allocate_envs(hw: Hardware, devices: list[Device]) -> dict[str, str]:
    """What a container gets for its devices (NVIDIA's variable, plus the shape for the worker)."""
    spec = hw.spec
    profiles = sorted({d.profile for d in devices if d.profile})
    return {
        "NVIDIA_VISIBLE_DEVICES": ",".join(d.id for d in devices),
        "GPUPOOL_EMULATED": "1",
        "GPUPOOL_EMULATED_PRODUCT": spec.key,
        "GPUPOOL_EMULATED_PRODUCT_LABEL": spec.product_label,
        "GPUPOOL_EMULATED_MIG_PROFILE": profiles[0] if profiles else "",
        "GPUPOOL_EMULATED_DEVICE_COUNT": str(len(devices)),
    }


class _Servicer(pb_grpc.DevicePluginServicer):
    def __init__(self, plugin: DevicePlugin, resource: str) -> None:
        self.plugin = plugin
        self.resource = resource

    def GetDevicePluginOptions(self, request: pb.Empty, context: Any) -> pb.DevicePluginOptions:
        return pb.DevicePluginOptions(pre_start_required=False, get_preferred_allocation_available=False)

    def ListAndWatch(self, request: pb.Empty, context: Any) -> Iterator[pb.ListAndWatchResponse]:
        seen = -1
        while context.is_active() and not self.plugin.stopping(self.resource):
            with self.plugin.changed:
                if seen == self.plugin.version:
                    self.plugin.changed.wait(timeout=1.0)
                    continue
                seen = self.plugin.version
                devices = self.plugin.devices(self.resource)
            yield pb.ListAndWatchResponse(devices=[pb.Device(ID=d.id, health="Healthy") for d in devices])

    def Allocate(self, request: pb.AllocateRequest, context: Any) -> pb.AllocateResponse:
        hw = self.plugin.hardware
        known = {d.id: d for d in hw.devices()}
        responses = []
        for creq in request.container_requests:
            missing = [i for i in creq.devices_ids if i not in known]
            if missing:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"unknown device(s) {missing} for {self.resource}")
            devices = [known[i] for i in creq.devices_ids]
            responses.append(pb.ContainerAllocateResponse(
                envs=allocate_envs(hw, devices),
                annotations={"gpupool.io/emulated-devices": ",".join(d.id for d in devices)},
            ))
        self.plugin.allocations += 1
        return pb.AllocateResponse(container_responses=responses)

    def GetPreferredAllocation(
        self, request: pb.PreferredAllocationRequest, context: Any
    ) -> pb.PreferredAllocationResponse:
        return pb.PreferredAllocationResponse()

    def PreStartContainer(
        self, request: pb.PreStartContainerRequest, context: Any
    ) -> pb.PreStartContainerResponse:
        return pb.PreStartContainerResponse()


class DevicePlugin:
    """Every resource of one node's emulated GPUs, served and registered with its kubelet."""

    def __init__(self, hardware_file: Path, plugin_dir: Path, api_client: Any | None = None,
                 poll_s: float = 0.5) -> None:
        self.hardware_file = hardware_file
        self.plugin_dir = plugin_dir
        self.api_client = api_client
        self.poll_s = poll_s
        self.hardware = Hardware.load(hardware_file)
        self.changed = threading.Condition()
        self.version = 0
        self.allocations = 0
        self.registrations = 0
        self.paused = False
        self._servers: dict[str, grpc.Server] = {}
        self._stop = threading.Event()
        self._stopping: set[str] = set()
        self._thread: threading.Thread | None = None
        self._kubelet_inode: int | None = None
        self._registered: set[str] = set()
        self._hw_mtime = 0.0
        self.errors: list[str] = []

    # -- state -----------------------------------------------------------------------------
    def devices(self, resource: str) -> list[Device]:
        return self.hardware.by_resource().get(resource, [])

    def stopping(self, resource: str) -> bool:
        return self._stop.is_set() or resource in self._stopping

    def resources(self) -> list[str]:
        return sorted(self._servers)

    # -- serving ---------------------------------------------------------------------------
    def _serve(self, resource: str) -> None:
        path = self.plugin_dir / socket_name(resource)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="dp"))
        pb_grpc.add_DevicePluginServicer_to_server(_Servicer(self, resource), server)  # type: ignore[no-untyped-call]
        server.add_insecure_port(f"unix://{path}")
        server.start()
        self._stopping.discard(resource)
        self._servers[resource] = server

    def _unserve(self, resource: str) -> None:
        self._stopping.add(resource)
        with self.changed:
            self.changed.notify_all()
        server = self._servers.pop(resource, None)
        if server is not None:
            server.stop(grace=0.5).wait(2)
        with contextlib.suppress(FileNotFoundError):
            (self.plugin_dir / socket_name(resource)).unlink()

    def _register(self, resource: str) -> None:
        with grpc.insecure_channel(f"unix://{self.plugin_dir / KUBELET_SOCKET}") as channel:
            pb_grpc.RegistrationStub(channel).Register(  # type: ignore[no-untyped-call]
                pb.RegisterRequest(version=API_VERSION, endpoint=socket_name(resource), resource_name=resource,
                                   options=pb.DevicePluginOptions()),
                timeout=10,
            )
        self.registrations += 1
        log.info("registered %s (%d devices) with the kubelet", resource, len(self.devices(resource)))

    def _kubelet_socket_inode(self) -> int | None:
        try:
            return (self.plugin_dir / KUBELET_SOCKET).stat().st_ino
        except FileNotFoundError:
            return None

    def sync(self) -> None:
        """One round: follow the pause label, the hardware file and the kubelet's socket."""
        paused = self._read_paused()
        if paused and not self.paused:
            log.info("paused for a MIG change: stopping every resource")
            for r in list(self._servers):
                self._unserve(r)
            self.paused = True
            self._registered.clear()
            self._write_status()
            return
        if paused:
            return
        self.paused = False
        mtime = self.hardware_file.stat().st_mtime
        hardware_changed = mtime != self._hw_mtime
        if hardware_changed:
            self._hw_mtime = mtime
            self.hardware = Hardware.load(self.hardware_file)
            self._publish_gfd()
        wanted = set(self.hardware.by_resource())
        for r in set(self._servers) - wanted:
            self._unserve(r)
        for r in [r for r in self._servers if not (self.plugin_dir / socket_name(r)).exists()]:
            # a starting kubelet wipes the directory, our sockets included: serve them again
            self._unserve(r)
            self._registered.discard(r)
        for r in wanted - set(self._servers):
            self._serve(r)
        if hardware_changed:
            with self.changed:
                self.version += 1
                self.changed.notify_all()
        inode = self._kubelet_socket_inode()
        if inode is None:
            return
        if inode != self._kubelet_inode:
            self._registered.clear()  # a new kubelet: register everything again
            self._kubelet_inode = inode
        self._registered &= set(self._servers)
        fresh = [r for r in self._servers if r not in self._registered]
        for r in fresh:
            try:
                self._register(r)
                self._registered.add(r)
            except grpc.RpcError as err:
                self.errors.append(f"register {r}: {err.code().name}")  # retried next round
        self._write_status()

    def status_file(self) -> Path:
        return status_file(self.hardware_file)

    def _write_status(self) -> None:
        """What this plugin serves and has registered, for whoever waits on it (``realnodes``)."""
        text = json.dumps({"pid": os.getpid(), "registered": sorted(self._registered), "paused": self.paused})
        path = self.status_file()
        with contextlib.suppress(OSError):
            if path.exists() and path.read_text() == text:
                return
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(text)
            tmp.replace(path)

    def _read_paused(self) -> bool:
        if self.api_client is None:
            return False
        from kubernetes import client

        try:
            node = client.CoreV1Api(self.api_client).read_node(self.hardware.node, _request_timeout=5)
        except Exception as err:  # the API may be briefly away: keep serving what we serve
            self.errors.append(repr(err))
            return self.paused
        labels = (node.metadata.labels if node.metadata else None) or {}
        return bool(labels.get(DEPLOY_LABEL) == PAUSED)

    def _publish_gfd(self) -> None:
        if self.api_client is None:
            return
        from kubernetes import client

        hw = self.hardware
        labels = hw.gfd_labels()
        labels.setdefault(DEPLOY_LABEL, "true")
        annotations = {MIG_LAYOUT_ANNOTATION: json.dumps(hw.layouts(), sort_keys=True, separators=(",", ":"))}
        try:
            client.CoreV1Api(self.api_client).patch_node(
                hw.node, {"metadata": {"labels": labels, "annotations": annotations}}, _request_timeout=10)
        except Exception as err:
            self.errors.append(repr(err))
            self._hw_mtime = 0.0  # publish again next round

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.sync()
            except Exception as err:  # one bad round must not end the plugin
                log.exception("device plugin round failed")
                self.errors.append(repr(err))
            self._stop.wait(self.poll_s)

    def start(self) -> DevicePlugin:
        self.plugin_dir.mkdir(parents=True, exist_ok=True)
        self.sync()
        self._thread = threading.Thread(target=self._loop, name="device-plugin", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        with self.changed:
            self.changed.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=10)
        for r in list(self._servers):
            self._unserve(r)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpupool-emulated-device-plugin", description=__doc__.split("\n")[0])
    parser.add_argument("--hardware", type=Path, required=True, help="the node's emulated GPUs (JSON)")
    parser.add_argument("--plugin-dir", type=Path, required=True, help="the kubelet's device-plugins directory")
    parser.add_argument("--kubeconfig", type=Path, help="to follow the pause label and write GFD labels")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    api = None
    if args.kubeconfig:
        from kubernetes import config

        api = config.new_client_from_config(config_file=str(args.kubeconfig))  # type: ignore[no-untyped-call]
    plugin = DevicePlugin(args.hardware, args.plugin_dir, api).start()
    stop = threading.Event()
    import signal

    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    log.info("emulated NVIDIA device plugin for %s (%s x%d): %s", plugin.hardware.node, plugin.hardware.product,
             len(plugin.hardware.gpus), ", ".join(plugin.resources()) or "no devices")
    while not stop.wait(1):
        pass
    plugin.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

