"""TensorRT engine for a bundle's ``model.plan`` (fp16 engine built from model.onnx).

Written against TensorRT's documented Python API (TensorRT >= 10:
``Runtime.deserialize_cuda_engine``, ``num_io_tensors``/``get_tensor_name``,
``set_input_shape``/``set_tensor_address``, ``execute_async_v3``) and NVIDIA's
``cuda-python`` runtime bindings for memory and streams, as TensorRT's own
samples do. Both are imported lazily; without them, or without a GPU, the
constructor raises ``EngineUnavailableError`` saying which is missing.

State stays on the GPU. The engine owns two device buffer sets for the state
tensors (ping/pong): a step reads states from one set and writes the new
states into the other, and the returned ``DeviceStates`` handle points at the
set just written. Passing that handle to the next ``step`` swaps the roles
without any host copy: the steady single-stream (or fixed-batch) loop never
copies state between host and device. When the engine is about to overwrite a
slot whose handle has not been passed back yet (several streams stepped one
after another), it first saves that handle's states to host memory, so every
handle stays usable; such a handle is uploaded again when it is used.
Host arrays (``init_state``, ``stack_states`` output) are accepted too and are
uploaded; ``DeviceStates.to_host()`` downloads when a host copy is needed
(e.g. to split a batch between sessions).

Status: cannot be exercised on the development machines (no GPU/TensorRT);
the error paths are tested, the device paths are not.
"""

from __future__ import annotations

import weakref
from typing import Any, Optional, Sequence, Union

import numpy as np

from ..bundle import Bundle, BundleError, IOSpec, check_graph_io, load_bundle
from .base import Engine, EngineUnavailableError, StateShapeError, StepResult

__all__ = ["TensorRTEngine", "DeviceStates"]


def _import_tensorrt() -> Any:
    try:
        import tensorrt as trt  # type: ignore[import-not-found]
    except Exception as exc:  # ImportError, or OSError when libnvinfer is absent
        raise EngineUnavailableError(
            "the TensorRT engine needs the 'tensorrt' Python package and an NVIDIA GPU "
            f"(pip install tensorrt cuda-python); import failed: {exc}. "
            "Use OrtEngine (backend='onnxruntime') instead."
        ) from exc
    return trt


def _import_cudart() -> Any:
    try:
        from cuda.bindings import runtime as cudart  # type: ignore[import-not-found]  # cuda-python >= 12.6
    except Exception:
        try:
            from cuda import cudart  # type: ignore[import-not-found,no-redef]  # older cuda-python
        except Exception as exc:
            raise EngineUnavailableError(
                f"the TensorRT engine needs NVIDIA's 'cuda-python' package (pip install cuda-python): {exc}"
            ) from exc
    return cudart


class _Cuda:
    """Tiny checked wrapper over cuda-python's runtime calls (they return (err, ...))."""

    def __init__(self, cudart: Any) -> None:
        self.rt = cudart

    def __call__(self, result: Any) -> Any:
        err, *rest = result if isinstance(result, tuple) else (result,)
        if int(err) != 0:
            _, name = self.rt.cudaGetErrorName(err)
            raise RuntimeError(f"CUDA error {int(err)}: {name.decode() if isinstance(name, bytes) else name}")
        return rest[0] if len(rest) == 1 else (tuple(rest) if rest else None)


class DeviceStates(Sequence[np.ndarray]):
    """Handle to a TensorRT engine's device-resident states for one step.

    Behaves as a read-only sequence of host arrays (each item is downloaded on
    access), so generic code (``stack_states``) still works; the engine itself
    uses the device buffers directly.
    """

    def __init__(self, engine: "TensorRTEngine", slot: int, generation: int, batch: int) -> None:
        self._engine = engine
        self.slot = slot
        self.generation = generation
        self.batch = batch
        self.consumed = False  # passed back to step(): its buffers may be reused
        self.host: Optional[list[np.ndarray]] = None  # saved copy once evicted from the device

    @property
    def on_device(self) -> bool:
        return self.host is None and self._engine._slot_generation[self.slot] == self.generation

    def __len__(self) -> int:
        return len(self._engine.config.states)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return self.to_host()[i]
        return self._engine._download_state(self, int(i))

    def to_host(self) -> list[np.ndarray]:
        return [self._engine._download_state(self, i) for i in range(len(self))]


