"""FLOP counting from the model configuration, the measured matmul peak, and
the efficiency of the batched server path.

Method (also in docs/bench.md). A multiply-add counts as 2 FLOPs. Counted:

* conv feature encoder: for every layer, 2 * c_in * c_out * kernel per output
  step, times its output rate (16000 / product of strides so far);
* transformers: feature projection 2 * conv_dim * D per frame; positional
  grouped conv 2 * D * (D / groups) * K; per layer q/k/v/out projections
  8 * D^2, FFN 4 * D * F, attention scores and weighted sum 4 * D * K_ctx
  where K_ctx is the number of keys actually multiplied: (L + 1) * C for the
  streaming step (the fixed-size cache is always multiplied, filled or not),
  T for the offline form (a chunk mask still computes the full T x T
  product); WavLM's gate 16 * D; CTC head 2 * D * V;
* wav2vec / vq-wav2vec: aggregator convs 2 * c_in * c_out * k plus 1x1
  residual projections; vq-wav2vec's Gumbel projection MLP.

Not counted: norms, activations, softmax, adds, the WavLM bucket lookup
(elementwise, O(frames * D) or O(frames * K_ctx), well under 1 %). The count
is checked against torch.utils.flop_counter.FlopCounterMode on one torch step
("flop_counter_ratio" in bench.json).

Peak: the best of several fp32 2048 x 2048 matrix products on the benchmark's
thread count, in torch (torch.mm) and in ONNX Runtime (a one-node MatMul
graph: MLAS, the kernels the engines run); the larger counts. Efficiency = counted FLOPs of a batched ``Recognizer.decode_streams``
call / its wall time / that peak.
"""

from __future__ import annotations

import time
from typing import Any, Optional

from .common import Settings, time_loop


def _conv_flops_per_second(conv_layers: list, sample_rate: int, cin: int = 1) -> tuple[float, float]:
    """(FLOPs per audio second, output frame rate) of a strided conv stack."""
    rate = float(sample_rate)
    total = 0.0
    for cout, k, s in conv_layers:
        rate /= s
        total += 2.0 * cin * cout * k * rate
        cin = cout
    return total, rate


def flops_per_frame_parts(cfg: Any, k_ctx: float) -> dict[str, float]:
    """FLOPs per output frame, by part, excluding the conv encoder (per-second quantity)."""
    parts: dict[str, float] = {}
    V = len(cfg.vocab)
    if cfg.is_transformer:
        D, F = cfg.hidden_size, cfg.ffn_size
        parts["feature_projection"] = 2.0 * cfg.conv_dim * D
        parts["pos_conv"] = 2.0 * D * (D / cfg.pos_conv_groups) * cfg.pos_conv_kernel
        parts["attention_proj"] = cfg.num_layers * 8.0 * D * D
        parts["attention_scores"] = cfg.num_layers * 4.0 * D * k_ctx
        parts["ffn"] = cfg.num_layers * 4.0 * D * F
        if cfg.relative_bias:
            parts["wavlm_gate"] = cfg.num_layers * 16.0 * D
        if V:
            parts["ctc_head"] = 2.0 * D * V
    else:
        agg = 0.0
        cin = cfg.vq_dim if cfg.quantizer == "gumbel" else cfg.conv_dim
        if cfg.quantizer == "gumbel":
            d = cfg.conv_dim
            if cfg.vq_depth <= 1:
                parts["quantizer"] = 2.0 * d * cfg.vq_groups * cfg.vq_vars
            else:
                inner = d * cfg.vq_proj_factor
                parts["quantizer"] = 2.0 * d * inner + 2.0 * inner * inner * (cfg.vq_depth - 2) \
                    + 2.0 * inner * cfg.vq_groups * cfg.vq_vars
        for cout, k, _ in cfg.agg_layers:
            agg += 2.0 * cin * cout * k
            if cfg.agg_skip and cin != cout:
                agg += 2.0 * cin * cout
            cin = cout
        parts["aggregator"] = agg
        if V:
            parts["ctc_head"] = 2.0 * cfg.feature_dim * V
    return parts


