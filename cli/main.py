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

# Optional modules -> the extra that installs them ("torch" depends on the
# command: see _install_hint). A runtime-only install (pip install wavstream)
# has none of them.
EXTRA_OF_MODULE: dict[str, str] = {
    "torch": "train",
    "safetensors": "train",
    "sklearn": "train",
    "tqdm": "train",
    "matplotlib": "train",
    "jiwer": "eval",
    "onnx": "export",
    "onnxscript": "export",
    "rich": "demos",
    "piper": "corpus",
    "tritonclient": "triton",
    "wyoming": "wyoming",
    "zeroconf": "wyoming",
}
# Commands whose torch comes with another extra than [train].
TORCH_EXTRA_OF_COMMAND = {"export": "export", "bench": "export"}

# name -> (module, one-line help). Order is the order shown in --help.
COMMANDS: dict[str, tuple[str, str]] = {
    "mic": ("wavstream.cli.mic", "live transcription from a microphone"),
    "transcribe": ("wavstream.cli.transcribe", "stream an audio file through the recogniser"),
    "features": ("wavstream.cli.features", "write frame features of an audio file to .npy"),
    "serve": ("wavstream.cli.serve", "websocket recognition server"),
    "client": ("wavstream.cli.client", "stream a file or the microphone to a server"),
    "wyoming": ("wavstream.cli.wyoming", "Wyoming speech-to-text server for Home Assistant"),
    "corpus": ("wavstream.cli.corpus", "build the synthetic speech corpus"),
    "train": ("wavstream.cli.train", "pretrain (self-supervised) or fine-tune (CTC) a model"),
    "lm": ("wavstream.cli.lm", "build a word n-gram language model for beam search"),
    "eval": ("wavstream.cli.eval", "CER/WER of a model on a folder or manifest"),
    "export": ("wavstream.cli.export", "export a checkpoint to an ONNX/TensorRT bundle"),
    "bench": ("wavstream.cli.bench", "latency, throughput and efficiency benchmarks"),
    "info": ("wavstream.cli.info", "parameter counts and configs of the model families"),
    "triton-repo": ("wavstream.cli.triton_repo", "write a Triton Inference Server model repository from a bundle"),
}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("wavstream")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def _install_hint(command: str, exc: ModuleNotFoundError) -> str | None:
    """'wavstream eval needs jiwer: pip install 'wavstream[eval]'' for an optional module; None for anything else."""
    top = (exc.name or "").split(".")[0]
    if top not in EXTRA_OF_MODULE:
        return None  # a real bug (e.g. a wavstream module missing): let the traceback show
    extra = TORCH_EXTRA_OF_COMMAND.get(command, "train") if top == "torch" else EXTRA_OF_MODULE[top]
    hint = f"wavstream {command} needs {top}, which is not installed: pip install 'wavstream[{extra}]'"
    if command == "eval" and top == "torch":
        hint += " (an exported bundle needs only 'wavstream[eval]')"
    return hint


def build_parser(load_all: bool = True, only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wavstream",
        description="Streaming wav2vec-family speech front-end.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if load_all or name == only:
            try:
                module = importlib.import_module(module_name)
            except ModuleNotFoundError as exc:
                # A command whose module is missing (not yet built, or an
                # optional part not installed) stays listed but says why.
                hint = _install_hint(name, exc)
                p.set_defaults(_missing=hint[len("wavstream "):] if hint else f"{name}: unavailable ({exc})")
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
    try:
        rc = args._run(args)
    except ModuleNotFoundError as exc:
        # Heavy imports happen inside run(): a runtime-only install lacks them.
        hint = _install_hint(args.command, exc)
        if hint is None:
            raise
        print(hint, file=sys.stderr)
        return 2
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
