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
graph: MLAS, the kernels the engines run); the larger counts. The bf16 peak
(torch.mm on bfloat16 tensors: oneDNN's AMX tiles where the CPU has them) is
measured beside it. Efficiency = counted FLOPs of a batched
``Recognizer.decode_streams`` call / its wall time / the fp32 peak, for every
engine and precision (``engines.CPU_ROWS``); bf16 rows also give their share
of the bf16 peak. The engines are timed in turn at each batch size (a few
rounds, the fastest run of each counting), and each engine's per-stream cost
at batch 1 / at batch 16 is reported ("per_stream_gain").
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


def _torch_mm_gflops(n: int, seconds: float, dtype: Any) -> float:
    """Best GFLOP/s of 5 timed runs of an n x n ``torch.mm`` in ``dtype``."""
    import torch

    a = torch.randn(n, n, dtype=dtype)
    b = torch.randn(n, n, dtype=dtype)
    c = torch.empty(n, n, dtype=dtype)
    best = 0.0
    for _ in range(5):
        per, _ = time_loop(lambda: torch.mm(a, b, out=c), min_calls=2, min_seconds=seconds / 5, warmup=1)
        best = max(best, 2.0 * n ** 3 / per / 1e9)
    return best


def matmul_peak(threads: int, n: int = 2048, seconds: float = 1.0) -> dict:
    """Measured fp32 matrix-multiply peak (GFLOP/s): the best of 5 timed runs of an
    n x n product in torch (``torch.mm``) and in ONNX Runtime (one MatMul node,
    the kernel library the engines use); the larger of the two is the peak.
    ``bf16_gflops``: the same product in torch on bfloat16 tensors (AMX where
    the CPU has it), the ceiling of the bf16 engines' rows."""
    import torch

    from .common import set_torch_threads

    set_torch_threads(threads)
    best = _torch_mm_gflops(n, seconds, torch.float32)
    try:
        ort_best: float | None = _ort_matmul_gflops(threads, n, seconds)
    except Exception:
        ort_best = None
    try:
        bf16: float | None = _torch_mm_gflops(n, seconds, torch.bfloat16)
    except Exception:  # a torch build without bf16 matmul on this CPU
        bf16 = None
    return {"gflops": max(best, ort_best or 0.0), "torch_gflops": best, "onnxruntime_gflops": ort_best,
            "bf16_gflops": bf16, "size": n, "threads": threads, "dtype": "float32",
            "library": f"torch {torch.__version__}, onnxruntime"}


def _decode_runner(rec: Any, batch: int, audio: Any, settings: Settings) -> Any:
    """A function timing ``rec.decode_streams`` on ``batch`` streams, one chunk each (seconds per call)."""
    cfg = rec.config
    streams = [rec.create_stream() for _ in range(batch)]

    def one() -> None:
        for s in streams:
            s.accept_waveform(audio[: cfg.chunk_samples], cfg.sample_rate)
        rec.decode_streams(streams)

    rec.engine.warmup([batch])  # OpenVINO: compile this batch's shape outside the timed runs
    one()

    def measure() -> float:
        per, _ = time_loop(one, min_calls=settings.pick(2, 3), min_seconds=settings.pick(0.05, 0.3), warmup=1)
        return per

    return measure


def batched_server_path(bundle: Any, model_config: Any, settings: Settings, peak: dict,
                        batches: tuple[int, ...], label: str, engines: Optional[tuple[str, ...]] = None
                        ) -> tuple[list[dict], dict]:
    """Achieved FLOP/s of ``Recognizer.decode_streams`` (greedy CTC, features
    emitted) on B streams at once, for each engine row of ``engines`` (default
    every CPU row), timed in turn; efficiency against the fp32 (and, for bf16,
    the bf16) peak. Returns (rows, rows left out -> why)."""
    from wavstream.stream import Recognizer

    from .common import foreign_mark, foreign_share, noise
    from .engines import CPU_ROWS, cpu_engines
    from .single_stream import interleaved

    make, left_out = cpu_engines(bundle, settings.threads, engines or CPU_ROWS)
    recs = {k: Recognizer(f(), emit_features=True) for k, f in make.items()}
    cfg = next(iter(recs.values())).config
    chunk_s = cfg.chunk_samples / cfg.sample_rate
    fl = flops_per_audio_second(model_config, "stream", cfg.chunk_frames, cfg.left_chunks)["total"]
    rows = []
    audio = noise(chunk_s * 4 + 1, seed=3)
    for B in batches:
        runners = {k: _decode_runner(rec, B, audio, settings) for k, rec in recs.items()}
        mark = foreign_mark()
        best = interleaved(runners, settings.pick(1, 3))
        share = foreign_share(mark)
        del runners
        for k, per in best.items():
            achieved = fl * chunk_s * B / per / 1e9
            rows.append({
                "model": label, "name": k, "engine": k.split(" ")[0], "precision": k.split(" ")[1], "batch": B,
                "seconds_per_call": per, "seconds_per_stream": per / B,
                "audio_seconds_per_second": B * chunk_s / per, "gflops_achieved": achieved,
                "foreign_cpu_share": share,
            })
        set_peak(rows, peak)
        settings.log("efficiency", f"{label} batch {B}: " + ", ".join(
            f"{r['name']} {r['gflops_achieved']:.1f} GFLOP/s = {100 * r['efficiency']:.0f} %"
            for r in rows if r["batch"] == B) + " of the fp32 peak")
    for rec in recs.values():
        rec.engine.close()
    return rows, left_out


def set_peak(rows: list[dict], peak: dict) -> None:
    """(Re)compute each row's share of the fp32 peak ("efficiency") and, for
    bf16 rows, of the bf16 peak ("efficiency_bf16_peak")."""
    for r in rows:
        r["efficiency"] = r["gflops_achieved"] / peak["gflops"]
        if r.get("precision") == "bf16" and peak.get("bf16_gflops"):
            r["efficiency_bf16_peak"] = r["gflops_achieved"] / peak["bf16_gflops"]


def per_stream_gain(rows: list[dict], big: int = 16, small: int = 1) -> list[dict]:
    """For each model and engine row: seconds per stream at batch ``small`` /
    at batch ``big`` (how much cheaper a stream is in a batch of ``big``)."""
    out = []
    for key in dict.fromkeys((r["model"], r["name"]) for r in rows):
        by_b = {r["batch"]: r["seconds_per_stream"] for r in rows if (r["model"], r["name"]) == key}
        if small in by_b and big in by_b:
            out.append({"model": key[0], "name": key[1], "engine": key[1].split(" ")[0],
                        "precision": key[1].split(" ")[1], "small_batch": small, "big_batch": big,
                        "small_s_per_stream": by_b[small], "big_s_per_stream": by_b[big],
                        "gain": by_b[small] / by_b[big]})
    return out


def summarise(rows: list[dict], peak: dict, left_out: dict) -> dict:
    """The efficiency section from its rows (shares of ``peak`` set here): the best row and the per-stream gains."""
    set_peak(rows, peak)
    best = max(rows, key=lambda r: r["efficiency"]) if rows else None
    return {"peak": peak, "rows": rows, "best": best, "per_stream_gain": per_stream_gain(rows),
            "left_out": left_out}


def run(settings: Settings, bundles: dict, peak: dict) -> dict:
    """bundles: label -> (bundle folder, model config, batch sizes[, engine rows]). Returns the efficiency section."""
    rows: list[dict] = []
    left_out: dict[str, dict] = {}
    for label, spec in bundles.items():
        path, cfg, batches = spec[:3]
        engines = spec[3] if len(spec) > 3 else None
        t0 = time.perf_counter()
        got, left = batched_server_path(path, cfg, settings, peak, batches, label, engines)
        rows += got
        if left:
            left_out[label] = left
        settings.log("efficiency", f"{label} done in {time.perf_counter() - t0:.1f} s")
    return summarise(rows, peak, left_out)
