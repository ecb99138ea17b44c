"""Run a real control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok) on 127.0.0.1.

Why plain processes: no container engine exists on our machines, and a real API server and
scheduler are the only honest test of CRD validation, RBAC, extended-resource scheduling and
garbage collection. Each component is started as its own process group, its PID and ports are
written to ``state.json`` in the cluster directory, and ``stop`` kills exactly those PIDs in
reverse start order, so nothing strays.

Every wait is bounded: a component that does not become healthy in time is reported with the tail
of its log. A port taken between choosing and binding (another process won the race) makes the
start retry with fresh ports instead of failing the run.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from gpupool_operator.local import toolchain
from gpupool_operator.local.pki import Pki, ensure_pki, kubeconfig_yaml

#: The KWOK stages that make fake nodes Ready (with leases) and pods Running, then deleted.
KWOK_STAGE_FILES = (
    "kustomize/stage/node/fast/node-initialize.yaml",
    "kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "kustomize/stage/pod/fast/pod-ready.yaml",
    "kustomize/stage/pod/fast/pod-complete.yaml",
    "kustomize/stage/pod/fast/pod-delete.yaml",
)
#: Nodes carrying this annotation are managed by kwok (only fake nodes; never a real kubelet's).
KWOK_NODE_ANNOTATION = ("kwok.x-k8s.io/node", "fake")
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
SERVICE_CIDR = "10.96.0.0/16"
POD_CIDR = "10.128.0.0/12"  # kwok hands pod IPs from here: room for tens of thousands of pods
NODE_LEASE_SECONDS = 40


GPUPOOL_CRDS = ("inferencepools.gpupool.io", "gpupoolconfigs.gpupool.io")
"""The CustomResourceDefinitions gpupool installs (crds/)."""


class ClusterError(RuntimeError):
    """The local cluster could not be started or reached; the message says why."""


class PortInUse(ClusterError):
    """A component lost the race for a port; the caller retries with fresh ports."""


def default_dir(name: str = "default") -> Path:
    return toolchain.cache_root() / "clusters" / name


def _free_ports(n: int) -> list[int]:
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); reap it if it is ours.
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return True


@dataclass
class ClusterState:
    """What ``state.json`` records: enough to reach and to stop a running cluster."""

    directory: str
    ports: dict[str, int] = field(default_factory=dict)
    pids: dict[str, int] = field(default_factory=dict)
    kubernetes_version: str = toolchain.KUBERNETES_VERSION

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports['apiserver']}"


class LocalCluster:
    """One local control plane living in ``directory`` (PKI, etcd data, logs, kubeconfig, state)."""

    def __init__(self, directory: Path, binaries: toolchain.Binaries | None = None) -> None:
        self.directory = directory.resolve()
        self._binaries = binaries
        self.state = self._load_state()

    # -- paths -----------------------------------------------------------------------------
    @property
    def kubeconfig(self) -> Path:
        return self.directory / "kubeconfig"

    @property
    def logs(self) -> Path:
        return self.directory / "logs"

    @property
    def state_file(self) -> Path:
        return self.directory / "state.json"

    @property
    def binaries(self) -> toolchain.Binaries:
        if self._binaries is None:
            self._binaries = toolchain.ensure_binaries()
        return self._binaries

    def _load_state(self) -> ClusterState:
        try:
            raw = json.loads(self.state_file.read_text())
            return ClusterState(**raw)
        except (FileNotFoundError, json.JSONDecodeError, TypeError):
            return ClusterState(directory=str(self.directory))

    def _save_state(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self.state), indent=2))
        tmp.replace(self.state_file)  # atomic: a crash never leaves half a state file

    # -- status ----------------------------------------------------------------------------
    def running_components(self) -> dict[str, bool]:
        return {name: name in self.state.pids and _alive(self.state.pids[name]) for name in COMPONENTS}

    def is_up(self) -> bool:
        return all(self.running_components().values()) and self._healthy("/readyz")

    def _ssl_context(self) -> ssl.SSLContext:
        pki = self._pki()
        ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
        ctx.load_cert_chain(str(pki.cert), str(pki.key))
        return ctx

    def _pki(self) -> Pki:
        return ensure_pki(self.directory / "pki")

    def _healthy(self, path: str) -> bool:
        if "apiserver" not in self.state.ports:
            return False
        try:
            with urllib.request.urlopen(self.state.server + path, context=self._ssl_context(), timeout=2) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, OSError, ssl.SSLError):
            return False

    # -- lifecycle -------------------------------------------------------------------------
    def start(self, timeout_s: float = 120.0, attempts: int = 3) -> None:
        """Start every component (idempotent: a cluster already up is left alone)."""
        if self.is_up():
            return
        self.stop()  # clear half-started leftovers of an earlier run
        for attempt in range(1, attempts + 1):
            try:
                self._start_once(timeout_s)
                return
            except PortInUse as err:
                self.stop()
                if attempt == attempts:
                    raise ClusterError(f"could not get free ports after {attempts} attempts: {err}") from err
                print(f"[gpupool local] {err}; retrying with new ports", file=sys.stderr)
            except BaseException:
                self.stop()
                raise

    def _start_once(self, timeout_s: float) -> None:
        b = self.binaries
        pki = self._pki()
        self.logs.mkdir(parents=True, exist_ok=True)
        names = ("etcd", "etcd-peer", "apiserver", "controller-manager", "scheduler", "kwok")
        self.state.ports = dict(zip(names, _free_ports(len(names)), strict=True))
        self.state.pids = {}
        self._save_state()
        p = self.state.ports
        self.kubeconfig.write_text(kubeconfig_yaml(self.state.server, pki))
        deadline = time.monotonic() + timeout_s

        etcd_url = f"http://127.0.0.1:{p['etcd']}"
        self._spawn(
            "etcd",
            [
                str(b.etcd),
                "--name=gpupool",
                f"--data-dir={self.directory / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls=http://127.0.0.1:{p['etcd-peer']}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{p['etcd-peer']}",
                f"--initial-cluster=gpupool=http://127.0.0.1:{p['etcd-peer']}",
                "--unsafe-no-fsync=true",
                "--quota-backend-bytes=4294967296",
                "--log-level=warn",
            ],
        )
        self._wait("etcd", lambda: self._http_ok(etcd_url + "/health"), deadline)

        self._spawn(
            "kube-apiserver",
            [
                str(b.kube_apiserver),
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={p['apiserver']}",
                "--endpoint-reconciler-type=none",
                f"--cert-dir={self.directory / 'apiserver-certs'}",
                f"--tls-cert-file={pki.cert}",
                f"--tls-private-key-file={pki.key}",
                f"--client-ca-file={pki.ca_cert}",
                "--service-account-issuer=https://kubernetes.default.svc",
                f"--service-account-key-file={pki.sa_pub}",
                f"--service-account-signing-key-file={pki.sa_key}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--authorization-mode=RBAC",
                "--enable-priority-and-fairness=false",
                "--max-requests-inflight=0",
                "--max-mutating-requests-inflight=0",
                "--allow-privileged=true",
                # real kubelet nodes (local.realnodes): reach them by their InternalIP (their names
                # resolve nowhere) and authenticate as cluster admin for logs, exec and port-forward
                "--kubelet-preferred-address-types=InternalIP",
                f"--kubelet-client-certificate={pki.cert}",
                f"--kubelet-client-key={pki.key}",
                "--profiling=false",
                "--v=1",
            ],
        )
        self._wait("kube-apiserver", lambda: self._healthy("/readyz"), deadline)

        kc = str(self.kubeconfig)
        common = [
            f"--kubeconfig={kc}",
            f"--authentication-kubeconfig={kc}",
            f"--authorization-kubeconfig={kc}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            "--v=1",
        ]
        self._spawn(
            "kube-controller-manager",
            [
                str(b.kube_controller_manager),
                *common,
                f"--secure-port={p['controller-manager']}",
                f"--service-account-private-key-file={pki.sa_key}",
                f"--root-ca-file={pki.ca_cert}",
                "--use-service-account-credentials=false",
                f"--node-monitor-grace-period={NODE_LEASE_SECONDS + 20}s",
                "--controllers=*,-nodeipam,-service-lb-controller,-route,-cloud-node-lifecycle",
                "--concurrent-deployment-syncs=10",
                "--concurrent-replicaset-syncs=10",
                "--kube-api-qps=500",
                "--kube-api-burst=1000",
            ],
        )
        self._spawn(
            "kube-scheduler",
            [
                str(b.kube_scheduler),
                *common,
                f"--secure-port={p['scheduler']}",
                "--kube-api-qps=500",
                "--kube-api-burst=1000",
            ],
        )
        # A restarted cluster still holds the node Leases of the previous kwok instance; the new one
        # cannot take them over until they expire, and pods bound meanwhile would never start.
        # Leases are heartbeats, not state: the new kwok recreates them at once.
        self.kubectl("delete", "leases", "--all", "-n", "kube-node-lease", "--ignore-not-found", "--wait=false")
        kwok_home = self.directory / "kwok-home"
        kwok_home.mkdir(exist_ok=True)
        stages = self.directory / "kwok.yaml"
        stages.write_text(kwok_config())
        key, value = KWOK_NODE_ANNOTATION
        self._spawn(
            "kwok",
            [
                str(b.kwok),
                f"--kubeconfig={kc}",
                f"--config={stages}",
                f"--manage-nodes-with-annotation-selector={key}={value}",
                f"--cidr={POD_CIDR}",
                "--node-ip=127.0.0.1",
                f"--node-lease-duration-seconds={NODE_LEASE_SECONDS}",
                f"--server-address=127.0.0.1:{p['kwok']}",
            ],
            env={"HOME": str(kwok_home)},
        )
        for name, port in (("kube-controller-manager", p["controller-manager"]), ("kube-scheduler", p["scheduler"])):
            self._wait(name, lambda port=port: self._https_ok(port, "/healthz"), deadline)  # type: ignore[misc]
        self._wait("kwok", lambda: self._http_ok(f"http://127.0.0.1:{p['kwok']}/healthz"), deadline)

    def _spawn(self, name: str, argv: Sequence[str], env: dict[str, str] | None = None) -> None:
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child process
        full_env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost", **(env or {})}
        try:
            proc = subprocess.Popen(
                list(argv),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=full_env,
                cwd=self.directory,
                start_new_session=True,
            )
        finally:
            log.close()
        self.state.pids[name] = proc.pid
        self._save_state()

    def _log_tail(self, name: str, lines: int = 20) -> str:
        try:
            return "\n".join((self.logs / f"{name}.log").read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def _wait(self, name: str, ready: Callable[[], bool], deadline: float) -> None:
        while time.monotonic() < deadline:
            if ready():
                return
            if not _alive(self.state.pids[name]):
                tail = self._log_tail(name)
                if "address already in use" in tail:
                    raise PortInUse(f"{name}: address already in use")
                raise ClusterError(
                    f"{name} exited during start-up; last lines of {self.logs / (name + '.log')}:\n{tail}"
                )
            time.sleep(0.2)
        raise ClusterError(f"{name} did not become healthy in time; last log lines:\n{self._log_tail(name)}")

    @staticmethod
    def _http_ok(url: str) -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    @staticmethod
    def _https_ok(port: int, path: str) -> bool:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # self-signed serving certs of KCM/scheduler; only a liveness probe
        try:
            with urllib.request.urlopen(f"https://127.0.0.1:{port}{path}", context=ctx, timeout=2) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def stop(self, grace_s: float = 10.0) -> None:
        """Stop every recorded process, newest first: SIGTERM, then SIGKILL after ``grace_s``.

        Real kubelet nodes (``realnodes``) go first, while the API server can still see them.
        """
        if (self.directory / "real-nodes" / "state.json").exists():
            from gpupool_operator.local.realnodes import RealNodes

            RealNodes(self).teardown()
        for name in reversed(COMPONENTS):
            pid = self.state.pids.get(name)
            if pid is None or not _alive(pid):
                continue
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
            end = time.monotonic() + grace_s
            while _alive(pid) and time.monotonic() < end:
                time.sleep(0.05)
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
                end = time.monotonic() + 5
                while _alive(pid) and time.monotonic() < end:
                    time.sleep(0.05)
        self.state.pids = {}
        if self.directory.exists():
            self._save_state()

    def destroy(self) -> None:
        """Stop the cluster and delete its directory (etcd data, PKI, logs)."""
        import shutil

        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    # -- using it --------------------------------------------------------------------------
    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout_s: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run the cluster's own kubectl against it (text in, text out)."""
        proc = subprocess.run(
            [str(self.binaries.kubectl), f"--kubeconfig={self.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        if check and proc.returncode != 0:
            raise ClusterError(f"kubectl {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc

    def wait_established(self, *names: str, timeout_s: float = 90.0) -> None:
        """Until the named CRDs (default: gpupool's two) are Established. ``kubectl wait`` fails
        outright, rather than waits, while a just-created CRD's status has no conditions yet, so
        it is retried until ``timeout_s``."""
        crds = [f"crd/{n}" for n in (names or GPUPOOL_CRDS)]
        deadline = time.monotonic() + timeout_s
        while True:
            left = max(1, min(30, int(deadline - time.monotonic())))
            waited = self.kubectl("wait", "--for=condition=Established", *crds, f"--timeout={left}s", check=False)
            if waited.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise ClusterError(f"{', '.join(crds)} not Established after {timeout_s:.0f} s: "
                                   f"{waited.stderr.strip()}")
            time.sleep(1)

    def api_client(self) -> object:
        """A ``kubernetes.client.ApiClient`` for this cluster (typed loosely: the core never needs it)."""
        from kubernetes import config  # imported lazily: the CLI's ``local`` commands need no client

        return config.new_client_from_config(config_file=str(self.kubeconfig))  # type: ignore[no-untyped-call]


#: kwok's own options: more parallel stage workers than the default 4, so a thousand fake nodes
#: become Ready in seconds rather than a minute.
KWOK_CONFIGURATION = """\
apiVersion: config.kwok.x-k8s.io/v1alpha1
kind: KwokConfiguration
options:
  nodePlayStageParallelism: 16
  podPlayStageParallelism: 16
  nodeLeaseParallelism: 16
"""


def kwok_config(version: str = toolchain.KWOK_VERSION) -> str:
    """kwok's configuration plus the stage definitions shipped in the kwok module, as one file."""
    module_dir = toolchain.module_dir("sigs.k8s.io/kwok", version)
    docs = [KWOK_CONFIGURATION.strip()] + [(module_dir / rel).read_text().strip() for rel in KWOK_STAGE_FILES]
    return "\n---\n".join(docs) + "\n"


@contextlib.contextmanager
def running(directory: Path, binaries: toolchain.Binaries | None = None) -> Iterator[LocalCluster]:
    """Start a cluster in ``directory`` for the duration of a ``with`` block, then stop it."""
    cluster = LocalCluster(directory, binaries)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
