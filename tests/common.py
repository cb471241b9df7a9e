"""What the whole test suite shares: the repository root and the parity tolerance.

Tests import the helper modules in this folder (common, server_harness,
toy_bundle, virtual_mic) by name: pyproject's pytest ``pythonpath`` puts
tests/ on sys.path, and test folders mirror the package (tests/stream,
tests/server, tests/training, tests/export, tests/bench, tests/cli).
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Largest |difference| allowed between two computations that must agree in fp32: streaming vs offline,
# ONNX vs torch, the importer vs Hugging Face.
PARITY_TOL = 1e-4
