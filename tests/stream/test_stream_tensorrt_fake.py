"""TensorRTEngine's device-state logic, run against CPU fakes of tensorrt and cuda-python.

TensorRT can't be installed on the development machines. These fakes
implement just the documented calls the engine uses (device memory as
bytearrays, the "engine" evaluating the bundle's ONNX graph with
onnxruntime), so the ping/pong state buffers, eviction of un-consumed handles
and batching are checked for real; only TensorRT itself is stood in for.
"""

from __future__ import annotations

import ctypes
import sys
import types
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from toy_bundle import build_toy_bundle, silence, synth  # noqa: E402

from wavstream.stream import Features, Final, Recognizer  # noqa: E402


class FakeCuda:
    class cudaMemcpyKind:
        cudaMemcpyHostToDevice = 1
        cudaMemcpyDeviceToHost = 2

    def __init__(self) -> None:
        self.mem: dict[int, bytearray] = {}
        self.next = 0x1000
        self.copies: list[tuple[int, int]] = []  # (kind, nbytes)

    def cudaGetDeviceCount(self):  # type: ignore[no-untyped-def]
        return (0, 1)

    def cudaSetDevice(self, i):  # type: ignore[no-untyped-def]
        return (0,)

    def cudaStreamCreate(self):  # type: ignore[no-untyped-def]
        return (0, 7)

    def cudaStreamSynchronize(self, s):  # type: ignore[no-untyped-def]
        return (0,)

    def cudaStreamDestroy(self, s):  # type: ignore[no-untyped-def]
        return (0,)

    def cudaMalloc(self, n):  # type: ignore[no-untyped-def]
        ptr = self.next
        self.next += n + 256
        self.mem[ptr] = bytearray(n)
        return (0, ptr)

    def cudaFree(self, p):  # type: ignore[no-untyped-def]
        self.mem.pop(p, None)
        return (0,)

    def cudaMemcpyAsync(self, dst, src, n, kind, stream):  # type: ignore[no-untyped-def]
        self.copies.append((kind, n))
        if kind == 1:
            self.mem[dst][:n] = ctypes.string_at(src, n)
        else:
            ctypes.memmove(dst, bytes(self.mem[src][:n]), n)
        return (0,)

    def cudaGetErrorName(self, e):  # type: ignore[no-untyped-def]
        return (0, b"fake")


def make_fake_trt(cuda: FakeCuda, max_batch: int = 4) -> types.ModuleType:
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "fake"

    class TensorIOMode:
        INPUT = "in"
        OUTPUT = "out"

    class Logger:
        WARNING = 2

        def __init__(self, level):  # type: ignore[no-untyped-def]
            pass

    class Context:
        def __init__(self, eng):  # type: ignore[no-untyped-def]
            self.eng, self.shapes, self.addr = eng, {}, {}

        def set_input_shape(self, n, shape):  # type: ignore[no-untyped-def]
            self.shapes[n] = tuple(shape)
            return True

        def set_tensor_address(self, n, p):  # type: ignore[no-untyped-def]
            self.addr[n] = p
            return True

        def execute_async_v3(self, stream):  # type: ignore[no-untyped-def]
            sess = self.eng.sess
            feed = {}
            for i in sess.get_inputs():
                dt = self.eng.dtypes[i.name]
                n = int(np.prod(self.shapes[i.name])) * dt.itemsize
                feed[i.name] = np.frombuffer(bytes(cuda.mem[self.addr[i.name]][:n]), dt).reshape(self.shapes[i.name])
            names = [o.name for o in sess.get_outputs()]
            for n, v in zip(names, sess.run(names, feed)):
                b = np.ascontiguousarray(v).tobytes()
                cuda.mem[self.addr[n]][: len(b)] = b
            return True

    class Engine:
        def __init__(self, data):  # type: ignore[no-untyped-def]
            self.sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
            self.io = [(i, TensorIOMode.INPUT) for i in self.sess.get_inputs()] + [
                (o, TensorIOMode.OUTPUT) for o in self.sess.get_outputs()
            ]
            m = {"tensor(float)": np.dtype(np.float32), "tensor(int64)": np.dtype(np.int64)}
            self.dtypes = {a.name: m[a.type] for a, _ in self.io}
            self.num_io_tensors = len(self.io)

        def get_tensor_name(self, i):  # type: ignore[no-untyped-def]
            return self.io[i][0].name

        def _arg(self, n):  # type: ignore[no-untyped-def]
            return next(x for x in self.io if x[0].name == n)

        def get_tensor_mode(self, n):  # type: ignore[no-untyped-def]
            return self._arg(n)[1]

        def get_tensor_shape(self, n):  # type: ignore[no-untyped-def]
            return [d if isinstance(d, int) else -1 for d in self._arg(n)[0].shape]

        def get_tensor_dtype(self, n):  # type: ignore[no-untyped-def]
            return self.dtypes[n]

        def get_tensor_profile_shape(self, n, k):  # type: ignore[no-untyped-def]
            s = self.get_tensor_shape(n)
            return ([1] + s[1:], [1] + s[1:], [max_batch] + s[1:])

        def create_execution_context(self):  # type: ignore[no-untyped-def]
            return Context(self)

    class Runtime:
        def __init__(self, logger):  # type: ignore[no-untyped-def]
            pass

        def deserialize_cuda_engine(self, data):  # type: ignore[no-untyped-def]
            try:
                return Engine(data)
            except Exception:
                return None

    trt.TensorIOMode = TensorIOMode
    trt.Logger = Logger
    trt.Runtime = Runtime
    trt.nptype = lambda dt: dt
    return trt


