"""OpenVINO engine (CPU): the bundle's unchanged ``model.onnx`` read by OpenVINO.

OpenVINO reads ONNX directly, so a bundle needs nothing new. What it adds
over ONNX Runtime on a recent Xeon is the AMX tile units: with
``precision="bf16"`` the matrix products run in bfloat16 (activations and
weights rounded to 8 mantissa bits; accumulation in fp32).

State is kept as ``OrtEngine`` keeps it: host numpy arrays in, host arrays
out that a later step never overwrites while the caller holds them, rows
independent, so ``stack_states``/``unstack_states`` and the batched server
path work unchanged. With static shapes the request writes its outputs
straight into reused buffers (``buffers.BufferPool``: a buffer goes back into
use once no view of it is alive) instead of OpenVINO copying them out.

Shapes: OpenVINO runs a model compiled for one static batch size faster than
one compiled with a dynamic batch axis (measured in docs/bench.md), so by
default the model is compiled per batch size on first use and kept. A
server's batch changes from call to call, and compiling costs about 0.5-1 s,
so sizes are rounded up to a few buckets (1, 2, 3, 4, 6, 8, 12, 16, 24, 32,
48, 64, 96, ...: at most 1.5x the rows) and the extra rows are zeros that are
computed and dropped (rows are independent). Fifteen buckets cover batches up
to 192; beyond ``max_compiled`` the least recently used is dropped.
``shapes="dynamic"`` compiles once for every batch size instead.

Threads: a batch of ``split_min`` rows or more runs as two halves at once,
each an infer request on its own OpenVINO stream with half the threads: a
step's many small ops keep one thread each busier than they keep two
(default model, bf16, batch 16: 0.98 -> 0.79 ms per stream). ``step`` may be
called from several threads (compiled models are shared, each thread has its
own infer requests), but a server runs it from one worker: two workers, each
with OpenVINO's threads split into two streams, measured 3x the server CPU
per stream and fell over at 64 streams (docs/bench.md, Server), so
``concurrent_steps`` stays False.
"""

from __future__ import annotations

import collections
import os
import threading
import warnings
from typing import Any, Optional, Sequence, Union

import numpy as np

from ..bundle import Bundle, BundleError, IOSpec, check_graph_io, load_bundle
from .base import Engine, EngineOptionError, EngineUnavailableError, StepResult
from .buffers import BufferPool

__all__ = ["OpenVinoEngine", "PRECISIONS", "SHAPES", "batch_bucket", "openvino_available", "cpu_capabilities"]

PRECISIONS = ("fp32", "bf16", "int8")
# How a state carried in bfloat16 is held in numpy: its raw bits (zeros are zeros).
BF16_BITS = "uint16"
SHAPES = ("static", "dynamic")

# The CPU capability each precision needs (OPTIMIZATION_CAPABILITIES names).
_NEEDS = {"fp32": "FP32", "bf16": "BF16", "int8": "INT8"}
# OpenVINO's inference precision per our precision. int8 runs the bundle's
# model.int8.onnx (quantised MatMuls); its other ops stay fp32. fp32 must be
# asked for explicitly: on an AMX CPU OpenVINO's default is bf16.
_HINT = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}


def _import_openvino() -> Any:
    try:
        import openvino as ov  # type: ignore[import-not-found]
    except Exception as exc:  # ImportError, or OSError when a shared library is missing
        raise EngineUnavailableError(
            "the OpenVINO engine needs the 'openvino' package (pip install 'wavstream[openvino]'); "
            f"import failed: {exc}. Use backend='onnxruntime' instead."
        ) from exc
    return ov


def openvino_available() -> bool:
    """True when the openvino package imports."""
    try:
        _import_openvino()
        return True
    except EngineUnavailableError:
        return False


