"""`wavstream transcribe FILE`: stream an audio file through the recogniser.

Prints partial text updating in place (on a terminal) and each final on its
own line; with --json (--format json), one JSON object per line:
{"type": "partial", "text": ...} / {"type": "final", "text", "start", "end",
"words": [{"word", "start", "end", "conf"}]}; --format srt / vtt writes
subtitles, one cue per short run of words, each as soon as its utterance ends.
FILE "-" reads stdin: a WAV is streamed as it arrives (arecord, sox and
ffmpeg write one to a pipe), FLAC/OGG/AIFF/... are read whole, and anything
without a known header is raw s16le mono PCM at --rate Hz.
Only argparse/stdlib are imported at module level (fast --help, no torch).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .args import (add_decoding_arguments, add_endpoint_arguments, add_model_arguments, decoding_config, endpoint_config,
                   engine_options, hotwords_list, positive_float, sample_rate)


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
    io.add_argument("--format", choices=["text", "json", "srt", "vtt"], default="text",
                    help="text: finals (partials live on a terminal); json: one object per line with word times; "
                         "srt/vtt: subtitles timed by words")
    io.add_argument("--json", dest="format", action="store_const", const="json", help="same as --format json")
    add_decoding_arguments(parser, lm=True, hotwords=True)
    add_endpoint_arguments(parser, parser.add_argument_group("endpointing"), switch=True)


def run(args: argparse.Namespace) -> int:
    from wavstream.stream.bundle import BundleError
    from wavstream.stream.engines import EngineUnavailableError
    from wavstream.stream.recognizer import Recognizer, resolve_model
    from wavstream.stream.sources import SourceError, open_source

    from .terminal import EventPrinter, SubtitlePrinter

    try:
        source = open_source(args.file, realtime=args.realtime, block_s=args.chunk_ms / 1000.0, stdin_rate=args.rate)
        rec = Recognizer.from_bundle(
            resolve_model(args.model),
            decoding=decoding_config(args),
            endpoint=endpoint_config(args),
            emit_features=False,
            **engine_options(args, back_to_back=not args.realtime),
        )
        stream = rec.create_stream(hotwords=hotwords_list(args))
    except (BundleError, SourceError, EngineUnavailableError, ImportError, ValueError) as exc:
        print(f"wavstream transcribe: {exc}", file=sys.stderr)
        return 2
    if not rec.config.has_logits:
        print(f"wavstream transcribe: bundle {rec.bundle.path} has no CTC head (no vocab); use 'wavstream features'", file=sys.stderr)
        return 2

    def feed(block: Any) -> list[Any]:
        stream.accept_waveform(block, source.sample_rate)
        events: list[Any] = []
        while stream.is_ready():
            events.extend(rec.decode_stream(stream))
        return events

    def finish() -> list[Any]:
        stream.input_finished()
        events: list[Any] = []
        while stream.is_ready():
            events.extend(rec.decode_stream(stream))
        return events

    show = (SubtitlePrinter(sys.stdout, args.format) if args.format in ("srt", "vtt")
            else EventPrinter(sys.stdout, json_lines=args.format == "json"))

    try:
        for block in source:
            for ev in feed(block):
                show(ev)
    except KeyboardInterrupt:
        for ev in finish():
            show(ev)
        return 130
    except ValueError as exc:  # AudioFormatError: e.g. NaN samples in a float WAV
        # The text of the audio before the bad block is still printed, then the refusal.
        for ev in finish():
            show(ev)
        print(f"wavstream transcribe: {args.file}: {exc}", file=sys.stderr)
        return 2
    for ev in finish():
        show(ev)
    return 0
