"""backend="auto": OpenVINO when it is installed and measures faster for this bundle, else ONNX Runtime.

The probe builds both engines at the same precision (the numbers agree to
~1e-5, so the choice never changes what is recognised), times single-stream
steps of each in turn and keeps the faster; the other engine is closed. It
costs about one OpenVINO compile plus ``rounds * steps`` steps of each engine
(about 1-2 s for the default model). Batch 1 is what it measures: a server
whose batches are large gains more from OpenVINO than the probe shows.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ..bundle import Bundle
from .base import Engine, EngineUnavailableError
from .ort import OrtEngine

__all__ = ["AutoChoice", "choose_engine"]

# OpenVINO must beat ONNX Runtime by this factor: a tie on a noisy machine keeps the default.
MARGIN = 0.95


@dataclass
class AutoChoice:
    """What the probe found: the engine kept and the seconds per step measured."""

    engine: Engine
    backend: str  # "openvino" or "onnxruntime"
    step_s: dict[str, float] = field(default_factory=dict)  # backend -> fastest measured step
    reason: str = ""


def _step_time(engine: Engine, chunks: list[np.ndarray], steps: int) -> float:
    states = engine.init_state(1)
    t0 = time.perf_counter()
    for i in range(steps):
        states = engine.step(chunks[i % len(chunks)], states).states
    return (time.perf_counter() - t0) / steps


def choose_engine(
    bundle: Bundle,
    *,
    quantized: bool = False,
    intra_op_threads: Optional[int] = None,
    steps: int = 6,
    rounds: int = 3,
    spin_us: Optional[int] = 0,
) -> AutoChoice:
    """Build the faster CPU engine for ``bundle`` (see the module docstring).

    spin_us: ONNX Runtime's pool-thread spinning (OrtEngine's argument)."""
    ort_engine = OrtEngine(bundle, quantized=quantized, device="cpu", intra_op_threads=intra_op_threads,
                           spin_us=spin_us)
    try:
        from .openvino import OpenVinoEngine

        ov_engine = OpenVinoEngine(bundle, precision="int8" if quantized else "fp32",
                                   intra_op_threads=intra_op_threads)
    except EngineUnavailableError as exc:
        return AutoChoice(ort_engine, "onnxruntime", reason=f"OpenVINO not usable: {exc}")
    rng = np.random.default_rng(0)
    chunks = [(0.1 * rng.standard_normal((1, ort_engine.chunk_samples))).astype(np.float32) for _ in range(4)]
    engines: dict[str, Engine] = {"onnxruntime": ort_engine, "openvino": ov_engine}
    best = {k: float("inf") for k in engines}
    for e in engines.values():  # warm-up: first runs allocate and (OpenVINO) compile
        _step_time(e, chunks, 2)
    for _ in range(rounds):  # interleaved, fastest round counts: a busy moment slows both
        for k, e in engines.items():
            best[k] = min(best[k], _step_time(e, chunks, steps))
    pick = "openvino" if best["openvino"] < MARGIN * best["onnxruntime"] else "onnxruntime"
    engines.pop("openvino" if pick == "onnxruntime" else "onnxruntime").close()
    reason = (f"single-stream step {1e3 * best['openvino']:.2f} ms (OpenVINO) vs "
              f"{1e3 * best['onnxruntime']:.2f} ms (ONNX Runtime)")
    return AutoChoice(engines[pick], pick, best, reason)