class TensorRTEngine(Engine):
    """Runs ``model.plan`` with TensorRT on one GPU.

    Args:
        bundle: a loaded Bundle or a bundle folder path.
        device_id: CUDA device index.
    Raises:
        EngineUnavailableError: tensorrt / cuda-python missing, or no GPU.
        BundleError: model.plan missing, not deserialisable here (built for
            another TensorRT version or GPU), or disagreeing with config.json.
    """

    def __init__(self, bundle: Union[Bundle, str], *, device_id: int = 0) -> None:
        if not isinstance(bundle, Bundle):
            bundle = load_bundle(bundle)
        super().__init__(bundle)
        plan_path = bundle.model_file("tensorrt")
        trt = _import_tensorrt()
        cuda = _Cuda(_import_cudart())
        err, count = cuda.rt.cudaGetDeviceCount()
        if int(err) != 0 or count == 0:
            raise EngineUnavailableError("the TensorRT engine needs an NVIDIA GPU, and CUDA reports none on this machine")
        if device_id >= count:
            raise EngineUnavailableError(f"device_id {device_id} asked for, but CUDA reports {count} GPU(s)")
        cuda(cuda.rt.cudaSetDevice(device_id))
        self._trt, self._cuda = trt, cuda
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(plan_path.read_bytes())
        if self._engine is None:
            raise BundleError(
                f"{plan_path} could not be deserialised by TensorRT {trt.__version__} "
                "(corrupted, or built for another TensorRT version or GPU; rebuild it from model.onnx)"
            )
        e = self._engine
        names = [e.get_tensor_name(i) for i in range(e.num_io_tensors)]
        ins: list[IOSpec] = []
        outs: list[IOSpec] = []
        self._np_dtype: dict[str, Any] = {}
        for n in names:
            dt = np.dtype(trt.nptype(e.get_tensor_dtype(n)))
            self._np_dtype[n] = dt
            spec = IOSpec(n, tuple(int(d) for d in e.get_tensor_shape(n)), dt.name)
            (ins if e.get_tensor_mode(n) == trt.TensorIOMode.INPUT else outs).append(spec)
        check_graph_io(self.config, ins, outs, plan_path)
        # The optimisation profile bounds the batch: buffers are sized for its max.
        _, _, max_shape = e.get_tensor_profile_shape("samples", 0)
        self.max_batch = int(max_shape[0])
        self._context = e.create_execution_context()
        self._stream = cuda(cuda.rt.cudaStreamCreate())
        self._buffers: list[int] = []
        B = self.max_batch
        cfg = self.config
        self._d_samples = self._alloc(B * cfg.chunk_samples * 4)
        self._out_shapes: dict[str, tuple[int, ...]] = {"features": (cfg.chunk_frames, cfg.feature_dim)}
        if cfg.has_logits:
            self._out_shapes["logits"] = (cfg.chunk_frames, len(cfg.vocab))
        if cfg.has_codes:
            self._out_shapes["codes"] = (cfg.chunk_frames, cfg.code_groups)
        self._d_out = {
            n: self._alloc(B * int(np.prod(s)) * self._np_dtype[n].itemsize) for n, s in self._out_shapes.items()
        }
        # Two state slots (ping/pong); each has one device buffer per state.
        self._state_nbytes = [int(np.prod(s.batch_shape(1))) * np.dtype(s.np_dtype).itemsize for s in cfg.states]
        self._d_states = [[self._alloc(B * nb) for nb in self._state_nbytes] for _ in range(2)]
        self._slot_generation = [0, 0]
        # The latest handle issued for each slot (weak: a dropped handle needs no saving).
        self._slot_handle: list[Optional["weakref.ref[DeviceStates]"]] = [None, None]
        self._generation = 0

    # ------------------------------------------------------------- memory
    def _alloc(self, nbytes: int) -> int:
        ptr = int(self._cuda(self._cuda.rt.cudaMalloc(max(1, nbytes))))
        self._buffers.append(ptr)
        return ptr

    def _h2d(self, dst: int, arr: np.ndarray) -> None:
        rt = self._cuda.rt
        self._cuda(rt.cudaMemcpyAsync(dst, arr.ctypes.data, arr.nbytes, rt.cudaMemcpyKind.cudaMemcpyHostToDevice, self._stream))

    def _d2h(self, arr: np.ndarray, src: int) -> None:
        rt = self._cuda.rt
        self._cuda(rt.cudaMemcpyAsync(arr.ctypes.data, src, arr.nbytes, rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, self._stream))

    def _sync(self) -> None:
        self._cuda(self._cuda.rt.cudaStreamSynchronize(self._stream))

    def _download_state(self, handle: DeviceStates, i: int) -> np.ndarray:
        if handle.host is not None:
            return handle.host[i].copy()
        if not handle.on_device:
            raise StateShapeError("TensorRT DeviceStates whose buffers were reused after it was consumed by step()")
        spec = self.config.states[i]
        out: np.ndarray = np.empty(spec.batch_shape(handle.batch), dtype=spec.np_dtype)
        self._d2h(out, self._d_states[handle.slot][i])
        self._sync()
        return out

    def _evict(self, slot: int) -> None:
        """About to overwrite ``slot``: save its live, not-yet-consumed handle to host first."""
        ref = self._slot_handle[slot]
        h = ref() if ref is not None else None
        if h is not None and not h.consumed and h.on_device:
            h.host = [self._download_state(h, i) for i in range(len(h))]
        self._slot_handle[slot] = None
        self._generation += 1
        self._slot_generation[slot] = self._generation

    # --------------------------------------------------------------- step
    def init_state(self, batch: int = 1) -> list[np.ndarray]:
        # Host zeros; uploaded on the first step (cheap, once per stream).
        return super().init_state(batch)

    def step(self, samples: np.ndarray, states: Sequence[np.ndarray]) -> StepResult:
        if isinstance(states, DeviceStates):
            if states._engine is not self:
                raise StateShapeError("DeviceStates belong to another TensorRTEngine")
            if states.host is not None:
                return self.step(samples, states.host)  # evicted earlier: upload its saved copy
            if not states.on_device:
                raise StateShapeError(
                    "TensorRT DeviceStates already consumed by an earlier step(); pass the states "
                    "returned by the latest step, or keep a host copy with .to_host()"
                )
            samples = np.asarray(samples)
            if samples.ndim != 2 or samples.shape[0] != states.batch:
                raise StateShapeError(f"DeviceStates hold batch {states.batch}, samples have shape {samples.shape}")
            # validate() with shape-only stand-ins: no download.
            stand_ins: list[np.ndarray] = [
                np.broadcast_to(np.zeros((), s.np_dtype), s.batch_shape(states.batch)) for s in self.config.states
            ]
            samples = self.validate(samples, stand_ins)
        else:
            samples = self.validate(samples, states)
        return self._run(samples, states)

    def _run(self, samples: np.ndarray, states: Sequence[np.ndarray]) -> StepResult:
        B = samples.shape[0]
        if B > self.max_batch:
            raise ValueError(f"batch {B} exceeds this TensorRT engine's profile maximum of {self.max_batch}")
        ctx, cfg = self._context, self.config
        if isinstance(states, DeviceStates):
            src = states.slot
            states.consumed = True
        else:
            # Host states: upload into slot 0 (saving a live handle there first).
            src = 0
            self._evict(src)
            for i, st in enumerate(states):
                self._h2d(self._d_states[src][i], np.ascontiguousarray(st, dtype=cfg.states[i].np_dtype))
        dst = 1 - src
        self._evict(dst)
        self._h2d(self._d_samples, samples)
        ctx.set_input_shape("samples", (B, cfg.chunk_samples))
        ctx.set_tensor_address("samples", self._d_samples)
        for i, spec in enumerate(cfg.states):
            ctx.set_input_shape(spec.input_name, spec.batch_shape(B))
            ctx.set_tensor_address(spec.input_name, self._d_states[src][i])
            ctx.set_tensor_address(spec.output_name, self._d_states[dst][i])
        for n, ptr in self._d_out.items():
            ctx.set_tensor_address(n, ptr)
        if not ctx.execute_async_v3(int(self._stream)):
            raise RuntimeError("TensorRT execute_async_v3 failed (see the TensorRT log above)")
        host = {n: np.empty((B,) + s, dtype=self._np_dtype[n]) for n, s in self._out_shapes.items()}
        for n, arr in host.items():
            self._d2h(arr, self._d_out[n])
        self._sync()
        codes = host.get("codes")
        handle = DeviceStates(self, dst, self._slot_generation[dst], B)
        self._slot_handle[dst] = weakref.ref(handle)
        return StepResult(
            features=host["features"].astype(np.float32, copy=False),
            logits=None if "logits" not in host else host["logits"].astype(np.float32, copy=False),
            codes=None if codes is None else codes.astype(np.int64, copy=False),
            states=handle,  # type: ignore[arg-type]
        )

    def close(self) -> None:
        for ptr in getattr(self, "_buffers", []):
            self._cuda.rt.cudaFree(ptr)
        self._buffers = []
        if getattr(self, "_stream", None) is not None:
            self._cuda.rt.cudaStreamDestroy(self._stream)
            self._stream = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
