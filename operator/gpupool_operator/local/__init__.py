"""A real Kubernetes control plane on 127.0.0.1, built from Go modules, with KWOK fake GPU nodes.

Developer and test tooling: ``toolchain`` builds and caches the binaries, ``pki`` makes the
certificates, ``cluster`` runs and stops the processes, ``spec`` and ``nodes`` turn a cluster spec
YAML into Node objects carrying genuine NVIDIA GPU Feature Discovery labels.
"""
