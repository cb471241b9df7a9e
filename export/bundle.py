"""Write a model bundle (docs/bundle.md: format version 1, or 2 when it serves several latencies) from a model."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np

__all__ = ["FORMAT_VERSION", "bundle_config", "write_tokens", "write_config", "export_bundle", "hidden_layers",
           "latency_views"]

# A bundle of one latency is written as version 1 (older runtimes read it); several make it version 2.
FORMAT_VERSION = 1

_DTYPE_NAMES = {"torch.float32": "float32", "torch.int64": "int64", "torch.float16": "float16",
                "torch.int32": "int32"}


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("wavstream")
    except Exception:
        return "0.1.0"


def hidden_layers(model: Any) -> int:
    """Index of the last hidden state (``feature_layer: -1`` resolves to it).

    Transformers: hidden states are [input of layer 1, output of layers 1..N],
    so N = ``config.num_layers``. wav2vec: [z, c] -> 1. vq-wav2vec: [z, q, c] -> 2.
    """
    cfg = model.config
    if cfg.is_transformer:
        return int(cfg.num_layers)
    return 2 if cfg.quantizer != "none" else 1


def _blank_id(vocab: list[str]) -> int:
    """wavstream's "<blank>"; transformers' CTC heads use "<pad>" (pad_token_id) as blank."""
    for name in ("<blank>", "<pad>"):
        if name in vocab:
            return vocab.index(name)
    return 0


def bundle_config(model: Any, files: dict[str, str], opset: int, extra: dict | None = None) -> dict:
    """The config.json dict of a bundle for ``model`` at its current chunking."""
    from .onnx_export import io_names

    cfg = model.config
    vocab = list(cfg.vocab)
    for t in vocab:
        if not t or any(ch.isspace() for ch in t):
            raise ValueError(f"vocabulary token {t!r} is empty or contains whitespace; tokens.txt cannot hold it")
    states = []
    for s in model.state_specs():
        dt = _DTYPE_NAMES.get(str(s.dtype))
        if dt is None:
            raise ValueError(f"state {s.name!r} has dtype {s.dtype}, which the bundle format does not know")
        states.append({"name": s.name, "shape": ["batch", *[int(d) for d in s.shape]], "dtype": dt, "init": "zeros"})
    ins, outs = io_names(model)
    has_codes = "codes" in outs
    out = {
        "format_version": FORMAT_VERSION,
        "family": cfg.family,
        "sample_rate": int(cfg.sample_rate),
        "stride": int(model.stride),
        "chunk_frames": int(cfg.chunk_frames),
        "chunk_samples": int(model.chunk_samples),
        "left_chunks": int(cfg.left_chunks),
        "feature_dim": int(cfg.feature_dim),
        "feature_layer": int(cfg.feature_layer),
        "num_layers": hidden_layers(model),
        "vocab": vocab,
        "blank_id": _blank_id(vocab),
        "word_delimiter": "|",
        "code_groups": int(cfg.vq_groups) if has_codes else 0,
        "states": states,
        "inputs": ins,
        "outputs": outs,
        "files": dict(files),
        "model": cfg.to_dict(),
        "exported_with": {"wavstream": _version(), "opset": int(opset)},
    }
    if extra:
        out.update(extra)
    return out


def write_tokens(path: Union[str, Path], vocab: list[str]) -> None:
    Path(path).write_text("".join(f"{t} {i}\n" for i, t in enumerate(vocab)), encoding="utf-8")


def write_config(path: Union[str, Path], config: dict) -> None:
    Path(path).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def latency_views(model: Any, latencies_ms: Sequence[int]) -> dict[int, Any]:
    """{chunk ms: the model at that chunk}, attention history held constant in time.

    The model's own chunking fixes the history (left_chunks x chunk_frames frames); every
    other chunk keeps about as many frames of history (at least one chunk). Same weights.
    """
    cfg = model.config
    frame_ms = 1000.0 * model.stride / cfg.sample_rate
    history = cfg.left_chunks * cfg.chunk_frames
    views: dict[int, Any] = {}
    for ms in latencies_ms:
        c = ms / frame_ms
        if ms <= 0 or abs(c - round(c)) > 1e-6:
            raise ValueError(f"latency {ms} ms is not a positive multiple of this model's frame stride ({frame_ms:g} ms)")
        C = int(round(c))
        if C == cfg.chunk_frames:
            views[int(ms)] = model
            continue
        L = max(1, int(round(history / C))) if cfg.is_transformer else cfg.left_chunks
        views[int(ms)] = model.with_chunking(C, L)
    return views


def _chunk_ms(model: Any) -> int:
    return int(round(1000 * model.chunk_samples / model.config.sample_rate))


def export_bundle(model: Any, out: Union[str, Path], *, opset: int = 18, int8: bool = False,
                  tensorrt: bool = False, verify: bool = True, simplify: bool = True,
                  latencies_ms: Sequence[int] = (), int8_static: bool = False,
                  calibration: Sequence[np.ndarray] = (), calibration_source: str = "",
                  log: Callable[[str], None] = lambda _: None) -> dict:
    """Export ``model`` (at its current chunking) into the bundle folder ``out``.

    Writes model.onnx, config.json, tokens.txt (with a vocabulary),
    model.int8.onnx (``int8``: ONNX Runtime's dynamic int8) and model.qdq.onnx
    (``int8_static``: int8 with activation ranges calibrated on
    ``calibration``, 16 kHz waves named by ``calibration_source``; without
    them, eight 4 s synthetic harmonic signals; OpenVINO's int8 precision
    runs it on its int8 kernels). ``latencies_ms``: more chunk sizes the same
    bundle serves (format version 2): one step graph each (model.<ms>ms.onnx,
    and its int8 twin), all sharing one weights.bin; the model's own chunk
    stays the default. ``tensorrt`` builds model.plan (default chunk only)
    afterwards and raises ``TensorRTUnavailable`` when TensorRT or a GPU is
    missing (the ONNX bundle is complete by then). Progress lines go to
    ``log`` (the command passes ``print``). Returns a report dict.
    """
    import torch

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    report: dict[str, Any] = {"bundle": str(out)}
    default_ms = _chunk_ms(model)
    others = [int(ms) for ms in dict.fromkeys(latencies_ms) if int(ms) != default_ms]
    views = latency_views(model, others)
    for stale in list(out.glob("model.*ms*.onnx")) + [out / "weights.bin"]:  # from an earlier export
        if stale.exists():
            stale.unlink()

    static = None
    if int8_static:
        if len(calibration):
            static = (list(calibration), calibration_source or f"{len(calibration)} utterances")
        else:
            from .quantize import test_signal

            sr = model.config.sample_rate
            static = ([test_signal(4 * sr, seed=k)[0] for k in range(8)], "synthetic harmonic test signal, 8 x 4 s")
    files, extra = _export_graph(model, out, "model", opset, int8, verify, simplify, log, report, static)
    config = bundle_config(model, files, opset, extra)
    if views:
        variants = {str(default_ms): _variant(model, files, opset)}
        for ms, view in views.items():
            sub: dict[str, Any] = {}
            vfiles, _ = _export_graph(view, out, f"model.{ms}ms", opset, int8, verify, simplify, log, sub, static)
            report[f"{ms}ms"] = sub
            variants[str(ms)] = _variant(view, vfiles, opset)
        from .shared_weights import share_weights

        graphs = [out / f for v in variants.values() for f in v["files"].values()]
        shared = share_weights(graphs)
        report["shared_weights"] = shared
        log(f"{len(graphs)} graphs share weights.bin ({shared['weights_bytes'] / 1e6:.2f} MB; "
            f"{shared['shared_tensors']} of {shared['tensors']} tensors stored once for several graphs)")
        config["format_version"] = 2
        config["default_latency_ms"] = default_ms
        config["latencies"] = dict(sorted(variants.items(), key=lambda kv: int(kv[0])))
    write_config(out / "config.json", config)
    if config["vocab"]:
        write_tokens(out / "tokens.txt", config["vocab"])
    elif (out / "tokens.txt").exists():
        (out / "tokens.txt").unlink()
    # A stale model file from an earlier export of another model must not linger.
    for kind, name in (("int8", "model.int8.onnx"), ("qdq", "model.qdq.onnx"), ("tensorrt", "model.plan")):
        if kind not in files and (out / name).exists():  # (model.plan is rebuilt below when asked for)
            (out / name).unlink()
    if tensorrt:
        from .tensorrt import build_engine

        t0 = time.perf_counter()
        build_engine(out / files["onnx"], out / "model.plan", log=log)
        files["tensorrt"] = "model.plan"
        report["tensorrt_s"] = round(time.perf_counter() - t0, 1)
        config["files"] = files
        write_config(out / "config.json", config)
    report["files"] = {p.name: p.stat().st_size for p in sorted(out.iterdir()) if p.is_file()}
    return report


def _variant(model: Any, files: dict[str, str], opset: int) -> dict:
    """The per-latency part of config.json: what changes with the chunk."""
    c = bundle_config(model, files, opset)
    return {k: c[k] for k in ("chunk_frames", "chunk_samples", "left_chunks", "states", "inputs", "outputs", "files")}


def _export_graph(model: Any, out: Path, stem: str, opset: int, int8: bool, verify: bool, simplify: bool,
                  log: Callable[[str], None], report: dict,
                  static: Optional[tuple[list[np.ndarray], str]] = None) -> tuple[dict[str, str], dict[str, Any]]:
    """One step graph (``stem``.onnx; ``stem``.int8.onnx with ``int8``; ``stem``.qdq.onnx calibrated on
    ``static`` = (waves, their name)), verified; (files, config extras)."""
    from .onnx_export import ExportError, export_step, simplify_onnx, verify_step

    onnx_path = out / f"{stem}.onnx"
    info = export_step(model, onnx_path, opset=opset)
    report["export_s"] = round(info["export_s"], 2)
    log(f"exported {model.config.family} streaming step ({_chunk_ms(model)} ms chunks) to {onnx_path} "
        f"({info['bytes'] / 1e6:.2f} MB, {info['export_s']:.1f} s)")
    if simplify:
        report["simplify"] = simplify_onnx(onnx_path)
    files = {"onnx": onnx_path.name}
    extra: dict[str, Any] = {}
    if verify:
        d = verify_step(model, onnx_path)
        report["verify"] = d
        log(f"onnxruntime vs torch over 3 chunks: max |diff| features {d['features']:.2e}, "
            f"logits {d['logits']:.2e}" + ("" if d["codes_equal"] else ", CODES DIFFER"))
        if d["features"] > 1e-3 or d["logits"] > 1e-3 or not d["codes_equal"]:
            raise ExportError(f"the exported graph disagrees with torch: {d}")
    if int8:
        from .quantize import quantize_bundle_model

        q = quantize_bundle_model(model, onnx_path, out / f"{stem}.int8.onnx")
        files["int8"] = f"{stem}.int8.onnx"
        extra["int8"] = q["summary"]
        report["int8"] = q
        log(f"int8 model: {q['bytes'] / 1e6:.2f} MB (fp32 {info['bytes'] / 1e6:.2f} MB); feature max |diff| "
            f"{q['summary']['feature_max_abs_diff']:.3g}, relative RMS {q['summary']['feature_rel_rms']:.3g}")
    if static is not None:
        from .quantize import quantize_bundle_model_static

        q = quantize_bundle_model_static(model, onnx_path, out / f"{stem}.qdq.onnx", static[0], static[1])
        files["qdq"] = f"{stem}.qdq.onnx"
        extra["qdq"] = q["summary"]
        report["qdq"] = q
        log(f"static int8 model (calibrated on {static[1]}, {q['summary']['calibration']['steps']} steps): "
            f"{q['bytes'] / 1e6:.2f} MB; feature max |diff| {q['summary']['feature_max_abs_diff']:.3g}, "
            f"relative RMS {q['summary']['feature_rel_rms']:.3g}")
    return files, extra