def flops_per_audio_second(cfg: Any, mode: str = "stream", chunk_frames: Optional[int] = None,
                           left_chunks: Optional[int] = None, utterance_s: float = 30.0) -> dict:
    """FLOPs per second of audio for the streaming step (mode="stream") or the
    offline form on an utterance of ``utterance_s`` (mode="offline")."""
    C = cfg.chunk_frames if chunk_frames is None else chunk_frames
    L = cfg.left_chunks if left_chunks is None else left_chunks
    conv, frame_rate = _conv_flops_per_second(cfg.conv_layers, cfg.sample_rate)
    if cfg.is_transformer:
        if mode == "stream":
            k_ctx = float(C * (max(L, 0) + 1))
        else:
            T = utterance_s * frame_rate
            if C > 0:
                T = -(-T // C) * C  # padded to whole chunks
            k_ctx = float(T)
    else:
        k_ctx = 0.0
    parts = {k: v * frame_rate for k, v in flops_per_frame_parts(cfg, k_ctx).items()}
    parts["conv_encoder"] = conv
    return {"total": float(sum(parts.values())), "parts": parts, "frame_rate": frame_rate, "k_ctx": k_ctx}


def flop_counter_check(model: Any, counted_per_chunk: float) -> Optional[float]:
    """torch's FlopCounterMode on one streaming step, divided by our count (None if unavailable)."""
    try:
        import torch
        from torch.utils.flop_counter import FlopCounterMode
    except Exception:
        return None
    x = torch.randn(1, model.chunk_samples) * 0.05
    st = model.init_state(1)
    with torch.inference_mode():
        model.step(x, st)
        fc = FlopCounterMode(display=False)
        with fc:
            model.step(x, st)
    total = fc.get_total_flops()
    return float(total / counted_per_chunk) if counted_per_chunk else None


def _ort_matmul_gflops(threads: int, n: int, seconds: float) -> float:
    """Best GFLOP/s of a one-node fp32 MatMul graph (n x n) in ONNX Runtime (MLAS)."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "mm",
                          [helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, n]),
                           helper.make_tensor_value_info("b", TensorProto.FLOAT, [n, n])],
                          [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = min(m.ir_version, 9)
    onnx.checker.check_model(m)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(m.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feed = {"a": rng.standard_normal((n, n), dtype=np.float32), "b": rng.standard_normal((n, n), dtype=np.float32)}
    best = 0.0
    for _ in range(5):
        per, _ = time_loop(lambda: sess.run(["c"], feed), min_calls=2, min_seconds=seconds / 5, warmup=1)
        best = max(best, 2.0 * n ** 3 / per / 1e9)
    return best


def matmul_peak(threads: int, n: int = 2048, seconds: float = 1.0) -> dict:
    """Measured fp32 matrix-multiply peak (GFLOP/s): the best of 5 timed runs of an
    n x n product in torch (``torch.mm``) and in ONNX Runtime (one MatMul node,
    the kernel library the engines use); the larger of the two is the peak."""
    import torch

    from .common import set_torch_threads

    set_torch_threads(threads)
    a = torch.randn(n, n)
    b = torch.randn(n, n)
    c = torch.empty(n, n)
    best = 0.0
    for _ in range(5):
        per, calls = time_loop(lambda: torch.mm(a, b, out=c), min_calls=2, min_seconds=seconds / 5, warmup=1)
        best = max(best, 2.0 * n ** 3 / per / 1e9)
    try:
        ort_best: float | None = _ort_matmul_gflops(threads, n, seconds)
    except Exception:
        ort_best = None
    return {"gflops": max(best, ort_best or 0.0), "torch_gflops": best, "onnxruntime_gflops": ort_best,
            "size": n, "threads": threads, "dtype": "float32", "library": f"torch {torch.__version__}, onnxruntime"}


def batched_server_path(bundle: Any, model_config: Any, settings: Settings, peak_gflops: float,
                        batches: tuple[int, ...], label: str) -> list[dict]:
    """Achieved FLOP/s of ``Recognizer.decode_streams`` (ORT fp32, greedy CTC,
    features emitted) on B streams at once; efficiency against the peak."""
    from wavstream.stream import Recognizer

    from .common import noise

    rec = Recognizer.from_bundle(bundle, intra_op_threads=settings.threads, emit_features=True)
    cfg = rec.config
    chunk_s = cfg.chunk_samples / cfg.sample_rate
    fl = flops_per_audio_second(model_config, "stream", cfg.chunk_frames, cfg.left_chunks)["total"]
    rows = []
    audio = noise(chunk_s * 4 + 1, seed=3)
    for B in batches:
        streams = [rec.create_stream() for _ in range(B)]

        def one() -> None:
            for s in streams:
                s.accept_waveform(audio[: cfg.chunk_samples], cfg.sample_rate)
            rec.decode_streams(streams)

        from .common import foreign_mark, foreign_share

        mark = foreign_mark()
        per, calls = time_loop(one, min_calls=3, min_seconds=settings.pick(0.3, 2.0), warmup=2)
        achieved = fl * chunk_s * B / per
        rows.append({
            "model": label, "batch": B, "seconds_per_call": per, "calls": calls,
            "audio_seconds_per_second": B * chunk_s / per,
            "gflops_achieved": achieved / 1e9, "efficiency": achieved / 1e9 / peak_gflops,
            "foreign_cpu_share": foreign_share(mark),
        })
        settings.log("efficiency", f"{label} batch {B}: {achieved / 1e9:.1f} GFLOP/s = "
                                   f"{100 * achieved / 1e9 / peak_gflops:.0f} % of peak, "
                                   f"{B * chunk_s / per:.0f}x real time")
    return rows


def run(settings: Settings, bundles: dict, peak: dict) -> dict:
    """bundles: label -> (bundle folder, model config). Returns the efficiency section."""
    rows: list[dict] = []
    for label, (path, cfg, batches) in bundles.items():
        t0 = time.perf_counter()
        rows += batched_server_path(path, cfg, settings, peak["gflops"], batches, label)
        settings.log("efficiency", f"{label} done in {time.perf_counter() - t0:.1f} s")
    best = max(rows, key=lambda r: r["efficiency"]) if rows else None
    return {"peak": peak, "rows": rows, "best": best}
