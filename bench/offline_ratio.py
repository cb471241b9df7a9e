"""Streaming vs offline compute per second of audio, same model, same runtime.

For each model (streaming form, chunk C and left chunks L): torch seconds per
audio second of feeding a 30 s utterance chunk by chunk through ``step``,
divided by torch seconds per audio second of the offline form
``model(wave)`` (the same chunk mask, one call over the utterance). Goal:
<= 1.2. Both run in torch on the same threads, batch 1; the best of 2 runs
each. The counted-FLOP ratio is reported beside it: the streaming step
multiplies a fixed (L+1)*C-key window while the offline form multiplies the
full T x T score matrix (masked), so for long utterances streaming does
*less* arithmetic, and what remains is per-call overhead.
"""

from __future__ import annotations

import time
from typing import Any

from .common import Settings, noise


def _seconds(fn: Any, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def measure(label: str, model: Any, seconds: float, settings: Settings) -> dict:
    import torch

    from .efficiency import flops_per_audio_second

    audio = noise(seconds, seed=7)
    n = model.chunk_samples
    usable = len(audio) // n * n
    audio = audio[:usable]
    wave = torch.from_numpy(audio)[None, :]
    chunks = [wave[:, i:i + n] for i in range(0, usable, n)]

    def offline() -> None:
        with torch.inference_mode():
            model(wave)

    def streaming() -> None:
        with torch.inference_mode():
            st = model.init_state(1)
            for x in chunks:
                _, _, st = model.step(x, st)

    with torch.inference_mode():  # warm-up (allocator, first-call costs)
        model(wave[:, : 4 * n])
        st = model.init_state(1)
        for x in chunks[:3]:
            _, _, st = model.step(x, st)
    reps = settings.pick(1, 2)
    t_off = _seconds(offline, reps)
    t_str = _seconds(streaming, reps)
    dur = usable / 16000
    cfg = model.config
    f_str = flops_per_audio_second(cfg, "stream")["total"]
    f_off = flops_per_audio_second(cfg, "offline", utterance_s=dur)["total"]
    row = {
        "model": label, "utterance_s": dur, "chunk_frames": cfg.chunk_frames, "left_chunks": cfg.left_chunks,
        "offline_s_per_audio_s": t_off / dur, "streaming_s_per_audio_s": t_str / dur,
        "ratio": t_str / t_off, "flops_ratio": f_str / f_off, "runtime": "torch",
    }
    settings.log("offline_ratio", f"{label}: streaming/offline = {row['ratio']:.2f} "
                                  f"(counted FLOPs {row['flops_ratio']:.2f})")
    return row


def run(settings: Settings, base_published: Any) -> dict:
    from wavstream.training.models import FAMILIES

    from .common import chunk_frames_for, set_torch_threads
    from .single_stream import streaming_from_published, tiny_model

    set_torch_threads(settings.threads)
    seconds = settings.pick(6.0, 30.0)
    rows = []
    for fam in settings.pick(("wav2vec2", "wav2vec"), FAMILIES):
        m = tiny_model(fam)
        C, L = chunk_frames_for(m.config, 320)
        m.set_chunking(C, L)
        rows.append(measure(f"{fam}-tiny", m, seconds, settings))
    if base_published is not None:
        size = settings.pick("hf-tiny", "base")
        rows.append(measure(f"wav2vec2-{size}", streaming_from_published(base_published, 320), seconds, settings))
    worst = max((r["ratio"] for r in rows), default=None)
    return {"utterance_s": seconds, "chunk_ms": 320, "goal": 1.2, "rows": rows, "worst_ratio": worst,
            "meets_goal": bool(worst is not None and worst <= 1.2)}

