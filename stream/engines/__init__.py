"""Engines: run one streaming step of a bundle's graph (see base.py for the contract).

``create_engine(bundle, backend="onnxruntime" | "openvino" | "auto" | "tensorrt" | "triton", **opts)``
picks one. OpenVINO, TensorRT and Triton's client are imported only when asked for.
"""

from __future__ import annotations

from typing import Any, Union

from ..bundle import Bundle, load_bundle
from .base import (
    ChunkSizeError,
    Engine,
    EngineOptionError,
    EngineUnavailableError,
    StateShapeError,
    StepResult,
    stack_states,
    unstack_states,
)
from .ort import OrtEngine

__all__ = [
    "Engine",
    "StepResult",
    "OrtEngine",
    "TensorRTEngine",
    "OpenVinoEngine",
    "TritonEngine",
    "ChunkSizeError",
    "StateShapeError",
    "EngineUnavailableError",
    "EngineOptionError",
    "stack_states",
    "unstack_states",
    "create_engine",
    "BACKENDS",
]

BACKENDS = ("onnxruntime", "openvino", "auto", "tensorrt", "triton")


def __getattr__(name: str) -> Any:
    # TensorRTEngine's module imports nothing heavy, but keep it off the
    # import path of CPU-only apps anyway.
    if name == "TensorRTEngine":
        from .tensorrt import TensorRTEngine

        return TensorRTEngine
    if name == "OpenVinoEngine":
        from .openvino import OpenVinoEngine

        return OpenVinoEngine
    if name == "TritonEngine":
        from .triton import TritonEngine

        return TritonEngine
    raise AttributeError(name)


def create_engine(bundle: Union[Bundle, str], backend: str = "onnxruntime", **opts: Any) -> Engine:
    """Build an engine for ``bundle``.

    backend "onnxruntime" takes ``quantized``, ``device`` ("auto"/"cpu"/"cuda"),
    ``intra_op_threads``, ``inter_op_threads``; "tensorrt" takes ``device_id``;
    "triton" takes ``url`` (HOST:PORT, gRPC) and ``model``.
    """
    if not isinstance(bundle, Bundle):
        bundle = load_bundle(bundle)
    if backend in ("onnxruntime", "ort", "onnx"):
        return OrtEngine(bundle, **opts)
    if backend == "openvino":
        from .openvino import OpenVinoEngine

        return OpenVinoEngine(bundle, **opts)
    if backend == "auto":
        from .auto import choose_engine

        return choose_engine(bundle, **opts).engine
    if backend in ("tensorrt", "trt"):
        from .tensorrt import TensorRTEngine

        return TensorRTEngine(bundle, **opts)
    if backend == "triton":
        from .triton import TritonEngine

        return TritonEngine(bundle, **opts)
    raise EngineOptionError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
