"""Resident memory per added stream.

In process: one Recognizer (ORT fp32), streams added in steps, each fed two
chunks of audio and decoded in one batched call (so its engine state, CTC
decoder and queues are real arrays, not lazily-empty). Resident set size
(/proc VmRSS) after each step; the slope of a least-squares line is the
memory per stream. The state tensors' size from the bundle config is the
floor it is compared with. The server section measures the same slope in the
server process under load.
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import numpy as np

from .common import Settings, linear_slope, noise, rss_bytes  # noqa: F401


def run(settings: Settings, bundle: Path, label: str) -> dict:
    """Measure in a fresh child process (memory freed by earlier sections would
    otherwise be reused by the new streams and hide their cost)."""
    import json
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "wavstream.bench.memory", str(bundle), str(settings.threads),
           "quick" if settings.quick else "full", label]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"memory child failed ({proc.returncode}): {proc.stderr[-1500:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    slope = out["rss_per_stream_bytes"]
    settings.log("memory", f"{label}: {0 if slope is None else slope / 1024:.0f} KiB per stream "
                           f"(state tensors {out['state_bytes_per_stream'] / 1024:.0f} KiB)")
    return out


def measure(bundle: Path, threads: int, quick: bool, label: str) -> dict:
    from wavstream.stream import Recognizer, load_bundle

    cfg = load_bundle(bundle).config
    state_bytes = sum(int(np.prod([d for d in s.shape[1:]] or [1])) * np.dtype(s.np_dtype).itemsize
                      for s in cfg.states)
    rec = Recognizer.from_bundle(bundle, intra_op_threads=threads, emit_features=True)
    audio = noise(2 * cfg.chunk_samples / cfg.sample_rate + 0.01, seed=9)
    # The first step (32 streams, the server's default max batch) sizes ORT's
    # arena and the allocator pools; the slope is fitted over the later steps.
    steps = [8, 16, 24, 32] if quick else [32, 64, 128, 192, 256]
    streams: list[Any] = []
    xs, ys = [], []
    for target in steps:
        new: list[Any] = []
        while len(streams) + len(new) < target:
            s = rec.create_stream()
            s.accept_waveform(audio, cfg.sample_rate)
            new.append(s)
        for g in range(0, len(new), 32):  # the server's default max batch
            group = new[g:g + 32]
            while any(s.queued_samples >= cfg.chunk_samples for s in group):
                rec.decode_streams(group)
        streams += new
        gc.collect()
        xs.append(len(streams))
        ys.append(rss_bytes())
    slope = linear_slope(xs[1:], ys[1:])
    return {"model": label, "streams": xs, "rss_bytes": ys, "rss_per_stream_bytes": slope,
            "state_bytes_per_stream": state_bytes, "method": "Recognizer streams in a fresh process, VmRSS slope over the steps after the first"}


if __name__ == "__main__":
    import json
    import sys

    b, t, q, lab = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "quick", sys.argv[4]
    print(json.dumps(measure(Path(b), t, q, lab)))
