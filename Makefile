# gpupool developer entry points. `make help` lists them.
# Every target runs inside the cached virtualenv that scripts/setup.sh creates (outside the work tree)
# with this checkout on PYTHONPATH, so several clones can share one environment.
SHELL := /bin/bash
.DEFAULT_GOAL := help
export PYTHONPATH := $(CURDIR)/operator:$(CURDIR)/worker:$(CURDIR)/proto
export NO_PROXY := 127.0.0.1,localhost
VENV = $(shell bash scripts/setup.sh)
PY = $(VENV)/bin/python
# The kserve SDK's client runs from its own venv beside the main one (it pins protobuf<7).
PYTEST = GPUPOOL_KSERVE_PYTHON=$(VENV)-kserve/bin/python $(PY) -m pytest -p no:cacheprovider --durations=15

.PHONY: help setup binaries lint verify test test-fast bench demo up down clean-cluster images

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*## "}{printf "  make %-14s %s\n", $$1, $$2}'

setup: ## create the Python env (cached by dependency hash) and build the control-plane binaries (cached by version)
	@bash scripts/setup.sh >/dev/null
	@$(PY) -m gpupool_operator local build
	@# real kubelet nodes need root; elsewhere their tests are skipped with what is missing named
	@bash scripts/system-deps.sh
	@if [ "$$(id -u)" = 0 ]; then $(PY) -m gpupool_operator local build --nodes >/dev/null || \
	  echo "[gpupool setup] real-node binaries not built (above); tests marked real_nodes will say what is missing" >&2; fi

binaries: ## build only the Go control-plane binaries (etcd, kube-*, kubectl, kwok, helm)
	@$(PY) -m gpupool_operator local build

lint: ## ruff, mypy --strict, import-linter layer contracts, hadolint on the Dockerfiles
	$(PY) -m ruff check operator worker proto tests benchmarks scripts docs
	$(PY) -m mypy operator/gpupool_operator worker/gpupool_worker
	$(VENV)/bin/lint-imports
	$(VENV)/bin/hadolint Dockerfile tests/images/pybase.Containerfile

verify: ## regenerate every checked-in artifact (CRDs, chart CRDs and values schema, protobuf stubs) and fail if anything drifted
	$(PY) -m gpupool_operator.api.crdgen --check
	$(PY) scripts/chart_schema.py --check
	@bash scripts/protogen.sh --check "$(PY)"
	$(PY) docs/architecture.py --check

test: setup lint verify ## everything CI runs: setup, lint, verify, all tests (unit, scenarios, real cluster, worker)
	@# pytest exits 5 when it collected nothing: that is a failure here, never a silent pass.
	@$(PYTEST); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; exit $$rc

test-fast: ## tests that need no control plane
	$(PYTEST) -m "not cluster"

bench: setup ## run every benchmarks/*/bench_*.py; results land in benchmarks/results/
	@set -e; for f in benchmarks/*/bench_*.py; do echo "== $$f"; $(PY) $$f; done

images: ## build the operator and worker images with podman + runc (no Docker, no registry) and print their sizes
	@bash tests/images/build_images.sh

demo: setup ## local demo: real control plane + fake GPU pools + the operator placing the example InferencePools
	$(PY) -m gpupool_operator demo

up: setup ## start the local cluster with examples/clusters/small-hetero.yaml
	$(PY) -m gpupool_operator local up

down: ## stop the local cluster
	$(PY) -m gpupool_operator local down

clean-cluster: ## stop the local cluster and delete its data
	$(PY) -m gpupool_operator local destroy
