"""`wavstream eval`: CER/WER of a model, run in its streaming form.

The model is a training checkpoint (torch, chunk by chunk through `step`),
an exported bundle (the torch-free runtime), or `default` (the bundle the
package ships). `--full-context` runs the offline form instead.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", help="folder of .wav files with .txt beside them, or a TSV manifest")
    p.add_argument("--model", required=True, help="checkpoint folder, bundle folder, or 'default'")
    p.add_argument("--chunk-ms", type=int, default=None,
                   help="streaming chunk length; checkpoints: any (default 320), bundles: one they serve "
                        "(default: the bundle's own)")
    p.add_argument("--left-chunks", type=int, default=None, help="left context in chunks (default: the model's)")
    p.add_argument("--full-context", action="store_true", help="run the offline form (full attention)")
    p.add_argument("--per-utt", help="write each hypothesis next to its reference (TSV)")
    p.add_argument("--limit", type=int, default=0, help="evaluate only the first N utterances")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--batch", type=int, default=16, help="utterances decoded side by side")
    p.add_argument("--int8", action="store_true", help="bundles: run model.int8.onnx")
    p.add_argument("--backend", choices=["onnxruntime", "openvino"], default="onnxruntime",
                   help="bundles: the engine (openvino needs wavstream[openvino])")
    p.add_argument("--precision", choices=["fp32", "bf16", "int8"], default="fp32",
                   help="bundles: fp32, bf16 (--backend openvino) or int8 (model.int8.onnx, same as --int8)")
    from wavstream.training.data.channel import CHANNELS  # numpy only: fine in a runtime-only install

    p.add_argument("--channel", default="clean", choices=list(CHANNELS),
                   help="pass the audio through a fixed channel first: clean, telephone (300-3400 Hz + GSM), "
                        "telephone_mulaw, mp3, noisy (pink noise at 10 dB SNR)")
    from .args import add_decoding_arguments

    add_decoding_arguments(p, lm=True)  # bundles only: checkpoints decode greedily
    p.add_argument("--by-engine", action="store_true",
                   help="also score each TTS engine apart (reads <manifest>_utts.tsv from the corpus build)")


def run(args: argparse.Namespace) -> int:
    # Before any decoding: a missing scorer should not cost a whole run.
    # (A bundle needs only jiwer, pip install 'wavstream[eval]'; a checkpoint needs torch too.)
    import jiwer  # noqa: F401

    from wavstream.training.data.manifest import read_manifest
    from wavstream.training.evaluate import normalise_reference, score_by_engine

    utts = read_manifest(args.data)
    if args.limit:
        utts = utts[: args.limit]
    model_path = Path(args.model)
    is_bundle = args.model == "default" or (model_path / "model.onnx").exists()
    if is_bundle:
        from wavstream.stream.errors import WavstreamError

        try:
            res, hyps = _evaluate_bundle(args, utts)
        except (WavstreamError, ValueError) as exc:  # a missing engine, a precision this CPU lacks
            print(f"wavstream eval: {exc}", file=sys.stderr)
            return 2
    else:
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        from wavstream.training.checkpoint import load_checkpoint
        from wavstream.training.evaluate import evaluate_checkpoint

        model = load_checkpoint(args.model)
        if model.lm_head is None:
            print(f"{args.model}: this model has no CTC head; fine-tune it first (wavstream train ctc)",
                  file=sys.stderr)
            return 2
        res, hyps = evaluate_checkpoint(model, utts, args.chunk_ms or 320, args.left_chunks, args.full_context,
                                        args.batch, args.channel)
        res["model"] = str(args.model)
    res["data"] = str(args.data)  # eval_v2.sh's table (default_table.py) keys its rows by it
    if args.by_engine:
        res["by_engine"] = score_by_engine(utts, hyps)
    if args.per_utt:
        with open(args.per_utt, "w") as f:
            f.write("path\treference\thypothesis\n")
            for u, h in zip(utts, hyps):
                f.write(f"{u.path}\t{normalise_reference(u.text)}\t{h}\n")
    print(json.dumps(res))
    return 0


def _evaluate_bundle(args, utts) -> tuple[dict, list[str]]:
    """Run an exported bundle through the torch-free runtime."""
    from wavstream.stream import Recognizer
    from wavstream.stream.engines.ort import BACK_TO_BACK_SPIN_US
    from wavstream.training.evaluate import load_waves, normalise_reference, score

    precision = "int8" if getattr(args, "int8", False) else getattr(args, "precision", "fp32")
    backend = getattr(args, "backend", "onnxruntime")
    if backend == "openvino":
        opts: dict = {"backend": "openvino", "precision": precision}
    elif precision == "bf16":
        raise ValueError("--precision bf16 needs --backend openvino")
    else:  # utterances run back to back: pool threads spin briefly (see OrtEngine)
        opts = {"spin_us": BACK_TO_BACK_SPIN_US, **({"quantized": True} if precision == "int8" else {})}
    if args.threads:
        opts["intra_op_threads"] = args.threads
    if args.chunk_ms:
        opts["latency_ms"] = args.chunk_ms
    from .args import decoding_config

    dec = decoding_config(args)
    opts["decoding"] = dec
    rec = Recognizer.default(**opts) if args.model == "default" else Recognizer.from_bundle(args.model, **opts)
    hyps = []
    audio = 0.0
    t0 = time.perf_counter()
    for wave in load_waves(utts, args.channel):
        audio += len(wave) / 16000
        hyps.append(rec.transcribe(wave, 16000))
    el = time.perf_counter() - t0
    res = score([normalise_reference(u.text) for u in utts], hyps)
    c = rec.config
    res.update(utterances=len(utts), audio_seconds=round(audio, 2), rtf=el / max(audio, 1e-9),
               model=str(args.model), chunk_ms=round(c.chunk_samples * 1000 / c.sample_rate),
               chunk_frames=c.chunk_frames, left_chunks=c.left_chunks, full_context=False,
               engine=f"{backend} {precision}" if backend == "openvino" else
               ("onnxruntime int8" if precision == "int8" else "onnxruntime"), channel=args.channel,
               decoder=dec.method, beam_size=dec.beam_size if dec.method == "beam" else None,
               lm=None if dec.lm is None else {"path": dec.lm.path, "alpha": dec.lm.alpha, "beta": dec.lm.beta})
    return res, hyps
