"""Check a Triton ``config.pbtxt`` before Triton sees it.

Three layers, each raising ``TritonConfigError`` naming the model and field:

1. the text parses against Triton's own protobuf schema (``ModelConfig`` from
   ``tritonclient``'s ``model_config_pb2``, with protobuf's ``text_format``),
   so a misspelt field or a wrong enum is caught here, not at server start;
2. Triton's documented rules for implicit state (sequence batcher): input and
   output names set and distinct from the model's ordinary inputs/outputs,
   dims valid, and the ``initial_state`` of the same data type and dims as
   its state (a state declared FP32 with an FP16 initial state is refused);
3. ``check_against_graph``: every declared input, output and state exists in
   the ONNX graph with the same dtype and shape (batch axis excluded).

The schema check needs the optional ``tritonclient`` package
(``pip install 'wavstream[triton]'``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence, Union

from ..bundle import IOSpec, ort_type_to_dtype
from ..errors import WavstreamError

__all__ = [
    "TritonConfigError",
    "DTYPE_TO_TRITON",
    "load_schema",
    "parse_model_config",
    "validate_model_config",
    "graph_io",
    "check_against_graph",
]

# numpy/bundle dtype name -> Triton DataType enum name
DTYPE_TO_TRITON = {
    "float32": "TYPE_FP32",
    "float16": "TYPE_FP16",
    "int64": "TYPE_INT64",
    "int32": "TYPE_INT32",
    "uint64": "TYPE_UINT64",
    "bool": "TYPE_BOOL",
    "bytes": "TYPE_STRING",  # Triton's BYTES: the decoding model's JSON in and out
}


class TritonConfigError(WavstreamError, ValueError):
    """A generated or hand-written Triton model configuration is invalid."""


def load_schema() -> Any:
    """Triton's ``model_config_pb2`` module (from tritonclient)."""
    try:
        from tritonclient.grpc import model_config_pb2  # type: ignore[import-not-found]
    except ImportError as exc:
        raise TritonConfigError(
            "checking a Triton configuration needs the 'tritonclient' package: "
            f"pip install 'wavstream[triton]' ({exc})"
        ) from exc
    return model_config_pb2


def parse_model_config(text: str, where: str = "config.pbtxt") -> Any:
    """Parse ``text`` into Triton's ``ModelConfig`` message; syntax and schema errors name the line."""
    pb = load_schema()
    from google.protobuf import text_format

    msg = pb.ModelConfig()
    try:
        text_format.Parse(text, msg)
    except text_format.ParseError as exc:
        raise TritonConfigError(f"{where}: does not parse as Triton's ModelConfig: {exc}") from exc
    return msg


def validate_model_config(text: str, where: str = "config.pbtxt") -> Any:
    """Parse and check one model configuration; returns the ``ModelConfig`` message.

    Raises TritonConfigError for the first problem found.
    """
    pb = load_schema()
    cfg = parse_model_config(text, where)
    name = cfg.name or where
    if not cfg.name:
        raise TritonConfigError(f"{where}: 'name' is not set")
    if not (cfg.backend or cfg.platform):
        raise TritonConfigError(f"{name}: neither 'backend' nor 'platform' is set")
    if cfg.max_batch_size < 0:
        raise TritonConfigError(f"{name}: max_batch_size must be >= 0, found {cfg.max_batch_size}")
    invalid = pb.DataType.Value("TYPE_INVALID")
    type_name = pb.DataType.Name

    def check_io(kind: str, items: Any) -> set[str]:
        seen: set[str] = set()
        for io in items:
            if not io.name:
                raise TritonConfigError(f"{name}: an {kind} has no name")
            if io.name in seen:
                raise TritonConfigError(f"{name}: {kind} {io.name!r} is declared twice")
            seen.add(io.name)
            if io.data_type == invalid:
                raise TritonConfigError(f"{name}: {kind} {io.name!r} has no data_type")
            if not all(d > 0 or d == -1 for d in io.dims):
                raise TritonConfigError(f"{name}: {kind} {io.name!r} dims {list(io.dims)}: each must be > 0 or -1")
        return seen

    inputs = check_io("input", cfg.input)
    outputs = check_io("output", cfg.output)
    if cfg.HasField("sequence_batching"):
        seq = cfg.sequence_batching
        state_in: set[str] = set()
        state_out: set[str] = set()
        for st in seq.state:
            label = f"state {st.input_name or '?'!r}"
            if not st.input_name or not st.output_name:
                raise TritonConfigError(f"{name}: {label}: both input_name and output_name must be set")
            if st.input_name in inputs:
                raise TritonConfigError(f"{name}: {label}: input_name is also an ordinary model input")
            if st.output_name in outputs:
                raise TritonConfigError(f"{name}: {label}: output_name {st.output_name!r} is also an ordinary model output")
            if st.input_name in state_in or st.output_name in state_out:
                raise TritonConfigError(f"{name}: {label}: declared twice")
            state_in.add(st.input_name)
            state_out.add(st.output_name)
            if st.data_type == invalid:
                raise TritonConfigError(f"{name}: {label}: data_type is not set")
            if not st.dims:
                raise TritonConfigError(f"{name}: {label}: dims must not be empty (the batch axis is not listed)")
            if not all(d > 0 or d == -1 for d in st.dims):  # -1: Triton sizes it from the first output
                raise TritonConfigError(f"{name}: {label}: dims {list(st.dims)}: each must be > 0 or -1")
            for init in st.initial_state:
                if not init.name:
                    raise TritonConfigError(f"{name}: {label}: initial_state has no name")
                if init.data_type != st.data_type:
                    raise TritonConfigError(
                        f"{name}: {label}: initial_state {init.name!r} is {type_name(init.data_type)} "
                        f"but the state is {type_name(st.data_type)}")
                if list(init.dims) != list(st.dims):
                    raise TritonConfigError(
                        f"{name}: {label}: initial_state {init.name!r} dims {list(init.dims)} "
                        f"differ from the state's {list(st.dims)}")
                if any(d <= 0 for d in init.dims):
                    raise TritonConfigError(f"{name}: {label}: initial_state dims {list(init.dims)} must be fixed and > 0")
                if init.WhichOneof("state_data") is None:
                    raise TritonConfigError(f"{name}: {label}: initial_state {init.name!r} needs zero_data or data_file")
        for ctl in seq.control_input:
            if not ctl.name or not ctl.control:
                raise TritonConfigError(f"{name}: control_input {ctl.name!r} needs a name and a control")
            if ctl.name in inputs:
                raise TritonConfigError(f"{name}: control_input {ctl.name!r} is also an ordinary model input")
    return cfg


