"""Single-stream real-time factor of the streaming step: ONNX Runtime fp32,
ONNX Runtime int8 and torch, at 160 / 320 / 640 ms chunks.

RTF = wall seconds per step / audio seconds per step, one stream (batch 1),
the engine alone (no decoding), after warm-up. The three runtimes are timed
in turn, 3 rounds, >= 0.6 s per timed run; the fastest run of each counts.
"""

from __future__ import annotations

import functools
import gc
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .common import (CHUNK_MS, HF_COMPARE_CHUNK_MS, Settings, chunk_frames_for, export, foreign_mark, foreign_share,
                     time_loop)


def tiny_model(family: str) -> Any:
    import torch

    from wavstream.training.models import CTC_VOCAB, build_model

    torch.manual_seed(0)
    return build_model(family, "tiny", vocab=list(CTC_VOCAB)).eval()


def hf_config(family: str, quick: bool) -> Any:
    """A transformers config: the published BASE architecture, or (quick) a tiny one."""
    import transformers

    cls = {"wav2vec2": transformers.Wav2Vec2Config, "hubert": transformers.HubertConfig,
           "wavlm": transformers.WavLMConfig}[family]
    if not quick:
        return cls()
    return cls(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
               conv_dim=(32,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
               num_buckets=32, max_bucket_distance=80)


def hf_model(family: str, quick: bool) -> Any:
    import torch
    import transformers

    cls = {"wav2vec2": transformers.Wav2Vec2Model, "hubert": transformers.HubertModel,
           "wavlm": transformers.WavLMModel}[family]
    torch.manual_seed(0)
    return cls(hf_config(family, quick)).eval()


def published_from_hf(hf: Any) -> Any:
    from wavstream.training.convert import from_transformers

    return from_transformers(hf).eval()


def streaming_from_published(published: Any, chunk_ms: int) -> Any:
    from wavstream.training.convert import to_streaming

    C, L = chunk_frames_for(published.config, chunk_ms)
    return to_streaming(published, C, L).eval()


def ort_runner(bundle: Path, quantized: bool, settings: Settings, audio: np.ndarray) -> Callable[[], float]:
    """A function that times one run of single-stream ORT steps and returns its RTF."""
    from wavstream.stream import OrtEngine
    from wavstream.stream.engines.ort import BACK_TO_BACK_SPIN_US

    eng = OrtEngine(bundle, quantized=quantized, device="cpu", intra_op_threads=settings.threads,
                    inter_op_threads=1, spin_us=BACK_TO_BACK_SPIN_US)
    return engine_runner(eng, settings, audio)


def engine_runner(eng: Any, settings: Settings, audio: np.ndarray) -> Callable[[], float]:
    """A function that times one run of single-stream steps of any Engine and returns its RTF."""
    n = eng.chunk_samples
    chunk_s = n / 16000
    chunks = [audio[i:i + n][None, :] for i in range(0, len(audio) - n + 1, n)]
    state = {"s": eng.init_state(1), "i": 0}

    def one() -> None:
        x = chunks[state["i"] % len(chunks)]
        state["i"] += 1
        state["s"] = eng.step(x, state["s"]).states

    one()  # an engine that compiles per shape (OpenVINO) does it here, not in a timed run

    def measure() -> float:
        per, _ = time_loop(one, min_calls=settings.pick(3, 8), min_seconds=settings.pick(0.15, 0.6))
        return per / chunk_s

    return measure


def torch_runner(model: Any, settings: Settings, audio: np.ndarray) -> Callable[[], float]:
    import torch

    n = model.chunk_samples
    chunk_s = n / 16000
    x_all = torch.from_numpy(audio)
    chunks = [x_all[i:i + n][None, :] for i in range(0, len(audio) - n + 1, n)]
    state = {"s": model.init_state(1), "i": 0}

    def one() -> None:
        with torch.inference_mode():
            x = chunks[state["i"] % len(chunks)]
            state["i"] += 1
            _, _, state["s"] = model.step(x, state["s"])

    def measure() -> float:
        per, _ = time_loop(one, min_calls=settings.pick(3, 8), min_seconds=settings.pick(0.15, 0.6))
        return per / chunk_s

    return measure


def interleaved(runners: dict[str, Callable[[], float]], repeats: int) -> dict[str, float]:
    """Time the runners in turn, ``repeats`` rounds; the fastest run of each.

    Interleaving puts every runtime in the same conditions (another process
    that starts mid-way slows all of them, not one), and the minimum is the
    run least disturbed."""
    import time as _time

    best = {k: float("inf") for k in runners}
    for _ in range(repeats):
        for k, fn in runners.items():
            best[k] = min(best[k], fn())
            _time.sleep(0.05)  # let the previous runtime's spinning worker threads go idle
    return best


def rtf_ort(bundle: Path, quantized: bool, settings: Settings, audio: np.ndarray) -> float:
    return interleaved({"x": ort_runner(bundle, quantized, settings, audio)}, settings.pick(1, 3))["x"]


def measure_model(label: str, family: str, size: str, make: Callable[[int], Any], chunks: tuple[int, ...],
                  settings: Settings, keep: dict, int8: bool = True) -> list[dict]:
    """``make(chunk_ms)`` -> a streaming torch model at that chunk. Exports, times, returns rows.
    Bundles are recorded in ``keep[(label, chunk_ms)] = (path, config)``."""
    from .common import noise
    from .efficiency import flop_counter_check, flops_per_audio_second

    rows = []
    audio = noise(8.0, seed=1)
    for ms in chunks:
        t0 = time.perf_counter()
        model = make(ms)
        cfg = model.config
        out = settings.work / f"{label}_{ms}ms"
        _, export_s = export(model, out, int8, settings.log, "single_stream",
                             int8_static=int8 and size != "tiny" and ms == HF_COMPARE_CHUNK_MS)
        fl = flops_per_audio_second(cfg, "stream")
        row: dict[str, Any] = {
            "model": label, "family": family, "size": size, "chunk_ms": ms,
            "chunk_frames": cfg.chunk_frames, "left_chunks": cfg.left_chunks,
            "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
            "gflops_per_audio_s": fl["total"] / 1e9, "export_s": export_s,
        }
        runners = {"rtf_ort_fp32": ort_runner(out, False, settings, audio), "rtf_torch": torch_runner(model, settings, audio)}
        if int8:
            runners["rtf_ort_int8"] = ort_runner(out, True, settings, audio)
        mark = foreign_mark()
        row.update(interleaved(runners, settings.pick(1, 3)))
        row.setdefault("rtf_ort_int8", None)
        row["foreign_cpu_share"] = foreign_share(mark)
        del runners
        if ms == 320 or len(chunks) == 1:
            row["flop_counter_ratio"] = flop_counter_check(model, fl["total"] * model.chunk_samples / 16000)
        keep[(label, ms)] = (out, cfg)
        settings.log("single_stream", f"{label} {ms} ms: RTF ort fp32 {row['rtf_ort_fp32']:.4f}, "
                     f"int8 {row['rtf_ort_int8'] if row['rtf_ort_int8'] is None else round(row['rtf_ort_int8'], 4)}, "
                     f"torch {row['rtf_torch']:.4f} ({time.perf_counter() - t0:.1f} s)")
        rows.append(row)
        del model
        gc.collect()
    return rows


def run(settings: Settings, keep: dict, published: Any = None) -> dict:
    from wavstream.training.models import FAMILIES

    from .common import set_torch_threads

    set_torch_threads(settings.threads)
    rows: list[dict] = []
    fams = settings.pick(("wav2vec2", "wav2vec"), FAMILIES)
    chunks = settings.pick((320,), CHUNK_MS)
    for fam in fams:
        rows += measure_model(f"{fam}-tiny", fam, "tiny", functools.partial(_tiny_at, fam), chunks, settings, keep)
    # Base size: wav2vec2 BASE built from the transformers config, imported, made streaming.
    size = settings.pick("hf-tiny", "base")
    if published is None:
        published = published_from_hf(hf_model("wav2vec2", settings.quick))
    rows += measure_model(f"wav2vec2-{size}", "wav2vec2", size,
                          lambda ms: streaming_from_published(published, ms), chunks, settings, keep)
    return {"chunk_ms": list(chunks), "threads": settings.threads, "rows": rows}


def _tiny_at(family: str, ms: int) -> Any:
    m = tiny_model(family)
    C, L = chunk_frames_for(m.config, ms)
    return m.with_chunking(C, L)
