"""Dynamic int8 quantisation of the streaming graph with ONNX Runtime.

Weights of MatMul/Gemm (the transformer and CTC head, the conv-to-transformer
projection) are stored as int8 and activations are quantised per call
(``onnxruntime.quantization.quantize_dynamic``). Convolutions stay fp32 by
default: dynamic ConvInteger is slow on ONNX Runtime's CPU provider and the
first conv layers are the most sensitive to quantisation. The deviation from
the fp32 graph is measured on the spot and written into config.json.
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence, Union

import numpy as np

__all__ = ["quantize_onnx", "quantize_static_onnx", "compare_graphs", "quantize_bundle_model",
           "quantize_bundle_model_static", "calibration_feeds", "test_signal"]

DEFAULT_OPS = ("MatMul", "Gemm")


# Nodes under these modules stay fp32: the vector quantiser's argmax picks the
# codes, and int8 noise there flips codes (a different codeword, not a small error);
# the conv stacks run as MatMuls in the streaming graph (time-major, see
# training/models/conv.py) but are convolutions, kept fp32 as above (the raw-wave
# layers are the most sensitive: quantised, the tiny wav2vec2's feature error
# went from under 5 % to 5.5 %).
EXCLUDE_MODULES = ("vector_quantizer", "feature_extractor", "feature_aggregator")

# Static int8 (calibrated activations, run by OpenVINO's int8 units) keeps fewer
# modules fp32: only the conv stack's first two layers, the ones that see the
# raw wave at the highest frame rates. Measured on the default model (dev CER,
# fp32 0.3673): every conv layer quantised 0.3749; layer 0 kept 0.3749;
# layers 0-1 kept 0.3662; the later layers carry a third of a BASE model's
# conv products.
STATIC_EXCLUDE_MODULES = ("vector_quantizer", "feature_aggregator",
                          "feature_extractor.conv_layers.0.", "feature_extractor.conv_layers.1.")


def nodes_to_keep_fp32(path: Union[str, Path, Any], modules: Sequence[str] = EXCLUDE_MODULES) -> list[str]:
    """Names of nodes whose exporter scope (metadata 'namespace') lies in ``modules``
    (``path``: a graph file or a loaded ModelProto)."""
    import onnx

    m = path if isinstance(path, onnx.ModelProto) else onnx.load(str(path), load_external_data=False)
    keep = []
    for n in m.graph.node:
        scope = next((p.value for p in n.metadata_props if p.key in ("namespace", "pkg.torch.onnx.name_scopes")), "")
        if any(f"model.{mod}" in scope for mod in modules):
            keep.append(n.name)
    return keep


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """ONNX Runtime's quantizers log a pre-processing hint through the root logger: hold it at ERROR."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _zero_states(states: Sequence[Any]) -> list[np.ndarray]:
    """Batch-1 zeros for state specs (``name``, ``shape`` without the batch, ``dtype``)."""
    return [np.zeros((1, *s.shape), dtype=np.int64 if "int64" in str(s.dtype) else np.float32) for s in states]


def _summary(method: str, cmp: dict, **fields: Any) -> dict:
    """config.json's record of a quantised graph: how it was made and its measured deviation."""
    return {"method": method, **fields, **{k: round(v, 6) if isinstance(v, float) else v for k, v in cmp.items()},
            "measured_on": "synthetic harmonic test signal, batch 1"}


def quantize_onnx(src: Union[str, Path], dst: Union[str, Path], op_types: Sequence[str] = DEFAULT_OPS,
                  per_channel: bool = True, exclude_modules: Sequence[str] = EXCLUDE_MODULES) -> dict:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    t0 = time.perf_counter()
    exclude = nodes_to_keep_fp32(src, exclude_modules)
    with _quiet_root_logger():
        quantize_dynamic(str(src), str(dst), op_types_to_quantize=list(op_types), per_channel=per_channel,
                         weight_type=QuantType.QInt8, nodes_to_exclude=exclude,
                         extra_options={"MatMulConstBOnly": True})
    return {"op_types": list(op_types), "per_channel": per_channel, "seconds": time.perf_counter() - t0,
            "bytes": Path(dst).stat().st_size, "kept_fp32": exclude}


