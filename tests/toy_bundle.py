"""A small but real streaming bundle built with onnx.helper (no torch).

It follows docs/bundle.md exactly (names, shapes, dynamic batch axis, state
order), so tests of the runtime don't wait for the real exporter.

The graph, per chunk of C frames of S samples (x_t = frame t):
  features[t] = [x_t, x_{t-1}] @ W + (frames_seen + t) * u        (B, C, D)
      x_{-1} comes from the state cache `prev_frame` (causal, 1 frame)
      and frames_seen positions the frame in the stream, so a state
      threaded wrongly shows up in the features.
  logits[t, j] = -SCALE * (mean(x_t) - LEVEL * j)^2                 (B, C, V)
      so a frame of constant value LEVEL*j decodes as token j, and
      silence (0) as blank (j = 0).
  codes[t, g] = argmax of features[t] within group g                (B, C, G)
  new frames_seen = frames_seen + C;  new prev_frame = x_{C-1}.

``synth(text)`` makes audio that decodes to ``text``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Optional

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

STRIDE = 160  # 10 ms frames at 16 kHz
CHUNK_FRAMES = 8  # 80 ms chunks
FEATURE_DIM = 16
LEVEL = 0.03  # frame level per token id
SCALE = 2000.0
VOCAB = ["<blank>", "|"] + [chr(c) for c in range(ord("a"), ord("z") + 1)] + ["'"]


def _const(name: str, arr: np.ndarray) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(arr, name + "_value"))


def build_graph(
    stride: int = STRIDE,
    chunk_frames: int = CHUNK_FRAMES,
    feature_dim: int = FEATURE_DIM,
    vocab_size: int = len(VOCAB),
    code_groups: int = 0,
    seed: int = 0,
) -> onnx.ModelProto:
    S, C, D, V = stride, chunk_frames, feature_dim, vocab_size
    rng = np.random.default_rng(seed)
    W = (rng.standard_normal((2 * S, D)) / np.sqrt(2 * S)).astype(np.float32)
    u = (rng.standard_normal(D) * 1e-3).astype(np.float32)
    nodes = [
        _const("shape_bcs", np.array([0, C, S], np.int64)),
        _const("W", W),
        _const("u", u),
        _const("arange_c", np.arange(C, dtype=np.float32).reshape(1, C, 1)),
        _const("shape_b11", np.array([-1, 1, 1], np.int64)),
        _const("mean_vec", np.full((S, 1), 1.0 / S, np.float32)),
        _const("centers", (LEVEL * np.arange(V)).astype(np.float32)),
        _const("neg_scale", np.array(-SCALE, np.float32)),
        _const("c_i64", np.array(C, np.int64)),
        _const("ax1", np.array([1], np.int64)),
        _const("s0", np.array([0], np.int64)),
        _const("s_cm1", np.array([C - 1], np.int64)),
        _const("s_c", np.array([C], np.int64)),
        helper.make_node("Reshape", ["samples", "shape_bcs"], ["frames"]),  # (B, C, S)
        helper.make_node("Slice", ["frames", "s0", "s_cm1", "ax1"], ["frames_head"]),  # (B, C-1, S)
        helper.make_node("Concat", ["state_prev_frame", "frames_head"], ["prev"], axis=1),  # (B, C, S)
        helper.make_node("Concat", ["frames", "prev"], ["x"], axis=2),  # (B, C, 2S)
        helper.make_node("MatMul", ["x", "W"], ["proj"]),  # (B, C, D)
        helper.make_node("Cast", ["state_frames_seen"], ["fs_f"], to=TensorProto.FLOAT),  # (B,)
        helper.make_node("Reshape", ["fs_f", "shape_b11"], ["fs_b11"]),  # (B, 1, 1)
        helper.make_node("Add", ["fs_b11", "arange_c"], ["pos"]),  # (B, C, 1)
        helper.make_node("Mul", ["pos", "u"], ["pos_term"]),  # (B, C, D)
        helper.make_node("Add", ["proj", "pos_term"], ["features"]),
        helper.make_node("MatMul", ["frames", "mean_vec"], ["mean"]),  # (B, C, 1)
        helper.make_node("Sub", ["mean", "centers"], ["diff"]),  # (B, C, V)
        helper.make_node("Mul", ["diff", "diff"], ["sq"]),
        helper.make_node("Mul", ["sq", "neg_scale"], ["logits"]),
        helper.make_node("Add", ["state_frames_seen", "c_i64"], ["new_state_frames_seen"]),
        helper.make_node("Slice", ["frames", "s_cm1", "s_c", "ax1"], ["new_state_prev_frame"]),  # (B, 1, S)
    ]
    outputs = [
        helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", C, D]),
        helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", C, V]),
    ]
    if code_groups:
        assert D % code_groups == 0
        nodes += [
            _const("shape_g", np.array([0, C, code_groups, D // code_groups], np.int64)),
            helper.make_node("Reshape", ["features", "shape_g"], ["feat_g"]),
            helper.make_node("ArgMax", ["feat_g"], ["codes"], axis=3, keepdims=0),  # (B, C, G) int64
        ]
        outputs.append(helper.make_tensor_value_info("codes", TensorProto.INT64, ["batch", C, code_groups]))
    outputs += [
        helper.make_tensor_value_info("new_state_frames_seen", TensorProto.INT64, ["batch"]),
        helper.make_tensor_value_info("new_state_prev_frame", TensorProto.FLOAT, ["batch", 1, S]),
    ]
    inputs = [
        helper.make_tensor_value_info("samples", TensorProto.FLOAT, ["batch", C * S]),
        helper.make_tensor_value_info("state_frames_seen", TensorProto.INT64, ["batch"]),
        helper.make_tensor_value_info("state_prev_frame", TensorProto.FLOAT, ["batch", 1, S]),
    ]
    graph = helper.make_graph(nodes, "toy_streaming_step", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], producer_name="wavstream-tests")
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model


def make_config(code_groups: int = 0, stride: int = STRIDE, chunk_frames: int = CHUNK_FRAMES) -> dict:
    states = [
        {"name": "frames_seen", "shape": ["batch"], "dtype": "int64", "init": "zeros"},
        {"name": "prev_frame", "shape": ["batch", 1, stride], "dtype": "float32", "init": "zeros"},
    ]
    return {
        "format_version": 1,
        "family": "toy",
        "sample_rate": 16000,
        "stride": stride,
        "chunk_frames": chunk_frames,
        "chunk_samples": chunk_frames * stride,
        "left_chunks": 0,
        "feature_dim": FEATURE_DIM,
        "feature_layer": -1,
        "num_layers": 1,
        "vocab": VOCAB,
        "blank_id": 0,
        "word_delimiter": "|",
        "code_groups": code_groups,
        "states": states,
        "inputs": ["samples"] + [f"state_{s['name']}" for s in states],
        "outputs": ["features", "logits"]
        + (["codes"] if code_groups else [])
        + [f"new_state_{s['name']}" for s in states],
        "files": {"onnx": "model.onnx", "int8": "model.int8.onnx", "tensorrt": "model.plan"},
        "model": {"note": "toy graph from tests/toy_bundle.py"},
        "exported_with": {"wavstream": "0.1.0", "opset": 18},
    }


def build_toy_bundle(
    path: Path,
    *,
    code_groups: int = 0,
    with_int8: bool = False,
    config_overrides: Optional[dict] = None,
    seed: int = 0,
    latencies_ms: tuple[int, ...] = (),
) -> Path:
    """Write a toy bundle folder at ``path`` and return it.

    ``latencies_ms``: more chunk sizes (multiples of 10 ms) served from the same bundle (format version 2),
    one graph each (model.<ms>ms.onnx); the default stays 80 ms.
    """
    path = Path(path)
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    model = build_graph(code_groups=code_groups, seed=seed)
    onnx.save(model, str(path / "model.onnx"))
    if with_int8:
        shutil.copy(path / "model.onnx", path / "model.int8.onnx")  # same graph; exercises the file choice
    cfg = make_config(code_groups)
    cfg.update(config_overrides or {})
    if latencies_ms:
        keys = ("chunk_frames", "chunk_samples", "left_chunks", "states", "inputs", "outputs")
        default_ms = CHUNK_FRAMES * STRIDE // 16
        variants = {str(default_ms): {**{k: cfg[k] for k in keys}, "files": {"onnx": "model.onnx"}}}
        for ms in latencies_ms:
            frames = ms * 16 // STRIDE
            onnx.save(build_graph(chunk_frames=frames, code_groups=code_groups, seed=seed), str(path / f"model.{ms}ms.onnx"))
            v = make_config(code_groups, chunk_frames=frames)
            variants[str(ms)] = {**{k: v[k] for k in keys}, "files": {"onnx": f"model.{ms}ms.onnx"}}
        cfg.update(format_version=2, default_latency_ms=default_ms, latencies=variants)
    (path / "config.json").write_text(json.dumps(cfg, indent=2))
    (path / "tokens.txt").write_text("".join(f"{t} {i}\n" for i, t in enumerate(VOCAB)))
    return path


def synth(
    text: str,
    *,
    frames_per_token: int = 4,
    gap_frames: int = 2,
    lead_frames: int = 10,
    tail_frames: int = 10,
    noise: float = 0.002,
    seed: int = 0,
) -> np.ndarray:
    """16 kHz audio that the toy model decodes to ``text`` (lowercase letters, ' and spaces).

    Each token is ``frames_per_token`` frames at its level with ``gap_frames``
    blank frames after it; a space becomes the "|" token.
    """
    ids = []
    for ch in text:
        ids.append(VOCAB.index("|" if ch == " " else ch))
    frames: list[float] = [0.0] * lead_frames
    for j in ids:
        frames += [LEVEL * j] * frames_per_token + [0.0] * gap_frames
    frames += [0.0] * tail_frames
    wave = np.repeat(np.array(frames, np.float32), STRIDE)
    rng = np.random.default_rng(seed)
    return (wave + noise * rng.standard_normal(wave.shape[0])).astype(np.float32)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(round(seconds * 16000)), np.float32)
