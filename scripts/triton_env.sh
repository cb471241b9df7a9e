#!/usr/bin/env bash
# Create (once) the Python environment that runs a CPU Triton Inference Server for the tests:
# nvidia-pytriton ships tritonserver with the python backend but needs numpy<2, so it gets its own venv,
# plus what wavstream's torch-free runtime needs inside Triton's python backend.
# Idempotent: a marker file records what was installed; a second run with the same list does nothing.
# Usage: scripts/triton_env.sh [VENV]   (default: $WAVSTREAM_TRITON_VENV or ~/.cache/wavstream/triton-venv)
set -euo pipefail
VENV="${1:-${WAVSTREAM_TRITON_VENV:-$HOME/.cache/wavstream/triton-venv}}"
REQS=("nvidia-pytriton==0.7.0" "numpy<2" "onnxruntime>=1.17" "soxr>=0.3" "soundfile>=0.12" "sounddevice>=0.4.6" "websockets>=14")
MARK="$VENV/.wavstream-triton-env"
WANT="$(printf '%s\n' "${REQS[@]}")"
if [[ -f "$MARK" && "$(cat "$MARK")" == "$WANT" ]]; then
  echo "$VENV"; exit 0
fi
PY="${PYTHON:-python3}"
[[ -x "$VENV/bin/python" ]] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q "${REQS[@]}" >&2
printf '%s' "$WANT" > "$MARK"
echo "$VENV"
