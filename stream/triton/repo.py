"""Write a Triton model repository from a bundle (no torch).

``write_repository(bundle, out)`` writes, for the bundle's default latency
(or ``latency_ms``):

``<name>/``        python backend: wavstream's own runtime inside Triton
                   (``templates/model.py``), streams keyed by CORRID, one
                   batched step per execute(); runs on a CPU-only Triton.
``<name>_decode/`` (``decode=True``) python backend that also decodes and
                   endpoints (``templates/decode_model.py``): chunks in,
                   JSON text events out, for ``TritonRecognizer``.
``<name>_onnx/``   onnxruntime backend with the sequence batcher's implicit
                   state: each bundle state input fed from its output, zero
                   initial state. Bundles export the frame counter as (B, 1)
                   and their graph is copied as is; an older bundle's bare
                   (B,) counter is reshaped to (B, 1) in the copied graph
                   (Triton's states need a dim besides the batch axis, as in
                   NVIDIA's and k2 sherpa's examples); the bundle itself is
                   not changed.
``<name>_trt/``    tensorrt backend, the same configuration, when the bundle has
                   a TensorRT plan whose states need no reshaping.

Every config.pbtxt is checked by ``validate.py`` before this returns
(schema, state rules, and the graph's own inputs and outputs).
"""

from __future__ import annotations

import base64
import hashlib
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

from ..bundle import Bundle, BundleConfig, load_bundle
from ..errors import WavstreamError
from .validate import DTYPE_TO_TRITON, check_against_graph, graph_io, validate_model_config

__all__ = ["TritonRepoError", "RepositoryLayout", "write_repository", "python_model_config", "decode_model_config",
           "onnx_model_config"]

_TEMPLATE = Path(__file__).with_name("templates") / "model.py"
_DECODE_TEMPLATE = Path(__file__).with_name("templates") / "decode_model.py"


class TritonRepoError(WavstreamError):
    """The repository cannot be written (output exists, a tool is missing, the graph is unusual)."""


@dataclass
class RepositoryLayout:
    """What ``write_repository`` wrote."""

    root: Path
    models: dict[str, Path] = field(default_factory=dict)  # model name -> its folder
    latency_ms: int = 0
    notes: list[str] = field(default_factory=list)  # things a user should know (e.g. a plan not copied)


def _dims(shape: tuple) -> str:
    return ", ".join(str(int(d)) for d in shape)


def _io_block(kind: str, items: list[tuple[str, str, tuple]]) -> str:
    entries = ",\n".join(
        f'  {{\n    name: "{n}"\n    data_type: {DTYPE_TO_TRITON[t]}\n    dims: [ {_dims(d)} ]\n  }}' for n, t, d in items)
    return f"{kind} [\n{entries}\n]\n"


def _outputs(cfg: BundleConfig) -> list[tuple[str, str, tuple]]:
    outs = [("features", "float32", (cfg.chunk_frames, cfg.feature_dim))]
    if cfg.has_logits:
        outs.append(("logits", "float32", (cfg.chunk_frames, len(cfg.vocab))))
    if cfg.has_codes:
        outs.append(("codes", "int64", (cfg.chunk_frames, cfg.code_groups)))
    return outs


def _state_dims(shape: tuple) -> tuple:
    """A state's dims without the batch axis; a bare (B,) counter becomes (1,)."""
    return tuple(shape[1:]) or (1,)


def _oldest(queue_delay_us: int, max_sequences: int) -> str:
    # No preferred_batch_size: with one, Triton holds ready chunks back waiting for that many streams;
    # measured here it raised the p50 chunk latency of 12 sessions from 55 to 416 ms (docs/scaling.md).
    return (f"  oldest {{\n    max_candidate_sequences: {max_sequences}\n"
            f"    max_queue_delay_microseconds: {queue_delay_us}\n  }}\n")


