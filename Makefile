# Every user-facing target runs set-up first; set-up is idempotent and cheap when nothing changed.
.PHONY: setup demo dev test test-unit test-scale serve lock weaviate-start weaviate-stop check-defs benchmarks

VENV := .venv
PY := $(VENV)/bin/python
export DAGSTER_HOME ?= $(CURDIR)/data/dagster_home
export DO_NOT_TRACK := 1
export UNSTRUCTURED_DISABLE_NOTICE := 1
export HF_HUB_OFFLINE := 1
export PYTHONWARNINGS ?= ignore::DeprecationWarning

setup:
	@bash scripts/setup.sh

demo: setup
	$(PY) -m hybrid_assets.demo

dev: setup
	@mkdir -p $(DAGSTER_HOME) && cp -n dagster.yaml $(DAGSTER_HOME)/dagster.yaml 2>/dev/null || true
	$(VENV)/bin/dagster dev -w workspace.yaml

# The scale tests (issue #13: PostgreSQL-backed Dagster, the three-node cluster, many tenants, faults)
# are left to `make test-scale`; CI (.ci/run) runs both targets.
test: setup
	$(PY) -m pytest -q -m "not scale"

test-unit: setup
	$(PY) -m pytest -q -m "not integration"

# Beyond one machine: Dagster on a real PostgreSQL, a three-node Weaviate cluster, many tenants, faults.
test-scale: setup
	$(PY) -m pytest -q -m scale

check-defs: setup
	$(VENV)/bin/dagster definitions validate -w workspace.yaml

serve: setup
	$(VENV)/bin/hybrid-assets serve

weaviate-start: setup
	$(VENV)/bin/hybrid-assets weaviate start

weaviate-stop:
	$(VENV)/bin/hybrid-assets weaviate stop

# Each script replaces its own section of benchmarks/RESULTS.md. SHARED = the public datasets' folder.
SHARED ?= ../shared/benchmarks
benchmarks: setup
	$(PY) benchmarks/ingest.py
	$(PY) benchmarks/train.py
	$(PY) benchmarks/serve.py
	$(PY) benchmarks/evaluate.py sample
	@if [ -d "$(SHARED)" ]; then \
	  $(PY) benchmarks/evaluate.py mtrag --shared $(SHARED) && \
	  $(PY) benchmarks/evaluate.py clapnq --shared $(SHARED) && \
	  $(PY) benchmarks/evaluate.py banking77 --shared $(SHARED); \
	else echo "skipping public benchmarks: $(SHARED) not found (set SHARED=...)"; fi

# Re-resolve the lock file from requirements.txt (needs the package index).
lock:
	rm -rf /tmp/hybrid-lock && python3.11 -m venv /tmp/hybrid-lock
	/tmp/hybrid-lock/bin/pip install -q -r requirements.txt
	/tmp/hybrid-lock/bin/pip freeze > requirements.lock
