"""Build the local control plane from Go modules and cache the binaries by version.

Why this exists: there is no container engine on our machines, so kind/k3d are out. The only
way to a *real* kube-apiserver and kube-scheduler is to compile them with the machine's Go
toolchain from the Go module proxy. That takes tens of minutes on two cores, so every binary is
cached under ``$GPUPOOL_CACHE/bin/<component>-<version>/`` (default ``~/.cache/gpupool``), outside
the work tree, and a machine builds each version once.

``k8s.io/kubernetes`` and ``go.etcd.io/etcd/server/v3`` both pin their sibling modules with
``replace => ./staging/...`` directives that ``go install`` cannot follow, so each is built from a
small generated wrapper module whose ``go.mod`` copies the upstream requirements and replaces every
sibling by its published tag. The list of siblings is read from the tag's own ``go.mod`` rather
than hard-coded, so a version bump needs no code change.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

KUBERNETES_VERSION = "v1.36.3"
ETCD_VERSION = "v3.6.16"
KWOK_VERSION = "v0.8.0"
HELM_VERSION = "v3.21.4"
#: What a real kubelet node needs beside the kubelet (built with the other Kubernetes binaries).
CONTAINERD_VERSION = "v2.4.2"
RUNC_VERSION = "v1.5.3"
CNI_PLUGINS_VERSION = "v1.10.0"
CRI_TOOLS_VERSION = "v1.37.0"
#: The CNI plugins a node's bridge network uses.
CNI_PLUGINS = {
    "bridge": "plugins/main/bridge",
    "host-local": "plugins/ipam/host-local",
    "loopback": "plugins/main/loopback",
}

#: The binaries each component provides, by name.
KUBERNETES_BINARIES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")


class ToolchainError(RuntimeError):
    """A build step failed; the message says what to do about it."""


def cache_root() -> Path:
    """Where built binaries and generated wrapper modules live (never inside the work tree)."""
    return Path(os.environ.get("GPUPOOL_CACHE", Path.home() / ".cache" / "gpupool")).expanduser()


@dataclass(frozen=True)
class Binaries:
    """Absolute paths of every control-plane binary, all of them built and present."""

    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    kubectl: Path
    kwok: Path
    helm: Path


def _say(msg: str) -> None:
    print(f"[gpupool toolchain] {msg}", file=sys.stderr, flush=True)


def _go() -> str:
    go = shutil.which("go")
    if go is None:
        raise ToolchainError(
            "the Go toolchain was not found on PATH. Install Go >= 1.26 "
            "(https://go.dev/doc/install or `apt-get install golang`) and run again."
        )
    return go


def _go_env(cgo: bool = False) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("GOTOOLCHAIN", "local")
    env["CGO_ENABLED"] = "1" if cgo else "0"
    env.setdefault("GOFLAGS", "-buildvcs=false")
    return env


def _network_hint(output: str) -> str:
    if re.search(r"dial tcp|proxy\.golang\.org|no such host|connection refused|i/o timeout|GOPROXY=off", output):
        return (
            "\nThe Go module proxy could not be reached (or GOPROXY forbids it). Check access to the "
            "proxy named by `go env GOPROXY` and run again; modules already fetched stay cached."
        )
    return ""


def _run_go(args: Sequence[str], cwd: Path, what: str, timeout_s: float = 3600, quiet: bool = False) -> str:
    """Run one go command; a failure becomes one ToolchainError saying what to do."""
    started = time.monotonic()
    if not quiet:
        _say(f"{what} ...")
    try:
        proc = subprocess.run(
            [_go(), *args],
            cwd=cwd,
            env=_go_env(),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise ToolchainError(f"{what}: timed out after {timeout_s:.0f}s") from exc
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-25:])
        raise ToolchainError(f"{what} failed (go {' '.join(args[:2])} ...):\n{tail}{_network_hint(tail)}")
    if not quiet:
        _say(f"{what} done in {time.monotonic() - started:.0f}s")
    return proc.stdout


def _compile_with_progress(
    args: Sequence[str], cwd: Path, what: str, total: int | None, env: dict[str, str] | None = None
) -> None:
    """Run ``go build -v``/``go install -v`` and draw a progress bar from the packages it reports.

    ``go ... -v`` prints each package as it compiles it; ``total`` (from ``go list -deps``) turns
    that into a bar. On a terminal the bar redraws in place; in a log (CI) a line is written every
    30 seconds so a long first build never looks hung.
    """
    started = time.monotonic()
    _say(f"{what} ...")
    tty = sys.stderr.isatty()
    done = 0
    last_line = 0.0
    tail: list[str] = []
    proc = subprocess.Popen(
        [_go(), *args], cwd=cwd, env=env or _go_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert proc.stdout is not None
    for raw in proc.stdout:
        line = raw.rstrip()
        if re.fullmatch(r"[\w./~+-]+", line):
            done += 1
        else:
            tail = [*tail[-40:], line]
        now = time.monotonic()
        if tty or now - last_line >= 30:
            last_line = now
            frac = min(done / total, 1.0) if total else 0.0
            bar = "#" * int(30 * frac) + "." * (30 - int(30 * frac))
            counts = f"{done}/{total}" if total else f"{done}"
            msg = f"[gpupool toolchain]   [{bar}] {counts} packages, {now - started:.0f}s"
            print(("\r" + msg) if tty else msg, end="" if tty else "\n", file=sys.stderr, flush=True)
    rc = proc.wait()
    if tty:
        print(file=sys.stderr)
    if rc != 0:
        text = "\n".join(tail[-25:])
        raise ToolchainError(f"{what} failed:\n{text}{_network_hint(text)}")
    _say(f"{what} done in {time.monotonic() - started:.0f}s")


@contextlib.contextmanager
def _build_lock(name: str) -> Iterator[None]:
    """Serialise builds of one component across processes (a CLI and a test run at once)."""
    lock_dir = cache_root() / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / f"{name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _module_gomod(module: str, version: str, workdir: Path) -> str:
    """Download ``module@version`` from the proxy and return its go.mod text."""
    out = _run_go(["mod", "download", "-json", f"{module}@{version}"], workdir, f"fetch {module}@{version}")
    match = re.search(r'"GoMod":\s*"([^"]+)"', out)
    if not match:
        raise ToolchainError(f"go mod download gave no go.mod path for {module}@{version}")
    return Path(match.group(1)).read_text()


_REPLACE_LOCAL = re.compile(r"^\s*(?:replace\s+)?(\S+)\s*=>\s*\.\.?/\S+\s*$", re.M)
_REQUIRE_BLOCK = re.compile(r"^require\s*\((.*?)^\)", re.M | re.S)
_REQUIRE_LINE = re.compile(r"^require\s+([^\s(]\S*\s+\S+)", re.M)
_GO_DIRECTIVE = re.compile(r"^go\s+(\S+)", re.M)


def wrapper_gomod(
    wrapper_module: str,
    upstream: str,
    upstream_version: str,
    upstream_gomod: str,
    sibling_version: str | dict[str, str],
) -> str:
    """Compose the go.mod of a wrapper module that builds ``upstream`` at a tag.

    A purely computational function: it copies the upstream requirements and turns every
    ``replace X => ./local/path`` into ``replace X => X <published tag>``. ``sibling_version``
    is one version for all siblings (Kubernetes staging) or a mapping per module (etcd).
    """
    local_replaced = set(_REPLACE_LOCAL.findall(upstream_gomod))
    go_version = (_GO_DIRECTIVE.search(upstream_gomod) or [None, "1.26"])[1]
    requires: list[str] = []
    for block in _REQUIRE_BLOCK.findall(upstream_gomod):
        requires += [ln.strip() for ln in block.splitlines() if ln.strip() and not ln.strip().startswith("//")]
    requires += _REQUIRE_LINE.findall(upstream_gomod)

    def version_of(mod: str) -> str:
        if isinstance(sibling_version, str):
            return sibling_version
        try:
            return sibling_version[mod]
        except KeyError as exc:
            raise ToolchainError(f"no published version known for {upstream} sibling module {mod}") from exc

    required = [req.split()[0] for req in requires]
    # Only siblings something requires need a replacement; upstream also "replaces" modules it
    # forbids (etcd: ``=> ./FORBIDDEN_DEPENDENCY``), which must simply stay out of the graph.
    siblings = [mod for mod in required if mod in local_replaced]
    lines = [f"module {wrapper_module}", "", f"go {go_version}", "", "require (", f"\t{upstream} {upstream_version}"]
    for req in requires:
        mod, ver = req.split()[:2]
        if mod in siblings:
            ver = version_of(mod)
        lines.append(f"\t{mod} {ver}")
    lines += [")", "", "replace ("]
    lines += [f"\t{mod} => {mod} {version_of(mod)}" for mod in siblings]
    lines += [")", ""]
    return "\n".join(lines)


def module_dir(module: str, version: str) -> Path:
    """The extracted source of ``module@version`` in the Go module cache (downloaded if missing)."""
    out = _run_go(
        ["mod", "download", "-json", f"{module}@{version}"], cache_root(), f"fetch {module}@{version}", quiet=True
    )
    match = re.search(r'"Dir":\s*"([^"]+)"', out)
    if not match:
        raise ToolchainError(f"go mod download gave no directory for {module}@{version}")
    return Path(match.group(1))


def _bin_dir(component: str, version: str) -> Path:
    return cache_root() / "bin" / f"{component}-{version}"


def _have(bin_dir: Path, names: Sequence[str]) -> bool:
    return all((bin_dir / n).is_file() and os.access(bin_dir / n, os.X_OK) for n in names)


def _build_wrapped(
    component: str,
    upstream: str,
    version: str,
    sibling_version: str | dict[str, str],
    packages: dict[str, str],
    ldflags: str = "",
) -> Path:
    """Build ``packages`` (binary name -> import path) of ``upstream@version`` via a wrapper module."""
    bin_dir = _bin_dir(component, version)
    if _have(bin_dir, list(packages)):
        return bin_dir
    with _build_lock(component):
        if _have(bin_dir, list(packages)):
            return bin_dir
        work = cache_root() / "wrappers" / f"{component}-{version}"
        work.mkdir(parents=True, exist_ok=True)
        (work / "go.mod").write_text("module gpupool.local/probe\n\ngo 1.26\n")
        upstream_gomod = _module_gomod(upstream, version, work)
        (work / "go.mod").write_text(
            wrapper_gomod(f"gpupool.local/{component}-build", upstream, version, upstream_gomod, sibling_version)
        )
        tmp_out = bin_dir.with_name(bin_dir.name + ".partial")
        shutil.rmtree(tmp_out, ignore_errors=True)
        tmp_out.mkdir(parents=True)
        _run_go(["mod", "download"], work, f"download modules for {component} {version}")
        deps = _run_go(["list", "-mod=mod", "-deps", *packages.values()], work, f"list packages of {component}")
        args = ["build", "-v", "-mod=mod", "-trimpath", "-o", str(tmp_out) + "/"]
        if ldflags:
            args += ["-ldflags", ldflags]
        started = time.monotonic()
        _compile_with_progress(
            [*args, *packages.values()],
            work,
            f"compile {', '.join(packages)} {version} (tens of minutes the first time on 2 cores)",
            total=len(deps.split()),
        )
        _record_build_time(tmp_out, time.monotonic() - started)
        # go build names outputs after the last path element; rename where the caller wants otherwise.
        for name, pkg in packages.items():
            # (a trailing major-version element such as /v3 is skipped, as go build does)
            built = tmp_out / re.sub(r"/v\d+$", "", pkg.rstrip("/")).rsplit("/", 1)[-1]
            if built.name != name:
                built.rename(tmp_out / name)
        shutil.rmtree(bin_dir, ignore_errors=True)
        tmp_out.rename(bin_dir)  # atomic: a half-built directory is never mistaken for a cache hit
    return bin_dir


def _go_install(
    component: str, pkg: str | Sequence[str], version: str, binary: str | Sequence[str], ldflags: str = "",
    variant: str = "", cgo: bool = False, tags: str = "",
) -> Path:
    """``go install`` one or more packages of one module at ``version`` into the versioned cache;
    ``variant`` keys builds whose ``ldflags`` differ."""
    pkgs = [pkg] if isinstance(pkg, str) else list(pkg)
    binaries = [binary] if isinstance(binary, str) else list(binary)
    bin_dir = _bin_dir(component, version + variant)
    if _have(bin_dir, binaries):
        return bin_dir
    with _build_lock(component):
        if _have(bin_dir, binaries):
            return bin_dir
        tmp_out = bin_dir.with_name(bin_dir.name + ".partial")
        shutil.rmtree(tmp_out, ignore_errors=True)
        tmp_out.mkdir(parents=True)
        env = {**_go_env(cgo), "GOBIN": str(tmp_out)}
        flags = (["-ldflags", ldflags] if ldflags else []) + (["-tags", tags] if tags else [])
        started = time.monotonic()
        _compile_with_progress(
            ["install", "-v", "-trimpath", *flags, *(f"{p}@{version}" for p in pkgs)],
            cache_root(),
            f"go install {' '.join(f'{p}@{version}' for p in pkgs)}",
            None,
            env=env,
        )
        _record_build_time(tmp_out, time.monotonic() - started)
        shutil.rmtree(bin_dir, ignore_errors=True)
        tmp_out.rename(bin_dir)
    return bin_dir


def _record_build_time(out_dir: Path, seconds: float) -> None:
    """Keep how long the build took beside the binaries (the docs quote cold build times)."""
    (out_dir / ".build-seconds").write_text(f"{seconds:.0f}\n")


def kubernetes_ldflags(version: str) -> str:
    """Version stamps, so /version reports the real tag (helm and kubectl read it)."""
    major, minor = version.lstrip("v").split(".")[:2]
    stamps = {
        "gitVersion": version,
        "gitMajor": major,
        "gitMinor": minor,
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
    }
    flags = ["-s", "-w"]
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [f"-X {pkg}.{k}={v}" for k, v in stamps.items()]
    return " ".join(flags)


def build_kubernetes(version: str = KUBERNETES_VERSION) -> Path:
    staging = "v0." + version.lstrip("v").split(".", 1)[1]
    return _build_wrapped(
        "kubernetes",
        "k8s.io/kubernetes",
        version,
        staging,
        {name: f"k8s.io/kubernetes/cmd/{name}" for name in KUBERNETES_BINARIES},
        kubernetes_ldflags(version),
    )


def build_kubelet(version: str = KUBERNETES_VERSION) -> Path:
    """The kubelet, from the same wrapper module as the control plane.

    It is cached in a directory of its own, so adding it never invalidates a control plane
    already built; it takes the control plane's build lock, so it compiles after that build and
    reuses its compiled packages from Go's build cache (about 4 % more packages and one link).
    """
    staging = "v0." + version.lstrip("v").split(".", 1)[1]
    if _have(_bin_dir("kubelet", version), ["kubelet"]):
        return _bin_dir("kubelet", version)
    with _build_lock("kubernetes"):
        return _build_wrapped(
            "kubelet",
            "k8s.io/kubernetes",
            version,
            staging,
            {"kubelet": "k8s.io/kubernetes/cmd/kubelet"},
            kubernetes_ldflags(version),
        )


def build_containerd(version: str = CONTAINERD_VERSION) -> Path:
    major = version.lstrip("v").split(".")[0]
    mod = f"github.com/containerd/containerd/v{major}"
    names = ("containerd", "containerd-shim-runc-v2", "ctr")
    return _go_install("containerd", [f"{mod}/cmd/{n}" for n in names], version, names)


def build_runc(version: str = RUNC_VERSION) -> Path:
    # runc's nsenter is C, so this one build needs cgo (and a C compiler), and seccomp (the
    # kubelet gives every pod the RuntimeDefault profile) needs libseccomp's headers.
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        raise ToolchainError("runc needs a C compiler (cgo); install one (apt-get install gcc) and run again.")
    if not Path("/usr/include/seccomp.h").exists():
        raise ToolchainError(
            "runc needs libseccomp's headers for seccomp (the kubelet's RuntimeDefault profile); "
            "install them (apt-get install libseccomp-dev) and run again."
        )
    return _go_install("runc", "github.com/opencontainers/runc", version, "runc", variant="-seccomp", cgo=True,
                       tags="seccomp")


def build_cni_plugins(version: str = CNI_PLUGINS_VERSION) -> Path:
    mod = "github.com/containernetworking/plugins"
    return _go_install("cni-plugins", [f"{mod}/{p}" for p in CNI_PLUGINS.values()], version, list(CNI_PLUGINS))


def build_crictl(version: str = CRI_TOOLS_VERSION) -> Path:
    return _go_install("cri-tools", "sigs.k8s.io/cri-tools/cmd/crictl", version, "crictl")


PAUSE_VERSION = "gpupool-1"
_PAUSE_GO = """\
// pause: the sandbox process of every local pod. It holds the pod's namespaces, reaps
// orphaned children (it is PID 1 of the pod) and exits on SIGINT/SIGTERM.
package main

