"""What the runtime commands share: argument groups, ``type=`` checks, and
the functions that turn parsed flags into the library's typed configs.

Each command adds the groups it needs (``add_model_arguments``,
``add_decoding_arguments``, ``add_endpoint_arguments``) and, in ``run``,
builds ``DecodingConfig``/``EndpointConfig``/engine options from them here,
so no command imports another to borrow its flags. A bad value fails while
the command line is parsed, and argparse's message names the flag:
``argument --beam-size: must be an integer >= 1, got '0'``. Only stdlib at
module level (imported by every command's ``add_arguments``).
"""

from __future__ import annotations

import argparse
import math
from typing import TYPE_CHECKING, Any, Callable, Optional

if TYPE_CHECKING:
    from wavstream.stream.endpoint import EndpointConfig
    from wavstream.stream.recognizer import DecodingConfig

__all__ = ["int_at_least", "positive_float", "sample_rate", "add_model_arguments", "engine_options", "triton_uri",
           "add_decoding_arguments", "decoding_config", "hotwords_list", "non_negative_float", "finite_float", "add_endpoint_arguments", "endpoint_config"]

# Beam defaults: measured on corpus v2 dev with the default model and LM (docs/decoding.md).
BEAM_SIZE = 8
LM_BEAM_SIZE = 32
LM_ALPHA = 0.3
LM_BETA = 2.0

# The same bounds as resample.check_sample_rate (not imported: it needs numpy).
_MIN_RATE = 1000
_MAX_RATE = 768_000


def int_at_least(lowest: int) -> Callable[[str], int]:
    """A type for integers >= ``lowest``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer >= {lowest}, got {text!r}") from None
        if value < lowest:
            raise argparse.ArgumentTypeError(f"must be an integer >= {lowest}, got {text!r}")
        return value

    parse.__name__ = f"int>={lowest}"
    return parse


def positive_float(text: str) -> float:
    """A finite number > 0 (seconds, milliseconds)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    """A finite number >= 0 (weights)."""
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text!r}")
    return value


def finite_float(text: str) -> float:
    """Any finite number."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def sample_rate(text: str) -> int:
    """An audio rate in Hz, an integer in 1000..768000."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer number of Hz, got {text!r}") from None
    if not _MIN_RATE <= value <= _MAX_RATE:
        raise argparse.ArgumentTypeError(f"must be a sample rate in {_MIN_RATE}..{_MAX_RATE} Hz, got {text!r}")
    return value


# ------------------------------------------------------------------ groups
def add_model_arguments(parser: argparse.ArgumentParser, *, device_flag: str = "--device",
                        threads_default: Optional[int] = None, threads_help: str = "") -> argparse._ArgumentGroup:
    """Bundle and engine: --model, --backend, the engine device flag, --int8, --precision, --threads,
    --latency-ms, and the Triton engine's --triton-url/--triton-model (or --engine triton://HOST:PORT/MODEL).

    ``device_flag``: the mic command names it --engine-device (its --device is the audio device).
    """
    g = parser.add_argument_group("model")
    g.add_argument("--model", default="default", help="bundle folder, or 'default' for the embedded model")
    g.add_argument("--backend", choices=["onnxruntime", "openvino", "auto", "tensorrt", "triton"], default="onnxruntime",
                   help="inference engine; openvino needs wavstream[openvino]; auto: OpenVINO when installed and "
                        "faster for this model in a short probe at load, else onnxruntime (see docs/bench.md); "
                        "triton: the step runs in a Triton server (--triton-url, docs/scaling.md)")
    g.add_argument(device_flag, dest="engine_device", choices=["auto", "cpu", "cuda"], default="auto", help="onnxruntime device")
    g.add_argument("--int8", action="store_true", help="use the bundle's model.int8.onnx (same as --precision int8)")
    g.add_argument("--precision", choices=["fp32", "bf16", "int8"], default="fp32",
                   help="fp32 (default); bf16 (--backend openvino, a CPU with BF16: AMX or AVX512-BF16); "
                        "int8 (the bundle's model.int8.onnx)")
    g.add_argument("--threads", type=int_at_least(0), default=threads_default,
                   help=threads_help or "intra-op threads of the engine; 0 or unset = the runtime's choice")
    g.add_argument("--latency-ms", type=int_at_least(1), default=None,
                   help="chunk size to run, one the bundle serves (`wavstream info --model B` lists them); smaller = text "
                        "sooner, more compute; default: the bundle's own")
    g.add_argument("--triton-url", default="127.0.0.1:8001", metavar="HOST:PORT",
                   help="Triton's gRPC address (--backend triton); --model must be the bundle the Triton model serves")
    g.add_argument("--triton-model", default="wavstream", metavar="NAME", help="Triton model name (--backend triton)")
    g.add_argument("--engine", type=triton_uri, default=None, metavar="triton://HOST:PORT/MODEL",
                   help="shorthand for --backend triton --triton-url HOST:PORT --triton-model MODEL")
    return g


def triton_uri(text: str) -> tuple[str, str]:
    """'triton://HOST:PORT/MODEL' -> (HOST:PORT, MODEL)."""
    rest = text[len("triton://"):] if text.startswith("triton://") else ""
    url, _, model = rest.partition("/")
    if not url or not model or "/" in model:
        raise argparse.ArgumentTypeError(f"expected triton://HOST:PORT/MODEL, got {text!r}")
    return url, model


