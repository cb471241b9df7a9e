"""`wavstream export CHECKPOINT --out BUNDLE ...`: checkpoint -> model bundle.

Module-level imports stay light (argparse only); torch is imported in run().
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="checkpoint folder (model.safetensors + config.json) or file prefix; "
                                      "with --from-transformers, a transformers model folder")
    p.add_argument("--out", required=True, help="bundle folder to write (created if missing)")
    p.add_argument("--chunk-ms", type=float, default=None,
                   help="chunk length in ms (a multiple of the frame stride: 20 ms for wav2vec 2.0/HuBERT/WavLM, "
                        "10 ms for wav2vec/vq-wav2vec); default: the checkpoint's chunk")
    p.add_argument("--latencies-ms", default=None,
                   help="comma-separated chunk sizes (ms) the bundle also serves, chosen at run time with "
                        "--latency-ms (e.g. 160,320,640); one graph each, sharing one weights file; attention "
                        "history is held constant in time")
    p.add_argument("--left-chunks", type=int, default=None,
                   help="chunks of attention history (K/V cache = left_chunks * chunk frames); default: checkpoint's")
    p.add_argument("--int8", action="store_true", help="also write model.int8.onnx (ONNX Runtime dynamic int8)")
    p.add_argument("--int8-static", action="store_true",
                   help="also write model.qdq.onnx: int8 weights and activations with ranges calibrated on "
                        "--calibration audio; OpenVINO's --precision int8 runs it on the CPU's int8 units (AMX)")
    p.add_argument("--calibration", default=None, metavar="MANIFEST",
                   help="audio for --int8-static: a TSV manifest or a folder of wav files with .txt transcripts "
                        "(the first --calibration-count utterances); default: a synthetic harmonic signal")
    p.add_argument("--calibration-count", type=int, default=32,
                   help="utterances of --calibration used (default 32)")
    p.add_argument("--tensorrt", action="store_true",
                   help="also build model.plan (TensorRT fp16, batch 1..64); needs TensorRT and an NVIDIA GPU")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18)")
    p.add_argument("--offline", action="store_true",
                   help="export the whole-utterance graph (dynamic batch and time) as model.offline.onnx instead "
                        "of the streaming step; for published (non-streaming) models, e.g. imported ones")
    p.add_argument("--from-transformers", action="store_true",
                   help="CHECKPOINT is a Hugging Face transformers model (folder or name) to import")
    p.add_argument("--no-verify", action="store_true", help="skip the ONNX Runtime vs torch check after export")
    p.add_argument("--no-simplify", action="store_true", help="do not run onnxsim even if it is installed")


def _chunk_frames(chunk_ms: float, stride: int, sample_rate: int) -> int:
    frame_ms = 1000.0 * stride / sample_rate
    n = chunk_ms / frame_ms
    if n < 1 or abs(n - round(n)) > 1e-6:
        raise ValueError(f"--chunk-ms {chunk_ms:g} is not a positive multiple of this model's frame stride "
                         f"({frame_ms:g} ms)")
    return int(round(n))


def _calibration(args: argparse.Namespace, sample_rate: int) -> tuple[list, str]:
    """The --calibration audio, read and resampled to the model's rate: (waves, a name for config.json)."""
    if args.calibration is None:
        return [], ""
    if not args.int8_static:
        raise ValueError("--calibration is for --int8-static")
    if args.calibration_count < 1:
        raise ValueError(f"--calibration-count must be >= 1, got {args.calibration_count}")
    from wavstream.training.data.manifest import load_audio, read_manifest

    entries = read_manifest(args.calibration)[: args.calibration_count]
    if not entries:
        raise ValueError(f"no utterances in {args.calibration}")
    waves = [load_audio(e.path, sample_rate) for e in entries]
    return waves, f"{len(waves)} utterances of {args.calibration}"


def _load(args: argparse.Namespace):
    if args.from_transformers:
        try:
            from wavstream.training.convert import from_transformers  # type: ignore[import-not-found]
        except ImportError as exc:
            raise RuntimeError(f"importing transformers models needs wavstream.training.convert ({exc})") from exc
        import transformers

        hf_cfg = transformers.AutoConfig.from_pretrained(args.checkpoint)
        arch = (getattr(hf_cfg, "architectures", None) or ["AutoModel"])[0]
        cls = getattr(transformers, arch, None) or transformers.AutoModel
        hf = cls.from_pretrained(args.checkpoint)
        vocab = None
        if arch.endswith("ForCTC"):
            try:
                vocab = transformers.AutoTokenizer.from_pretrained(args.checkpoint)
            except Exception as exc:  # no tokenizer files: placeholder labels
                print(f"wavstream export: no tokenizer in {args.checkpoint} ({type(exc).__name__}); "
                      "CTC labels will be placeholders", file=sys.stderr)
        return from_transformers(hf, vocab=vocab).eval()
    from wavstream.export.checkpoint import load_checkpoint

    return load_checkpoint(args.checkpoint)


