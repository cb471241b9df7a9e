"""Graph rewrites of export/graph_passes.py: same numbers, fewer kernel calls, constant weights."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from wavstream.export.graph_passes import fold_weights, fuse_sibling_matmuls


def _run(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # the graph as written
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, feeds)


def _attention_like(rng: np.random.Generator, with_bias: bool = True) -> onnx.ModelProto:
    """x -> q, k, v projections (+ bias), plus a MatMul on x with another K (not a sibling) and one
    whose weight is a graph input (not constant)."""
    d = 8
    inits, nodes, outs = [], [], []
    for name in ("q", "k", "v"):
        inits.append(numpy_helper.from_array(rng.standard_normal((d, d)).astype(np.float32), f"w_{name}"))
        nodes.append(helper.make_node("MatMul", ["x", f"w_{name}"], [f"{name}_mm"], name=f"mm_{name}"))
        nodes[-1].metadata_props.add(key="namespace", value=f"/model.attention.{name}_proj")
        if with_bias:
            inits.append(numpy_helper.from_array(rng.standard_normal(d).astype(np.float32), f"b_{name}"))
            nodes.append(helper.make_node("Add", [f"{name}_mm", f"b_{name}"], [name], name=f"add_{name}"))
        else:
            nodes.append(helper.make_node("Relu", [f"{name}_mm"], [name], name=f"relu_{name}"))
        outs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [2, 5, d]))
    nodes.append(helper.make_node("MatMul", ["x", "w_dyn"], ["dyn"], name="mm_dyn"))
    outs.append(helper.make_tensor_value_info("dyn", TensorProto.FLOAT, [2, 5, 3]))
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 5, d]),
         helper.make_tensor_value_info("w_dyn", TensorProto.FLOAT, [d, 3])],
        outs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_sibling_matmuls_become_one_product_with_the_same_outputs():
    rng = np.random.default_rng(0)
    feeds = {"x": rng.standard_normal((2, 5, 8)).astype(np.float32),
             "w_dyn": rng.standard_normal((8, 3)).astype(np.float32)}
    for with_bias in (True, False):
        m = _attention_like(rng, with_bias)
        fused, n = fuse_sibling_matmuls(m)
        onnx.checker.check_model(fused)
        assert n == 1
        ops = [x.op_type for x in fused.graph.node]
        # q, k, v: one MatMul (+ one Add) and a Split; the non-constant product is untouched
        assert ops.count("MatMul") == 2 and ops.count("Split") == 1
        assert ops.count("Add") == (1 if with_bias else 0)
        fused_mm = next(x for x in fused.graph.node if x.op_type == "MatMul" and x.input[1] != "w_dyn")
        assert {p.key: p.value for p in fused_mm.metadata_props}["namespace"] == "/model.attention.q_proj"
        assert not {"w_q", "w_k", "w_v"} & {i.name for i in fused.graph.initializer}  # old weights dropped
        for a, b in zip(_run(m, feeds), _run(fused, feeds)):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
        assert fuse_sibling_matmuls(fused)[1] == 0  # nothing left to fuse


def test_weight_reshape_folds_into_a_constant():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((4, 3, 5)).astype(np.float32)  # a conv kernel laid out (k, Cin, Cout)
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["w", "shape"], ["w2d"], name="reshape"),
         helper.make_node("MatMul", ["x", "w2d"], ["y"], name="mm")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 12])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array([12, -1], np.int64), "shape")])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    folded, n = fold_weights(m)
    onnx.checker.check_model(folded)
    assert n == 1
    assert [x.op_type for x in folded.graph.node] == ["MatMul"]
    mm = folded.graph.node[0]
    assert mm.input[1] in {i.name for i in folded.graph.initializer}
    assert {i.name for i in folded.graph.initializer} == {mm.input[1]}  # the kernel and shape are gone
    x = rng.standard_normal((2, 12)).astype(np.float32)
    np.testing.assert_array_equal(_run(m, {"x": x})[0], _run(folded, {"x": x})[0])


def test_computed_conv_weight_folds_into_a_constant():
    """A weight-normalised conv kernel (g * v / ||v||, as the positional conv exports) becomes one
    initializer; a weight that depends on a graph input is left alone."""
    rng = np.random.default_rng(2)
    v = rng.standard_normal((6, 3, 5)).astype(np.float32)
    gain = rng.standard_normal((1, 1, 5)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Mul", ["g", "v"], ["gv"]),
         helper.make_node("ReduceL2", ["v", "axes"], ["norm"], keepdims=1),
         helper.make_node("Div", ["gv", "norm"], ["w"]),
         helper.make_node("Conv", ["x", "w"], ["y"], group=1),
         helper.make_node("Mul", ["w", "scale"], ["w_dyn"]),
         helper.make_node("Conv", ["x", "w_dyn"], ["y2"], group=1)],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 9]),
         helper.make_tensor_value_info("scale", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6, 5]),
         helper.make_tensor_value_info("y2", TensorProto.FLOAT, [1, 6, 5])],
        [numpy_helper.from_array(v, "v"), numpy_helper.from_array(gain, "g"),
         numpy_helper.from_array(np.array([0, 1], np.int64), "axes")])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    folded, n = fold_weights(m)
    onnx.checker.check_model(folded)
    assert n == 1
    convs = [x for x in folded.graph.node if x.op_type == "Conv"]
    inits = {i.name for i in folded.graph.initializer}
    assert convs[0].input[1] in inits and convs[1].input[1] not in inits
    feeds = {"x": rng.standard_normal((1, 3, 9)).astype(np.float32), "scale": np.array([0.5], np.float32)}
    for a, b in zip(_run(m, feeds), _run(folded, feeds)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
