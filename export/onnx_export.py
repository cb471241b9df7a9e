"""Export the streaming step (and the offline form) of a model to ONNX.

The streaming graph follows docs/bundle.md exactly:

    inputs   samples (B, chunk_samples) float32, state_<name> ... (B, ...)
    outputs  features (B, C, D), [logits (B, C, V)], [codes (B, C, G) int64],
             new_state_<name> ... (same order, shapes and dtypes as the inputs)

Only the batch axis is dynamic. The graph is produced by torch's dynamo
exporter (``torch.onnx.export(..., dynamo=True)``), checked with
``onnx.checker`` and scanned for ops TensorRT lacks.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np
import torch
from torch import Tensor, nn

from wavstream.stream.errors import WavstreamError

from .graph_passes import fuse_sibling_matmuls, gelu_fusable

__all__ = [
    "StreamingStep",
    "OfflineGraph",
    "ExportError",
    "io_names",
    "export_step",
    "export_offline",
    "check_onnx",
    "trt_unfriendly",
    "simplify_onnx",
    "run_ort_step",
    "verify_step",
]

DEFAULT_OPSET = 18

# Ops the TensorRT ONNX parser does not support, or supports only with data-dependent
# shapes that break a static-shape engine. A graph containing one is refused.
TRT_UNFRIENDLY_OPS = {
    "Loop", "If", "Scan", "NonZero", "Unique", "Compress", "SequenceAt", "SequenceConstruct",
    "SequenceInsert", "SequenceEmpty", "SplitToSequence", "ConcatFromSequence", "StringNormalizer",
    "TfIdfVectorizer", "Multinomial", "RandomNormal", "RandomUniform", "RandomNormalLike",
    "RandomUniformLike", "Bernoulli", "Optional", "OptionalGetElement", "OptionalHasElement",
}


class ExportError(WavstreamError, RuntimeError):
    """The model cannot be exported, or the exported graph is wrong."""


class StreamingStep(nn.Module):
    """forward(samples, *states) -> (features, [logits], [codes], *new_states)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.has_logits = bool(model.config.vocab)
        self.has_codes = model.emits_codes

    def forward(self, samples: Tensor, *states: Tensor) -> tuple[Tensor, ...]:
        out = self.model.step_outputs(samples, tuple(states))
        res = [out.features]
        if self.has_logits:
            res.append(out.logits)
        if self.has_codes:
            res.append(out.codes)
        return tuple(res) + tuple(out.state)


def io_names(model: nn.Module) -> tuple[list[str], list[str]]:
    """ONNX input and output names of the streaming graph (docs/bundle.md order)."""
    states = [s.name for s in model.state_specs()]
    ins = ["samples"] + [f"state_{n}" for n in states]
    outs = ["features"]
    if model.config.vocab:
        outs.append("logits")
    if model.emits_codes:
        outs.append("codes")
    outs += [f"new_state_{n}" for n in states]
    return ins, outs


# Per-node metadata the exporter writes that a bundle does not need (source
# paths and FX dumps). The module scope ("namespace") is kept: int8
# quantisation uses it to leave the vector quantiser in fp32.
_DROP_METADATA = ("pkg.torch.onnx.stack_trace", "pkg.torch.onnx.fx_node", "pkg.torch.onnx.class_hierarchy")


def _save_single_file(program: Any, path: Path) -> None:
    """Save an ONNXProgram as one self-contained .onnx file (weights inline),
    with the rewrites of `graph_passes` applied."""
    import onnx

    try:
        program.save(str(path), external_data=False)
    except TypeError:  # older signature
        program.save(str(path))
    data = Path(str(path) + ".data")
    m = onnx.load(str(path), load_external_data=True)
    for n in m.graph.node:
        keep = [p for p in n.metadata_props if p.key not in _DROP_METADATA]
        del n.metadata_props[:]
        n.metadata_props.extend(keep)
    # GELU in the order ONNX Runtime fuses (one kernel instead of five; same numbers)
    m, _ = gelu_fusable(m)
    # query/key/value projections as one product (one kernel call, the input read once; same numbers)
    m, _ = fuse_sibling_matmuls(m)
    onnx.save_model(m, str(path), save_as_external_data=False)
    if data.exists():  # never leave a stray external-data file in a bundle
        data.unlink()