def _parameters(params: dict[str, str]) -> str:
    items = ",\n".join(f'  {{\n    key: "{k}"\n    value: {{ string_value: "{v}" }}\n  }}' for k, v in params.items())
    return f"parameters [\n{items}\n]\n"


def bundle_fingerprint(bundle: Bundle) -> str:
    """sha256 of the bundle's config.json: a front end checks it serves the same model."""
    return hashlib.sha256((bundle.path / "config.json").read_bytes()).hexdigest()[:16]


def _sequence_controls(queue_delay_us: int, max_sequences: int, idle_s: float) -> str:
    return (
        "sequence_batching {\n"
        f"  max_sequence_idle_microseconds: {int(idle_s * 1e6)}\n"
        + _oldest(queue_delay_us, max_sequences)
        + '  control_input [\n'
          '    { name: "START" control [ { kind: CONTROL_SEQUENCE_START int32_false_true: [ 0, 1 ] } ] },\n'
          '    { name: "END" control [ { kind: CONTROL_SEQUENCE_END int32_false_true: [ 0, 1 ] } ] },\n'
          '    { name: "CORRID" control [ { kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_UINT64 } ] }\n'
          '  ]\n}\n'
        # One instance: the streams' states live in that one process (see templates/model.py).
        + "instance_group [ { kind: KIND_CPU count: 1 } ]\n"
    )


def python_model_config(bundle: Bundle, name: str, *, max_batch: int = 32, queue_delay_us: int = 5000,
                        max_sequences: int = 256, idle_s: float = 40.0, intra_op_threads: int = 0) -> str:
    cfg = bundle.config
    return (
        f'name: "{name}"\nbackend: "python"\nmax_batch_size: {max_batch}\n'
        + _io_block("input", [("samples", "float32", (cfg.chunk_samples,))])
        + _io_block("output", _outputs(cfg))
        + _sequence_controls(queue_delay_us, max_sequences, idle_s)
        + _parameters({"latency_ms": str(cfg.chunk_ms), "chunk_samples": str(cfg.chunk_samples),
                       "bundle_fingerprint": bundle_fingerprint(bundle), "intra_op_threads": str(intra_op_threads)})
    )


def decode_model_config(bundle: Bundle, name: str, *, max_batch: int = 32, queue_delay_us: int = 5000,
                        max_sequences: int = 256, idle_s: float = 40.0, intra_op_threads: int = 0,
                        decoder: str = "greedy", beam_size: int = 8) -> str:
    """The decoding model (templates/decode_model.py): chunks with their real length and, at a stream's
    START, its options in; JSON events and the chunk's features out. The bundle's config.json travels in
    the ``bundle_config`` parameter (base64), so a front end without the bundle knows the chunk size,
    frame rate and vocabulary."""
    if decoder not in ("greedy", "beam") or beam_size < 1:
        raise ValueError(f"decoder must be 'greedy' or 'beam' and beam_size >= 1, got {decoder!r}, {beam_size}")
    cfg = bundle.config
    raw = base64.b64encode((bundle.path / "config.json").read_bytes()).decode("ascii")
    return (
        f'name: "{name}"\nbackend: "python"\nmax_batch_size: {max_batch}\n'
        + _io_block("input", [("samples", "float32", (cfg.chunk_samples,)), ("real_samples", "int32", (1,)),
                              ("options", "bytes", (1,))])
        + _io_block("output", [("events", "bytes", (1,)), ("features", "float32", (cfg.chunk_frames, cfg.feature_dim))])
        + _sequence_controls(queue_delay_us, max_sequences, idle_s)
        + _parameters({"latency_ms": str(cfg.chunk_ms), "chunk_samples": str(cfg.chunk_samples),
                       "bundle_fingerprint": bundle_fingerprint(bundle), "intra_op_threads": str(intra_op_threads),
                       "decoder": decoder, "beam_size": str(beam_size), "bundle_config": raw})
    )


