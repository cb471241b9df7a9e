"""`wavstream triton-repo BUNDLE OUT`: a Triton model repository from a bundle (docs/scaling.md).

    wavstream triton-repo default repo/                  # the embedded model, its default latency
    wavstream triton-repo BUNDLE repo/ --latency-ms 160 --max-batch 64
    wavstream triton-repo default repo/ --decode        # also NAME_decode: decoding inside Triton
    tritonserver --model-repository repo/                # then: wavstream serve --engine triton://HOST:8001/wavstream

Only argparse/stdlib at module level; the generator loads in run().
"""

from __future__ import annotations

import argparse
import sys

from .args import BEAM_SIZE, add_decoding_arguments, int_at_least, positive_float


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    p.add_argument("bundle", metavar="BUNDLE", help="bundle folder, or 'default' for the embedded model")
    p.add_argument("out", metavar="OUT", help="repository folder to write (must be empty or absent)")
    p.add_argument("--name", default="wavstream",
                   help="model name: NAME (python backend), NAME_onnx (onnxruntime), NAME_trt (tensorrt, with a plan)")
    p.add_argument("--latency-ms", type=int_at_least(1), default=None,
                   help="chunk size to serve, one the bundle serves; default: the bundle's own")
    p.add_argument("--max-batch", type=int_at_least(1), default=32, help="Triton max_batch_size")
    p.add_argument("--max-sequences", type=int_at_least(1), default=256,
                   help="streams the sequence batcher considers at once (max_candidate_sequences)")
    p.add_argument("--queue-delay-us", type=int_at_least(0), default=5000,
                   help="µs the sequence batcher waits for more streams before a batch runs")
    p.add_argument("--idle-s", type=positive_float, default=40.0,
                   help="s a stream may stay silent before Triton forgets its state (also the streams of a front end "
                        "that died: Triton has no other way to free them); keep it above the front ends' "
                        "`serve --idle-timeout` (30 s by default)")
    p.add_argument("--threads", type=int_at_least(0), default=0,
                   help="onnxruntime intra-op threads of the python-backend model (0 = the runtime's choice)")
    p.add_argument("--only", choices=["python", "onnx"], default=None, help="write only this model (and, with "
                   "--decode, the decoding model)")
    dec = p.add_argument_group("decoding inside Triton")
    dec.add_argument("--decode", action="store_true",
                     help="also write NAME_decode: a python-backend model that decodes and endpoints in Triton and "
                          "answers text events (for `wavstream serve --decode-in-triton`, TritonRecognizer)")
    add_decoding_arguments(p, dec)
    p.add_argument("--force", action="store_true", help="replace OUT if it is not empty")


def run(args: argparse.Namespace) -> int:
    from wavstream.stream.errors import WavstreamError
    from wavstream.stream.recognizer import resolve_model
    from wavstream.stream.triton import write_repository

    try:
        layout = write_repository(
            resolve_model(args.bundle), args.out, name=args.name, latency_ms=args.latency_ms,
            max_batch=args.max_batch, queue_delay_us=args.queue_delay_us, max_sequences=args.max_sequences,
            idle_s=args.idle_s, intra_op_threads=args.threads, python=args.only in (None, "python"),
            onnx=args.only in (None, "onnx"), decode=args.decode, decoder=args.decoder,
            beam_size=args.beam_size if args.beam_size is not None else BEAM_SIZE, overwrite=args.force)
    except (WavstreamError, ValueError, OSError) as exc:
        print(f"wavstream triton-repo: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {layout.root} ({layout.latency_ms} ms chunks), configs validated:")
    for name, folder in layout.models.items():
        print(f"  {name:<20} {folder}")
    for note in layout.notes:
        print(f"note: {note}")
    return 0
