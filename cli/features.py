"""`wavstream features FILE --out X.npy`: frame features of an audio file.

Streams the file through the bundle chunk by chunk (the same path as live
use) and saves the (frames, feature_dim) float32 array. Bundles with discrete
codes (vq-wav2vec) also get X.codes.npy (frames, groups) int64 beside it.
A bundle exports one layer (config feature_layer); --layer must name it.
"""

from __future__ import annotations

import argparse
import sys

from .args import add_model_arguments, engine_options, sample_rate


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    parser.add_argument("file", help="audio file, or '-' for stdin (WAV/FLAC/OGG/... by its header, else raw s16le at --rate)")
    parser.add_argument("--out", required=True, help="output .npy path (numpy appends .npy when missing)")
    parser.add_argument("--layer", type=int, default=None,
                        help="encoder layer to output; must be the bundle's exported feature_layer (-1 = last)")
    parser.add_argument("--rate", type=sample_rate, default=16000, help="sample rate of raw PCM on stdin (headerless input only)")
    add_model_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import numpy as np

    from wavstream.stream.bundle import BundleError
    from wavstream.stream.engines import EngineUnavailableError
    from wavstream.stream.events import Features
    from wavstream.stream.recognizer import Recognizer, resolve_model
    from wavstream.stream.sources import SourceError, open_source

    try:
        source = open_source(args.file, block_s=1.0, stdin_rate=args.rate)
        rec = Recognizer.from_bundle(resolve_model(args.model), decode_text=False, **engine_options(args))
    except (BundleError, SourceError, EngineUnavailableError, ValueError) as exc:
        print(f"wavstream features: {exc}", file=sys.stderr)
        return 2
    cfg = rec.config
    have = cfg.resolved_feature_layer()
    if args.layer is not None:
        want = cfg.num_layers if args.layer < 0 else args.layer
        if want != have:
            print(
                f"wavstream features: layer {args.layer} is not in this bundle; it exports layer {have} only "
                f"(feature_layer={cfg.feature_layer} of {cfg.num_layers} layers). Available: --layer {have}"
                f"{' (or -1)' if have == cfg.num_layers else ''}. Re-export the model for another layer.",
                file=sys.stderr,
            )
            return 2
    frames, codes = [], []
    try:
        for block in source:
            for ev in rec.feed(block, source.sample_rate):
                if isinstance(ev, Features):
                    frames.append(ev.frames)
                    if ev.codes is not None:
                        codes.append(ev.codes)
    except ValueError as exc:  # AudioFormatError: e.g. NaN samples in a float WAV
        # No file rather than a file silently cut short at the bad block.
        print(f"wavstream features: {args.file}: {exc}; nothing written", file=sys.stderr)
        return 2
    for ev in rec.finish():
        if isinstance(ev, Features):
            frames.append(ev.frames)
            if ev.codes is not None:
                codes.append(ev.codes)
    feats = np.concatenate(frames) if frames else np.zeros((0, cfg.feature_dim), np.float32)
    out = Path(args.out)
    if out.suffix != ".npy":
        out = out.with_name(out.name + ".npy")  # what np.save writes; say that path, not the one asked for
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, feats)
    msg = f"wrote {out} {feats.shape[0]} frames x {feats.shape[1]} (layer {have}, {cfg.frame_shift_s * 1000:.0f} ms/frame)"
    if codes:
        cpath = out.with_suffix(".codes.npy")
        np.save(cpath, np.concatenate(codes))
        msg += f"; codes -> {cpath}"
    print(msg, file=sys.stderr)
    return 0
