"""`wavstream transcribe FILE`: stream an audio file through the recogniser.

Prints partial text updating in place (on a terminal) and each final on its
own line; with --json, one JSON object per line:
{"type": "partial", "text": ...} / {"type": "final", "text", "start", "end"}.
FILE "-" reads stdin: a WAV is streamed as it arrives (arecord, sox and
ffmpeg write one to a pipe), FLAC/OGG/AIFF/... are read whole, and anything
without a known header is raw s16le mono PCM at --rate Hz.
Only argparse/stdlib are imported at module level (fast --help, no torch).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .cli_args import int_at_least, positive_float, sample_rate


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Model/engine options shared by transcribe, features (and mic)."""
    g = parser.add_argument_group("model")
    g.add_argument("--model", default="default", help="bundle folder, or 'default' for the embedded model")
    g.add_argument("--backend", choices=["onnxruntime", "tensorrt"], default="onnxruntime", help="inference engine")
    g.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="onnxruntime device")
    g.add_argument("--int8", action="store_true", help="use the bundle's model.int8.onnx")
    g.add_argument("--threads", type=int_at_least(0), default=None,
                   help="onnxruntime intra-op threads; 0 or unset = the runtime's choice")


def engine_options(args: argparse.Namespace) -> dict[str, Any]:
    if args.backend == "tensorrt":
        return {"backend": "tensorrt"}
    return {"backend": "onnxruntime", "device": args.device, "quantized": args.int8, "intra_op_threads": args.threads or None}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    parser.add_argument("file", help="audio file (WAV/FLAC/OGG/...), or '-' for stdin (WAV/FLAC/OGG/... by its header, "
                                     "else raw s16le mono PCM at --rate)")
    add_model_arguments(parser)
    io = parser.add_argument_group("input/output")
    io.add_argument("--realtime", action="store_true", help="pace the file at real-time speed (like a live source)")
    io.add_argument("--chunk", "--chunk-ms", dest="chunk_ms", type=positive_float, default=100.0,
                    help="audio block size pushed per call, in ms (the model's own chunk is fixed by the bundle)")
    io.add_argument("--rate", type=sample_rate, default=16000, help="sample rate of raw PCM on stdin (headerless input only)")
    io.add_argument("--json", action="store_true", help="one JSON object per line (partials and finals, with times)")
    dec = parser.add_argument_group("decoding")
    dec.add_argument("--decoder", choices=["greedy", "beam"], default="greedy", help="CTC decoding method")
    dec.add_argument("--beam-size", type=int_at_least(1), default=8, help="prefix beam search width")
    dec.add_argument("--kenlm", default=None, help="KenLM model (.arpa/.bin) for the final text (needs pyctcdecode)")
    ep = parser.add_argument_group("endpointing")
    ep.add_argument("--no-endpoint", dest="endpoint", action="store_false", help="one utterance for the whole input")
    ep.add_argument("--rule1-silence", type=positive_float, default=2.4, help="s of silence ending an utterance with nothing decoded")
    ep.add_argument("--rule2-silence", type=positive_float, default=1.2, help="s of silence ending an utterance after speech")
    ep.add_argument("--max-utterance", type=positive_float, default=20.0, help="s; longer utterances are cut")


def run(args: argparse.Namespace) -> int:
    from .bundle import BundleError
    from .ctc import LmConfig
    from .endpoint import EndpointConfig
    from .engines import EngineUnavailableError
    from .terminal import EventPrinter
    from .recognizer import DecodingConfig, Recognizer, resolve_model
    from .sources import SourceError, open_source

    try:
        source = open_source(args.file, realtime=args.realtime, block_s=args.chunk_ms / 1000.0, stdin_rate=args.rate)
        rec = Recognizer.from_bundle(
            resolve_model(args.model),
            decoding=DecodingConfig(args.decoder, args.beam_size, LmConfig(args.kenlm) if args.kenlm else None),
            endpoint=EndpointConfig.with_times(args.rule1_silence, args.rule2_silence, args.max_utterance, enabled=args.endpoint),
            emit_features=False,
            **engine_options(args),
        )
    except (BundleError, SourceError, EngineUnavailableError, ImportError, ValueError) as exc:
        print(f"wavstream transcribe: {exc}", file=sys.stderr)
        return 2
    if not rec.config.has_logits:
        print(f"wavstream transcribe: bundle {rec.bundle.path} has no CTC head (no vocab); use 'wavstream features'", file=sys.stderr)
        return 2

    show = EventPrinter(sys.stdout, json_lines=args.json)

    try:
        for block in source:
            for ev in rec.feed(block, source.sample_rate):
                show(ev)
    except KeyboardInterrupt:
        for ev in rec.finish():
            show(ev)
        return 130
    except ValueError as exc:  # AudioFormatError: e.g. NaN samples in a float WAV
        # The text of the audio before the bad block is still printed, then the refusal.
        for ev in rec.finish():
            show(ev)
        print(f"wavstream transcribe: {args.file}: {exc}", file=sys.stderr)
        return 2
    for ev in rec.finish():
        show(ev)
    return 0
