"""Real kubelet nodes beside the local control plane: kubelet, containerd, runc and a CNI bridge.

KWOK nodes prove scheduling at scale, but nothing runs on them. A real node runs real pods: its
own containerd (every path under the node's directory), runc, one Linux bridge and /24 per node
(CNI ``bridge`` + ``host-local`` + ``loopback``), and a kubelet with a client certificate
``system:node:<name>`` from the cluster CA. KWOK manages only nodes annotated
``kwok.x-k8s.io/node: fake``, so it leaves these alone.

Why each odd setting (measured on these machines, see shared notes/real-nodes.md): the host is
cgroup v1 without systemd (``failCgroupV1: false``, ``cgroupfs``, a ``cgroupRoot`` per node created
in every hierarchy); ``oom_score_adj`` cannot be lowered (``restrict_oom_score_adj``); the kubelet
refuses a loopback node IP, so a node's IP is its bridge's gateway; the device plugin socket
directory is hard-coded to /var/lib/kubelet/device-plugins and wiped by every kubelet at start, so
each kubelet runs in a mount namespace of its own with its node's directory bound there (its
root dir is a shared mount first, so the volumes it mounts for pods still reach containerd).

The host is changed, and put back: ``teardown`` is idempotent and bounded. It stops pods through
CRI (which runs CNI DEL), the kubelet, containerd and its shims (by PID), unmounts what the node
mounted, deletes the bridge, the FORWARD rule and the cgroups, restores the sysctls the kubelet and
the bridge plugin set (recorded before the first node started) and removes the host paths that did
not exist before. ``host_snapshot`` is what a test compares before and after.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gpupool_operator.adapters import names
from gpupool_operator.local import gpus, images, toolchain
from gpupool_operator.local.cluster import ClusterError, LocalCluster, _alive, _free_ports
from gpupool_operator.local.pki import kubeconfig_for, node_client_cert
from gpupool_operator.local.spec import ClusterSpec

RUN_ROOT = Path("/run/gpupool")
UNIX_PATH_MAX = 107
"""Bytes a unix socket path may take (sun_path is 108 with its NUL)."""
#: Which local clusters hold real nodes on this host, and the host as it was before the first one
#: started (what the last one to go restores). Guarded by an flock on HOST_LOCK.
HOST_LEDGER = RUN_ROOT / "host.json"
#: flock'ed (a directory: locking it leaves nothing behind) while a cluster joins or leaves the
#: host, or picks a node's bridge index.
HOST_LOCK = Path("/run")
#: What the kubelet and the bridge plugin change on the host (restored at teardown).
SYSCTLS = ("vm.overcommit_memory", "kernel.panic", "kernel.panic_on_oops", "net.ipv4.ip_forward")
#: Host paths a node may create although all of its own files live under its directory.
HOST_PATHS = (
    "/var/lib/kubelet",
    "/var/log/containers",
    "/var/log/pods",
    "/run/containerd",
    "/var/run/netns",
    "/run/netns",
    "/var/lib/cni",
    "/opt/cni",
    "/etc/cni",
    "/opt/containerd",
    str(RUN_ROOT),
)
CGROUP_ROOT = Path("/sys/fs/cgroup")
#: Bridge ``gpbr<N>`` with subnet 10.200.<N>.0/24: N is unique on the host (every local cluster
#: picks it under HOST_LOCK from what the host's links and addresses leave free).
BRIDGE_PREFIX = "gpbr"
SUBNET_BASE = "10.200"
MAX_INDEX = 249
#: A node's loopback ports (containerd's stream server, the kubelet's healthz) are
#: PORT_BASE + 3 * N + k: apart from every other local cluster's nodes by construction, and below
#: the kernel's ephemeral range, so no port chosen at random elsewhere takes them in the meantime
#: (one that is taken anyway is replaced by a free one). The kubelet's own port is on its bridge IP.
PORT_BASE = 11000
NODE_PORTS = ("stream", "kubelet", "healthz")
#: A rule comment that names the project, so a leftover rule is recognisable.
RULE_COMMENT = "gpupool-local-node"
NODE_SYSTEM_BINDING = "gpupool:system:nodes"
DEVICE_PLUGIN_DIR = Path("/var/lib/kubelet/device-plugins")
REAL_NODE_LABEL = "gpupool.io/node-kind"
#: containerd plugins a local node has no use for (NRI, snapshotters that need other kernels' features)
DISABLED_PLUGINS = (
    "io.containerd.nri.v1.nri",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.zfs",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.snapshotter.v1.erofs",
    "io.containerd.tracing.processor.v1.otlp",
    "io.containerd.internal.v1.tracing",
)


class RealNodeError(ClusterError):
    """A real node could not be prepared, started or torn down; the message says why."""


def prerequisites() -> list[str]:
    """What this machine lacks for real nodes (empty when everything is there)."""
    missing: list[str] = []
    if sys.platform != "linux":
        return ["real nodes need Linux"]
    if os.geteuid() != 0:
        missing.append("root (the kubelet, containerd and the CNI bridge need it): run as root")
    for tool in ("ip", "iptables", "unshare", "mount", "umount"):
        if shutil.which(tool) is None:
            missing.append(f"the `{tool}` command (apt-get install iproute2 iptables util-linux mount)")
    for hier in ("cpu", "memory", "pids", "cpuset"):
        if not (CGROUP_ROOT / hier).is_dir() and not (CGROUP_ROOT / "cgroup.controllers").exists():
            missing.append(f"the {hier} cgroup controller under {CGROUP_ROOT}")
    runc_built = (toolchain.cache_root() / "bin" / f"runc-{toolchain.RUNC_VERSION}-seccomp" / "runc").exists()
    if not runc_built and not Path("/usr/include/seccomp.h").exists():
        missing.append("libseccomp's headers to build runc with seccomp (apt-get install libseccomp-dev)")
    if not runc_built and shutil.which("cc") is None:
        missing.append("a C compiler to build runc (apt-get install gcc)")
    if not Path("/proc/filesystems").exists() or "overlay" not in Path("/proc/filesystems").read_text():
        with contextlib.suppress(OSError):
            subprocess.run(["modprobe", "overlay"], capture_output=True, check=False, timeout=10)
        if "overlay" not in Path("/proc/filesystems").read_text():
            missing.append("the overlay filesystem (containerd's snapshotter)")
    return missing


def _run(
    *argv: str, check: bool = True, timeout: float = 30, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False, input=input)
    if check and proc.returncode != 0:
        raise RealNodeError(f"{' '.join(argv)} failed ({proc.returncode}): {(proc.stderr or proc.stdout).strip()}")
    return proc


def _sysctl_path(name: str) -> Path:
    return Path("/proc/sys") / name.replace(".", "/")


def _hierarchies() -> list[Path]:
    """Every cgroup hierarchy a node's cgroupRoot must exist in (v1 controllers and the v2 mirror)."""
    if (CGROUP_ROOT / "cgroup.controllers").exists():
        return [CGROUP_ROOT]  # pure v2
    return sorted(p for p in CGROUP_ROOT.iterdir() if p.is_dir() and not p.is_symlink())


