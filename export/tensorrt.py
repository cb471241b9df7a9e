"""Build a TensorRT engine (``model.plan``) from a bundle's ``model.onnx``.

Written against TensorRT's documented Python API (TensorRT 8.6 / 10.x):

    builder = trt.Builder(logger)
    network = builder.create_network(flags)          # explicit batch
    parser  = trt.OnnxParser(network, logger); parser.parse(bytes)
    config  = builder.create_builder_config()
    config.set_flag(trt.BuilderFlag.FP16)
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace)
    profile = builder.create_optimization_profile()
    profile.set_shape(input, min=(1, ...), opt=(opt, ...), max=(64, ...))  # every input
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)

TensorRT cannot be installed on the machines this project is developed on
(no GPU, NVIDIA's package index unreachable), so this path has not been run
here. Every failure says plainly what is missing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Union

from wavstream.stream.errors import WavstreamError

__all__ = ["TensorRTUnavailable", "import_tensorrt", "check_gpu", "build_engine",
           "MIN_BATCH", "OPT_BATCH", "MAX_BATCH"]

MIN_BATCH, OPT_BATCH, MAX_BATCH = 1, 8, 64
WORKSPACE_BYTES = 2 << 30  # 2 GiB builder workspace


class TensorRTUnavailable(WavstreamError, RuntimeError):
    """TensorRT, or a CUDA GPU for it, is not available on this machine."""


def import_tensorrt() -> Any:
    try:
        import tensorrt as trt  # type: ignore[import-not-found]
    except Exception as exc:  # ImportError, or OSError when libnvinfer is missing
        raise TensorRTUnavailable(
            f"TensorRT is not installed (import tensorrt failed: {exc}). Install NVIDIA's 'tensorrt' "
            "Python package on a machine with an NVIDIA GPU and CUDA, then rerun with --tensorrt. "
            "The ONNX bundle is complete without it.") from exc
    return trt


def check_gpu() -> str:
    """Name of the CUDA GPU TensorRT would build for; raises when there is none."""
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    except Exception:
        pass
    try:  # cuda-python, as TensorRT's own samples use it
        try:
            from cuda.bindings import runtime as cudart  # type: ignore[import-not-found]
        except Exception:
            from cuda import cudart  # type: ignore[import-not-found,no-redef]
        err, count = cudart.cudaGetDeviceCount()
        if int(err) == 0 and count > 0:
            return f"CUDA device 0 of {count}"
    except Exception:
        pass
    raise TensorRTUnavailable("no CUDA GPU is visible (torch.cuda.is_available() is False and cuda-python "
                              "found no device); TensorRT engines can only be built on an NVIDIA GPU")


def _input_shapes(network: Any) -> list[tuple[str, tuple[int, ...]]]:
    shapes = []
    for i in range(network.num_inputs):
        t = network.get_input(i)
        shapes.append((t.name, tuple(int(d) for d in t.shape)))
    return shapes


def build_engine(onnx_path: Union[str, Path], plan_path: Union[str, Path], *, fp16: bool = True,
                 min_batch: int = MIN_BATCH, opt_batch: int = OPT_BATCH, max_batch: int = MAX_BATCH,
                 workspace_bytes: int = WORKSPACE_BYTES, log: Callable[[str], Any] = lambda _: None) -> dict:
    """Parse ``onnx_path``, build an fp16 engine with one optimisation profile
    over batch min..max for every input (all other dimensions are static), and
    write the serialised engine to ``plan_path``."""
    trt = import_tensorrt()
    gpu = check_gpu()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):  # TRT 8.x; implicit in 10.x
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    data = Path(onnx_path).read_bytes()
    if not parser.parse(data):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise RuntimeError(f"TensorRT's ONNX parser rejected {onnx_path}: " + "; ".join(errors))
    config = builder.create_builder_config()
    if hasattr(config, "set_memory_pool_limit"):
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    else:  # TRT < 8.4
        config.max_workspace_size = workspace_bytes
    if fp16:
        if not builder.platform_has_fast_fp16:
            log("warning: this GPU has no fast fp16; building with the FP16 flag anyway")
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    shapes = _input_shapes(network)
    for name, shape in shapes:
        if any(d < 0 for d in shape[1:]):
            raise RuntimeError(f"input {name} has a dynamic non-batch dimension {shape}; the bundle graph "
                               "must be static except for the batch axis")
        rest = shape[1:]
        profile.set_shape(name, (min_batch, *rest), (opt_batch, *rest), (max_batch, *rest))
    config.add_optimization_profile(profile)
    log(f"building TensorRT engine on {gpu}: fp16={fp16}, batch {min_batch}/{opt_batch}/{max_batch}, "
        f"workspace {workspace_bytes >> 20} MiB, {len(shapes)} inputs")
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RuntimeError("TensorRT failed to build the engine (see the TensorRT log above)")
    Path(plan_path).write_bytes(bytes(plan))
    return {"gpu": gpu, "fp16": fp16, "profile": [min_batch, opt_batch, max_batch],
            "bytes": Path(plan_path).stat().st_size, "tensorrt": getattr(trt, "__version__", "?")}