import (
\t"os"
\t"os/signal"
\t"syscall"
)

func main() {
\tsigs := make(chan os.Signal, 8)
\tsignal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
\tfor s := range sigs {
\t\tif s == syscall.SIGCHLD {
\t\t\tfor {
\t\t\t\tvar ws syscall.WaitStatus
\t\t\t\tif pid, _ := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil); pid <= 0 {
\t\t\t\t\tbreak
\t\t\t\t}
\t\t\t}
\t\t\tcontinue
\t\t}
\t\tos.Exit(0)
\t}
}
"""


def build_pause(version: str = PAUSE_VERSION) -> Path:
    """A static pause binary (stdlib only: no module download) for the node's sandbox image."""
    bin_dir = _bin_dir("pause", version)
    if _have(bin_dir, ["pause"]):
        return bin_dir
    with _build_lock("pause"):
        if _have(bin_dir, ["pause"]):
            return bin_dir
        work = cache_root() / "wrappers" / f"pause-{version}"
        work.mkdir(parents=True, exist_ok=True)
        (work / "go.mod").write_text("module gpupool.local/pause\n\ngo 1.26\n")
        (work / "main.go").write_text(_PAUSE_GO)
        tmp_out = bin_dir.with_name(bin_dir.name + ".partial")
        shutil.rmtree(tmp_out, ignore_errors=True)
        tmp_out.mkdir(parents=True)
        started = time.monotonic()
        _run_go(["build", "-trimpath", "-ldflags", "-s -w", "-o", str(tmp_out / "pause"), "."], work, "build pause")
        _record_build_time(tmp_out, time.monotonic() - started)
        shutil.rmtree(bin_dir, ignore_errors=True)
        tmp_out.rename(bin_dir)
    return bin_dir


