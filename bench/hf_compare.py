"""wavstream streaming (ONNX Runtime) against Hugging Face transformers offline (torch).

For wav2vec2, HuBERT and WavLM: a transformers model is built from its
BASE config (random weights, seed 0); ``from_transformers`` imports it
(identical weights: the published-form output is compared with HF's
``last_hidden_state`` and the max |diff| reported), ``to_streaming`` makes
the 320 ms streaming form (left context 1.28 s), which is exported and run
chunk by chunk, batch 1, by every CPU engine and precision the machine runs
(``engines.CPU_ROWS``: ONNX Runtime fp32 / int8, OpenVINO fp32 / bf16 / int8,
the last on the bundle's statically calibrated model.qdq.onnx;
a row that cannot run is listed in ``left_out`` with the reason). HF runs the
whole utterance in one call (torch, inference mode). HF and every engine are
timed in turn, 3 rounds; the fastest run of each counts. Ratio = wavstream
seconds per audio second / HF seconds per audio second (lower is better;
< 1 means the streaming path is cheaper than HF's offline pass). Each row
names its fastest engine ("best_engine") beside the ONNX Runtime fp32 baseline.
"""

from __future__ import annotations

import gc
import time
from typing import Any

from .common import HF_COMPARE_CHUNK_MS, Settings, export, noise


def _hf_runner(hf: Any, seconds: float) -> Any:
    """A function timing one offline HF call on ``seconds`` of audio (seconds per audio second)."""
    import torch

    wave = torch.from_numpy(noise(seconds, seed=11))[None, :]
    with torch.inference_mode():
        hf(wave[:, :16000])  # warm-up

    def measure() -> float:
        with torch.inference_mode():
            t0 = time.perf_counter()
            hf(wave)
            return (time.perf_counter() - t0) / seconds

    return measure


def _parity(hf: Any, published: Any) -> float:
    import torch

    wave = torch.from_numpy(noise(1.0, seed=5))[None, :]
    with torch.inference_mode():
        a = hf(wave).last_hidden_state
        b = published(wave).features
    return float((a - b).abs().max())


def run(settings: Settings, keep: dict, base_published: dict) -> dict:
    """base_published: family -> published wavstream model (filled here when missing)."""
    from .common import set_torch_threads
    from .common import foreign_mark, foreign_share
    from .efficiency import flops_per_audio_second
    from .engines import cpu_engines
    from .single_stream import engine_runner, hf_model, interleaved, published_from_hf, streaming_from_published

    set_torch_threads(settings.threads)
    size = settings.pick("hf-tiny", "base")
    seconds = settings.pick(3.0, 10.0)
    rows = []
    audio = noise(8.0, seed=1)
    for fam in settings.pick(("wav2vec2",), ("wav2vec2", "hubert", "wavlm")):
        t0 = time.perf_counter()
        hf = hf_model(fam, settings.quick)
        published = base_published.get(fam) or published_from_hf(hf)
        parity = _parity(hf, published)
        label = f"{fam}-{size}"
        ms = HF_COMPARE_CHUNK_MS
        if (label, ms) in keep:
            bundle = keep[(label, ms)][0]
        else:
            model = streaming_from_published(published, ms)
            bundle, _ = export(model, settings.work / f"{label}_{ms}ms", True, settings.log, "hf_compare",
                               int8_static=True)
            keep[(label, ms)] = (bundle, model.config)
            del model
        mark = foreign_mark()
        # HF is timed before any engine exists in this process: with OpenVINO engines built and run
        # beside it, torch's offline pass measured 1.6x slower (0.117 against 0.073 s per audio s),
        # which would flatter every ratio. The engines are interleaved among themselves.
        hf_run = _hf_runner(hf, seconds)
        hf_spa = interleaved({"hf": hf_run}, settings.pick(1, 3))["hf"]
        make, left_out = cpu_engines(bundle, settings.threads)
        engines = {k: f() for k, f in make.items()}
        runners = {k: engine_runner(e, settings, audio) for k, e in engines.items()}
        best = interleaved(runners, settings.pick(1, 3))
        for e in engines.values():
            e.close()
        del engines, runners
        eng_rows = [{"name": k, "engine": k.split(" ")[0], "precision": k.split(" ")[1], "s_per_audio_s": v,
                     "ratio": v / hf_spa} for k, v in best.items()]
        fastest = min(eng_rows, key=lambda x: x["ratio"])
        ws_fp32, ws_int8 = best.get("onnxruntime fp32"), best.get("onnxruntime int8")
        row = {
            "family": fam, "size": size, "params_m": sum(p.numel() for p in hf.parameters()) / 1e6,
            "import_max_abs_diff": parity, "hf_offline_torch_s_per_audio_s": hf_spa,
            # the ONNX Runtime baseline under its earlier names (plots and older readers)
            "wavstream_stream_ort_fp32_s_per_audio_s": ws_fp32, "wavstream_stream_ort_int8_s_per_audio_s": ws_int8,
            "ratio_fp32": None if ws_fp32 is None else ws_fp32 / hf_spa,
            "ratio_int8": None if ws_int8 is None else ws_int8 / hf_spa,
            "engines": eng_rows, "best_engine": fastest["name"], "ratio_best": fastest["ratio"], "left_out": left_out,
            "hf_utterance_s": seconds, "chunk_ms": ms, "foreign_cpu_share": foreign_share(mark),
            # achieved FLOP/s of HF's offline pass (full attention over the utterance)
            "hf_offline_gflops": flops_per_audio_second(published.config, "offline", utterance_s=seconds)["total"]
            / hf_spa / 1e9,
        }
        settings.log("hf_compare", f"{label}: HF offline {hf_spa:.4f} s/s; streaming / HF: "
                                   + ", ".join(f"{x['name']} {x['ratio']:.2f}" for x in eng_rows)
                                   + f"; import |diff| {parity:.1e} ({time.perf_counter() - t0:.1f} s)")
        rows.append(row)
        del hf, published
        gc.collect()
    return {"size": size, "rows": rows}
