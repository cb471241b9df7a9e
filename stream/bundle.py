"""Load and validate a model bundle (docs/bundle.md, format versions 1 and 2).

A bundle is a folder with ``config.json``, ``tokens.txt`` (when the model has
logits) and the model files. ``load_bundle(path)`` checks the folder, the
config and the tokens without loading the model (cheap); the engines call
``check_graph_io`` on the graph they load, so a config that disagrees with its
ONNX graph (names, state shapes, dtypes) is refused before any audio flows.
Every problem raises ``BundleError`` with a message naming the file and field.

A version-2 bundle serves several latencies: one step graph per chunk size
(sharing one weights file), listed under ``latencies``. ``load_bundle(path,
latency_ms=...)`` picks one; the Bundle it returns looks exactly like a
version-1 bundle at that chunk size, so engines need not know.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np

from .errors import WavstreamError

__all__ = [
    "FORMAT_VERSION",
    "BundleError",
    "BundleNotFoundError",
    "UnsupportedLatencyError",
    "StateSpec",
    "BundleConfig",
    "Bundle",
    "load_bundle",
    "parse_config",
    "check_graph_io",
]

# The newest bundle format this runtime understands (2: several latencies in one bundle).
FORMAT_VERSION = 2

_DTYPES = {"float32": np.float32, "float16": np.float16, "int64": np.int64, "int32": np.int32}
# onnxruntime's type strings for the dtypes above.
_ORT_TYPES = {"float32": "tensor(float)", "float16": "tensor(float16)", "int64": "tensor(int64)", "int32": "tensor(int32)"}


class BundleError(WavstreamError):
    """The bundle folder, its config or its model is missing or inconsistent."""


class BundleNotFoundError(BundleError, FileNotFoundError):
    """The bundle folder or one of its required files does not exist."""


class UnsupportedLatencyError(BundleError, ValueError):
    """A latency (chunk size) the bundle does not serve; the message lists those it does."""


@dataclass(frozen=True)
class StateSpec:
    """One state tensor: graph input ``state_<name>``, output ``new_state_<name>``."""

    name: str
    shape: tuple[Union[int, str], ...]  # first entry is "batch"
    dtype: str  # "float32" | "int64" | ...
    init: str = "zeros"

    @property
    def np_dtype(self) -> type:
        return _DTYPES[self.dtype]

    def batch_shape(self, batch: int) -> tuple[int, ...]:
        """Concrete shape for a batch of ``batch`` streams."""
        return (batch,) + tuple(int(d) for d in self.shape[1:])

    def zeros(self, batch: int) -> np.ndarray:
        return np.zeros(self.batch_shape(batch), dtype=self.np_dtype)

    @property
    def input_name(self) -> str:
        return f"state_{self.name}"

    @property
    def output_name(self) -> str:
        return f"new_state_{self.name}"


@dataclass(frozen=True)
class BundleConfig:
    """The parsed ``config.json``. Field meanings: docs/bundle.md."""

    format_version: int
    family: str
    sample_rate: int
    stride: int  # samples per output frame
    chunk_frames: int
    chunk_samples: int  # = chunk_frames * stride
    left_chunks: int
    feature_dim: int
    feature_layer: int
    num_layers: int
    vocab: tuple[str, ...]
    blank_id: int
    word_delimiter: str
    code_groups: int
    states: tuple[StateSpec, ...]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    files: dict[str, str]
    raw: dict[str, Any] = field(repr=False, compare=False, default_factory=dict)
    latencies_ms: tuple[int, ...] = ()  # every chunk size the bundle serves (this one included)
    # How many frames the model's CTC spikes lag a word's sound (measured per model; word times subtract it).
    word_time_delay_frames: int = 0

    @property
    def chunk_ms(self) -> int:
        """This step graph's chunk, in ms: the latency it adds."""
        return int(round(1000 * self.chunk_samples / self.sample_rate))

    @property
    def has_logits(self) -> bool:
        return len(self.vocab) > 0

    @property
    def has_codes(self) -> bool:
        return self.code_groups > 0

    @property
    def frame_shift_s(self) -> float:
        return self.stride / self.sample_rate

    @property
    def chunk_s(self) -> float:
        return self.chunk_samples / self.sample_rate

    def real_frames(self, samples: int) -> int:
        """Output frames that are real for ``samples`` real input samples of a padded chunk."""
        return min(self.chunk_frames, math.ceil(samples / self.stride))

    def resolved_feature_layer(self) -> int:
        """feature_layer with -1 (meaning the last) made explicit."""
        return self.num_layers if self.feature_layer < 0 else self.feature_layer


