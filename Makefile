# edgeloop: `make demo` runs the loop on this machine, `make test` proves it.
# Every target installs what it needs; nothing has to be set up by hand.

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON_VERSION ?= 3.11
UV_VERSION     ?= 0.13.8
STATE_DIR      ?= $(CURDIR)/.edgeloop
VENV           := $(CURDIR)/.venv
PY             := $(VENV)/bin/python
LS_VENV        := $(STATE_DIR)/venvs/label-studio
KAFKA_LIBS     := $(STATE_DIR)/kafka-libs
APT_PACKAGES   := prometheus prometheus-pushgateway chromium postgresql
export PYTHONPATH := $(CURDIR)/include:$(CURDIR)
export EDGELOOP_STATE_DIR := $(STATE_DIR)
export AIRFLOW_HOME := $(STATE_DIR)/airflow
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER := $(CURDIR)/plugins
EDGELOOP := $(PY) -m edgeloop.cli
PYTEST   := $(PY) -m pytest
# pytest exits 5 when it collected no test: that is a failure here, never a silent pass.
run_pytest = $(PYTEST) $(1); rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected for: $(1)" >&2; exit 1; fi; exit $$rc

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_.-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*## "}{printf "  \033[1m%-20s\033[0m %s\n", $$1, $$2}'

# --- install ---------------------------------------------------------------------------

.PHONY: install
install: $(VENV)/.installed $(LS_VENV)/.installed $(KAFKA_LIBS)/.installed system-packages ## install everything the stack and tests need

UV := $(shell command -v uv 2>/dev/null)
ifeq ($(UV),)
UV := $(HOME)/.local/bin/uv
endif

$(UV):
	python3 -m pip install --quiet --user "uv==$(UV_VERSION)" || python3 -m pip install --quiet "uv==$(UV_VERSION)"

# --compile-bytecode: environments that set PYTHONDONTWRITEBYTECODE (many images do) would otherwise have every
# task process compile what it imports from source (import evidently: 11.2 s without .pyc, 5.1 s with).
$(VENV)/.installed: requirements.txt pyproject.toml | $(UV)
	$(UV) venv --quiet --allow-existing --python $(PYTHON_VERSION) $(VENV)
	$(UV) pip install --quiet --compile-bytecode --python $(PY) -r requirements.txt
	$(UV) pip install --quiet --python $(PY) --no-deps -e .
	touch $@

$(LS_VENV)/.installed: devstack/label-studio/requirements.txt | $(UV)
	$(UV) venv --quiet --allow-existing --python $(PYTHON_VERSION) $(LS_VENV)
	$(UV) pip install --quiet --compile-bytecode --python $(LS_VENV)/bin/python -r devstack/label-studio/requirements.txt
	touch $@

$(KAFKA_LIBS)/.installed: devstack/kafka/pom.xml
	rm -rf $(KAFKA_LIBS)
	mvn --batch-mode --quiet -f devstack/kafka/pom.xml package -Dkafka.libs.dir=$(KAFKA_LIBS)
	touch $@

.PHONY: system-packages
system-packages: ## Debian packages (Prometheus, Pushgateway, Chromium, PostgreSQL) when missing
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

.PHONY: lock
lock: | $(UV) ## re-resolve the pinned requirements (see README: upgrading)
	$(UV) pip compile --quiet --upgrade requirements.in -o requirements.txt --python-version $(PYTHON_VERSION)
	$(UV) pip compile --quiet --upgrade devstack/label-studio/requirements.in -o devstack/label-studio/requirements.txt --python-version $(PYTHON_VERSION)

# --- the stack ----------------------------------------------------------------------------

.PHONY: stack-up stack-down stack-status
stack-up: install ## start PostgreSQL, Kafka, S3 (moto), MLflow, Label Studio, Prometheus and Airflow on loopback
	$(EDGELOOP) stack up

stack-down: ## stop every process the stack started
	@if [ -x $(PY) ]; then $(EDGELOOP) stack down; else echo "nothing installed, nothing to stop"; fi

stack-status: ## show the services of the stack
	$(EDGELOOP) stack status

.PHONY: demo
demo: stack-up ## the main job: stack up, demo pipeline loaded, URLs and login printed; PIPELINE=visual_inspection for cameras
	$(EDGELOOP) demo $(if $(PIPELINE),--pipeline $(PIPELINE))

# --- quality ------------------------------------------------------------------------------

.PHONY: lint
lint: $(VENV)/.installed ## ruff (with Airflow AIR rules) and strict mypy
	$(PY) -m ruff check include dags plugins tests benchmarks monitoring
	$(PY) -m mypy

.PHONY: test test-unit test-dags test-integration test-e2e
test: install ## every tier: lint, unit, DAG policy; integration, e2e and the closed loop on the real stack; Kubernetes
	$(MAKE) --no-print-directory lint
	$(MAKE) --no-print-directory test-unit test-dags
	@started=0; if ! $(EDGELOOP) stack status >/dev/null 2>&1; then started=1; fi; \
	$(EDGELOOP) stack up || { [ $$started = 1 ] && $(EDGELOOP) stack down; exit 1; }; \
	$(MAKE) --no-print-directory test-integration test-e2e test-loop test-chaos-reduced; rc=$$?; \
	if [ $$started = 1 ]; then $(EDGELOOP) stack down; fi; exit $$rc
	$(MAKE) --no-print-directory test-k8s