@dataclass(frozen=True)
class NodeBinaries:
    """What a real kubelet node runs, all built and present."""

    kubelet: Path
    containerd: Path
    containerd_shim: Path
    ctr: Path
    runc: Path
    crictl: Path
    cni_bin_dir: Path
    pause: Path


def missing_node_binaries() -> list[str]:
    """The real-node binaries not built yet, by the names and versions :func:`ensure_node_binaries`
    builds them under (empty: every one is there). Cheap: only looks at the cache."""
    wanted = {
        "kubelet": (_bin_dir("kubelet", KUBERNETES_VERSION), ["kubelet"]),
        "containerd": (_bin_dir("containerd", CONTAINERD_VERSION), ["containerd", "containerd-shim-runc-v2", "ctr"]),
        "runc (with seccomp)": (_bin_dir("runc", RUNC_VERSION + "-seccomp"), ["runc"]),
        "CNI plugins": (_bin_dir("cni-plugins", CNI_PLUGINS_VERSION), list(CNI_PLUGINS)),
        "crictl": (_bin_dir("cri-tools", CRI_TOOLS_VERSION), ["crictl"]),
        "pause": (_bin_dir("pause", PAUSE_VERSION), ["pause"]),
    }
    return [what for what, (bin_dir, names) in wanted.items() if not _have(bin_dir, names)]