def engine_options(args: argparse.Namespace, *, back_to_back: bool = False) -> dict[str, Any]:
    """``Recognizer.from_bundle`` keyword arguments of the model group.

    back_to_back: the command runs steps back to back (a file as fast as
    possible), so ONNX Runtime's pool threads spin briefly between ops
    (``BACK_TO_BACK_SPIN_US``; the default model transcribes a file about 1.4x faster).
    Raises ValueError for a precision the chosen backend does not run.
    """
    latency = {"latency_ms": args.latency_ms} if getattr(args, "latency_ms", None) is not None else {}
    engine = getattr(args, "engine", None)
    if engine is not None or args.backend == "triton":
        url, model = engine if engine is not None else (args.triton_url, args.triton_model)
        return {"backend": "triton", "url": url, "model": model, **latency}
    precision = "int8" if args.int8 else getattr(args, "precision", "fp32")
    if args.backend == "tensorrt":
        if precision != "fp32":
            raise ValueError(f"--precision {precision} is for the CPU backends; a TensorRT bundle's model.plan is fp16")
        return {"backend": "tensorrt", **latency}
    if args.backend == "openvino":
        return {"backend": "openvino", "precision": precision, "intra_op_threads": args.threads or None, **latency}
    if precision == "bf16":
        raise ValueError(f"--precision bf16 needs --backend openvino (the {args.backend} backend runs fp32 and int8)")
    from wavstream.stream.engines.ort import BACK_TO_BACK_SPIN_US

    spin = {"spin_us": BACK_TO_BACK_SPIN_US} if back_to_back else {}
    if args.backend == "auto":
        return {"backend": "auto", "quantized": precision == "int8", "intra_op_threads": args.threads or None,
                **spin, **latency}
    return {"backend": "onnxruntime", "device": args.engine_device, "quantized": precision == "int8",
            "intra_op_threads": args.threads or None, **spin, **latency}


def add_decoding_arguments(parser: argparse.ArgumentParser, group: Optional[argparse._ArgumentGroup] = None, *,
                           lm: bool = False, hotwords: bool = False, kenlm: bool = False) -> argparse._ArgumentGroup:
    """--decoder, --beam-size; with ``lm`` the word LM flags (--lm, its alias --kenlm, --lm-alpha, --lm-beta,
    --lexicon); with ``hotwords`` --hotwords FILE."""
    g = group or parser.add_argument_group("decoding")
    g.add_argument("--decoder", choices=["greedy", "beam"], default="greedy", help="CTC decoding method")
    g.add_argument("--beam-size", type=int_at_least(1), default=None,
                   help=f"prefix beam search width (default {BEAM_SIZE}, {LM_BEAM_SIZE} with --lm)")
    if lm or kenlm:
        g.add_argument("--lm", "--kenlm", dest="lm", default=None, metavar="PATH|default",
                       help="word n-gram LM (ARPA, .arpa or .arpa.gz) fused into a beam search; 'default' = the "
                            "package's English LM (docs/decoding.md)")
        g.add_argument("--lm-alpha", type=non_negative_float, default=LM_ALPHA, help="LM weight")
        g.add_argument("--lm-beta", type=finite_float, default=LM_BETA, help="bonus per word")
        g.add_argument("--lexicon", default=None, metavar="FILE",
                       help="with --lm: the only words the beam may spell, one per line")
    if hotwords:
        g.add_argument("--hotwords", default=None, metavar="FILE",
                       help="phrases to bias decoding towards, one per line, optionally 'phrase:score' (turns on beam search)")
    return g


def decoding_config(args: argparse.Namespace) -> "DecodingConfig":
    from wavstream.stream.ctc import LmConfig
    from wavstream.stream.recognizer import DecodingConfig

    lm_path = getattr(args, "lm", None)
    if getattr(args, "lexicon", None) and not lm_path:
        raise ValueError("--lexicon works with a language model: add --lm PATH or --lm default")
    lm = LmConfig(lm_path, args.lm_alpha, args.lm_beta, args.lexicon) if lm_path else None
    beam = args.beam_size if args.beam_size is not None else (LM_BEAM_SIZE if lm else BEAM_SIZE)
    # An LM lives in the beam: --lm means beam search.
    return DecodingConfig("beam" if lm else args.decoder, beam, lm)


def hotwords_list(args: argparse.Namespace) -> Optional[list[Any]]:
    """The --hotwords file's phrases (None without the flag). Raises HotwordError for a bad file."""
    path = getattr(args, "hotwords", None)
    if not path:
        return None
    from wavstream.stream.hotwords import read_hotwords_file

    return list(read_hotwords_file(path))


def add_endpoint_arguments(parser: argparse.ArgumentParser, group: Optional[argparse._ArgumentGroup] = None, *,
                           switch: bool = False) -> argparse._ArgumentGroup:
    """The three endpoint rules' times (and --no-endpoint where one utterance for the whole input makes sense)."""
    g = group or parser.add_argument_group("endpointing")
    if switch:
        g.add_argument("--no-endpoint", dest="endpoint", action="store_false", help="one utterance for the whole input")
    g.add_argument("--rule1-silence", type=positive_float, default=2.4, help="s of silence ending an utterance with nothing decoded")
    g.add_argument("--endpoint-preset", choices=["default", "fast", "command"], default="default",
                   help="how long a pause ends an utterance: default 1.2 s, fast 0.8 s, command 0.5 s "
                        "(shorter waits less for the text, but splits sentences at long pauses)")
    g.add_argument("--rule2-silence", type=positive_float, default=None,
                   help="s of silence ending an utterance after speech (overrides --endpoint-preset)")
    g.add_argument("--max-utterance", type=positive_float, default=20.0, help="s; longer utterances are cut")
    return g


def endpoint_config(args: argparse.Namespace) -> "EndpointConfig":
    from wavstream.stream.endpoint import PRESETS, EndpointConfig

    rule2 = args.rule2_silence if args.rule2_silence is not None else PRESETS[args.endpoint_preset]
    return EndpointConfig.with_times(args.rule1_silence, rule2, args.max_utterance,
                                     enabled=getattr(args, "endpoint", True))
