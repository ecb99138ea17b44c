"""Certificates for the local control plane, made with the ``openssl`` command.

One CA signs one client/server certificate with ``O=system:masters`` (every component and the
developer act as cluster admin; RBAC is still enforced for everyone else, which is what lets
tests impersonate the operator's ServiceAccount). A separate RSA key pair signs ServiceAccount
tokens. Files are written once and reused across restarts of the same cluster directory.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


class PkiError(RuntimeError):
    pass


@dataclass(frozen=True)
class Pki:
    ca_cert: Path
    ca_key: Path
    cert: Path
    key: Path
    sa_key: Path
    sa_pub: Path


def _openssl(*args: str, cwd: Path) -> None:
    exe = shutil.which("openssl")
    if exe is None:
        raise PkiError("the openssl command was not found; install it (apt-get install openssl) and try again")
    proc = subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise PkiError(f"openssl {args[0]} failed: {proc.stderr.strip()}")


_EXT = """\
[req]
distinguished_name = dn
[dn]
[ca_ext]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign,digitalSignature
subjectKeyIdentifier = hash
[leaf_ext]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth,clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid,issuer
subjectAltName = {sans}
"""
#: Names the API server answers to: loopback, and the in-cluster service name and IP.
_SANS = ",".join(
    (
        "DNS:localhost",
        "DNS:kubernetes",
        "DNS:kubernetes.default",
        "DNS:kubernetes.default.svc",
        "IP:127.0.0.1",
        "IP:10.96.0.1",  # the first address of SERVICE_CIDR: the in-cluster `kubernetes` Service
    )
)


def ensure_pki(directory: Path) -> Pki:
    """Create the CA, the admin/serving certificate and the ServiceAccount key pair if missing."""
    directory.mkdir(parents=True, exist_ok=True)
    pki = Pki(
        ca_cert=directory / "ca.crt",
        ca_key=directory / "ca.key",
        cert=directory / "admin.crt",
        key=directory / "admin.key",
        sa_key=directory / "sa.key",
        sa_pub=directory / "sa.pub",
    )
    if all(p.exists() for p in vars(pki).values()):
        return pki
    (directory / "openssl.cnf").write_text(_EXT.format(sans=_SANS))
    days = "3650"
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        days,
        "-subj",
        "/CN=gpupool-local-ca",
        "-config",
        "openssl.cnf",
        "-extensions",
        "ca_ext",
        cwd=directory,
    )
    _openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "admin.key",
        "-out",
        "admin.csr",
        "-subj",
        "/O=system:masters/CN=gpupool-admin",
        "-config",
        "openssl.cnf",
        cwd=directory,
    )
    _openssl(
        "x509",
        "-req",
        "-in",
        "admin.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "admin.crt",
        "-days",
        days,
        "-extfile",
        "openssl.cnf",
        "-extensions",
        "leaf_ext",
        cwd=directory,
    )
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=directory)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=directory)
    for key in (pki.ca_key, pki.key, pki.sa_key):
        key.chmod(0o600)
    return pki


def kubeconfig_yaml(server: str, pki: Pki, context: str = "gpupool-local") -> str:
    """A kubeconfig with absolute paths (kopf does not resolve relative ones)."""
    return f"""apiVersion: v1
kind: Config
clusters:
- name: {context}
  cluster:
    server: {server}
    certificate-authority: {pki.ca_cert.resolve()}
users:
- name: {context}-admin
  user:
    client-certificate: {pki.cert.resolve()}
    client-key: {pki.key.resolve()}
contexts:
- name: {context}
  context:
    cluster: {context}
    user: {context}-admin
    namespace: default
current-context: {context}
"""


def node_client_cert(pki: Pki, directory: Path, node: str) -> tuple[Path, Path]:
    """A kubelet's client certificate, ``CN=system:node:<node>, O=system:nodes``, from the cluster CA.

    Written once per node directory and reused; the API server maps it to the node's identity
    (the ``system:node`` ClusterRole is bound to the ``system:nodes`` group by the caller).
    """
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "kubelet-client.crt", directory / "kubelet-client.key"
    if cert.exists() and key.exists():
        return cert, key
    conf = directory / "openssl.cnf"
    conf.write_text(
        "[req]\ndistinguished_name = dn\n[dn]\n[client_ext]\nbasicConstraints = critical,CA:FALSE\n"
        "keyUsage = critical,digitalSignature,keyEncipherment\nextendedKeyUsage = clientAuth\n"
        "authorityKeyIdentifier = keyid,issuer\n"
    )
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", key.name, "-out", "kubelet-client.csr",
        "-subj", f"/O=system:nodes/CN=system:node:{node}", "-config", conf.name, cwd=directory,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", "kubelet-client.csr", "-CA", str(pki.ca_cert), "-CAkey", str(pki.ca_key),
        "-CAcreateserial", "-CAserial", "ca.srl", "-out", cert.name, "-days", "3650",
        "-extfile", conf.name, "-extensions", "client_ext", cwd=directory,
    )  # fmt: skip
    key.chmod(0o600)
    return cert, key


def kubeconfig_for(server: str, ca_cert: Path, cert: Path, key: Path, user: str) -> str:
    """A kubeconfig for one identity (a kubelet's), absolute paths."""
    return f"""apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: {server}
    certificate-authority: {ca_cert.resolve()}
users:
- name: {user}
  user:
    client-certificate: {cert.resolve()}
    client-key: {key.resolve()}
contexts:
- name: local
  context: {{cluster: local, user: {user}}}
current-context: local
"""
