"""Rewrites of an exported graph that let the runtimes fuse more of it.

Each pass takes an ONNX model and returns a rewritten copy plus how many
places it changed; the graph stays plain ONNX at the same opset (TensorRT and
OpenVINO read it as before) and computes the same numbers.

`gelu_fusable`: torch's exporter writes exact GELU as
``x * (0.5 * (1 + erf(x / sqrt 2)))``. ONNX Runtime's GELU fusion does not
match that order of the two multiplications, so each GELU runs as five nodes
(Div, Erf, Add, Mul, Mul), each a pass over the tensor. The pass reorders it
to ``(x * (1 + erf(x / sqrt 2))) * 0.5``, the form ONNX Runtime fuses into one
Gelu kernel. Multiplying by 0.5 is exact in floating point, so the unfused
graph gives bit-identical results.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

__all__ = ["gelu_fusable", "optimized_node_count"]


def _scalar(name: str, consts: dict[str, Any]) -> Optional[float]:
    """The value of a one-element constant input, or None."""
    if name not in consts:
        return None
    from onnx import numpy_helper

    arr = numpy_helper.to_array(consts[name])
    return float(arr.reshape(-1)[0]) if arr.size == 1 else None


def gelu_fusable(model: Any) -> tuple[Any, int]:
    """(a copy of ``model`` with every exporter-ordered GELU in the fusable order, count)."""
    import onnx

    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    consts: dict[str, Any] = {i.name: i for i in g.initializer}
    for n in g.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            consts[n.output[0]] = n.attribute[0].t
    producer = {o: n for n in g.node for o in n.output}
    consumers: dict[str, list[Any]] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    graph_outputs = {o.name for o in g.output}

    def only_consumer(name: str, op: str) -> Optional[Any]:
        c = consumers.get(name, [])
        if len(c) != 1 or c[0].op_type != op or name in graph_outputs:
            return None
        return c[0]

    def near(x: Optional[float], want: float) -> bool:
        return x is not None and abs(x - want) <= 1e-4 * abs(want)

    changed = 0
    for erf in [n for n in g.node if n.op_type == "Erf"]:
        div = producer.get(erf.input[0])
        if div is None or div.op_type != "Div" or not near(_scalar(div.input[1], consts), float(np.sqrt(2.0))):
            continue
        root = div.input[0]
        add = only_consumer(erf.output[0], "Add")
        if add is None:
            continue
        one = add.input[1] if add.input[0] == erf.output[0] else add.input[0]
        if not near(_scalar(one, consts), 1.0):
            continue
        half_mul = only_consumer(add.output[0], "Mul")
        if half_mul is None:
            continue
        half = half_mul.input[0] if half_mul.input[1] == add.output[0] else half_mul.input[1]
        if not near(_scalar(half, consts), 0.5):
            continue
        x_mul = only_consumer(half_mul.output[0], "Mul")
        if x_mul is None or root not in x_mul.input:
            continue
        # x * (0.5 * a)  ->  (x * a) * 0.5; the first Mul keeps its place, so the order stays topological
        del half_mul.input[:]
        half_mul.input.extend([root, add.output[0]])
        del x_mul.input[:]
        x_mul.input.extend([half_mul.output[0], half])
        changed += 1
    return out, changed


def optimized_node_count(path: str) -> int:
    """How many nodes ONNX Runtime's CPU session runs for this graph, after its
    own fusions: the number that costs a kernel call per step."""
    import os
    import tempfile

    import onnx
    import onnxruntime as ort

    fd, tmp = tempfile.mkstemp(suffix=".onnx")
    os.close(fd)
    try:
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.optimized_model_filepath = tmp
        # keep the weights out of the written copy: only the node list is read
        opts.add_session_config_entry("session.optimized_model_external_initializers_file_name", os.path.basename(tmp) + ".data")
        opts.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
        ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        return len(onnx.load(tmp, load_external_data=False).graph.node)
    finally:
        for p in (tmp, tmp + ".data"):
            if os.path.exists(p):
                os.unlink(p)