@dataclass(frozen=True)
class Bundle:
    path: Path
    config: BundleConfig
    tokens: tuple[str, ...]

    def model_file(self, kind: str = "onnx") -> Path:
        """Path of the model file of ``kind`` ("onnx", "int8", "qdq" (static int8) or "tensorrt")."""
        defaults = {"onnx": "model.onnx", "int8": "model.int8.onnx", "qdq": "model.qdq.onnx", "tensorrt": "model.plan"}
        if kind not in defaults:
            raise ValueError(f"unknown model kind {kind!r}; expected one of {sorted(defaults)}")
        name = self.config.files.get(kind, defaults[kind])
        p = self.path / name
        if not p.is_file():
            have = sorted(x.name for x in self.path.iterdir())
            raise BundleNotFoundError(f"bundle {self.path} has no {kind} model file {name!r} (files present: {have})")
        return p

    def has_model_file(self, kind: str) -> bool:
        try:
            self.model_file(kind)
            return True
        except BundleNotFoundError:
            return False


# ------------------------------------------------------------------- loading
_REQUIRED = {
    "format_version": int,
    "sample_rate": int,
    "stride": int,
    "chunk_frames": int,
    "chunk_samples": int,
    "feature_dim": int,
    "states": list,
    "inputs": list,
    "outputs": list,
}


def _parse_config(raw: dict[str, Any], where: Path) -> BundleConfig:
    if not isinstance(raw, dict):
        raise BundleError(f"{where}: expected a JSON object, found {type(raw).__name__}")
    # Version first: a newer bundle may legitimately lack fields we expect.
    version = raw.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise BundleError(f"{where}: 'format_version' must be an integer, found {version!r}")
    if version > FORMAT_VERSION:
        raise BundleError(
            f"{where}: bundle format_version {version} is newer than format_version {FORMAT_VERSION}, "
            f"the newest this wavstream runtime knows; upgrade wavstream to load it"
        )
    if version < 1:
        raise BundleError(f"{where}: format_version must be >= 1, found {version}")
    for key, typ in _REQUIRED.items():
        if key not in raw:
            raise BundleError(f"{where}: missing required field {key!r}")
        if not isinstance(raw[key], typ) or isinstance(raw[key], bool):
            raise BundleError(f"{where}: field {key!r} must be {typ.__name__}, found {raw[key]!r}")
    stride, cf, cs = raw["stride"], raw["chunk_frames"], raw["chunk_samples"]
    if stride <= 0 or cf <= 0:
        raise BundleError(f"{where}: stride and chunk_frames must be positive (stride={stride}, chunk_frames={cf})")
    if cs != cf * stride:
        raise BundleError(f"{where}: chunk_samples={cs} but chunk_frames*stride = {cf}*{stride} = {cf * stride}")
    if raw["sample_rate"] != 16000:
        raise BundleError(f"{where}: sample_rate must be 16000 (the runtime resamples to it), found {raw['sample_rate']}")

    vocab = tuple(str(t) for t in raw.get("vocab", []) or [])
    blank_id = int(raw.get("blank_id", 0))
    if vocab and not 0 <= blank_id < len(vocab):
        raise BundleError(f"{where}: blank_id {blank_id} is outside the vocabulary of {len(vocab)} tokens")
    code_groups = int(raw.get("code_groups", 0) or 0)

    states: list[StateSpec] = []
    for i, s in enumerate(raw["states"]):
        if not isinstance(s, dict) or "name" not in s or "shape" not in s:
            raise BundleError(f"{where}: states[{i}] must be an object with 'name' and 'shape', found {s!r}")
        shape = tuple(s["shape"])
        if not shape or shape[0] != "batch":
            raise BundleError(f"{where}: state {s['name']!r}: first dimension must be \"batch\", shape is {list(shape)}")
        if not all(isinstance(d, int) and d >= 0 for d in shape[1:]):
            raise BundleError(f"{where}: state {s['name']!r}: dimensions after batch must be fixed integers, shape is {list(shape)}")
        dtype = s.get("dtype", "float32")
        if dtype not in _DTYPES:
            raise BundleError(f"{where}: state {s['name']!r}: unsupported dtype {dtype!r} (known: {sorted(_DTYPES)})")
        init = s.get("init", "zeros")
        if init != "zeros":
            raise BundleError(f"{where}: state {s['name']!r}: unsupported init {init!r} (format 1 knows only 'zeros')")
        states.append(StateSpec(str(s["name"]), shape, dtype, init))

    # The I/O lists are fully determined by the rest of the config: check them.
    want_in = ["samples"] + [st.input_name for st in states]
    want_out = ["features"] + (["logits"] if vocab else []) + (["codes"] if code_groups else []) + [st.output_name for st in states]
    if list(raw["inputs"]) != want_in:
        raise BundleError(f"{where}: 'inputs' is {raw['inputs']} but the states and docs/bundle.md require {want_in}")
    if list(raw["outputs"]) != want_out:
        raise BundleError(f"{where}: 'outputs' is {raw['outputs']} but vocab/code_groups/states require {want_out}")

    delay = raw.get("word_time_delay_frames", 0)
    if not isinstance(delay, int) or isinstance(delay, bool) or not 0 <= delay <= 50:
        raise BundleError(f"{where}: 'word_time_delay_frames' must be an integer in 0..50, found {delay!r}")

    return BundleConfig(
        format_version=version,
        family=str(raw.get("family", "unknown")),
        sample_rate=raw["sample_rate"],
        stride=stride,
        chunk_frames=cf,
        chunk_samples=cs,
        left_chunks=int(raw.get("left_chunks", 0)),
        feature_dim=raw["feature_dim"],
        feature_layer=int(raw.get("feature_layer", -1)),
        num_layers=int(raw.get("num_layers", 0)),
        vocab=vocab,
        blank_id=blank_id,
        word_delimiter=str(raw.get("word_delimiter", "|")),
        code_groups=code_groups,
        states=tuple(states),
        inputs=tuple(want_in),
        outputs=tuple(want_out),
        files=dict(raw.get("files", {}) or {}),
        raw=raw,
        latencies_ms=tuple(sorted(int(k) for k in raw["latencies"])) if "latencies" in raw
        else (int(round(1000 * cs / raw["sample_rate"])),),
        word_time_delay_frames=delay,
    )