class _quiet_exporter:
    """Silence the exporter's cosmetic chatter (missing torchvision ops, axis
    renaming notes, deprecation warnings); real errors still raise."""

    def __enter__(self) -> None:
        import logging
        import warnings

        self._warn = warnings.catch_warnings()
        self._warn.__enter__()
        warnings.simplefilter("ignore")
        self._loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._export",
                                                         "onnxscript", "torch._dynamo")]
        self._levels = [lg.level for lg in self._loggers]
        for lg in self._loggers:
            lg.setLevel(logging.ERROR)

    def __exit__(self, *exc: Any) -> None:
        for lg, lv in zip(self._loggers, self._levels):
            lg.setLevel(lv)
        self._warn.__exit__(*exc)


def export_step(model: nn.Module, path: Union[str, Path], opset: int = DEFAULT_OPSET,
                example_batch: int = 2, seed: int = 0) -> dict:
    """Export the streaming step of ``model`` (its current chunking) to ``path``.

    Returns a dict with the input/output names, the export time and the file size.
    The model is put in eval mode (the encoder holds no pretraining heads, so
    the graph's weights are the streaming model's alone).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model.eval()
    if not model.config.streamable:
        raise ExportError(
            f"this {model.config.family} model is in its published (offline) form and cannot stream "
            "(utterance normalisation, GroupNorm over time, unpadded or symmetric convs, or full attention); "
            "export it with --offline, or fine-tune it in streaming form first")
    if model.config.is_transformer and model.config.left_chunks < 0:
        raise ExportError("streaming export needs a bounded left context (left_chunks >= 0), got -1")
    wrapper = StreamingStep(model).eval()
    ins, outs = io_names(model)
    g = torch.Generator().manual_seed(seed)
    B = max(int(example_batch), 2)  # 2: keeps torch.export from specialising the batch to 1
    samples = torch.randn(B, model.chunk_samples, generator=g) * 0.1
    states = model.init_state(B, device="cpu")
    batch = torch.export.Dim("batch", min=1, max=4096)
    dynamic = ({0: batch}, tuple({0: batch} for _ in states))
    t0 = time.perf_counter()
    with torch.no_grad(), _quiet_exporter():
        try:
            program = torch.onnx.export(
                wrapper, (samples, *states), dynamo=True, input_names=ins, output_names=outs,
                dynamic_shapes=dynamic, opset_version=opset, optimize=True, verbose=False)
        except Exception as exc:
            raise ExportError(f"torch.onnx.export failed for the {model.config.family} streaming step: "
                              f"{type(exc).__name__}: {str(exc)[:2000]}") from exc
    if program is None:
        raise ExportError("torch.onnx.export returned no program")
    _save_single_file(program, path)
    seconds = time.perf_counter() - t0
    check_onnx(path, ins, outs)
    return {"inputs": ins, "outputs": outs, "export_s": seconds, "bytes": path.stat().st_size, "opset": opset}


def check_onnx(path: Union[str, Path], inputs: Sequence[str] | None = None,
               outputs: Sequence[str] | None = None, static_but_batch: bool = True) -> None:
    """onnx.checker plus the bundle contract: names, only-batch-dynamic, TensorRT-safe ops."""
    import onnx

    path = Path(path)
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:
        raise ExportError(f"{path}: onnx.checker rejected the graph: {exc}") from exc
    m = onnx.load(str(path), load_external_data=False)
    got_in = [i.name for i in m.graph.input]
    got_out = [o.name for o in m.graph.output]
    if inputs is not None and got_in != list(inputs):
        raise ExportError(f"{path}: graph inputs {got_in}, expected {list(inputs)}")
    if outputs is not None and got_out != list(outputs):
        raise ExportError(f"{path}: graph outputs {got_out}, expected {list(outputs)}")
    if static_but_batch:
        for vi in list(m.graph.input) + list(m.graph.output):
            dims = vi.type.tensor_type.shape.dim
            for k, d in enumerate(dims):
                if k > 0 and not d.HasField("dim_value"):
                    raise ExportError(f"{path}: {vi.name} dimension {k} is dynamic ({d.dim_param!r}); "
                                      "only the batch axis may be")
    bad = trt_unfriendly(m)
    if bad:
        raise ExportError(f"{path}: graph contains ops TensorRT cannot build statically: {sorted(bad)}")


def trt_unfriendly(model_or_path: Any) -> set[str]:
    """The op types in the graph (subgraphs included) from TRT_UNFRIENDLY_OPS."""
    import onnx

    m = onnx.load(str(model_or_path), load_external_data=False) if isinstance(model_or_path, (str, Path)) \
        else model_or_path
    found: set[str] = set()

    def walk(graph: Any) -> None:
        for n in graph.node:
            if n.op_type in TRT_UNFRIENDLY_OPS:
                found.add(n.op_type)
            for a in n.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    walk(a.g)
                for sg in a.graphs:
                    walk(sg)

    walk(m.graph)
    for f in m.functions:
        for n in f.node:
            if n.op_type in TRT_UNFRIENDLY_OPS:
                found.add(n.op_type)
    return found


def op_histogram(path: Union[str, Path]) -> dict[str, int]:
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    hist: dict[str, int] = {}
    for n in m.graph.node:
        hist[n.op_type] = hist.get(n.op_type, 0) + 1
    return dict(sorted(hist.items(), key=lambda kv: -kv[1]))


def simplify_onnx(path: Union[str, Path]) -> dict:
    """Run onnxsim on the graph if it is installed and keep the result only if it
    has fewer nodes and still checks. Returns what happened (never raises for a
    missing onnxsim)."""
    import onnx

    path = Path(path)
    try:
        import onnxsim  # type: ignore[import-not-found]
    except Exception:
        return {"simplified": False, "reason": "onnxsim not installed"}
    m = onnx.load(str(path))
    before = len(m.graph.node)
    try:
        # Only the batch axis is dynamic; onnxsim keeps it symbolic.
        sm, ok = onnxsim.simplify(m)
    except Exception as exc:
        return {"simplified": False, "reason": f"onnxsim failed: {type(exc).__name__}: {str(exc)[:200]}"}
    after = len(sm.graph.node)
    if not ok or after >= before:
        return {"simplified": False, "reason": f"no gain ({before} -> {after} nodes)", "nodes": before}
    tmp = path.with_suffix(".sim.onnx")
    onnx.save_model(sm, str(tmp))
    try:
        check_onnx(tmp, [i.name for i in m.graph.input], [o.name for o in m.graph.output])
    except ExportError as exc:
        tmp.unlink()
        return {"simplified": False, "reason": f"simplified graph failed the checks: {exc}", "nodes": before}
    os.replace(tmp, path)
    return {"simplified": True, "nodes_before": before, "nodes_after": after}


# ----------------------------------------------------------------- verification
def ort_session(path: Union[str, Path], threads: int | None = None) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads is not None:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def run_ort_step(session: Any, samples: np.ndarray, states: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """One step through an ONNX Runtime session of a streaming graph; returns outputs by name."""
    ins = [i.name for i in session.get_inputs()]
    outs = [o.name for o in session.get_outputs()]
    feed = {"samples": np.ascontiguousarray(samples, dtype=np.float32)}
    for name, st in zip(ins[1:], states):
        feed[name] = st
    return dict(zip(outs, session.run(outs, feed)))


def stream_ort(session: Any, wave: np.ndarray, chunk_samples: int, state_names: Sequence[str],
               state_init: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """The ONNX Runtime twin of `stream_chunks`: wave (B, n * chunk_samples)
    through a streaming graph chunk by chunk; each output joined along time."""
    states = list(state_init)
    parts: dict[str, list[np.ndarray]] = {}
    for i in range(0, wave.shape[1] - chunk_samples + 1, chunk_samples):
        o = run_ort_step(session, wave[:, i:i + chunk_samples], states)
        for k in ("features", "logits", "codes"):
            if k in o:
                parts.setdefault(k, []).append(o[k])
        states = [o[f"new_state_{n}"] for n in state_names]
    return {k: np.concatenate(v, 1) for k, v in parts.items()}


def verify_step(model: nn.Module, onnx_path: Union[str, Path], chunks: int = 3, batch: int = 2,
                seed: int = 0, session: Any = None) -> dict:
    """Stream the same random audio through torch `step` and the ONNX graph;
    return the max abs differences (features, logits) and whether codes agree."""
    from wavstream.training.models import stream_chunks

    sess = session or ort_session(onnx_path)
    g = torch.Generator().manual_seed(seed)
    wave = torch.randn(batch, chunks * model.chunk_samples, generator=g) * 0.1
    init = model.init_state(batch, device="cpu")
    with torch.no_grad():
        t = stream_chunks(model, wave, state=init)
    o = stream_ort(sess, wave.numpy(), model.chunk_samples, [s.name for s in model.state_specs()],
                   [x.numpy() for x in init])
    diff = {"features": float(np.abs(o["features"] - t.features.numpy()).max()), "logits": 0.0,
            "codes_equal": True}
    if t.logits is not None:
        diff["logits"] = float(np.abs(o["logits"] - t.logits.numpy()).max())
    if t.codes is not None:
        diff["codes_equal"] = bool(np.array_equal(o["codes"], t.codes.numpy()))
    return diff


# ----------------------------------------------------------------- offline graph
class OfflineGraph(nn.Module):
    """Whole-utterance graph: forward(wave (B, L)) -> features (B, T, D), [logits (B, T, V)].

    Every row is a full-length utterance (no padding mask): T is computed from
    L with shape arithmetic, so the graph has no data-dependent control flow.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.has_logits = bool(model.config.vocab)

    def num_frames(self, L: Any) -> Any:
        m = self.model
        if m.config.conv_padding == "causal":
            return (L + m.stride - 1) // m.stride
        for b in m.feature_extractor.conv_layers:
            L = (L + b.pad - b.kernel) // b.stride + 1
        return L

    def forward(self, wave: Tensor) -> tuple[Tensor, ...]:
        m = self.model
        C, Lc = m.config.chunk_frames, m.config.left_chunks
        B, L = wave.shape
        T = self.num_frames(L)
        lengths = torch.full((B,), L, dtype=torch.long, device=wave.device)
        if m.config.conv_padding == "causal":
            # Pad to whole chunks here with integer shape arithmetic (a zero-width
            # pad is fine), so the trace never branches on the example length.
            unit = m.stride * (C if (m.config.is_transformer and C > 0) else 1)
            total = (L + unit - 1) // unit * unit
            wave = torch.nn.functional.pad(wave, (0, total - L))
        prepared, lengths = m._prepare(wave, lengths, C)
        frame_lengths = m.frame_lengths(lengths)
        hidden = m._forward_frames(prepared, frame_lengths, C, Lc, None).hidden
        feats = hidden[m.config.feature_layer][:, :T]
        res = [feats]
        if self.has_logits:
            res.append(m._logits(hidden[-1])[:, :T])
        return tuple(res)


