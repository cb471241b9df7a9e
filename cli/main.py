"""`wavstream` console script.

Each subcommand lives in the sub-package that owns its work and exposes two
functions: ``add_arguments(parser)`` and ``run(args) -> int``. Those modules
must import only light things at module level (argparse, stdlib), so that
``wavstream --help`` and the runtime commands work without torch installed;
heavy imports go inside ``run``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help). Order is the order shown in --help.
COMMANDS: dict[str, tuple[str, str]] = {
    "mic": ("wavstream.stream.cli_mic", "live transcription from a microphone"),
    "transcribe": ("wavstream.stream.cli_transcribe", "stream an audio file through the recogniser"),
    "features": ("wavstream.stream.cli_features", "write frame features of an audio file to .npy"),
    "serve": ("wavstream.stream.server.cli", "websocket recognition server"),
    "client": ("wavstream.stream.client_cli", "stream a file or the microphone to a server"),
    "corpus": ("wavstream.training.data.cli", "build the synthetic speech corpus"),
    "train": ("wavstream.training.cli", "pretrain (self-supervised) or fine-tune (CTC) a model"),
    "eval": ("wavstream.training.evaluate", "CER/WER of a model on a folder or manifest"),
    "export": ("wavstream.export.cli", "export a checkpoint to an ONNX/TensorRT bundle"),
    "bench": ("wavstream.bench.cli", "latency, throughput and efficiency benchmarks"),
    "info": ("wavstream.cli.info", "parameter counts and configs of the model families"),
}


def build_parser(load_all: bool = True, only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wavstream",
        description="Streaming wav2vec-family speech front-end.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if load_all or name == only:
            try:
                module = importlib.import_module(module_name)
            except ModuleNotFoundError as exc:
                # A command whose module is missing (not yet built, or an
                # optional part not installed) stays listed but says why.
                p.set_defaults(_missing=f"{name}: unavailable ({exc})")
                continue
            module.add_arguments(p)
            p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Only import the module of the command being run (fast start-up); --help
    # at top level needs no module at all.
    only = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(load_all=False, only=only)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if getattr(args, "_missing", None):
        print(f"wavstream {args._missing}", file=sys.stderr)
        return 2
    rc = args._run(args)
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