_VARIANT_KEYS = ("chunk_frames", "chunk_samples", "left_chunks", "states", "inputs", "outputs", "files")


def _select_latency(raw: dict[str, Any], latency_ms: Optional[int], where: Path) -> dict[str, Any]:
    """The config of one latency: the top level with that latency's variant fields laid over it."""
    variants = raw.get("latencies")
    if variants is None:
        own = raw.get("chunk_samples", 0) * 1000 / max(1, raw.get("sample_rate", 16000))
        if latency_ms is not None and abs(latency_ms - own) > 1e-6:
            raise UnsupportedLatencyError(
                f"{where}: bundle serves only {own:g} ms chunks, not {latency_ms:g} ms "
                f"(export it with --latencies-ms to serve several)")
        return raw
    if not isinstance(variants, dict) or not variants or not all(isinstance(v, dict) for v in variants.values()):
        raise BundleError(f"{where}: 'latencies' must map chunk ms to objects, found {str(variants)[:200]}")
    try:
        served = {int(k): v for k, v in variants.items()}
    except ValueError:
        raise BundleError(f"{where}: 'latencies' keys must be chunk sizes in ms, found {sorted(variants)}") from None
    want = latency_ms if latency_ms is not None else raw.get("default_latency_ms")
    if want is None or int(want) != want or int(want) not in served:
        raise UnsupportedLatencyError(
            f"{where}: latency {want} ms is not served by this bundle; it serves "
            f"{', '.join(str(k) for k in sorted(served))} ms")
    variant = served[int(want)]
    missing = [k for k in _VARIANT_KEYS if k not in variant]
    if missing:
        raise BundleError(f"{where}: latencies[{want}] lacks {missing}")
    return {**raw, **{k: variant[k] for k in _VARIANT_KEYS}}


def _read_tokens(path: Path, vocab: Sequence[str]) -> tuple[str, ...]:
    tokens: list[str] = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        # "<token> <id>"; the token itself may not contain whitespace, the id is last.
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise BundleError(f"{path}:{lineno}: expected '<token> <id>', found {line!r}")
        tok, idx = parts[0], int(parts[1])
        if idx != len(tokens):
            raise BundleError(f"{path}:{lineno}: ids must be 0,1,2,... in order; expected {len(tokens)}, found {idx}")
        tokens.append(tok)
    if vocab and list(tokens) != list(vocab):
        diff = next((i for i, (a, b) in enumerate(zip(tokens, vocab)) if a != b), min(len(tokens), len(vocab)))
        raise BundleError(
            f"{path}: disagrees with config.json 'vocab' ({len(tokens)} vs {len(vocab)} tokens; first difference at id {diff})"
        )
    return tuple(tokens)


def parse_config(raw: Any, latency_ms: Optional[int] = None, where: Union[str, Path] = "config.json") -> BundleConfig:
    """A config.json's parsed JSON -> the BundleConfig of one latency (as ``load_bundle`` reads it; for a
    config that came without its folder, e.g. from a Triton model's parameters). Raises BundleError."""
    where = Path(where)
    if isinstance(raw, dict) and isinstance(raw.get("format_version"), int) and raw["format_version"] <= FORMAT_VERSION:
        raw = _select_latency(raw, latency_ms, where)
    return _parse_config(raw, where)