def ensure_node_binaries(kubelet: bool = True) -> NodeBinaries:
    """Build (once per machine and version) what real kubelet nodes need.

    ``kubelet=False`` builds only the container runtime side (the kubelet's path is still given,
    built or not).
    """
    containerd = build_containerd()
    runc = build_runc()
    cni = build_cni_plugins()
    crictl = build_crictl()
    pause = build_pause()
    kubelet_dir = build_kubelet() if kubelet else _bin_dir("kubelet", KUBERNETES_VERSION)
    return NodeBinaries(
        kubelet=kubelet_dir / "kubelet",
        containerd=containerd / "containerd",
        containerd_shim=containerd / "containerd-shim-runc-v2",
        ctr=containerd / "ctr",
        runc=runc / "runc",
        crictl=crictl / "crictl",
        cni_bin_dir=cni,
        pause=pause / "pause",
    )


def build_seconds() -> dict[str, float]:
    """Recorded build time of every cached component (what a cold build cost on this machine)."""
    out: dict[str, float] = {}
    for marker in sorted((cache_root() / "bin").glob("*/.build-seconds")):
        with contextlib.suppress(ValueError):
            out[marker.parent.name] = float(marker.read_text().strip())
    return out


def build_etcd(version: str = ETCD_VERSION) -> Path:
    # etcd's server module replaces its siblings (api, client/pkg, client/v3, pkg) which are all
    # published under the same tag as the server itself.
    siblings = {
        f"go.etcd.io/etcd/{m}": version
        for m in ("api/v3", "client/pkg/v3", "client/v3", "pkg/v3", "server/v3", "etcdutl/v3", "etcdctl/v3", "tests/v3")
    }
    return _build_wrapped(
        "etcd", "go.etcd.io/etcd/server/v3", version, siblings, {"etcd": "go.etcd.io/etcd/server/v3"}, "-s -w"
    )


