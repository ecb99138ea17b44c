"""The Go-module build of the control plane: wrapper modules and clear failures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gpupool_operator.local import toolchain

UPSTREAM_GOMOD = """\
module k8s.io/kubernetes

go 1.25.0

require (
\tgithub.com/spf13/cobra v1.9.1
\tk8s.io/api v0.0.0
\tk8s.io/client-go v0.0.0
)

require (
\tgithub.com/go-logr/logr v1.4.3 // indirect
\tk8s.io/streaming v0.0.0 // indirect
)

require golang.org/x/sys v0.30.0

replace (
\tk8s.io/api => ./staging/src/k8s.io/api
\tk8s.io/client-go => ./staging/src/k8s.io/client-go
\tk8s.io/streaming => ./staging/src/k8s.io/streaming
\tk8s.io/unused => ./staging/src/k8s.io/unused
)

replace go.etcd.io/etcd => ./FORBIDDEN_DEPENDENCY
"""


def test_wrapper_replaces_every_required_sibling_by_its_published_tag() -> None:
    gomod = toolchain.wrapper_gomod("example/wrap", "k8s.io/kubernetes", "v1.36.3", UPSTREAM_GOMOD, "v0.36.3")
    assert "\tk8s.io/kubernetes v1.36.3" in gomod
    for sib in ("k8s.io/api", "k8s.io/client-go", "k8s.io/streaming"):
        assert f"\t{sib} v0.36.3" in gomod
        assert f"\t{sib} => {sib} v0.36.3" in gomod
    assert "github.com/spf13/cobra v1.9.1" in gomod
    assert "golang.org/x/sys v0.30.0" in gomod
    assert "go 1.25.0" in gomod
    # Not required -> not replaced; forbidden modules stay out of the graph.
    assert "k8s.io/unused" not in gomod
    assert "FORBIDDEN" not in gomod
    assert "v0.0.0" not in gomod


def test_per_module_versions_and_unknown_sibling() -> None:
    up = "module m\n\ngo 1.26\n\nrequire (\n\tex.io/a/v3 v3.0.0\n)\n\nreplace ex.io/a/v3 => ../a\n"
    gomod = toolchain.wrapper_gomod("w", "ex.io/m", "v3.6.0", up, {"ex.io/a/v3": "v3.6.0"})
    assert "\tex.io/a/v3 => ex.io/a/v3 v3.6.0" in gomod
    with pytest.raises(toolchain.ToolchainError, match="no published version known"):
        toolchain.wrapper_gomod("w", "ex.io/m", "v3.6.0", up, {})


def test_kubernetes_ldflags_stamp_the_real_version() -> None:
    flags = toolchain.kubernetes_ldflags("v1.36.3")
    assert "-X k8s.io/component-base/version.gitVersion=v1.36.3" in flags
    assert "-X k8s.io/component-base/version.gitMinor=36" in flags
    assert "-X k8s.io/client-go/pkg/version.gitMajor=1" in flags


def test_missing_go_toolchain_says_what_to_do(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("GPUPOOL_CACHE", str(tmp_path / "cache"))
    with pytest.raises(toolchain.ToolchainError, match=r"Go toolchain was not found on PATH\. Install Go"):
        toolchain.build_kwok("v0.0.0-does-not-matter")


def test_failed_module_download_is_one_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A module the proxy cannot serve stops the build with go's own reason, not a traceback."""
    monkeypatch.setenv("GPUPOOL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("GOFLAGS", "-mod=mod")
    monkeypatch.setenv("GOPROXY", "off")  # nothing may be fetched: exactly a failed download
    with pytest.raises(toolchain.ToolchainError) as err:
        toolchain.build_helm("v3.0.0-no-such-version")
    message = str(err.value)
    assert "go install helm.sh/helm/v3/cmd/helm@v3.0.0-no-such-version failed" in message
    assert "GOPROXY=off" in message
    assert "Check access to the proxy" in message
    assert not (tmp_path / "cache" / "bin" / "helm-v3.0.0-no-such-version").exists()


def test_pause_builds_once_into_the_versioned_cache_with_its_build_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sandbox binary of real nodes: a real Go build (stdlib only), cached by version."""
    import shutil
    import subprocess

    if shutil.which("go") is None:
        pytest.skip("no Go toolchain on PATH")
    monkeypatch.setenv("GPUPOOL_CACHE", str(tmp_path))
    first = toolchain.build_pause()
    binary = first / "pause"
    assert first == tmp_path / "bin" / f"pause-{toolchain.PAUSE_VERSION}"
    assert binary.is_file()
    assert "pause-" + toolchain.PAUSE_VERSION in toolchain.build_seconds()
    assert not list((tmp_path / "bin").glob("*.partial"))
    mtime = binary.stat().st_mtime_ns
    assert toolchain.build_pause() == first  # a cache hit builds nothing
    assert binary.stat().st_mtime_ns == mtime
    # it is the pod's PID 1: it must exit cleanly on SIGTERM
    proc = subprocess.Popen([str(binary)])
    try:
        import time

        time.sleep(0.2)
        proc.terminate()
        assert proc.wait(timeout=5) == 0
    finally:
        proc.kill()


def test_build_seconds_reads_what_each_build_recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUPOOL_CACHE", str(tmp_path))
    for name, secs in (("containerd-v2.4.2", "212\n"), ("runc-v1.5.3", "40\n")):
        (tmp_path / "bin" / name).mkdir(parents=True)
        (tmp_path / "bin" / name / ".build-seconds").write_text(secs)
    (tmp_path / "bin" / "helm-v3.21.4").mkdir()
    assert toolchain.build_seconds() == {"containerd-v2.4.2": 212.0, "runc-v1.5.3": 40.0}


def test_missing_node_binaries_names_what_the_build_would_write(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    # the demo decides real nodes or KWOK only from this list: it must look where the builds put
    # their binaries (runc's build is the `-seccomp` variant), or a machine with everything built
    # falls back to KWOK without a reason anyone could act on
    from gpupool_operator.cli.demo import _use_real_nodes

    monkeypatch.setenv("GPUPOOL_CACHE", str(tmp_path))
    assert toolchain.missing_node_binaries() == ["kubelet", "containerd", "runc (with seccomp)", "CNI plugins",
                                                 "crictl", "pause"]
    layout = {
        f"kubelet-{toolchain.KUBERNETES_VERSION}": ["kubelet"],
        f"containerd-{toolchain.CONTAINERD_VERSION}": ["containerd", "containerd-shim-runc-v2", "ctr"],
        f"runc-{toolchain.RUNC_VERSION}": ["runc"],  # a build without seccomp does not count
        f"cni-plugins-{toolchain.CNI_PLUGINS_VERSION}": list(toolchain.CNI_PLUGINS),
        f"cri-tools-{toolchain.CRI_TOOLS_VERSION}": ["crictl"],
        f"pause-{toolchain.PAUSE_VERSION}": ["pause"],
    }
    for directory, names in layout.items():
        for name in names:
            path = tmp_path / "bin" / directory / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("#!/bin/sh\n")
            path.chmod(0o755)
    assert toolchain.missing_node_binaries() == ["runc (with seccomp)"]
    if os.geteuid() == 0:
        use, why = _use_real_nodes(None)
        assert not use
        assert why is not None
        assert "runc (with seccomp)" in why
    seccomp = tmp_path / "bin" / f"runc-{toolchain.RUNC_VERSION}-seccomp" / "runc"
    seccomp.parent.mkdir(parents=True)
    seccomp.write_text("#!/bin/sh\n")
    seccomp.chmod(0o755)
    assert toolchain.missing_node_binaries() == []