def onnx_model_config(bundle: Bundle, name: str, *, backend: str = "onnxruntime", max_batch: int = 32,
                      queue_delay_us: int = 5000, max_sequences: int = 256, idle_s: float = 40.0,
                      kind: str = "KIND_GPU") -> str:
    cfg = bundle.config
    states = []
    for st in cfg.states:
        dims = _dims(_state_dims(st.shape))
        t = DTYPE_TO_TRITON[st.dtype]
        states.append(
            f'    {{\n      input_name: "{st.input_name}"\n      output_name: "{st.output_name}"\n'
            f"      data_type: {t}\n      dims: [ {dims} ]\n"
            f'      initial_state: {{\n        name: "zeros"\n        data_type: {t}\n        dims: [ {dims} ]\n'
            f"        zero_data: true\n      }}\n    }}")
    return (
        f'name: "{name}"\nbackend: "{backend}"\nmax_batch_size: {max_batch}\n'
        + _io_block("input", [("samples", "float32", (cfg.chunk_samples,))])
        + _io_block("output", _outputs(cfg))
        + "sequence_batching {\n"
        f"  max_sequence_idle_microseconds: {int(idle_s * 1e6)}\n"
        + _oldest(queue_delay_us, max_sequences)
        + "  state [\n" + ",\n".join(states) + "\n  ]\n}\n"
        + f"instance_group [ {{ kind: {kind} count: 1 }} ]\n"
        + _parameters({"latency_ms": str(cfg.chunk_ms), "chunk_samples": str(cfg.chunk_samples),
                       "bundle_fingerprint": bundle_fingerprint(bundle)})
    )


def _copy_graph(bundle: Bundle, dest: Path) -> list[str]:
    """Copy the step graph (and its external-data files) to ``dest``/model.onnx, giving every rank-1
    state a (B, 1) shape; returns the names of the states reshaped."""
    try:
        import onnx
        from onnx import TensorProto, helper
    except ImportError as exc:
        raise TritonRepoError(f"writing the onnxruntime model needs the 'onnx' package: pip install 'wavstream[triton]' ({exc})") from exc
    src = bundle.model_file("onnx")
    model = onnx.load(str(src), load_external_data=False)
    g = model.graph
    reshaped = []
    for st in bundle.config.states:
        if len(st.shape) != 1:
            continue
        inner_in, inner_out = f"{st.input_name}__flat", f"{st.output_name}__flat"
        for node in g.node:
            node.input[:] = [inner_in if x == st.input_name else x for x in node.input]
            node.output[:] = [inner_out if x == st.output_name else x for x in node.output]
            node.input[:] = [inner_out if x == st.output_name else x for x in node.input]
        axes = f"{st.name}__axes1"
        g.node.insert(0, helper.make_node("Squeeze", [st.input_name, axes], [inner_in]))
        g.node.insert(0, helper.make_node("Constant", [], [axes], value=helper.make_tensor(axes, TensorProto.INT64, [1], [1])))
        g.node.append(helper.make_node("Unsqueeze", [inner_out, axes], [st.output_name]))
        for vi in list(g.input) + list(g.output):
            if vi.name in (st.input_name, st.output_name):
                dim = vi.type.tensor_type.shape.dim.add()
                dim.dim_value = 1
        reshaped.append(st.name)
    dest.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(dest / "model.onnx"))
    # External data (a version-2 bundle keeps weights in weights.bin): the graph names the files.
    files = {e.value for t in g.initializer for e in t.external_data if e.key == "location"}
    for node in g.node:
        for a in node.attribute:
            if a.t is not None:
                files |= {e.value for e in a.t.external_data if e.key == "location"}
    for f in sorted(files):
        shutil.copy2(src.parent / f, dest / f)
    return reshaped