def _mounts() -> list[str]:
    """Mount points of this mount namespace (from /proc/self/mountinfo, octal escapes decoded)."""
    out: list[str] = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            raw = line.split()[4]
            out.append(raw.encode().decode("unicode_escape"))
    return out


def host_snapshot() -> dict[str, Any]:
    """What a real node may change on the host: compare before and after ``teardown``."""
    links = _run("ip", "-o", "link", "show", check=False).stdout
    rules = _run("iptables", "-S", "FORWARD", check=False).stdout if shutil.which("iptables") else ""
    cgroups = sorted(
        str(p) for h in (_hierarchies() if CGROUP_ROOT.exists() else []) for p in h.glob("gpupool-*")
    )
    return {
        "sysctls": {n: _sysctl_path(n).read_text().strip() for n in SYSCTLS if _sysctl_path(n).exists()},
        "bridges": sorted(
            ln.split(":")[1].strip().split("@")[0] for ln in links.splitlines() if f": {BRIDGE_PREFIX}" in ln
        ),
        "forward_rules": sorted(ln for ln in rules.splitlines() if RULE_COMMENT in ln),
        "cgroups": cgroups,
        "paths": {p: Path(p).exists() for p in HOST_PATHS},
        "mounts": sorted(
            m for m in _mounts() if "real-nodes" in m or m.startswith((str(DEVICE_PLUGIN_DIR), str(RUN_ROOT)))
        ),
    }


@contextlib.contextmanager
def host_lock(timeout_s: float = 120.0) -> Iterator[None]:
    """Host-wide mutual exclusion between local clusters' real-node set-up and teardown (bounded)."""
    import fcntl

    fd = os.open(HOST_LOCK, os.O_RDONLY)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise RealNodeError(f"another local cluster held the real-node host lock ({HOST_LOCK}) "
                                        f"for over {timeout_s:.0f}s") from None
                time.sleep(0.1)
        yield
    finally:
        os.close(fd)  # releases the lock