def build_kwok(version: str = KWOK_VERSION) -> Path:
    return _go_install("kwok", "sigs.k8s.io/kwok/cmd/kwok", version, "kwok")


def helm_ldflags(version: str, kubernetes: str = KUBERNETES_VERSION) -> str:
    """Helm's release stamps: its own version, and the Kubernetes version that offline ``helm
    template`` and ``helm lint`` assume (unstamped it is v1.20, below the chart's ``kubeVersion``)."""
    major = version.lstrip("v").split(".")[0]
    k8s_major, k8s_minor = kubernetes.lstrip("v").split(".")[:2]
    root = f"helm.sh/helm/v{major}"
    flags = ["-s", "-w", f"-X {root}/internal/version.version={version}", f"-X {root}/internal/version.metadata="]
    for pkg in ("pkg/chartutil", "pkg/lint/rules"):
        flags += [f"-X {root}/{pkg}.k8sVersionMajor={k8s_major}", f"-X {root}/{pkg}.k8sVersionMinor={k8s_minor}"]
    return " ".join(flags)


def build_helm(version: str = HELM_VERSION) -> Path:
    major = version.lstrip("v").split(".")[0]
    k8s = ".".join(KUBERNETES_VERSION.lstrip("v").split(".")[:2])
    return _go_install("helm", f"helm.sh/helm/v{major}/cmd/helm", version, "helm", helm_ldflags(version),
                       variant=f"-k8s{k8s}")


def ensure_binaries() -> Binaries:
    """Build (once per machine) and return every binary the local cluster needs."""
    etcd = build_etcd()
    kwok = build_kwok()
    helm = build_helm()
    k8s = build_kubernetes()
    return Binaries(
        etcd=etcd / "etcd",
        kube_apiserver=k8s / "kube-apiserver",
        kube_controller_manager=k8s / "kube-controller-manager",
        kube_scheduler=k8s / "kube-scheduler",
        kubectl=k8s / "kubectl",
        kwok=kwok / "kwok",
        helm=helm / "helm",
    )


if __name__ == "__main__":
    try:
        print(ensure_binaries())
        if "--nodes" in sys.argv[1:]:
            print(ensure_node_binaries())
    except ToolchainError as err:
        _say(f"error: {err}")
        raise SystemExit(2) from None