def load_bundle(path: Union[str, Path], latency_ms: Optional[int] = None) -> Bundle:
    """Read and validate a bundle folder's config and tokens.

    ``latency_ms``: the chunk size to run, one of the bundle's ``latencies_ms``
    (default: the bundle's default; a version-1 bundle serves its one chunk).

    The model graph itself is checked when an engine loads it
    (``check_graph_io``). Raises:
        BundleNotFoundError: the folder, config.json or tokens.txt is missing.
        BundleError: the config is invalid, newer than this runtime, or the
            tokens disagree with it.
        UnsupportedLatencyError: ``latency_ms`` is not one the bundle serves (named with those it does).
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise BundleNotFoundError(f"model bundle not found: {p} does not exist")
    if not p.is_dir():
        raise BundleNotFoundError(f"model bundle must be a folder, {p} is a file")
    cfg_path = p / "config.json"
    if not cfg_path.is_file():
        raise BundleNotFoundError(f"bundle {p} has no config.json (files present: {sorted(x.name for x in p.iterdir())})")
    try:
        raw = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{cfg_path}: not valid JSON ({exc})") from exc
    config = parse_config(raw, latency_ms, cfg_path)
    tok_path = p / "tokens.txt"
    if tok_path.is_file():
        tokens = _read_tokens(tok_path, config.vocab)
    elif config.has_logits:
        raise BundleNotFoundError(f"bundle {p} has logits ({len(config.vocab)} tokens) but no tokens.txt")
    else:
        tokens = ()
    return Bundle(path=p, config=config, tokens=tokens)


# ------------------------------------------------------------ graph checking
@dataclass(frozen=True)
class IOSpec:
    """What a loaded graph declares for one input/output (engine-neutral)."""

    name: str
    shape: Optional[tuple[Any, ...]]  # ints for fixed dims, str/None/-1 for dynamic; None = undeclared
    dtype: str  # "float32", "int64", ...


def _fixed(d: Any) -> Optional[int]:
    return d if isinstance(d, int) and d >= 0 else None


def check_graph_io(
    config: BundleConfig,
    inputs: Sequence[IOSpec],
    outputs: Sequence[IOSpec],
    model_path: Union[str, Path],
) -> None:
    """Check the graph's declared inputs/outputs against the config.

    Raises BundleError naming the first disagreement (a missing/extra name, a
    state whose shape or dtype differs, a chunk size the graph doesn't take).
    """
    where = str(model_path)
    got_in = {s.name: s for s in inputs}
    got_out = {s.name: s for s in outputs}
    missing_in = [n for n in config.inputs if n not in got_in]
    extra_in = [n for n in got_in if n not in config.inputs]
    if missing_in or extra_in:
        raise BundleError(
            f"config.json inputs do not match the graph {where}: "
            f"config-only {missing_in}, graph-only {extra_in} (graph inputs: {list(got_in)})"
        )
    missing_out = [n for n in config.outputs if n not in got_out]
    if missing_out:
        raise BundleError(
            f"config.json outputs do not match the graph {where}: graph lacks {missing_out} (graph outputs: {list(got_out)})"
        )

    def check(spec: IOSpec, want_shape: Sequence[Optional[int]], want_dtype: str, what: str) -> None:
        if spec.dtype != want_dtype:
            raise BundleError(f"{what} {spec.name!r}: dtype {spec.dtype} in the graph {where}, {want_dtype} in config.json")
        if spec.shape is None:
            return  # shape not declared by the graph: checked at run time by the shapes it returns
        if len(spec.shape) != len(want_shape):
            raise BundleError(
                f"{what} {spec.name!r}: config says rank {len(want_shape)} {list(want_shape)}, "
                f"graph {where} declares rank {len(spec.shape)} {list(spec.shape)}"
            )
        for i, (g, w) in enumerate(zip(spec.shape, want_shape)):
            if w is not None and _fixed(g) is not None and g != w:
                raise BundleError(
                    f"{what} {spec.name!r}: dimension {i} is {g} in the graph {where} but {w} in config.json "
                    f"(graph shape {list(spec.shape)}, config shape {list(want_shape)})"
                )

    check(got_in["samples"], [None, config.chunk_samples], "float32", "input")
    check(got_out["features"], [None, config.chunk_frames, config.feature_dim], "float32", "output")
    if config.has_logits:
        check(got_out["logits"], [None, config.chunk_frames, len(config.vocab)], "float32", "output")
    if config.has_codes:
        check(got_out["codes"], [None, config.chunk_frames, config.code_groups], "int64", "output")
    for st in config.states:
        want = [None] + [int(d) for d in st.shape[1:]]
        check(got_in[st.input_name], want, st.dtype, "state input")
        check(got_out[st.output_name], want, st.dtype, "state output")


def ort_type_to_dtype(t: str) -> str:
    """'tensor(float)' -> 'float32' (unknown types pass through unchanged)."""
    for k, v in _ORT_TYPES.items():
        if v == t:
            return k
    return t
