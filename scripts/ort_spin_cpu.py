"""CPU used by one real-time stream of the default bundle, with and without
onnxruntime's pool threads spinning between steps (demos/README.md).

    python scripts/ort_spin_cpu.py [seconds]

Steps the bundle once per chunk (320 ms), sleeping in between, with 2
intra-op threads, and prints the process CPU time as % of one core.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from wavstream.stream.engines.ort import OrtEngine
from wavstream.stream.recognizer import DEFAULT_MODEL_DIR


def cpu_share(spin: bool, seconds: float) -> float:
    eng = OrtEngine(DEFAULT_MODEL_DIR, device="cpu", intra_op_threads=2, spin=spin)
    n = eng.chunk_samples
    period = n / 16000
    states = eng.init_state(1)
    x = (np.random.default_rng(0).standard_normal((1, n)) * 0.05).astype(np.float32)
    for _ in range(3):  # warm-up
        states = eng.step(x, states).states
    t0, c0 = time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < seconds:
        states = eng.step(x, states).states
        time.sleep(period - (time.perf_counter() - t0) % period)
    return 100 * (time.process_time() - c0) / (time.perf_counter() - t0)


if __name__ == "__main__":
    secs = float(sys.argv[1]) if len(sys.argv) > 1 else 8.0
    for spin in (False, True):
        print(f"spin={spin}: {cpu_share(spin, secs):.1f} % of one core")