test-unit: $(VENV)/.installed ## fast tests of pure logic
	@$(call run_pytest,tests/unit -q)

test-dags: $(VENV)/.installed ## DAG import, policy and parse-time guards
	@$(call run_pytest,tests/dags -q)

test-integration: install ## tests against the real services of the stack
	@$(call run_pytest,tests/integration -q -m integration)

test-e2e: install ## the real scheduler, dag-processor and triggerer end to end
	@$(call run_pytest,tests/e2e -q -m e2e)

.PHONY: test-loop
test-loop: install ## the closed loop end to end (drift -> new champion on every device; bad model rolled back), sensors and cameras
	@$(call run_pytest,tests/e2e/test_closed_loop.py tests/e2e/test_closed_loop_profiles.py tests/e2e/test_closed_loop_cameras.py -q -m loop)

.PHONY: test-loop-cameras
test-loop-cameras: install ## the camera pipeline's closed loop on the running stack (lighting drift -> new champion on every camera); part of test-loop
	@$(call run_pytest,tests/e2e/test_closed_loop_cameras.py -q -m loop)

# The chaos tier kills services: always on a stack of its own (state folder and ports), never the default one.
CHAOS_STATE_DIR ?= $(CURDIR)/.edgeloop-chaos
CHAOS_PORTS := EDGELOOP_KAFKA_PORT=29092 EDGELOOP_KAFKA_CONTROLLER_PORT=29093 EDGELOOP_S3_PORT=29000 \
  EDGELOOP_MLFLOW_PORT=25000 EDGELOOP_LABEL_STUDIO_PORT=28085 EDGELOOP_AIRFLOW_PORT=28080 \
  EDGELOOP_PROMETHEUS_PORT=29090 EDGELOOP_PUSHGATEWAY_PORT=29091 EDGELOOP_EXPORTER_PORT=29100 \
  EDGELOOP_POSTGRES_PORT=25432
CHAOS_ENV := $(CHAOS_PORTS) EDGELOOP_STATE_DIR=$(CHAOS_STATE_DIR) AIRFLOW_HOME=$(CHAOS_STATE_DIR)/airflow \
  EDGELOOP_LABEL_STUDIO_VENV=$(LS_VENV) EDGELOOP_KAFKA_LIBS=$(KAFKA_LIBS)

.PHONY: test-chaos
test-chaos: install ## one fault per run (kill -9 of broker, scheduler, triggerer; MLflow down 60 s) on a stack of its own; CHAOS=<-k expression>
	@started=0; if ! $(CHAOS_ENV) $(EDGELOOP) stack status >/dev/null 2>&1; then started=1; fi; \
	$(CHAOS_ENV) $(EDGELOOP) stack up || { [ $$started = 1 ] && $(CHAOS_ENV) $(EDGELOOP) stack down; exit 1; }; \
	$(CHAOS_ENV) $(PYTEST) tests/chaos -q -s -m chaos $(if $(CHAOS),-k "$(CHAOS)"); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "no tests collected for: tests/chaos -m chaos" >&2; rc=1; fi; \
	if [ $$started = 1 ]; then $(CHAOS_ENV) $(EDGELOOP) stack down; fi; exit $$rc

# A few faults of the schedule, run by `make test` last on its own stack (each fault ends what it did to a
# service): the two on the data path, which need no fleet and no champion.
CHAOS_REDUCED ?= broker_killed_during_ingest or s3_unresponsive_for_a_minute_during_ingest

.PHONY: test-chaos-reduced
test-chaos-reduced: install ## the reduced fault schedule on the running stack (part of make test, after the loop)
	@EDGELOOP_CHAOS_ON_TEST_STACK=1 $(call run_pytest,tests/chaos -q -s -m chaos -k "$(CHAOS_REDUCED)")

.PHONY: fuzz
fuzz: $(VENV)/.installed ## fuzz every parser at a trust boundary with Hypothesis for FUZZ_MINUTES (10); not in make test
	$(PY) -m tests.helpers.fuzz --minutes $(or $(FUZZ_MINUTES),10)

# --- benchmarks (not part of make test) -----------------------------------------------------

.PHONY: bench-parse
bench-parse: $(VENV)/.installed ## DAG parse time per pipeline, and for 100 generated pipelines
	$(PY) benchmarks/bench_parse.py

.PHONY: bench-ingest soak-ingest
bench-ingest: stack-up ## 1,000,000 records: raw consume loop vs ConsumeFromTopicOperator vs edgeloop ingest
	$(PY) benchmarks/bench_ingest.py

soak-ingest: stack-up ## ingest killed with SIGKILL at 1000 points; prints lost and duplicated records
	$(PY) benchmarks/soak_ingest.py --kills 1000

