"""What the whole test suite shares: the repository root, the parity tolerance, speech from espeak-ng.

Tests import the helper modules in this folder (common, server_harness,
toy_bundle, virtual_mic) by name: pyproject's pytest ``pythonpath`` puts
tests/ on sys.path, and test folders mirror the package (tests/stream,
tests/server, tests/training, tests/export, tests/bench, tests/cli).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

ROOT = Path(__file__).resolve().parents[1]

# Largest |difference| allowed between two computations that must agree in fp32: streaming vs offline,
# ONNX vs torch, the importer vs Hugging Face.
PARITY_TOL = 1e-4


def espeak(text: str, voice: str = "en-us", rate: int = 16000) -> "np.ndarray":
    """``text`` read by espeak-ng (installed by scripts/test.sh), float32 mono at ``rate`` Hz."""
    import io
    import subprocess

    import soundfile as sf
    import soxr

    wav = subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "--stdout", text], capture_output=True, check=True).stdout
    x, sr = sf.read(io.BytesIO(wav), dtype="float32")
    return soxr.resample(x, sr, rate)
