#!/usr/bin/env bash
# Install everything the test suite needs (system packages included), then
# run the whole suite. Used by README and by CI (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

# --- system packages (.ci/system-packages.txt) -------------------------------
pkgs=()
while read -r line; do
  line="${line%%#*}"; line="$(echo "$line" | xargs)"
  [[ -z "$line" ]] && continue
  case "$line" in
    contrib:*|non-free:*) continue ;;  # optional engines; tests do not need them
    *) pkgs+=("$line") ;;
  esac
done < .ci/system-packages.txt
missing=()
for p in "${pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# --- Python packages ---------------------------------------------------------------
PY="${PYTHON:-python3}"
if [[ -z "${VIRTUAL_ENV:-}" ]]; then
  [[ -d .venv ]] || "$PY" -m venv .venv
  source .venv/bin/activate
fi
python -m pip install -q --upgrade pip
python -m pip install -q "torch==2.13.0"   # the CPU build; pinned before anything pulls a CUDA one
python -m pip install -q -e ".[dev]"

# --- Triton Inference Server (CPU, python backend) for tests/stream/test_triton_engine.py -------------
# Its own venv (nvidia-pytriton needs numpy<2), created once and reused (~/.cache/wavstream/triton-venv).
bash scripts/triton_env.sh >/dev/null

# --- the suite --------------------------------------------------------------------------
export CI="${CI:-1}"   # tests that need a system component must run, not skip
python -m pytest -q "$@"