def graph_io(model_path: Union[str, Path]) -> tuple[list[IOSpec], list[IOSpec]]:
    """The inputs and outputs an ONNX graph declares (read with onnxruntime; external data is loaded too)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        sess = ort.InferenceSession(str(model_path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises several types for bad files
        raise TritonConfigError(f"{model_path}: onnxruntime cannot load it: {type(exc).__name__}: {str(exc)[:300]}") from exc

    def spec(x: Any) -> IOSpec:
        return IOSpec(x.name, None if x.shape is None else tuple(x.shape), ort_type_to_dtype(x.type))

    return [spec(i) for i in sess.get_inputs()], [spec(o) for o in sess.get_outputs()]


def check_against_graph(cfg: Any, inputs: Sequence[IOSpec], outputs: Sequence[IOSpec], where: str) -> None:
    """Every config input/output/state must be in the graph with its dtype and shape; no graph input left unfed."""
    pb = load_schema()
    type_name = pb.DataType.Name
    batched = cfg.max_batch_size > 0
    g_in = {s.name: s for s in inputs}
    g_out = {s.name: s for s in outputs}

    def compare(spec: Optional[IOSpec], cname: str, ctype: int, cdims: Sequence[int], what: str) -> None:
        if spec is None:
            raise TritonConfigError(f"{cfg.name}: {what} {cname!r} is not in the graph {where}")
        want = DTYPE_TO_TRITON.get(spec.dtype)
        if want != type_name(ctype):
            raise TritonConfigError(
                f"{cfg.name}: {what} {cname!r} is {type_name(ctype)} in config.pbtxt but {spec.dtype} in the graph {where}")
        if spec.shape is None:
            return
        shape = list(spec.shape[1:] if batched else spec.shape)
        if len(shape) != len(cdims):
            raise TritonConfigError(
                f"{cfg.name}: {what} {cname!r}: config dims {list(cdims)} but the graph {where} has "
                f"{list(spec.shape)}{' (batch axis first)' if batched else ''}")
        for g, c in zip(shape, cdims):
            if isinstance(g, int) and g >= 0 and c != -1 and g != c:
                raise TritonConfigError(
                    f"{cfg.name}: {what} {cname!r}: config dims {list(cdims)} but the graph {where} has {list(spec.shape)}")

    fed = set()
    for io in cfg.input:
        compare(g_in.get(io.name), io.name, io.data_type, io.dims, "input")
        fed.add(io.name)
    for io in cfg.output:
        compare(g_out.get(io.name), io.name, io.data_type, io.dims, "output")
    for st in cfg.sequence_batching.state:
        compare(g_in.get(st.input_name), st.input_name, st.data_type, st.dims, "state input")
        compare(g_out.get(st.output_name), st.output_name, st.data_type, st.dims, "state output")
        fed.add(st.input_name)
    unfed = [n for n in g_in if n not in fed]
    if unfed:
        raise TritonConfigError(f"{cfg.name}: graph inputs {unfed} of {where} are neither inputs nor states in config.pbtxt")