def run(args: argparse.Namespace) -> int:
    import json
    import time
    from pathlib import Path

    from wavstream.export.checkpoint import CheckpointError

    t0 = time.perf_counter()
    try:
        model = _load(args)
    except (CheckpointError, RuntimeError, OSError, ValueError) as exc:
        print(f"wavstream export: {exc}", file=sys.stderr)
        return 2
    cfg = model.config
    if args.chunk_ms is not None or args.left_chunks is not None:
        try:
            C = _chunk_frames(args.chunk_ms, model.stride, cfg.sample_rate) if args.chunk_ms is not None \
                else cfg.chunk_frames
        except ValueError as exc:
            print(f"wavstream export: {exc}", file=sys.stderr)
            return 2
        L = args.left_chunks if args.left_chunks is not None else cfg.left_chunks
        if L < 0 and not args.offline:
            print("wavstream export: --left-chunks must be >= 0 for streaming", file=sys.stderr)
            return 2
        model = model.with_chunking(C, L)  # the checkpoint's own config stays as saved
    out = Path(args.out)
    try:
        latencies = [int(x) for x in args.latencies_ms.split(",") if x.strip()] if args.latencies_ms else []
    except ValueError:
        print(f"wavstream export: --latencies-ms must be comma-separated integers (ms), got {args.latencies_ms!r}",
              file=sys.stderr)
        return 2

    if args.offline:
        from wavstream.export.bundle import write_tokens
        from wavstream.export.onnx_export import ExportError, export_offline

        try:
            info = export_offline(model, out / "model.offline.onnx", opset=args.opset)
        except ExportError as exc:
            print(f"wavstream export: {exc}", file=sys.stderr)
            return 1
        meta = {"kind": "offline", "family": cfg.family, "sample_rate": cfg.sample_rate, "stride": model.stride,
                "feature_dim": cfg.feature_dim, "feature_layer": cfg.feature_layer, "vocab": list(cfg.vocab),
                "inputs": info["inputs"], "outputs": info["outputs"], "file": "model.offline.onnx",
                "model": cfg.to_dict(), "exported_with": {"opset": args.opset}}
        (out / "offline.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        if cfg.vocab:
            write_tokens(out / "tokens.txt", list(cfg.vocab))
        print(f"wrote {out / 'model.offline.onnx'} ({info['bytes'] / 1e6:.2f} MB, {info['export_s']:.1f} s); "
              f"inputs wave (batch, time), outputs {info['outputs']}")
        return 0

    from wavstream.export.bundle import export_bundle
    from wavstream.export.onnx_export import ExportError
    from wavstream.export.tensorrt import TensorRTUnavailable

    try:
        calibration, source = _calibration(args, cfg.sample_rate)
    except (ValueError, OSError, RuntimeError) as exc:  # bad flags, or audio that cannot be read (named)
        print(f"wavstream export: calibration audio: {exc}", file=sys.stderr)
        return 2
    try:
        report = export_bundle(model, out, opset=args.opset, int8=args.int8, tensorrt=args.tensorrt,
                               verify=not args.no_verify, simplify=not args.no_simplify, latencies_ms=latencies,
                               int8_static=args.int8_static, calibration=calibration,
                               calibration_source=source, log=print)
    except TensorRTUnavailable as exc:
        print(f"wavstream export: the ONNX bundle in {out} is complete, but no TensorRT engine was built: {exc}",
              file=sys.stderr)
        return 3
    except (ExportError, ValueError) as exc:
        print(f"wavstream export: {exc}", file=sys.stderr)
        return 1
    files = ", ".join(f"{k} ({v / 1e6:.2f} MB)" if v > 1e5 else f"{k}" for k, v in report["files"].items())
    served = f"; also serves {', '.join(str(ms) for ms in latencies)} ms (--latency-ms)" if latencies else ""
    print(f"bundle {out}: {files}; chunk {model.config.chunk_frames} frames = "
          f"{model.chunk_samples / cfg.sample_rate * 1000:g} ms, left chunks {model.config.left_chunks}{served}; "
          f"total {time.perf_counter() - t0:.1f} s")
    return 0