def read_ledger() -> dict[str, Any]:
    """The host ledger: ``{"before": {sysctls, paths}, "clusters": {id: directory}}`` (empty: none)."""
    try:
        raw = json.loads(HOST_LEDGER.read_text())
        return raw if isinstance(raw, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_ledger(ledger: Mapping[str, Any]) -> None:
    RUN_ROOT.mkdir(parents=True, exist_ok=True)
    tmp = HOST_LEDGER.with_name(f".host.json.{os.getpid()}")
    tmp.write_text(json.dumps(ledger, indent=2))
    tmp.replace(HOST_LEDGER)


def _holds_real_nodes(cluster_dir: Path) -> bool:
    """Whether a cluster's real-node state still records nodes (running or not torn down yet: a
    crashed cluster keeps its claim on the host until its teardown runs)."""
    try:
        return bool(json.loads((cluster_dir / "real-nodes" / "state.json").read_text()).get("nodes"))
    except (OSError, ValueError, AttributeError):
        return False


def _node_ports(index: int) -> dict[str, int]:
    import socket

    out: dict[str, int] = {}
    for k, what in enumerate(NODE_PORTS):
        port = PORT_BASE + len(NODE_PORTS) * index + k
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                port = _free_ports(1)[0]
        out[what] = port
    return out


def _free_index() -> int:
    """The lowest bridge index no link or address on the host uses (call under ``host_lock``)."""
    used: set[int] = set()
    for line in _run("ip", "-o", "link", "show", check=False).stdout.splitlines():
        name = line.split(":")[1].strip().split("@")[0] if line.count(":") >= 2 else ""
        if name.startswith(BRIDGE_PREFIX) and name[len(BRIDGE_PREFIX):].isdigit():
            used.add(int(name[len(BRIDGE_PREFIX):]))
    prefix = SUBNET_BASE + "."
    for word in _run("ip", "-o", "-4", "addr", "show", check=False).stdout.split():
        if word.startswith(prefix):
            with contextlib.suppress(ValueError, IndexError):
                used.add(int(word[len(prefix):].split(".")[0]))
    for i in range(1, MAX_INDEX + 1):
        if i not in used:
            return i
    raise RealNodeError(f"no free bridge index: {MAX_INDEX} {BRIDGE_PREFIX}<N> bridges or 10.200.<N> addresses exist")


@dataclass
class NodeState:
    name: str
    index: int  # host-wide: the bridge and the /24 (two clusters may both have a node ``cpu-real-0``)
    cluster: str = ""  # the cluster's id (RealNodes.cluster_id): in every other host-side name
    pids: dict[str, int] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    commands: dict[str, list[str]] = field(default_factory=dict)  # how each component was started
    envs: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def bridge(self) -> str:
        return f"{BRIDGE_PREFIX}{self.index}"

    @property
    def gateway(self) -> str:
        return f"{SUBNET_BASE}.{self.index}.1"

    @property
    def subnet(self) -> str:
        return f"{SUBNET_BASE}.{self.index}.0/24"

    @property
    def cgroup_root(self) -> str:
        """Per cluster and node: a kubelet treats every pod cgroup under its root as its own and
        kills the ones it does not know, so two clusters' nodes of the same name must not share it."""
        return f"/gpupool-{self.cluster}-{self.name}" if self.cluster else f"/gpupool-{self.name}"


@dataclass
class RealNodesState:
    host_before: dict[str, Any] = field(default_factory=dict)  # sysctls and which HOST_PATHS existed
    nodes: dict[str, NodeState] = field(default_factory=dict)
    pids: dict[str, int] = field(default_factory=dict)  # cluster-wide helpers (the MIG manager)


def base_runtime_spec(ctr: Path, host: images.HostRuntime) -> dict[str, Any]:
    """containerd's default OCI spec plus read-only binds of the host's Python runtime, venv and checkout.

    Every container of a local real node starts from this spec (containerd's
    ``base_runtime_spec``): the worker image is nearly empty and gets its environment here, as
    NVIDIA's container runtime adds the driver's libraries to GPU containers.
    """
    spec: dict[str, Any] = json.loads(_run(str(ctr), "oci", "spec").stdout)
    mounts = list(spec.get("mounts", []))
    for path in host.mounts():
        mounts.append({"destination": str(path), "type": "bind", "source": str(path),
                       "options": ["rbind", "ro", "nosuid", "nodev"]})
    spec["mounts"] = mounts
    return spec


class RealNodes:
    """The real kubelet nodes of one local cluster (state in ``<cluster dir>/real-nodes``)."""

    def __init__(self, cluster: LocalCluster, binaries: toolchain.NodeBinaries | None = None,
                 host: images.HostRuntime | None = None) -> None:
        self.cluster = cluster
        self.directory = cluster.directory / "real-nodes"
        self._binaries = binaries
        self.host = host or host_runtime()
        self.state = self._load()

    # -- state -----------------------------------------------------------------------------
    @property
    def binaries(self) -> toolchain.NodeBinaries:
        if self._binaries is None:
            self._binaries = toolchain.ensure_node_binaries()
        return self._binaries

    def _load(self) -> RealNodesState:
        try:
            raw = json.loads((self.directory / "state.json").read_text())
            return RealNodesState(raw.get("host_before", {}),
                                  {k: NodeState(**v) for k, v in raw.get("nodes", {}).items()},
                                  raw.get("pids", {}))
        except (FileNotFoundError, json.JSONDecodeError, TypeError):
            return RealNodesState()

    def _save(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.directory / "state.json.tmp"
        tmp.write_text(json.dumps({"host_before": self.state.host_before, "pids": self.state.pids,
                                   "nodes": {k: asdict(v) for k, v in self.state.nodes.items()}}, indent=2))
        tmp.replace(self.directory / "state.json")

    def node_dir(self, name: str) -> Path:
        return self.directory / name

    def run_dir(self, name: str) -> Path:
        """The node's sockets: under /run, because a unix socket path has at most 107 bytes and
        the cluster directory may be deep (pytest's tmp_path)."""
        return self.cluster_run_dir / f"n{self.state.nodes[name].index}"

    @property
    def cluster_id(self) -> str:
        """Short and stable for the cluster's directory: it names the cluster's host-side things
        (its /run directory, its nodes' cgroups) apart from any other local cluster's."""
        return hashlib.sha256(str(self.cluster.directory).encode()).hexdigest()[:8]

    @property
    def cluster_run_dir(self) -> Path:
        return RUN_ROOT / self.cluster_id

    def _join_host(self) -> None:
        """Record this cluster in the host ledger (under ``host_lock``); the first cluster records
        the host as it is, before any real node changed it."""
        ledger = read_ledger()
        if not ledger.get("before"):
            snap = host_snapshot()
            ledger["before"] = {"sysctls": snap["sysctls"], "paths": snap["paths"]}
        ledger.setdefault("clusters", {})[self.cluster_id] = str(self.cluster.directory)
        if not self.state.host_before:
            self.state.host_before = ledger["before"]
            self._save()
        _write_ledger(ledger)

    def socket(self, name: str) -> Path:
        return self.run_dir(name) / "containerd.sock"

    def device_plugin_dir(self, name: str) -> Path:
        """Where the node's kubelet sees /var/lib/kubelet/device-plugins (kubelet.sock lives here)."""
        return self.run_dir(name) / "device-plugins"

    # -- start -----------------------------------------------------------------------------
    def add(self, name: str, labels: Mapping[str, str] | None = None, timeout_s: float = 90.0,
            hardware: gpus.Hardware | None = None, taints: list[str] | None = None) -> NodeState:
        """Start one real node and wait until it is Ready (idempotent for a node already running).

        With ``hardware`` the node gets emulated GPUs: the emulated NVIDIA device plugin serves
        them to its kubelet, and this waits until allocatable shows every device. ``taints`` are
        ``key=value:Effect`` strings the kubelet registers the node with.
        """
        existing = self.state.nodes.get(name)
        if existing and existing.pids.get("kubelet") and all(_alive(p) for p in existing.pids.values()):
            return existing
        # the kubelet binds its pod-resources socket in its root dir (a temporary name, 10 digits);
        # past the kernel's 107 bytes it exits with "bind: invalid argument" deep in its log
        longest = len(str(self.node_dir(name) / "kubelet" / "pod-resources" / "0123456789").encode())
        if longest > UNIX_PATH_MAX:
            raise RealNodeError(
                f"the cluster directory {self.directory} is too deep for node {name}: the kubelet's "
                f"pod-resources socket would be {longest} bytes long, a unix socket path takes at "
                f"most {UNIX_PATH_MAX}; use a cluster directory at least {longest - UNIX_PATH_MAX} "
                "bytes shorter")
        node = self.prepare_runtime(name)
        try:
            self._bind_node_role()
            if not self.binaries.kubelet.exists():
                self._binaries = toolchain.ensure_node_binaries()
            self._start_kubelet(node, self.binaries, dict(labels or {}), taints or [])
            deadline = time.monotonic() + timeout_s
            self._wait_ready(node, deadline)
            if hardware is not None:
                self.start_device_plugin(name, hardware)
                self.wait_allocatable(name, hardware, deadline)
        except BaseException:
            self._teardown_node(node)
            raise
        return node

    def prepare_runtime(self, name: str) -> NodeState:
        """A node's bridge, cgroups and containerd with its images imported, without the kubelet.

        (What ``add`` does first; tests use it alone to check the runtime and the teardown.)
        """
        missing = prerequisites()
        if missing:
            raise RealNodeError("real nodes cannot run here: missing " + "; ".join(missing))
        existing = self.state.nodes.get(name)
        if existing:
            self._teardown_node(existing)
        if self._binaries is None:
            self._binaries = toolchain.ensure_node_binaries(kubelet=False)
        b = self._binaries
        with host_lock():
            self._join_host()
            node = NodeState(name=name, index=_free_index(), cluster=self.cluster_id)
            self.state.nodes[name] = node
            self._save()
            try:
                self._network(node)  # the bridge is the index's claim: created under the lock
            except BaseException:
                self._teardown_node(node)
                raise
        try:
            self._cgroups(node)
            self._start_containerd(node, b)
            self._import_images(node, b)
        except BaseException:
            self._teardown_node(node)
            raise
        return node

    def crictl(self, name: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """crictl against one node's containerd."""
        return self._crictl(self.state.nodes[name], *args, timeout=timeout)

    def _bind_node_role(self) -> None:
        """The API server runs RBAC only: let every kubelet act as ``system:node``."""
        manifest = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": NODE_SYSTEM_BINDING},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:node"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:nodes"}],
        }
        self.cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest))

    def _network(self, node: NodeState) -> None:
        br = node.bridge
        if _run("ip", "link", "show", br, check=False).returncode == 0:
            # never deleted here: it may be another local cluster's (the index was free a moment ago)
            raise RealNodeError(f"bridge {br} already exists on this host")
        _run("ip", "link", "add", br, "type", "bridge")
        _run("ip", "addr", "add", f"{node.gateway}/24", "dev", br)
        _run("ip", "link", "set", br, "up")
        rule = ["FORWARD", "-i", br, "!", "-o", br, "-m", "comment", "--comment", RULE_COMMENT, "-j", "DROP"]
        if _run("iptables", "-C", *rule, check=False).returncode != 0:
            _run("iptables", "-I", *rule)
        nd = self.node_dir(node.name)
        conf_dir = nd / "cni" / "net.d"
        conf_dir.mkdir(parents=True, exist_ok=True)
        conflist = {
            "cniVersion": "1.0.0",
            "name": f"gpupool-{node.cluster}-{node.name}",  # libcni caches results by network name
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": br,
                    "isGateway": True,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": node.subnet, "gateway": node.gateway}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(nd / "cni" / "ipam"),
                    },
                },
                {"type": "loopback"},
            ],
        }
        (conf_dir / "10-gpupool.conflist").write_text(json.dumps(conflist, indent=2))

    def _cgroups(self, node: NodeState) -> None:
        for hier in _hierarchies():
            path = hier / node.cgroup_root.lstrip("/")
            path.mkdir(exist_ok=True)
            if hier.name == "cpuset":
                for f in ("cpuset.cpus", "cpuset.mems"):
                    (path / f).write_text((hier / f).read_text())

    def _spawn(self, node: NodeState, what: str, argv: list[str], env: Mapping[str, str] | None = None) -> None:
        logs = self.node_dir(node.name) / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        with open(logs / f"{what}.log", "ab") as log:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env={**os.environ, "NO_PROXY": "127.0.0.1,localhost", **(env or {})},
                                    start_new_session=True)
        node.pids[what] = proc.pid
        node.commands[what] = list(argv)
        node.envs[what] = dict(env or {})
        self._save()

    def restart(self, name: str, what: str, timeout_s: float = 60) -> None:
        """Kill one component of a node (SIGKILL, as a crash) and start it again as it was started;
        wait until it answers (the kubelet: the node Ready again)."""
        node = self.state.nodes[name]
        pid = node.pids.get(what)
        if pid is not None and _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            end = time.monotonic() + 10
            while _alive(pid) and time.monotonic() < end:
                time.sleep(0.05)
        self._spawn(node, what, node.commands[what], node.envs.get(what))
        deadline = time.monotonic() + timeout_s
        if what == "kubelet":
            self._wait(node, "kubelet", lambda: self._healthz(node), deadline)
            self._wait_ready(node, deadline)
        elif what == "containerd":
            b = self.binaries
            self._wait(node, "containerd", lambda: _run(str(b.ctr), "--address", str(self.socket(name)), "version",
                                                        check=False, timeout=5).returncode == 0, deadline)

    def log_tail(self, name: str, what: str, lines: int = 25) -> str:
        try:
            text = (self.node_dir(name) / "logs" / f"{what}.log").read_text(errors="replace")
            return "\n".join(text.splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def _wait(self, node: NodeState, what: str, ok: Callable[[], bool], deadline: float) -> None:
        while time.monotonic() < deadline:
            if ok():
                return
            pid = node.pids.get(what)
            if pid is not None and not _alive(pid):
                raise RealNodeError(f"{what} of node {node.name} exited; last lines of its log:\n"
                                    + self.log_tail(node.name, what))
            time.sleep(0.2)
        raise RealNodeError(f"{what} of node {node.name} not ready in time; last log lines:\n"
                            + self.log_tail(node.name, what))

    def containerd_config(self, node: NodeState, b: toolchain.NodeBinaries) -> str:
        nd = self.node_dir(node.name)
        c = nd / "containerd"
        runtime_dir = nd / "runtime"
        runtime_dir.mkdir(parents=True, exist_ok=True)
        (runtime_dir / "base-spec.json").write_text(json.dumps(base_runtime_spec(b.ctr, self.host), indent=1))
        stream_port = node.ports["stream"]
        return f"""version = 3
root = "{c}/root"
state = "{c}/state"
temp = "{c}/tmp"
disabled_plugins = {json.dumps(list(DISABLED_PLUGINS))}

[grpc]
  address = "{self.socket(node.name)}"

[ttrpc]
  address = "{self.socket(node.name)}.ttrpc"

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{c}/opt"

[plugins."io.containerd.grpc.v1.cri"]
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "{stream_port}"

[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "{images.PAUSE_IMAGE}"

[plugins."io.containerd.cri.v1.runtime"]
  restrict_oom_score_adj = true
  disable_hugetlb_controller = true
  tolerate_missing_hugetlb_controller = true
  disable_apparmor = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["{b.cni_bin_dir}"]
    conf_dir = "{nd}/cni/net.d"
    max_conf_num = 1
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      runtime_path = "{b.containerd_shim}"
      base_runtime_spec = "{runtime_dir}/base-spec.json"
      container_annotations = ["gpupool.io/*", "nvidia.com/*"]
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        BinaryName = "{b.runc}"
        SystemdCgroup = false
        Root = "{c}/runc"
"""

    def _ctr(self, node: NodeState, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return _run(str(self.binaries.ctr), "--address", str(self.socket(node.name)), *args, timeout=timeout)

    def _start_containerd(self, node: NodeState, b: toolchain.NodeBinaries) -> None:
        node.ports.update(_node_ports(node.index))
        nd = self.node_dir(node.name)
        (nd / "containerd").mkdir(parents=True, exist_ok=True)
        self.run_dir(node.name).mkdir(parents=True, exist_ok=True)
        cfg = nd / "containerd.toml"
        cfg.write_text(self.containerd_config(node, b))
        path = f"{b.runc.parent}:{b.containerd.parent}:{os.environ.get('PATH', '/usr/bin:/bin')}"
        self._spawn(node, "containerd", [str(b.containerd), "--config", str(cfg), "--log-level", "warn"],
                    env={"PATH": path})
        deadline = time.monotonic() + 30

        def up() -> bool:
            if not self.socket(node.name).exists():
                return False
            return _run(str(b.ctr), "--address", str(self.socket(node.name)), "version",
                        check=False, timeout=5).returncode == 0

        self._wait(node, "containerd", up, deadline)

    def _import_images(self, node: NodeState, b: toolchain.NodeBinaries) -> None:
        cache = toolchain.cache_root() / "images"
        pause = images.pause_archive(cache / "pause.tar", b.pause)
        worker = images.worker_archive(cache / f"worker-{self.host.tag.rsplit(':', 1)[1]}.tar", self.host)
        for archive in (pause, worker):
            self._ctr(node, "-n", "k8s.io", "images", "import", "--no-unpack=false", str(archive))

    def kubelet_config(self, node: NodeState) -> str:
        nd = self.node_dir(node.name)
        ca = self.cluster.directory / "pki" / "ca.crt"
        cfg = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "failCgroupV1": False,
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": node.cgroup_root,
            "cgroupsPerQOS": True,
            "enforceNodeAllocatable": ["pods"],
            "failSwapOn": False,
            "oomScoreAdj": 0,
            "makeIPTablesUtilChains": False,
            "protectKernelDefaults": False,
            "readOnlyPort": 0,
            "address": node.gateway,
            "port": node.ports["kubelet"],
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": node.ports["healthz"],
            "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                               "x509": {"clientCAFile": str(ca)}},
            "authorization": {"mode": "Webhook"},
            "containerRuntimeEndpoint": f"unix://{self.socket(node.name)}",
            "podLogsDir": str(nd / "pod-logs"),
            "volumePluginDir": str(nd / "volume-plugins"),
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "evictionHard": {"memory.available": "50Mi", "nodefs.available": "1%", "imagefs.available": "1%",
                             "nodefs.inodesFree": "1%"},
            "serializeImagePulls": False,
            "rotateCertificates": False,
            "serverTLSBootstrap": False,
            "nodeStatusUpdateFrequency": "5s",
            "syncFrequency": "10s",
            "fileCheckFrequency": "20s",
            "maxPods": 60,
            "shutdownGracePeriod": "0s",
            "localStorageCapacityIsolation": True,
        }
        return json.dumps(cfg, indent=2)

    def hardware_file(self, name: str) -> Path:
        return self.node_dir(name) / "gpus.json"

    def start_device_plugin(self, name: str, hardware: gpus.Hardware | None = None) -> None:
        """(Re)start the node's emulated NVIDIA device plugin (``hardware`` replaces the GPUs)."""
        node = self.state.nodes[name]
        if hardware is not None:
            hardware.save(self.hardware_file(name))
        self._stop_pid(node.pids.pop("device-plugin", None), grace_s=5)
        with contextlib.suppress(FileNotFoundError):
            (self.hardware_file(name).with_name("gpus.plugin.json")).unlink()
        env = {"PYTHONPATH": self.host.pythonpath}
        self._spawn(node, "device-plugin", [
            sys.executable, "-m", "gpupool_operator.local.deviceplugin",
            f"--hardware={self.hardware_file(name)}", f"--plugin-dir={self.device_plugin_dir(name)}",
            f"--kubeconfig={self.cluster.kubeconfig}",
        ], env=env)

    def wait_allocatable(self, name: str, hardware: gpus.Hardware, deadline: float) -> None:
        """Until the node's allocatable shows every device of ``hardware`` (not just a registration:
        after a kubelet restart allocatable reads 0 for a while)."""
        from gpupool_operator.local.deviceplugin import status_file

        want = {r: str(len(ds)) for r, ds in hardware.by_resource().items()}
        node = self.state.nodes[name]

        def ok() -> bool:
            # the running plugin registered every resource (allocatable alone lags: the node's
            # status is written every few seconds, and still shows what a dead plugin served)
            try:
                status = json.loads(status_file(self.hardware_file(name)).read_text())
            except (OSError, ValueError):
                return False
            if status.get("pid") != node.pids.get("device-plugin") or set(want) - set(status.get("registered", [])):
                return False
            alloc = ((self.node_object(name) or {}).get("status") or {}).get("allocatable") or {}
            return all(alloc.get(r) == n for r, n in want.items())

        self._wait(node, "device-plugin", ok, deadline)

    def _start_kubelet(self, node: NodeState, b: toolchain.NodeBinaries, labels: dict[str, str],
                       taints: list[str]) -> None:
        nd = self.node_dir(node.name)
        root = nd / "kubelet"
        root.mkdir(parents=True, exist_ok=True)
        self.device_plugin_dir(node.name).mkdir(parents=True, exist_ok=True)
        pki = self.cluster._pki()
        cert, key = node_client_cert(pki, nd / "pki", node.name)
        kubeconfig = nd / "kubelet.kubeconfig"
        kubeconfig.write_text(kubeconfig_for(self.cluster.state.server, pki.ca_cert, cert, key,
                                             f"system:node:{node.name}"))
        config = nd / "kubelet.json"
        config.write_text(self.kubelet_config(node))
        # the root dir as a shared mount: the kubelet (in its own mount namespace) mounts pod
        # volumes there, and containerd (in the host's) must see them
        if str(root) not in _mounts():
            _run("mount", "--bind", str(root), str(root))
        _run("mount", "--make-rshared", str(root))
        DEVICE_PLUGIN_DIR.mkdir(parents=True, exist_ok=True)
        labels = {REAL_NODE_LABEL: "real", **labels}
        argv = [
            str(b.kubelet),
            f"--config={config}",
            f"--kubeconfig={kubeconfig}",
            f"--root-dir={root}",
            f"--cert-dir={nd / 'kubelet-pki'}",
            f"--hostname-override={node.name}",
            f"--node-ip={node.gateway}",
            "--node-labels=" + ",".join(f"{k}={v}" for k, v in sorted(labels.items())),
            *([f"--register-with-taints={','.join(taints)}"] if taints else []),
            "--v=1",
        ]
        script = (
            # private only here: the mount holding the device plugin directory (never the root
            # dir, which stays shared), so this bind reaches neither the host nor other kubelets
            f'set -e; mount --make-private "$(findmnt -n -o TARGET -T {DEVICE_PLUGIN_DIR})"; '
            f'mount --bind "{self.device_plugin_dir(node.name)}" "{DEVICE_PLUGIN_DIR}"; '
            'exec "$@"'
        )
        path = f"{b.runc.parent}:{os.environ.get('PATH', '/usr/bin:/bin')}"
        self._spawn(node, "kubelet", ["unshare", "--mount", "--propagation", "unchanged", "--",
                                      "sh", "-c", script, "kubelet", *argv], env={"PATH": path})
        self._wait(node, "kubelet", lambda: self._healthz(node), time.monotonic() + 60)

    @staticmethod
    def _healthz(node: NodeState) -> bool:
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{node.ports['healthz']}/healthz", timeout=2) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def node_object(self, name: str) -> dict[str, Any] | None:
        proc = self.cluster.kubectl("get", "node", name, "-o", "json", check=False, timeout_s=20)
        if proc.returncode != 0:
            return None
        obj: dict[str, Any] = json.loads(proc.stdout)
        return obj

    def _wait_ready(self, node: NodeState, deadline: float) -> None:
        def ready() -> bool:
            obj = self.node_object(node.name)
            conds = (obj or {}).get("status", {}).get("conditions", [])
            return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)

        self._wait(node, "kubelet", ready, deadline)

    # -- teardown --------------------------------------------------------------------------
    def teardown(self, timeout_s: float = 60.0) -> None:
        """Stop every real node and put the host back as it was (idempotent, bounded)."""
        deadline = time.monotonic() + timeout_s
        self._stop_pid(self.state.pids.pop("mig-manager", None), grace_s=5)
        for node in list(self.state.nodes.values()):
            self._teardown_node(node, deadline)
        self._restore_host()

    def remove(self, name: str) -> None:
        """Stop one node and delete its Node object (the host is restored when the last one goes)."""
        node = self.state.nodes.get(name)
        if node is not None:
            self._teardown_node(node)
        if not self.state.nodes:
            self._restore_host()

    def _crictl(self, node: NodeState, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        conf = self.node_dir(node.name) / "crictl.yaml"
        sock = f"unix://{self.socket(node.name)}"
        if not conf.exists():
            conf.parent.mkdir(parents=True, exist_ok=True)
            conf.write_text(f"runtime-endpoint: {sock}\nimage-endpoint: {sock}\ntimeout: 10\n")
        crictl = (self._binaries.crictl if self._binaries
                  else _cached("cri-tools", toolchain.CRI_TOOLS_VERSION, "crictl"))
        if crictl is None:
            return subprocess.CompletedProcess(["crictl", *args], 1, "", "crictl is not built")
        return _run(str(crictl), "--config", str(conf), *args, check=False, timeout=timeout)

    def _stop_pid(self, pid: int | None, grace_s: float) -> None:
        if pid is None or not _alive(pid):
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
        end = time.monotonic() + grace_s
        while _alive(pid) and time.monotonic() < end:
            time.sleep(0.05)
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            end = time.monotonic() + 5
            while _alive(pid) and time.monotonic() < end:
                time.sleep(0.05)

    def shim_pids(self, name: str | None = None) -> list[int]:
        """containerd shims of one node, or of every node of this cluster (found by the node's
        socket path in their command line)."""
        needle = (str(self.socket(name)) if name in self.state.nodes else f"{self.cluster_run_dir}/").encode()
        out = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                cmd = (proc / "cmdline").read_bytes()
                if b"containerd-shim" in cmd and needle in cmd:
                    out.append(int(proc.name))
        return out

    def _teardown_node(self, node: NodeState, deadline: float | None = None) -> None:
        deadline = deadline or time.monotonic() + 60
        nd = self.node_dir(node.name)
        self._stop_pid(node.pids.get("device-plugin"), grace_s=5)
        self._stop_pid(node.pids.get("kubelet"), grace_s=10)
        containerd_alive = node.pids.get("containerd") is not None and _alive(node.pids["containerd"])
        if containerd_alive and self.socket(node.name).exists():
            # stop and remove every pod sandbox through CRI: that runs CNI DEL and kills the
            # containers; bounded by crictl's own timeout
            pods = self._pod_ids(node)
            if pods:
                self._crictl(node, "stopp", *pods, timeout=max(5, deadline - time.monotonic()))
            self._crictl(node, "rmp", "-f", "-a", timeout=max(5, deadline - time.monotonic()))
        self._stop_pid(node.pids.get("containerd"), grace_s=10)
        for pid in self.shim_pids(node.name):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        # kill whatever still runs in the node's cgroups (a container whose shim died first)
        for hier in _hierarchies():
            root = hier / node.cgroup_root.lstrip("/")
            for procs in root.rglob("cgroup.procs") if root.exists() else []:
                with contextlib.suppress(OSError, ValueError):
                    for member in procs.read_text().split():
                        os.kill(int(member), signal.SIGKILL)
        self._unmount_under(nd)
        self._unmount_under(self.run_dir(node.name))
        for hier in _hierarchies():
            root = hier / node.cgroup_root.lstrip("/")
            if root.exists():
                for d in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                    self._rmdir_cgroup(d, deadline)
                self._rmdir_cgroup(root, deadline)
        rule = ["FORWARD", "-i", node.bridge, "!", "-o", node.bridge, "-m", "comment", "--comment", RULE_COMMENT,
                "-j", "DROP"]
        while shutil.which("iptables") and _run("iptables", "-C", *rule, check=False).returncode == 0:
            _run("iptables", "-D", *rule, check=False)
        if _run("ip", "link", "show", node.bridge, check=False).returncode == 0:
            _run("ip", "link", "del", node.bridge, check=False)
        if self.cluster.is_up():
            self.cluster.kubectl("delete", "node", node.name, "--ignore-not-found", "--wait=false", check=False,
                                 timeout_s=20)
        shutil.rmtree(nd / "containerd" / "state", ignore_errors=True)
        shutil.rmtree(self.run_dir(node.name), ignore_errors=True)
        with contextlib.suppress(OSError):
            self.run_dir(node.name).parent.rmdir()
        self.state.nodes.pop(node.name, None)
        self._save()

    def _pod_ids(self, node: NodeState) -> list[str]:
        return self._crictl(node, "pods", "-q").stdout.split()

    @staticmethod
    def _rmdir_cgroup(path: Path, deadline: float) -> None:
        while True:
            try:
                path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                if time.monotonic() > deadline:
                    return
                time.sleep(0.1)

    @staticmethod
    def _unmount_under(directory: Path) -> None:
        prefix = str(directory.resolve())
        for _ in range(3):
            targets = sorted((m for m in _mounts() if m == prefix or m.startswith(prefix + "/")),
                             key=lambda m: -m.count("/"))
            if not targets:
                return
            for m in targets:
                _run("umount", "-l", m, check=False)

    def _restore_host(self) -> None:
        """Leave the host ledger; the last local cluster with real nodes puts the host back as the
        first one found it (sysctls, host paths). While another cluster's real nodes are recorded,
        what they share stays as it is for them."""
        with host_lock():
            ledger = read_ledger()
            clusters: dict[str, str] = ledger.get("clusters", {})
            if self.cluster_id not in clusters and not self.state.host_before:
                return  # never joined (or already left): nothing of the host is this cluster's to restore
            clusters.pop(self.cluster_id, None)
            others = {cid: d for cid, d in clusters.items() if _holds_real_nodes(Path(d))}
            before = ledger.get("before") or self.state.host_before
            if others:
                ledger["clusters"] = others
                _write_ledger(ledger)
                print(f"[gpupool local] real nodes of {len(others)} other local cluster(s) still run "
                      f"({', '.join(sorted(others.values()))}): host paths and sysctls stay as they are "
                      "for them; the last one restores them", file=sys.stderr)
            else:
                with contextlib.suppress(FileNotFoundError):
                    HOST_LEDGER.unlink()
                self._put_back(before)  # RUN_ROOT with the rest, when it did not exist before
            self.state.host_before = {}
            self._save()

    def _put_back(self, before: Mapping[str, Any]) -> None:
        for name, value in before.get("sysctls", {}).items():
            path = _sysctl_path(name)
            with contextlib.suppress(OSError):
                if path.read_text().strip() != value:
                    path.write_text(value)
        left: list[str] = []
        for p, existed in before.get("paths", {}).items():
            path = Path(p)
            if not existed and (path.exists() or path.is_symlink()):
                left += _remove_ours(path, everything=path == RUN_ROOT)
        if left:
            print(f"[gpupool local] left on the host, not made by local real nodes: {', '.join(left[:10])}"
                  + (f" and {len(left) - 10} more" if len(left) > 10 else ""), file=sys.stderr)

    # -- using them ------------------------------------------------------------------------
    def names(self) -> list[str]:
        return sorted(self.state.nodes)

    def memory_mib(self) -> dict[str, dict[str, float]]:
        """Resident memory per node and component (kubelet, containerd, device plugin, the pods'
        shims and what runs in its containers), from /proc by recorded PID and cgroup."""
        out: dict[str, dict[str, float]] = {}
        for name, node in self.state.nodes.items():
            row = {what: _rss_mib(pid) for what, pid in node.pids.items()}
            row["shims"] = sum(_rss_mib(p) for p in self.shim_pids(name))
            pods = CGROUP_ROOT / "memory" / node.cgroup_root.lstrip("/") / "memory.usage_in_bytes"
            with contextlib.suppress(OSError, ValueError):
                row["pods (cgroup)"] = int(pods.read_text()) / 2**20
            out[name] = row
        return out

    def mig_targets(self) -> dict[str, tuple[Path, Path]]:
        """For the MIG manager: node -> (hardware file, the kubelet's pod-resources socket)."""
        state = self._load()
        return {n: (self.hardware_file(n), self.node_dir(n) / "kubelet" / "pod-resources" / "kubelet.sock")
                for n in state.nodes if self.hardware_file(n).exists()}

    def start_mig_manager(self, namespace: str, config_map: str = "gpupool-mig-parted-config",
                          delay_s: float = 2.0) -> int:
        """The emulated NVIDIA MIG manager as a process for every node of the cluster (recorded PID)."""
        self._stop_pid(self.state.pids.pop("mig-manager", None), grace_s=5)
        logs = self.directory / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        with open(logs / "mig-manager.log", "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "gpupool_operator.local.migmanager", f"--cluster-dir={self.cluster.directory}",
                 f"--namespace={namespace}", f"--config-map={config_map}", f"--delay={delay_s}"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                env={**os.environ, "PYTHONPATH": self.host.pythonpath, "NO_PROXY": "127.0.0.1,localhost"})
        self.state.pids["mig-manager"] = proc.pid
        self._save()
        return proc.pid


def _ours(path: Path) -> bool:
    """Whether an entry under a host path the real nodes created is theirs to remove: named for
    gpupool (the CNI result cache), a link into a node's directory or dangling (the kubelet's
    /var/log/containers links), a socket nobody listens on any more (containerd shims'), or a
    regular file or link of containerd's/the kubelet's that no one else writes there."""
    if "gpupool" in path.name:
        return True
    if path.is_symlink():
        target = os.readlink(path)
        return not path.exists() or "real-nodes" in target
    return _socket_state(path) == "stale"


def _socket_state(path: Path) -> str:
    """``stale`` (a unix socket no one listens on), ``live``, or ``""`` (not a socket)."""
    import socket
    import stat

    try:
        if not stat.S_ISSOCK(path.lstat().st_mode):
            return ""
    except OSError:
        return ""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(1)
        try:
            sock.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            return "stale"
        except OSError:
            return "live"
        return "live"


def _remove_ours(path: Path, everything: bool = False) -> list[str]:
    """Remove a host path the real nodes created, as far as it holds only what they made: another
    program (podman's CNI state, say) may have put its own there meanwhile, which stays, as do the
    directories holding it and anything mounted (returned, so teardown can say so). With
    ``everything``, all but mounts and live sockets is theirs (gpupool's own /run directory; a live
    socket there is a node of a cluster the ledger does not know, started by an older gpupool)."""
    mounted = {m for m in _mounts() if m == str(path) or m.startswith(str(path) + "/")}
    if path.is_symlink() or not path.is_dir():
        if _ours(path):
            path.unlink()
            return []
        return [str(path)]
    left: list[str] = []
    for entry in sorted(path.rglob("*"), key=lambda e: -len(e.parts)):
        if str(entry) in mounted:
            left.append(str(entry))
        elif entry.is_dir() and not entry.is_symlink():
            with contextlib.suppress(OSError):
                entry.rmdir()  # only once empty
        elif (everything and _socket_state(entry) != "live") or _ours(entry):
            with contextlib.suppress(OSError):
                entry.unlink()
        else:
            left.append(str(entry))
    if str(path) not in mounted:
        with contextlib.suppress(OSError):
            path.rmdir()
    return left


def _rss_mib(pid: int) -> float:
    """VmRSS of one process (its children are not added)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _cached(component: str, version: str, binary: str) -> Path | None:
    path = toolchain.cache_root() / "bin" / f"{component}-{version}" / binary
    return path if path.exists() else None


def host_runtime() -> images.HostRuntime:
    """The Python runtime, venv and checkout the worker containers mount (this process's own)."""
    venv = Path(sys.prefix)
    checkout = Path(__file__).resolve().parents[3]
    return images.HostRuntime(venv=venv, python_prefix=Path(sys.base_prefix), checkout=checkout)


@contextlib.contextmanager
def running(cluster: LocalCluster, names: list[str], labels: Mapping[str, Mapping[str, str]] | None = None,
            binaries: toolchain.NodeBinaries | None = None) -> Iterator[RealNodes]:
    """Real nodes for the duration of a ``with`` block; the host is restored however it ends."""
    nodes = RealNodes(cluster, binaries)
    try:
        for name in names:
            nodes.add(name, (labels or {}).get(name))
        yield nodes
    finally:
        nodes.teardown()


def real_node_name(pool: str, index: int) -> str:
    return f"{pool}-real-{index}"


def start_spec_nodes(nodes: RealNodes, spec: ClusterSpec, progress: Callable[[str], None] | None = None) -> list[str]:
    """Start the spec's real nodes (each pool's ``real``): its labels, taints, price and emulated GPUs."""
    from gpupool_operator.local.nodes import POOL_LABEL, PRICE_ANNOTATION, PRICE_TIER_LABEL, _mig_config_name

    started: list[str] = []
    for pool in spec.pools:
        for i in range(pool.real):
            name = real_node_name(pool.name, i)
            labels = {POOL_LABEL: pool.name, PRICE_TIER_LABEL: pool.price_tier.value, "gpupool.io/cluster": spec.name,
                      **pool.labels}
            if pool.instance_type:
                labels["node.kubernetes.io/instance-type"] = pool.instance_type
            hardware = None
            if pool.product is not None:
                strategy = pool.mig.strategy.value if pool.mig else "none"
                layouts: list[dict[str, int] | None] = [lay or None for lay in pool.gpu_layouts()]
                hardware = gpus.Hardware.create(name, pool.product.key, layouts, strategy)
                if pool.product.mig_capable:  # what the GPU Operator's MIG manager last applied
                    labels.update({names.LABEL_MIG_CONFIG: _mig_config_name(pool.gpu_layouts()),
                                   names.LABEL_MIG_CONFIG_STATE: "success",
                                   "nvidia.com/gpu.deploy.mig-manager": "true"})
            taints = [f"{t.key}={t.value}:{t.effect}" for t in pool.taints]
            t0 = time.monotonic()
            nodes.add(name, labels, hardware=hardware, taints=taints)
            if pool.price_per_gpu_hour is not None:
                nodes.cluster.kubectl("annotate", "node", name, "--overwrite",
                                      f"{PRICE_ANNOTATION}={pool.price_per_gpu_hour:g}")
            if progress:
                progress(f"real node {name} Ready in {time.monotonic() - t0:.1f}s")
            started.append(name)
    return started
