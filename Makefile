# Storyteller: `make demo` runs the platform locally, `make test` runs the whole suite.
# Everything a target needs is installed by the target itself (CI runs on a clean clone).

SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PY_PACKAGES := api/storyteller_api worker/storyteller_worker operator/storyteller_operator \
	devkit/storyteller_devkit

.PHONY: help venv tools images lint test test-unit demo demo-text bench clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

venv: $(VENV)/.installed ## the development virtualenv with both packages and the test tools

$(VENV)/.installed: requirements-dev.txt api/pyproject.toml worker/pyproject.toml operator/pyproject.toml \
		devkit/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt -e ./api -e ./worker -e ./operator -e ./devkit
	touch $@

tools: ## system packages and the Go-built binaries (kube-*, kubelet, kube-proxy, CoreDNS, kwok, helm, livekit-server), cached
	tests/cluster/install.sh

images: ## the operator, worker and pause images (buildah, cached); imported when the real node runs
	tests/cluster/images.sh build
	sock="$$(source tests/cluster/lib.sh && echo "$$CONTAINERD_SOCK")"; \
	if [[ -S "$$sock" ]]; then tests/cluster/images.sh import "$$sock"; fi

lint: venv tools ## ruff, mypy; the chart's scenarios through kubeconform (strict) and kube-linter
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy $(PY_PACKAGES)
	tests/cluster/lint-manifests.sh $(PY)

test-unit: venv ## quick tests: no cluster, no server
	$(PY) -m pytest -m unit -q

test: ## the whole suite (installs, lint, unit, integration, cluster, end-to-end, real pods), side by side; phase times at the end
	PY_PACKAGES="$(PY_PACKAGES)" tests/suite.sh

demo: venv tools ## the main job: local cluster, chart, example tenant, and a voice call to it (offline)
	$(PY) demo/platform_demo.py

demo-text: venv ## the example tenant's conversation in text mode, no cluster, no LiveKit
	$(PY) demo/text_session.py

bench: venv tools ## benchmarks that print figures (several minutes)
	$(PY) bench/handoff.py
	$(PY) bench/dispatch.py
	$(PY) -m bench.telemetry_overhead
	$(PY) bench/autoscale_sim.py --seed 1 7
	$(PY) bench/cold_start.py

clean: ## remove the virtualenv and caches (not the built cluster binaries)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