def test_signal(n_samples: int, batch: int = 1, seed: int = 0, sample_rate: int = 16000) -> np.ndarray:
    """Deterministic speech-like audio (harmonic bursts with a moving pitch plus
    noise) for measuring quantisation error when no recordings are at hand."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_samples) / sample_rate
    rows = []
    for b in range(batch):
        f0 = 110 + 60 * np.sin(2 * np.pi * (0.7 + 0.1 * b) * t)
        phase = 2 * np.pi * np.cumsum(f0) / sample_rate
        x = sum(np.sin(k * phase) / k for k in range(1, 12))
        env = (np.sin(2 * np.pi * (3.1 + 0.3 * b) * t) > -0.2).astype(np.float64)
        x = 0.1 * x * env + 0.01 * rng.standard_normal(n_samples)
        rows.append(x)
    return np.stack(rows).astype(np.float32)


def compare_graphs(fp32_path: Union[str, Path], int8_path: Union[str, Path], model: Any = None, *,
                   chunk_samples: int | None = None, states: Sequence[Any] | None = None,
                   wave: np.ndarray | None = None, chunks: int = 20) -> dict:
    """Stream the same audio through both graphs; return feature/logit deviation
    and the fraction of frames whose greedy CTC label is unchanged."""
    from .onnx_export import ort_session, stream_ort

    if model is not None:
        chunk_samples = model.chunk_samples
        states = model.state_specs()
    assert chunk_samples is not None and states is not None
    names = [s.name for s in states]
    init = _zero_states(states)
    if wave is None:
        wave = test_signal(chunk_samples * chunks)
    a = stream_ort(ort_session(fp32_path), wave, chunk_samples, names, init)
    b = stream_ort(ort_session(int8_path), wave, chunk_samples, names, init)
    d = a["features"] - b["features"]
    rms = float(np.sqrt((a["features"] ** 2).mean())) or 1.0
    res = {
        "feature_max_abs_diff": float(np.abs(d).max()),
        "feature_rel_rms": float(np.sqrt((d ** 2).mean()) / rms),
        "feature_cosine_min": float(np.min(
            (a["features"] * b["features"]).sum(-1)
            / (np.linalg.norm(a["features"], axis=-1) * np.linalg.norm(b["features"], axis=-1) + 1e-12))),
        "frames": int(a["features"].shape[1]),
    }
    if "logits" in a:
        res["argmax_agreement"] = float((a["logits"].argmax(-1) == b["logits"].argmax(-1)).mean())
        res["logits_max_abs_diff"] = float(np.abs(a["logits"] - b["logits"]).max())
    return res


def quantize_bundle_model(model: Any, fp32_path: Union[str, Path], int8_path: Union[str, Path],
                          op_types: Sequence[str] = DEFAULT_OPS) -> dict:
    q = quantize_onnx(fp32_path, int8_path, op_types)
    cmp = compare_graphs(fp32_path, int8_path, model)
    summary = _summary("onnxruntime dynamic", cmp, op_types=q["op_types"], weight_type="int8 per-channel")
    return {**q, "compare": cmp, "summary": summary}


# --------------------------------------------------------------------- static
def calibration_feeds(fp32_path: Union[str, Path], waves: Sequence[np.ndarray], chunk_samples: int,
                      states: Sequence[Any]) -> list[dict[str, np.ndarray]]:
    """The inputs of every step when the fp32 graph streams ``waves`` (1-D, 16 kHz) one at a time:
    what static quantisation calibrates on (each step sees the states the previous one left)."""
    from .onnx_export import ort_session, run_ort_step

    sess = ort_session(fp32_path)
    in_names = [i.name for i in sess.get_inputs()]
    names = [s.name for s in states]
    feeds = []
    for wave in waves:
        st = _zero_states(states)
        w = np.asarray(wave, np.float32).reshape(-1)
        for i in range(0, len(w) - chunk_samples + 1, chunk_samples):
            x = w[None, i:i + chunk_samples]
            feeds.append({"samples": x, **dict(zip(in_names[1:], st))})
            o = run_ort_step(sess, x, st)
            st = [o[f"new_state_{n}"] for n in names]
    if not feeds:
        raise ValueError(f"calibration audio shorter than one chunk ({chunk_samples} samples)")
    return feeds


def quantize_static_onnx(src: Union[str, Path], dst: Union[str, Path], feeds: Sequence[dict],
                         exclude_modules: Sequence[str] = STATIC_EXCLUDE_MODULES) -> dict:
    """Static int8 in QDQ form: the MatMuls with a constant weight get int8 per-channel weights and
    int8 activations, symmetric per tensor, whose ranges are calibrated on ``feeds`` (min/max).
    OpenVINO runs these on its int8 kernels (AMX on Xeons that have it); other ops stay as they were.

    The conv stack's products reach their weight through a Reshape of the conv kernel; that Reshape
    is folded first so that those products have a constant weight too (same numbers).
    Symmetric activations (zero point 0) spare the int8 kernels a zero-point correction: a BASE
    step ~5% faster than with asymmetric uint8, dev CER unchanged (0.3664 vs 0.3672).
    """
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    from .graph_passes import fold_weights

    t0 = time.perf_counter()
    m, _ = fold_weights(onnx.load(str(src)), op_types=("MatMul",))
    consts = {i.name for i in m.graph.initializer} | {
        o for n in m.graph.node if n.op_type == "Constant" for o in n.output}
    keep = set(nodes_to_keep_fp32(m, exclude_modules))
    nodes = [n.name for n in m.graph.node
             if n.op_type == "MatMul" and n.name not in keep and any(i in consts for i in n.input)]

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(feeds)

        def get_next(self) -> Optional[dict]:
            return next(self._it, None)

    with _quiet_root_logger():
        quantize_static(m, str(dst), _Reader(), quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=["MatMul"], nodes_to_quantize=nodes, per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax,
                        # a product's output stays float: its bias, GELU and the residual add follow in
                        # float (OpenVINO fuses them into the int8 kernel) instead of after one more
                        # int8 rounding (default model: feature error vs fp32 0.081 -> 0.046 relative RMS)
                        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True,
                                       "OpTypesToExcludeOutputQuantization": ["MatMul"]})
    return {"op_types": ["MatMul"], "quantized_nodes": len(nodes), "per_channel": True,
            "seconds": time.perf_counter() - t0, "bytes": Path(dst).stat().st_size, "kept_fp32": sorted(keep)}


def quantize_bundle_model_static(model: Any, fp32_path: Union[str, Path], qdq_path: Union[str, Path],
                                 waves: Sequence[np.ndarray], source: str) -> dict:
    """``qdq_path`` from ``fp32_path``, calibrated on ``waves`` (named by ``source`` in config.json),
    and its deviation from fp32 measured as for the dynamic model."""
    feeds = calibration_feeds(fp32_path, waves, model.chunk_samples, model.state_specs())
    q = quantize_static_onnx(fp32_path, qdq_path, feeds)
    cmp = compare_graphs(fp32_path, qdq_path, model)
    summary = _summary("onnxruntime static (QDQ), min/max calibration", cmp, op_types=q["op_types"],
                       weight_type="int8 per-channel", activation_type="int8 per-tensor symmetric",
                       calibration={"source": source, "utterances": len(waves), "steps": len(feeds)})
    return {**q, "compare": cmp, "summary": summary}
