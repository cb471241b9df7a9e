"""wavstream.stream imports and works with torch made unimportable; public names are pinned."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import wavstream.stream as ws

STREAM_DIR = Path(ws.__file__).resolve().parent

_BLOCK_TORCH = r"""
import sys, importlib.abc

class _NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch.") or name in ("torchaudio", "torchvision"):
            raise ImportError(f"torch is blocked in this test ({name})")
        return None

sys.meta_path.insert(0, _NoTorch())
import wavstream.stream as ws
import wavstream.cli.transcribe, wavstream.cli.features
import wavstream.stream.engines.tensorrt
import numpy as np
# Exercise the runtime a little, not only the import.
rb = ws.RingBuffer(100); rb.push(np.ones(10, np.float32)); assert rb.read(10) is not None
ws.StreamResampler(44100).process(np.zeros(441, np.float32))
bad = [m for m in sys.modules if m == "torch" or m.startswith("torch.")]
assert not bad, bad
print("OK")
"""


def test_import_without_torch_in_subprocess() -> None:
    r = subprocess.run([sys.executable, "-c", _BLOCK_TORCH], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "OK"


def test_no_torch_import_in_sources() -> None:
    for f in STREAM_DIR.rglob("*.py"):
        text = f.read_text()
        assert "import torch" not in text and "from torch" not in text, f


def test_public_api_is_pinned() -> None:
    expected = {
        "Recognizer", "Stream", "DecodingConfig", "EndpointConfig", "EndpointRule", "Endpointer",
        "resolve_model", "DEFAULT_MODEL_DIR", "WavstreamError", "Event", "Partial", "Final", "Word", "Features",
        "FORMAT_VERSION", "Bundle", "BundleConfig", "StateSpec", "BundleError", "BundleNotFoundError",
        "load_bundle", "Engine", "StepResult", "OrtEngine", "create_engine", "stack_states",
        "unstack_states", "ChunkSizeError", "StateShapeError", "EngineUnavailableError", "Vocabulary",
        "LmConfig", "StreamingCtcDecoder", "greedy_decode", "prefix_beam_search", "RingBuffer",
        "RingBufferClosed", "StreamResampler", "MicrophoneSource", "FileSource", "StdinSource",
        "SourceError", "list_input_devices", "AudioFormatError", "DeviceLostError",
    }
    assert set(ws.__all__) == expected
    for name in ws.__all__:
        assert hasattr(ws, name), name
    from wavstream.stream.engines import TensorRTEngine

    assert TensorRTEngine.__name__ == "TensorRTEngine"
