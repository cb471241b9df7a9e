"""Where the time of the streaming step goes: ONNX Runtime's own profiler.

A session with ``enable_profiling`` runs the bundle's step graph for a
number of chunks; the JSON trace's node events are summed by op type (and by
the model part named in the node, e.g. ``encoder.layers.3.feed_forward``) and
reported as shares of the summed node time.
"""

from __future__ import annotations

import json
import os
import re
from collections import defaultdict
from pathlib import Path
from typing import Any
from .common import Settings, noise

_PARTS = (  # (regex on the torch module path of a node, part name); first match wins
    (r"feature_extractor", "conv feature encoder"),
    (r"feature_projection", "feature projection"),
    (r"pos_conv", "positional conv"),
    (r"attention\.(q_proj|k_proj|v_proj|out_proj)", "attention projections"),
    (r"attention", "attention core (scores, softmax, cache)"),
    (r"feed_forward", "feed-forward"),
    (r"layer_norm", "layer norms"),
    (r"lm_head", "CTC head"),
    (r"feature_aggregator", "aggregator"),
    (r"quantizer", "quantizer"),
)


def _node_parts(onnx_path: Path) -> dict[str, str]:
    """ONNX node name -> model part, from the exporter's per-node module scope ("namespace")."""
    import onnx

    m = onnx.load(str(onnx_path), load_external_data=False)
    out = {}
    for n in m.graph.node:
        scope = next((p.value for p in n.metadata_props if p.key == "namespace"), "")
        part = "graph glue (top-level reshape/concat/slice)"
        for rx, name in _PARTS:
            if re.search(rx, scope):
                part = name
                break
        out[n.name] = part
    return out


def profile_bundle(bundle: Path, settings: Settings, batch: int, label: str, chunks: int) -> dict:
    import numpy as np
    import onnxruntime as ort

    from wavstream.stream import load_bundle

    cfg = load_bundle(bundle).config
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = settings.threads
    opts.inter_op_num_threads = 1
    opts.enable_profiling = True
    opts.log_severity_level = 3
    prefix = settings.work / f"ortprof_{label}_b{batch}"
    opts.profile_file_prefix = str(prefix)
    sess = ort.InferenceSession(str(bundle / "model.onnx"), sess_options=opts, providers=["CPUExecutionProvider"])
    states = [s.zeros(batch) for s in cfg.states]
    audio = noise(cfg.chunk_samples / 16000 * (chunks + 1), seed=13)
    outs = [o.name for o in sess.get_outputs()]
    n_state = len(states)
    for i in range(chunks):
        x = np.repeat(audio[None, i * cfg.chunk_samples:(i + 1) * cfg.chunk_samples], batch, axis=0)
        feed = {"samples": x}
        feed.update({s.input_name: st for s, st in zip(cfg.states, states)})
        res = sess.run(outs, feed)
        states = res[len(res) - n_state:]
    path = sess.end_profiling()
    with open(path) as f:
        events = json.load(f)
    os.unlink(path)
    parts_of = _node_parts(bundle / "model.onnx")
    by_op: dict[str, float] = defaultdict(float)
    by_part: dict[str, float] = defaultdict(float)
    total = 0.0
    run_total = 0.0
    for e in events:
        if e.get("cat") == "Session" and e.get("name") == "model_run":
            run_total += e.get("dur", 0)
        if e.get("cat") != "Node" or not str(e.get("name", "")).endswith("_kernel_time"):
            continue
        dur = float(e.get("dur", 0))
        op = e.get("args", {}).get("op_name", "?")
        by_op[op] += dur
        node = str(e.get("name", ""))[: -len("_kernel_time")]
        by_part[parts_of.get(node, "nodes fused by ONNX Runtime")] += dur
        total += dur
    top = sorted(by_op.items(), key=lambda kv: -kv[1])
    parts = sorted(by_part.items(), key=lambda kv: -kv[1])
    out: dict[str, Any] = {
        "model": label, "batch": batch, "chunks": chunks,
        "node_time_share_of_run": (total / run_total) if run_total else None,
        "top_ops": [{"op": k, "share": v / total if total else 0.0, "ms_per_chunk": v / 1000 / chunks} for k, v in top[:8]],
        "top_parts": [{"part": k, "share": v / total if total else 0.0} for k, v in parts[:6]],
    }
    settings.log("profile", f"{label} batch {batch}: " + ", ".join(f"{d['op']} {100 * d['share']:.0f} %" for d in out["top_ops"][:3]))
    return out


def run(settings: Settings, targets: list[tuple[str, Path, int]]) -> dict:
    rows = []
    for label, bundle, batch in targets:
        try:
            rows.append(profile_bundle(bundle, settings, batch, label, settings.pick(5, 20)))
        except Exception as exc:  # profiling is diagnostic: never fail the run for it
            settings.log("profile", f"{label}: failed ({type(exc).__name__}: {exc})")
            rows.append({"model": label, "batch": batch, "error": f"{type(exc).__name__}: {exc}"})
    return {"tool": "onnxruntime profiler (enable_profiling), node kernel time by op type", "rows": rows}