def write_repository(
    bundle: Union[Bundle, str, Path],
    out: Union[str, Path],
    *,
    name: str = "wavstream",
    latency_ms: Optional[int] = None,
    max_batch: int = 32,
    queue_delay_us: int = 5000,
    max_sequences: int = 256,
    idle_s: float = 40.0,
    intra_op_threads: int = 0,
    python: bool = True,
    onnx: bool = True,
    decode: bool = False,
    decoder: str = "greedy",
    beam_size: int = 8,
    overwrite: bool = False,
) -> RepositoryLayout:
    """Write a model repository for ``bundle`` into ``out`` and validate it.

    Raises TritonRepoError (``out`` exists and is not empty without ``overwrite``;
    a needed package is missing), TritonConfigError (a config fails validation),
    BundleError / UnsupportedLatencyError (the bundle or latency).
    """
    if max_batch < 1 or max_sequences < 1:
        raise ValueError(f"max_batch and max_sequences must be >= 1, got {max_batch}, {max_sequences}")
    if not name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"model name must be letters, digits, '-' and '_', got {name!r}")
    if not isinstance(bundle, Bundle) or latency_ms is not None:
        bundle = load_bundle(bundle.path if isinstance(bundle, Bundle) else bundle, latency_ms=latency_ms)
    root = Path(out)
    if root.exists() and any(root.iterdir()):
        if not overwrite:
            raise TritonRepoError(f"{root} exists and is not empty (overwrite=True, or --force on the command line, replaces it)")
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    layout = RepositoryLayout(root=root, latency_ms=bundle.config.chunk_ms)
    common = dict(max_batch=max_batch, queue_delay_us=queue_delay_us, max_sequences=max_sequences, idle_s=idle_s)

    def python_backend(model: str, text: str, template: Path) -> None:
        """A python-backend model: its validated config, the template as model.py, the bundle beside it."""
        folder = root / model
        (folder / "1").mkdir(parents=True)
        validate_model_config(text, str(folder / "config.pbtxt"))
        (folder / "config.pbtxt").write_text(text)
        shutil.copy2(template, folder / "1" / "model.py")
        shutil.copytree(bundle.path, folder / "1" / "bundle", ignore=shutil.ignore_patterns("*.plan", "__pycache__"))
        layout.models[model] = folder

    if python:
        python_backend(name, python_model_config(bundle, name, intra_op_threads=intra_op_threads, **common), _TEMPLATE)

    if decode:
        dname = f"{name}_decode"
        python_backend(dname, decode_model_config(bundle, dname, intra_op_threads=intra_op_threads, decoder=decoder,
                                                  beam_size=beam_size, **common), _DECODE_TEMPLATE)

    if onnx:
        oname = f"{name}_onnx"
        folder = root / oname
        reshaped = _copy_graph(bundle, folder / "1")
        text = onnx_model_config(bundle, oname, **common)
        cfg = validate_model_config(text, str(folder / "config.pbtxt"))
        ins, outs = graph_io(folder / "1" / "model.onnx")
        check_against_graph(cfg, ins, outs, str(folder / "1" / "model.onnx"))
        (folder / "config.pbtxt").write_text(text)
        layout.models[oname] = folder
        if reshaped:
            layout.notes.append(f"{oname}: states {reshaped} are (B,) in the bundle; the repository's graph takes them "
                                f"as (B, 1)")
        if bundle.has_model_file("tensorrt"):
            if reshaped:
                layout.notes.append(f"the bundle's TensorRT plan takes {reshaped} as (B,); no tensorrt model written: "
                                    f"build a plan from {folder / '1' / 'model.onnx'} for it")
            else:
                tname = f"{name}_trt"
                tfolder = root / tname
                (tfolder / "1").mkdir(parents=True)
                ttext = onnx_model_config(bundle, tname, backend="tensorrt", **common)
                validate_model_config(ttext, str(tfolder / "config.pbtxt"))
                (tfolder / "config.pbtxt").write_text(ttext)
                shutil.copy2(bundle.model_file("tensorrt"), tfolder / "1" / "model.plan")
                layout.models[tname] = tfolder
    return layout