.PHONY: bench-drift
bench-drift: $(VENV)/.installed ## 1,000,000 rows x 20 columns: edgeloop drift check vs a plain Evidently DataDriftPreset; the demo window's check
	$(PY) benchmarks/bench_drift.py

.PHONY: bench-train
bench-train: stack-up ## log-and-register vs MLflow defaults; 100,000 records with a 20-trial search
	$(PY) benchmarks/bench_train.py

.PHONY: bench-fleet
bench-fleet: stack-up ## 10,000 simulated devices for 60 s: msg/s, CPU, RSS, config push time
	$(PY) benchmarks/bench_fleet.py

.PHONY: bench-annotate
bench-annotate: stack-up ## select and open a 1,000-task batch from 1,000,000 records; export 1,000 annotations
	$(PY) benchmarks/bench_annotate.py

.PHONY: bench-generator
bench-generator: stack-up ## Pipelines page and API with 100 pipelines
	$(PY) benchmarks/bench_generator.py

.PHONY: bench-rollout
bench-rollout: stack-up ## 10,000 simulated devices in 20 groups: gated waves vs naive pushes, failing canary; rollout policy: 10,000 paced at 1,000/min and exponentially, abort criteria on a bad model, shadow CPU cost
	$(PY) benchmarks/bench_rollout.py
	$(PY) benchmarks/bench_rollout_policy.py --devices 10000 --rate 1000

.PHONY: bench-metadata
bench-metadata: $(VENV)/.installed $(KAFKA_LIBS)/.installed system-packages ## task start latency with the metadata on SQLite vs PostgreSQL (two stacks of its own, one after the other); BENCH_ARGS=--rollout adds bench-rollout's DAG run
	EDGELOOP_KAFKA_LIBS=$(KAFKA_LIBS) $(PY) benchmarks/bench_metadata.py $(BENCH_ARGS)

.PHONY: bench-agent
bench-agent: stack-up ## edge agent: ONNX vs scikit-learn latency, agent RSS, artifact size, store-and-forward drain
	$(PY) benchmarks/bench_agent.py

.PHONY: bench-uplink
bench-uplink: $(VENV)/.installed ## bytes a device sends per hour in raw and profiles mode; cloud merge of 10,000 devices' profiles
	$(PY) benchmarks/bench_uplink.py

.PHONY: bench-vision
bench-vision: stack-up ## cameras: single-frame ONNX latency, drift check on 100,000 frames' features, claim check vs a raw put_object loop
	set -a; . $(STATE_DIR)/stack.env; set +a; $(PY) benchmarks/bench_vision.py

.PHONY: bench-loop
bench-loop: stack-up ## the closed loop 3 times (median and worst per stage); alert -> DAG run latency over 20 alerts
	$(PY) benchmarks/bench_loop.py

.PHONY: k8s-build k8s-up k8s-down test-k8s bench-k8s-rollout
k8s-build: ## build kube-apiserver, controller-manager, scheduler, etcd, kubectl and kwok from Go modules (cached)
	bash devstack/k8s/build.sh $(STATE_DIR)

k8s-up: $(VENV)/.installed k8s-build ## a real Kubernetes control plane on loopback with KWOK edge nodes
	$(PY) -m edgeloop.devstack.k8s up

k8s-down: ## stop the Kubernetes control plane
	$(PY) -m edgeloop.devstack.k8s down

test-k8s: $(VENV)/.installed k8s-build ## the rollout against the real API server (KWOK nodes)
	@$(call run_pytest,tests/k8s -q -m k8s)

bench-k8s-rollout: $(VENV)/.installed k8s-build ## 1,000 KWOK edge nodes: edgeloop's rollout vs kubectl rollout
	$(PY) benchmarks/bench_k8s_rollout.py

.PHONY: dashboards
dashboards: $(VENV)/.installed ## regenerate the Grafana dashboards (JSON) from monitoring/grafana/build_dashboards.py
	$(PY) monitoring/grafana/build_dashboards.py

.PHONY: docs-images
docs-images: export EDGELOOP_README_IMAGES := $(CURDIR)/docs/img
docs-images: stack-up ## refresh the README's pictures in docs/img on purpose (browser tests, closed loop, demo charts); make test never writes there
	@$(call run_pytest,tests/e2e/test_generator_browser.py -q -m e2e)
	@$(call run_pytest,tests/e2e/test_closed_loop.py tests/e2e/test_closed_loop_profiles.py tests/e2e/test_closed_loop_cameras.py -q -m loop)
	set -a; . $(STATE_DIR)/stack.env; set +a; $(PY) -m tests.e2e.test_pipeline_charts --out $(EDGELOOP_README_IMAGES)/pipelines-charts.png

.PHONY: clean
clean: stack-down ## stop the stack and remove its state (keeps the virtualenvs and Kafka jars)
	rm -rf $(STATE_DIR)/airflow $(STATE_DIR)/kafka $(STATE_DIR)/mlflow $(STATE_DIR)/label-studio $(STATE_DIR)/postgres \
	  $(STATE_DIR)/prometheus $(STATE_DIR)/logs $(STATE_DIR)/pids $(STATE_DIR)/stack.env $(STATE_DIR)/secrets.json