def cpu_capabilities() -> list[str]:
    """The CPU device's OPTIMIZATION_CAPABILITIES (e.g. ['FP32', 'BF16', 'INT8', ...])."""
    ov = _import_openvino()
    return [str(c) for c in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")]


def batch_bucket(batch: int) -> int:
    """The compiled batch size that serves ``batch`` rows: 1, 2, 3, 4, 6, 8, 12, 16, 24, ... (>= batch)."""
    if batch <= 4:
        return batch
    p = 4
    while True:  # 4, 6, 8, 12, 16, 24, ...: powers of two and 1.5x them
        if batch <= p + p // 2:
            return p + p // 2 if batch > p else p
        p *= 2


def _dtype(element_type: Any) -> str:
    # OpenVINO element types convert to numpy dtypes (f32 -> float32, i64 -> int64); numpy has no
    # bfloat16, so a bf16 tensor is held as its raw 16-bit patterns.
    if element_type.get_type_name() == "bf16":  # (to_dtype() would say float16)
        return BF16_BITS
    return str(np.dtype(element_type.to_dtype()))


class _Slot:
    """One thread's infer requests for one compiled shape, and (static shapes) a buffer pool per output.

    ``parts`` > 1: the batch runs as that many equal row blocks, one request each, started together
    on the compiled model's streams; the blocks write into row ranges of the same output buffers.
    """

    __slots__ = ("compiled", "requests", "parts", "pools", "types", "attached", "inputs")

    def __init__(self, compiled: Any, static: bool, parts: int = 1, input_names: Sequence[str] = ()) -> None:
        self.compiled = compiled
        self.parts = parts
        self.requests = [compiled.create_infer_request() for _ in range(parts)]
        # (port index, element type) of each named input, in the order the engine feeds them
        ports = {p.get_any_name(): (i, p.get_element_type()) for i, p in enumerate(compiled.inputs)}
        self.inputs = [ports[n] for n in input_names]
        self.pools: dict[str, BufferPool] = {}
        self.types: dict[str, Any] = {}  # OpenVINO element type of each output
        if static:
            for p in compiled.outputs:
                rows, *rest = tuple(p.get_shape())
                self.pools[p.get_any_name()] = BufferPool((rows * parts, *rest), _dtype(p.get_element_type()))
                self.types[p.get_any_name()] = p.get_element_type()
        self.attached = {name: 0 for name in self.pools}  # serial of the buffer each output points at

    @property
    def request(self) -> Any:
        return self.requests[0]

    def bind_inputs(self, ov: Any, arrays: Sequence[np.ndarray]) -> None:
        """Point each request's inputs at its block of rows of the caller's (C-contiguous) arrays.

        What ``infer(feed, share_inputs=True)`` does, without OpenVINO's generic per-input
        dispatch: ~0.5 ms of Python per step on a BASE graph's 32 inputs (5% of its step).
        """
        for k, req in enumerate(self.requests):
            for (index, etype), a in zip(self.inputs, arrays):
                block = self._block(a, k)
                req.set_input_tensor(index, ov.Tensor(block, block.shape, etype))

    def _block(self, a: np.ndarray, k: int) -> np.ndarray:
        """Request ``k``'s rows of ``a``: contiguous, whole rows of a C-ordered array."""
        if self.parts == 1:
            return a
        h = a.shape[0] // self.parts
        return a[k * h:(k + 1) * h]

    def attach(self, ov: Any) -> dict[str, np.ndarray]:
        """Point every output of the requests at a buffer no caller holds; returns them by name.

        OpenVINO keeps no reference to an array it writes into: the pool does,
        and every infer is preceded by this call.
        """
        out = {}
        for name, pool in self.pools.items():
            buf = pool.take()
            if buf.serial != self.attached[name]:
                for k, req in enumerate(self.requests):
                    rows = self._block(buf.array, k)
                    # (array, shape, type) shares the array's memory and reads uint16 bits as bf16
                    req.set_tensor(name, ov.Tensor(rows, rows.shape, self.types[name]))
                self.attached[name] = buf.serial
            out[name] = buf.array
        return out


class OpenVinoEngine(Engine):
    """Runs a bundle's ``model.onnx`` (or, for int8, ``model.qdq.onnx`` / ``model.int8.onnx``) with OpenVINO on the CPU.

    Args:
        bundle: a loaded Bundle or a bundle folder path.
        precision: "fp32" (same numbers as ONNX Runtime to ~1e-5), "bf16"
            (AMX/AVX512-BF16; features within ~0.04 of fp32, dev CER within
            0.001: see docs/bench.md), or "int8" (the bundle's
            statically calibrated model.qdq.onnx if it has one, from
            ``wavstream export --int8-static``: matrix products on the int8
            units, the rest in bf16 where the CPU has it; else
            model.int8.onnx, ONNX Runtime's dynamic int8, which OpenVINO
            runs slowly).
        intra_op_threads: threads of one inference (OpenVINO's
            INFERENCE_NUM_THREADS); None keeps OpenVINO's choice (all cores).
        shapes: "static" (compile per batch bucket on first use; faster) or
            "dynamic" (one model for every batch size).
        max_compiled: with shapes="static", how many buckets stay compiled.
        bf16_states: carry the float states (K/V and conv caches) between
            steps as bfloat16 (numpy uint16 holding the bits, from
            ``init_state``) instead of float32; the bf16 step rounds them to
            bf16 where it reads them anyway. Halves the state memory and its
            copies: a batch-16 step of the default model 19 -> 13 ms. Default:
            on wherever the step runs in bf16 (precision="bf16", or "int8"
            with a model.qdq.onnx), and only allowed there.
        split_min: with static shapes and two or more threads, a batch of at
            least this many rows (after bucketing, an even count) runs as two
            halves at once on two OpenVINO streams of half the threads each,
            rather than as one request whose small ops leave threads idle
            (default model, bf16: 0.98 -> 0.79 ms per stream at batch 16;
            docs/bench.md). 0: never.
    Raises:
        EngineUnavailableError: openvino is not installed, or this CPU lacks
            the precision asked for (named, with what it has).
        BundleError: the model file is missing, not readable by OpenVINO, or
            disagrees with config.json.
        EngineOptionError (a ValueError): an unknown precision or shapes value.
    """

    concurrent_steps = False  # thread-safe, but measured slower run concurrently (see the module docstring)

    def __init__(
        self,
        bundle: Union[Bundle, str],
        *,
        precision: str = "fp32",
        intra_op_threads: Optional[int] = None,
        shapes: str = "static",
        max_compiled: int = 16,
        bf16_states: Optional[bool] = None,
        split_min: int = 8,
    ) -> None:
        if precision not in PRECISIONS:
            raise EngineOptionError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if shapes not in SHAPES:
            raise EngineOptionError(f"shapes must be one of {SHAPES}, got {shapes!r}")
        if max_compiled < 1:
            raise EngineOptionError(f"max_compiled must be >= 1, got {max_compiled}")
        if split_min < 0:
            raise EngineOptionError(f"split_min must be >= 0, got {split_min}")
        ov = _import_openvino()
        if not isinstance(bundle, Bundle):
            bundle = load_bundle(bundle)
        super().__init__(bundle)
        self.precision = precision
        self.shapes = shapes
        self.max_compiled = int(max_compiled)
        self._ov = ov
        self._core = ov.Core()
        caps = [str(c) for c in self._core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")]
        if _NEEDS[precision] not in caps:
            raise EngineUnavailableError(
                f"precision {precision!r} needs the CPU capability {_NEEDS[precision]}, which OpenVINO does not "
                f"report for this CPU (it reports {caps}); use precision='fp32'"
            )
        # int8: the statically calibrated model.qdq.onnx where the bundle has one (OpenVINO's int8
        # kernels; the ops it leaves in float run in bf16 where the CPU has it), else model.int8.onnx.
        self.static_int8 = precision == "int8" and bundle.has_model_file("qdq")
        hint = _HINT[precision]
        if self.static_int8 and "BF16" in caps:
            hint = "bf16"
        if bf16_states is None:
            bf16_states = hint == "bf16"
        if bf16_states and hint != "bf16":
            raise EngineOptionError(f"bf16_states needs precision='bf16' (or int8 with a model.qdq.onnx on a CPU "
                                    f"with bf16), got precision={precision!r}")
        self.model_path = bundle.model_file("qdq" if self.static_int8 else "int8" if precision == "int8" else "onnx")
        if precision == "int8" and not self.static_int8:
            # OpenVINO has no fast kernels for ONNX Runtime's dynamic-int8 graph (slower than its own fp32
            # at batch 1 on the default model, docs/bench.md): say so rather than run slowly in silence.
            warnings.warn(
                f"{bundle.path} has no model.qdq.onnx, so OpenVINO's int8 runs model.int8.onnx (ONNX Runtime's "
                f"dynamic int8), which OpenVINO runs slower than fp32; use precision='bf16', or re-export the "
                f"bundle with `wavstream export ... --int8-static`", RuntimeWarning, stacklevel=2)
        try:
            self._model = self._core.read_model(str(self.model_path))
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses for unreadable files
            raise BundleError(
                f"{self.model_path} could not be read by OpenVINO (corrupted or not an ONNX model?): "
                f"{type(exc).__name__}: {str(exc).strip()[:300]}"
            ) from exc
        ins = [IOSpec(p.get_any_name(), self._shape(p), _dtype(p.get_element_type())) for p in self._model.inputs]
        outs = [IOSpec(p.get_any_name(), self._shape(p), _dtype(p.get_element_type())) for p in self._model.outputs]
        check_graph_io(self.config, ins, outs, self.model_path)
        self.bf16_states = bool(bf16_states)
        self._state_dtypes = [np.dtype(BF16_BITS if self.bf16_states and np.dtype(spec.np_dtype) == np.float32
                                       else spec.np_dtype) for spec in self.config.states]
        narrow = [s for s, dt in zip(self.config.states, self._state_dtypes) if dt == np.dtype(BF16_BITS)]
        self._bf16_outputs = frozenset(s.output_name for s in narrow)  # outputs typed bf16
        if narrow:
            self._model = self._carry_states_in_bf16(self._model, narrow)
        self._in_names = ["samples"] + [s.input_name for s in self.config.states]
        self._out_names = list(self.config.outputs)
        self._props: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": hint,
            # One request at a time (the caller batches): all threads serve it.
            "PERFORMANCE_HINT": "LATENCY",
        }
        if intra_op_threads:
            self._props["INFERENCE_NUM_THREADS"] = int(intra_op_threads)
        self.intra_op_threads = intra_op_threads
        threads = intra_op_threads or os.cpu_count() or 1
        self.split_min = int(split_min) if shapes == "static" and threads >= 2 else 0
        # (batch size or -1 for the dynamic model, parts) -> compiled model, most recently used last
        self._compiled: "collections.OrderedDict[tuple[int, int], Any]" = collections.OrderedDict()
        self._lock = threading.Lock()  # compiling reshapes the one model read above
        self._local = threading.local()  # per thread: compiled key -> _Slot (its infer requests, output buffers)
        if shapes == "dynamic":
            self._compiled[(-1, 1)] = self._compile(None)

    def _carry_states_in_bf16(self, model: Any, states: Sequence[Any]) -> Any:
        """The model with these (float32) states' inputs and outputs typed bf16 at the boundary."""
        from openvino.preprocess import PrePostProcessor  # type: ignore[import-not-found]

        ppp = PrePostProcessor(model)
        for spec in states:
            ppp.input(spec.input_name).tensor().set_element_type(self._ov.Type.bf16)
            ppp.output(spec.output_name).tensor().set_element_type(self._ov.Type.bf16)
        return ppp.build()

    def state_dtypes(self) -> list[np.dtype]:
        return list(self._state_dtypes)

    @staticmethod
    def _shape(port: Any) -> tuple[Any, ...]:
        return tuple(d.get_length() if d.is_static else None for d in port.get_partial_shape())

    def _compile(self, batch: Optional[int], parts: int = 1) -> Any:
        """The model compiled for ``batch`` rows in ``parts`` blocks (None: the dynamic batch axis)."""
        props = dict(self._props)
        if batch is not None:
            ov = self._ov
            # The model is ours (read in __init__): reshaping it in place is fine.
            self._model.reshape({p.get_any_name(): ov.PartialShape([batch // parts] + list(p.get_partial_shape())[1:])
                                 for p in self._model.inputs})
        if parts > 1:  # one stream per block, the threads shared out among them
            props.update({"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": parts})
        try:
            return self._core.compile_model(self._model, "CPU", props)
        except Exception as exc:
            raise BundleError(
                f"OpenVINO could not compile {self.model_path} (precision {self.precision}, batch "
                f"{'dynamic' if batch is None else batch}): {type(exc).__name__}: {str(exc).strip()[:300]}"
            ) from exc

    def _compiled_for(self, key: tuple[int, int]) -> Any:
        with self._lock:
            compiled = self._compiled.get(key)
            if compiled is None:
                compiled = self._compile(None if key[0] == -1 else key[0], key[1])
                self._compiled[key] = compiled
                while len(self._compiled) > self.max_compiled:
                    self._compiled.popitem(last=False)
            else:
                self._compiled.move_to_end(key)
            return compiled

    def _parts(self, batch: int) -> int:
        return 2 if self.split_min and batch >= self.split_min and batch % 2 == 0 else 1

    def _slot(self, batch: int) -> "_Slot":
        key = (-1, 1) if self.shapes == "dynamic" else (batch, self._parts(batch))
        compiled = self._compiled_for(key)
        mine: dict[tuple[int, int], _Slot] = self._local.__dict__.setdefault("requests", {})
        got = mine.get(key)
        if got is None or got.compiled is not compiled:  # new, or recompiled after an eviction
            got = mine[key] = _Slot(compiled, key[0] > 0, key[1], self._in_names)
        return got

    def warmup(self, batches: Sequence[int]) -> None:
        """Compile the buckets of ``batches`` now rather than at their first step (static shapes)."""
        for b in batches:
            if b < 1:
                raise EngineOptionError(f"batch sizes must be >= 1, got {b}")
            self._slot(self._bucket(int(b)))

    def _bucket(self, batch: int) -> int:
        return batch if self.shapes == "dynamic" else batch_bucket(batch)

    @property
    def compiled_batches(self) -> list[int]:
        """Batch sizes compiled so far, least recently used first (static shapes; [] for dynamic)."""
        return [b for b, _parts in self._compiled if b > 0]

    @property
    def device(self) -> str:
        return "cpu"

    def _run(self, samples: np.ndarray, states: Sequence[np.ndarray]) -> StepResult:
        B = samples.shape[0]
        P = self._bucket(B)
        slot = self._slot(P)
        req = slot.request
        if P > B:  # zero rows up to the bucket: computed, then dropped
            samples = np.concatenate([samples, np.zeros((P - B, samples.shape[1]), np.float32)])
            pads = self.init_state(P - B)
            states = [np.concatenate([np.asarray(st), z]) for st, z in zip(states, pads)]
        arrays = [np.ascontiguousarray(samples)] + [np.ascontiguousarray(st) for st in states]
        # The requests read the caller's arrays in place (never written).
        slot.bind_inputs(self._ov, arrays)
        if not slot.pools:  # dynamic shapes: outputs copied out of the request's buffers
            res = req.infer(share_outputs=False)
            outs = {name: res[name][:B] for name in self._out_names}
            if self.bf16_states:  # OpenVINO hands bf16 back typed float16: the bits are what we keep
                outs = {n: a.view(BF16_BITS) if n in self._bf16_outputs else a for n, a in outs.items()}
        else:  # static shapes: OpenVINO writes into buffers the caller is not holding
            bufs = slot.attach(self._ov)
            if slot.parts == 1:
                req.infer(share_outputs=True)
            else:
                for r in slot.requests:
                    r.start_async()
                failed = []
                for r in slot.requests:  # every block finishes before its buffers can be handed out or reused
                    try:
                        r.wait()
                    except Exception as exc:
                        failed.append(exc)
                if failed:
                    raise failed[0]
            outs = {name: bufs[name][:B] for name in self._out_names}
            del bufs
        return StepResult(
            features=outs["features"],
            logits=outs.get("logits"),
            codes=outs.get("codes"),
            states=[outs[s.output_name] for s in self.config.states],
        )

    def close(self) -> None:
        self._compiled.clear()
        self._local = threading.local()

    def __repr__(self) -> str:
        return (f"OpenVinoEngine({self.model_path}, precision={self.precision}, shapes={self.shapes}, "
                f"bf16_states={self.bf16_states}, "
                f"threads={self.intra_op_threads or 'default'})")