@pytest.fixture()
def fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):  # type: ignore[no-untyped-def]
    cuda = FakeCuda()
    cuda_pkg = types.ModuleType("cuda")
    bindings = types.ModuleType("cuda.bindings")
    bindings.runtime = cuda  # type: ignore[attr-defined]
    cuda_pkg.bindings = bindings  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "cuda", cuda_pkg)
    monkeypatch.setitem(sys.modules, "cuda.bindings", bindings)
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", cuda)  # type: ignore[arg-type]
    monkeypatch.setitem(sys.modules, "tensorrt", make_fake_trt(cuda))
    b = build_toy_bundle(tmp_path / "toy")
    (b / "model.plan").write_bytes((b / "model.onnx").read_bytes())  # the fake "plan" is the ONNX graph
    return cuda, b


def _run(rec: Recognizer, wave: np.ndarray) -> list:
    return list(rec.feed(wave, 16000)) + list(rec.finish())


def _split(evs: list) -> tuple[np.ndarray, list]:
    return np.concatenate([e.frames for e in evs if isinstance(e, Features)]), [e for e in evs if not isinstance(e, Features)]


def test_tensorrt_engine_matches_onnxruntime_without_state_copies(fake) -> None:  # type: ignore[no-untyped-def]
    cuda, bundle = fake
    wave = np.concatenate([synth("hi"), silence(2.0), synth("yo")])
    trt_rec = Recognizer.from_bundle(bundle, backend="tensorrt")
    ort_rec = Recognizer.from_bundle(bundle)
    cuda.copies.clear()
    ft, et = _split(_run(trt_rec, wave))
    fo, eo = _split(_run(ort_rec, wave))
    np.testing.assert_allclose(ft, fo, atol=1e-6)
    assert et == eo and [e.text for e in et if isinstance(e, Final)] == ["hi", "yo"]
    # State bytes moved host->device only on the first step (the zero init): no per-step copies.
    state_bytes = {8, 160 * 4}  # frames_seen (1,) int64, prev_frame (1,1,160) float32
    h2d_state = [n for k, n in cuda.copies if k == 1 and n in state_bytes]
    assert len(h2d_state) == 2
    assert not [n for k, n in cuda.copies if k == 2 and n in state_bytes]


def test_tensorrt_interleaved_and_batched_streams(fake) -> None:  # type: ignore[no-untyped-def]
    """Streams stepped one after another (handles evicted to host) and batched, vs onnxruntime."""
    cuda, bundle = fake
    trt_rec = Recognizer.from_bundle(bundle, backend="tensorrt")
    ort_rec = Recognizer.from_bundle(bundle)
    waves = [synth("abc"), synth("de", seed=1), np.concatenate([synth("f"), silence(1.5), synth("g")])]
    streams = [trt_rec.create_stream() for _ in waves]
    for s, w in zip(streams, waves):
        s.accept_waveform(w, 16000)
        s.input_finished()
    out: list[list] = [[] for _ in waves]
    rnd = 0
    while any(trt_rec.is_ready(s) for s in streams):
        if rnd % 2:  # alternate: one batched call, then each stream alone
            for i, evs in enumerate(trt_rec.decode_streams(streams)):
                out[i].extend(evs)
        else:
            for i, s in enumerate(streams):
                out[i].extend(trt_rec.decode_stream(s))
        rnd += 1
    # Interleaving really evicted live handles to host (device->host state copies happened).
    assert any(k == 2 and n == 8 for k, n in cuda.copies)
    for w, evs in zip(waves, out):
        ft, et = _split(evs)
        fo, eo = _split(_run(ort_rec, w))
        np.testing.assert_allclose(ft, fo, atol=1e-6)
        assert et == eo


def test_tensorrt_bad_plan_is_bundle_error(fake) -> None:  # type: ignore[no-untyped-def]
    from wavstream.stream import BundleError

    _, bundle = fake
    (bundle / "model.plan").write_bytes(b"garbage")
    with pytest.raises(BundleError, match="could not be deserialised by TensorRT"):
        Recognizer.from_bundle(bundle, backend="tensorrt")