def export_offline(model: nn.Module, path: Union[str, Path], opset: int = DEFAULT_OPSET,
                   example_seconds: float = 1.0, min_samples: int | None = None) -> dict:
    """Export the whole-utterance (offline) form with dynamic batch and time.

    Inputs: ``wave`` (B, L) float32 at 16 kHz. Outputs: ``features`` (B, T, D)
    and ``logits`` (B, T, V) when the model has a CTC head. Used for models
    imported from transformers (published, non-streaming form); works for the
    streaming form too (then with its chunk mask).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model.eval()
    wrapper = OfflineGraph(model).eval()
    outs = ["features"] + (["logits"] if wrapper.has_logits else [])
    L = int(16000 * example_seconds) + 123  # not a multiple of any stride or chunk
    if min_samples is None:
        fe = model.feature_extractor
        min_samples = max(fe.receptive_field, model.stride) if model.config.conv_padding != "causal" else 1
    g = torch.Generator().manual_seed(0)
    wave = torch.randn(2, L, generator=g) * 0.1
    batch = torch.export.Dim("batch", min=1, max=4096)
    time_ = torch.export.Dim("time", min=max(int(min_samples), 2), max=16000 * 3600)
    t0 = time.perf_counter()
    with torch.no_grad(), _quiet_exporter():
        try:
            program = torch.onnx.export(
                wrapper, (wave,), dynamo=True, input_names=["wave"], output_names=outs,
                dynamic_shapes=({0: batch, 1: time_},), opset_version=opset, optimize=True, verbose=False)
        except Exception as exc:
            raise ExportError(f"torch.onnx.export failed for the {model.config.family} offline graph: "
                              f"{type(exc).__name__}: {str(exc)[:2000]}") from exc
    _save_single_file(program, path)
    seconds = time.perf_counter() - t0
    check_onnx(path, ["wave"], outs, static_but_batch=False)
    return {"inputs": ["wave"], "outputs": outs, "export_s": seconds, "bytes": path.stat().st_size, "opset": opset}
