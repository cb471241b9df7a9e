"""The OpenVINO engine: parity with ONNX Runtime (fp32), batching, bf16/int8 text, clear errors.

Torch-free: the committed default bundle and the toy bundle (onnx.helper).
Parity against torch for all five families is in tests/export/test_export.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from common import PARITY_TOL
from toy_bundle import build_toy_bundle, silence, synth  # noqa: E402

from wavstream.stream import Features, Final, OrtEngine, Recognizer, load_bundle
from wavstream.stream.bundle import BundleError
from wavstream.stream.engines import ChunkSizeError, EngineOptionError, EngineUnavailableError, StateShapeError, create_engine
from wavstream.stream.engines.openvino import OpenVinoEngine, batch_bucket, cpu_capabilities
from wavstream.stream.errors import WavstreamError
from wavstream.stream.recognizer import DEFAULT_MODEL_DIR

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "stream" / "samples" / "sample.wav"
N_CHUNKS = 6


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_toy_bundle(tmp_path_factory.mktemp("ov") / "toy", code_groups=2)


def _noise(batch: int, n: int, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal((batch, n))).astype(np.float32)


def _run(engine, wave: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Step the engine over whole chunks with state carried; (features, logits, last states)."""
    st = engine.init_state(wave.shape[0])
    feats, logits = [], []
    for i in range(0, wave.shape[1], engine.chunk_samples):
        r = engine.step(wave[:, i:i + engine.chunk_samples], st)
        feats.append(r.features)
        logits.append(r.logits)
        st = r.states
    return np.concatenate(feats, 1), np.concatenate(logits, 1), st


@pytest.mark.parametrize("shapes", ["static", "dynamic"])
def test_fp32_equals_onnxruntime_on_the_default_model(shapes: str) -> None:
    ort_e = OrtEngine(DEFAULT_MODEL_DIR, device="cpu", intra_op_threads=1)
    ov_e = OpenVinoEngine(DEFAULT_MODEL_DIR, precision="fp32", intra_op_threads=1, shapes=shapes)
    wave = _noise(3, N_CHUNKS * ort_e.chunk_samples, seed=1)
    fo, lo, so = _run(ort_e, wave)
    fv, lv, sv = _run(ov_e, wave)
    assert fv.shape == fo.shape and lv.shape == lo.shape
    assert np.abs(fv - fo).max() <= PARITY_TOL
    assert np.abs(lv - lo).max() <= PARITY_TOL
    for a, b in zip(so, sv):  # states carried the same way, dtypes kept (frames_seen int64)
        assert a.dtype == b.dtype and a.shape == b.shape
        assert np.abs(a.astype(np.float64) - b.astype(np.float64)).max() <= PARITY_TOL
    assert ov_e.compiled_batches == ([3] if shapes == "static" else [])


def test_rows_are_independent_and_batches_are_compiled_once_each() -> None:
    eng = OpenVinoEngine(DEFAULT_MODEL_DIR, intra_op_threads=1, max_compiled=2)
    x = _noise(3, eng.chunk_samples, seed=2)
    both = eng.step(x, eng.init_state(3))
    one = eng.step(x[1:2], eng.init_state(1))
    np.testing.assert_allclose(both.features[1:2], one.features, atol=PARITY_TOL)
    eng.step(x[:2], eng.init_state(2))
    assert eng.compiled_batches == [1, 2]  # batch 3 dropped: least recently used beyond max_compiled
    eng.warmup([3])
    assert eng.compiled_batches == [2, 3]
    # a batch of 5 runs in the 6-row bucket (one zero row computed and dropped): same rows, 5 out
    x5 = _noise(5, eng.chunk_samples, seed=4)
    five = eng.step(x5, eng.init_state(5))
    assert eng.compiled_batches == [3, 6]
    assert five.features.shape[0] == 5 and all(s.shape[0] == 5 for s in five.states)
    ref = OrtEngine(DEFAULT_MODEL_DIR, device="cpu", intra_op_threads=1).step(x5, eng.init_state(5))
    np.testing.assert_allclose(five.features, ref.features, atol=PARITY_TOL)
    assert batch_bucket(5) == 6 and batch_bucket(33) == 48 and batch_bucket(64) == 64
    # The engine never writes into what it returned: a later step leaves earlier states alone.
    kept = [s.copy() for s in one.states]
    eng.step(x[:1], one.states)
    for a, b in zip(kept, one.states):
        np.testing.assert_array_equal(a, b)


def test_outputs_held_by_the_caller_are_never_overwritten_and_released_ones_are_reused() -> None:
    """Static shapes: the request writes into pooled buffers; one the caller still holds is not reused."""
    eng = OpenVinoEngine(DEFAULT_MODEL_DIR, intra_op_threads=1)
    ref = OrtEngine(DEFAULT_MODEL_DIR, device="cpu", intra_op_threads=1)
    x = _noise(2, 4 * eng.chunk_samples, seed=7)
    first = eng.step(x[:, : eng.chunk_samples], eng.init_state(2))
    kept = [first.features.copy()] + [s.copy() for s in first.states]
    st = first.states
    for i in range(1, 4):  # a stream's loop: each step's states are the next step's input
        r = eng.step(x[:, i * eng.chunk_samples:(i + 1) * eng.chunk_samples], st)
        st = r.states
    for a, b in zip(kept, [first.features] + list(first.states)):
        np.testing.assert_array_equal(a, b)
    # the same numbers as ONNX Runtime's fresh arrays, step by step
    st_ref = ref.init_state(2)
    for i in range(4):
        rr = ref.step(x[:, i * eng.chunk_samples:(i + 1) * eng.chunk_samples], st_ref)
        st_ref = rr.states
    np.testing.assert_allclose(r.features, rr.features, atol=PARITY_TOL)
    # with only the running state held, a long loop reuses the same few buffers per output:
    # the one held, the one written, and the pool's spares
    del first, kept, r
    for _ in range(20):
        st = eng.step(x[:, : eng.chunk_samples], st).states
    pools = eng._slot(2).pools
    assert pools and all(len(p) <= 2 + p.keep_free for p in pools.values()), {n: len(p) for n, p in pools.items()}


def test_a_large_batch_runs_as_two_halves_with_the_same_numbers() -> None:
    """From split_min rows a batch runs as two blocks on two OpenVINO streams: rows as ONNX Runtime gives them."""
    eng = OpenVinoEngine(DEFAULT_MODEL_DIR, intra_op_threads=2, split_min=8)
    whole = OpenVinoEngine(DEFAULT_MODEL_DIR, intra_op_threads=2, split_min=0)
    ref = OrtEngine(DEFAULT_MODEL_DIR, device="cpu", intra_op_threads=1)
    wave = _noise(9, 3 * eng.chunk_samples, seed=11)  # 9 rows: bucket 12, two blocks of 6 (3 zero rows)
    fs, ls, ss = _run(eng, wave)
    fr, lr, sr = _run(ref, wave)
    fw, _, _ = _run(whole, wave)
    assert eng.compiled_batches == [12]  # named by the batch it serves, not by its blocks
    assert eng._slot(12).parts == 2 and whole._slot(12).parts == 1 and eng._slot(4).parts == 1
    np.testing.assert_allclose(fs, fr, atol=PARITY_TOL)
    np.testing.assert_allclose(ls, lr, atol=PARITY_TOL)
    np.testing.assert_allclose(fs, fw, atol=PARITY_TOL)
    for a, b in zip(ss, sr):
        np.testing.assert_allclose(a.astype(np.float64), b.astype(np.float64), atol=PARITY_TOL)
    assert OpenVinoEngine(DEFAULT_MODEL_DIR, intra_op_threads=1).split_min == 0  # one thread: nothing to split
    with pytest.raises(EngineOptionError, match="split_min"):
        OpenVinoEngine(DEFAULT_MODEL_DIR, split_min=-1)


def test_batched_streams_of_different_lengths_match_single_streams(toy: Path) -> None:
    """The server path (decode_streams) on OpenVINO: each stream gets what ONNX Runtime gives it alone."""
    rec = Recognizer(create_engine(toy, "openvino", intra_op_threads=1))
    ref = Recognizer.from_bundle(toy, intra_op_threads=1)
    waves = [
        np.concatenate([synth("one"), silence(1.5), synth("two")]),
        synth("three", seed=5),
        np.concatenate([silence(0.3), synth("four", seed=6)])[:-333],
    ]
    streams = [rec.create_stream() for _ in waves]
    for s, w in zip(streams, waves):
        s.accept_waveform(w, 16000)
        s.input_finished()
    batched: list[list] = [[] for _ in waves]
    while any(rec.is_ready(s) for s in streams):
        for i, evs in enumerate(rec.decode_streams(streams)):
            batched[i].extend(evs)
    assert len(rec.engine.compiled_batches) > 1  # the batch shrank as streams ended
    for w, evs in zip(waves, batched):
        alone = list(ref.feed(w, 16000)) + list(ref.finish())
        assert [e for e in evs if not isinstance(e, Features)] == [e for e in alone if not isinstance(e, Features)]
        fa = np.concatenate([e.frames for e in alone if isinstance(e, Features)])
        fb = np.concatenate([e.frames for e in evs if isinstance(e, Features)])
        np.testing.assert_allclose(fb, fa, atol=PARITY_TOL)
        assert np.array_equal(np.concatenate([e.codes for e in evs if isinstance(e, Features)]),
                              np.concatenate([e.codes for e in alone if isinstance(e, Features)]))
    assert [[e.text for e in evs if isinstance(e, Final)] for evs in batched] == [["one", "two"], ["three"], ["four"]]


def _sample_text(**opts) -> str:
    wave, rate = sf.read(SAMPLE, dtype="float32")
    return Recognizer.default(**opts).transcribe(wave, rate)


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_reduced_precisions_give_the_fp32_text_on_the_sample(precision: str) -> None:
    if precision.upper() not in cpu_capabilities():  # a CPU without it: refused by name, not run slowly
        with pytest.raises(EngineUnavailableError, match=f"needs the CPU capability {precision.upper()}"):
            OpenVinoEngine(DEFAULT_MODEL_DIR, precision=precision)
        return
    want = _sample_text(intra_op_threads=1)
    assert want  # the default model reads the sample
    assert _sample_text(backend="openvino", precision=precision, intra_op_threads=1) == want
    # bf16 really runs in lower precision: features close to, but not equal to, fp32
    ov32 = OpenVinoEngine(DEFAULT_MODEL_DIR, intra_op_threads=1)
    if precision == "int8":  # the default bundle has no model.qdq.onnx: the slow fallback is named
        with pytest.warns(RuntimeWarning, match="no model.qdq.onnx.*slower than fp32.*--int8-static"):
            low = OpenVinoEngine(DEFAULT_MODEL_DIR, precision=precision, intra_op_threads=1)
        assert not low.static_int8 and low.model_path.name == "model.int8.onnx"
    else:
        low = OpenVinoEngine(DEFAULT_MODEL_DIR, precision=precision, intra_op_threads=1)
    wave = _noise(1, 3 * ov32.chunk_samples, seed=3)
    d = np.abs(_run(low, wave)[0] - _run(ov32, wave)[0]).max()
    assert 1e-5 < d < 0.5


@pytest.mark.parametrize("shapes", ["static", "dynamic"])
def test_bf16_carries_float_states_as_bf16_bits_with_the_same_features(shapes: str) -> None:
    """bf16 keeps the float states as bfloat16 (uint16 bits): half the memory, features as with fp32 states."""
    if "BF16" not in cpu_capabilities():  # refused by name on such a CPU
        with pytest.raises(EngineUnavailableError, match="needs the CPU capability BF16"):
            OpenVinoEngine(DEFAULT_MODEL_DIR, precision="bf16", shapes=shapes)
        return
    narrow = OpenVinoEngine(DEFAULT_MODEL_DIR, precision="bf16", intra_op_threads=1, shapes=shapes)
    wide = OpenVinoEngine(DEFAULT_MODEL_DIR, precision="bf16", intra_op_threads=1, shapes=shapes, bf16_states=False)
    assert narrow.bf16_states and not wide.bf16_states
    sn, sw = narrow.init_state(2), wide.init_state(2)
    for spec, a, b in zip(narrow.config.states, sn, sw):
        assert b.dtype == spec.np_dtype
        assert a.dtype == (np.uint16 if spec.np_dtype == np.float32 else spec.np_dtype)
    assert sum(a.nbytes for a in sn) < 0.6 * sum(b.nbytes for b in sw)
    wave = _noise(2, 5 * narrow.chunk_samples, seed=9)
    fn, ln, last = _run(narrow, wave)
    fw, lw, _ = _run(wide, wave)
    assert [a.dtype for a in last] == [a.dtype for a in sn]  # carried as they started
    # the step rounds these states to bf16 where it reads them anyway: differences stay at bf16's scale
    assert np.abs(fn - fw).max() < 0.1 * max(1.0, np.abs(fw).max())
    assert (ln.argmax(-1) == lw.argmax(-1)).mean() > 0.95
    with pytest.raises(StateShapeError, match="this engine's"):  # float32 states handed to a bf16-state engine
        narrow.step(wave[:, : narrow.chunk_samples], sw)
    with pytest.raises(EngineOptionError, match="bf16_states needs precision='bf16'"):
        OpenVinoEngine(DEFAULT_MODEL_DIR, precision="fp32", bf16_states=True)


def test_errors_are_clear_wavstream_errors(toy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(EngineOptionError, match="precision must be one of"):
        OpenVinoEngine(toy, precision="fp16")
    with pytest.raises(EngineOptionError, match="shapes must be one of"):
        OpenVinoEngine(toy, shapes="ragged")
    with pytest.raises(EngineOptionError, match="unknown backend"):
        create_engine(toy, "openvnio")
    assert issubclass(EngineOptionError, WavstreamError) and issubclass(EngineOptionError, ValueError)
    # a precision the CPU does not report is refused by name
    import wavstream.stream.engines.openvino as ovmod

    real_core = ovmod._import_openvino().Core

    class NoBf16Core(real_core):  # type: ignore[misc, valid-type]
        def get_property(self, device, name):  # type: ignore[no-untyped-def]
            if name == "OPTIMIZATION_CAPABILITIES":
                return ["FP32", "INT8"]
            return super().get_property(device, name)

    import openvino

    monkeypatch.setattr(openvino, "Core", NoBf16Core)
    with pytest.raises(EngineUnavailableError, match="precision 'bf16' needs the CPU capability BF16"):
        OpenVinoEngine(toy, precision="bf16")
    monkeypatch.undo()
    # the toy bundle has no model.int8.onnx
    with pytest.raises(BundleError, match="int8"):
        OpenVinoEngine(toy, precision="int8")
    # a corrupted model file
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in toy.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    (bad / "model.onnx").write_bytes(b"not an onnx file")
    with pytest.raises(BundleError, match="could not be read by OpenVINO"):
        OpenVinoEngine(bad)
    # a graph that disagrees with config.json
    cfg = json.loads((toy / "config.json").read_text())
    cfg["states"][1]["shape"] = ["batch", 99]
    (bad / "config.json").write_text(json.dumps(cfg))
    (bad / "model.onnx").write_bytes((toy / "model.onnx").read_bytes())
    with pytest.raises(BundleError):
        OpenVinoEngine(bad)
    eng = OpenVinoEngine(toy)
    with pytest.raises(ChunkSizeError, match="expected chunks of"):
        eng.step(np.zeros((1, eng.chunk_samples + 1), np.float32), eng.init_state(1))
    # openvino not installed: says what to install
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(EngineUnavailableError, match=r"wavstream\[openvino\]") as info:
        OpenVinoEngine(toy)
    assert isinstance(info.value, WavstreamError)


def test_auto_picks_an_engine_and_falls_back_without_openvino(toy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from wavstream.stream.engines.auto import choose_engine

    choice = choose_engine(load_bundle(toy), intra_op_threads=1, steps=2, rounds=1)
    assert choice.backend in ("openvino", "onnxruntime")
    assert set(choice.step_s) == {"openvino", "onnxruntime"} and "ms" in choice.reason
    assert type(choice.engine).__name__ == {"openvino": "OpenVinoEngine", "onnxruntime": "OrtEngine"}[choice.backend]
    monkeypatch.setitem(sys.modules, "openvino", None)
    fallback = choose_engine(load_bundle(toy), intra_op_threads=1)
    assert fallback.backend == "onnxruntime" and "OpenVINO not usable" in fallback.reason
    assert isinstance(create_engine(toy, "auto", intra_op_threads=1), OrtEngine)


def test_the_openvino_engine_loads_no_torch() -> None:
    probe = ("import sys; from wavstream.stream.engines.openvino import OpenVinoEngine; "
             "from wavstream.stream.recognizer import DEFAULT_MODEL_DIR; "
             "e = OpenVinoEngine(DEFAULT_MODEL_DIR, intra_op_threads=1); e.step(*[__import__('numpy').zeros((1, "
             "e.chunk_samples), 'float32'), e.init_state(1)]); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_cli_backend_and_precision_flags(toy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from wavstream.cli.args import add_model_arguments, engine_options
    from wavstream.cli.main import main

    p = argparse.ArgumentParser()
    add_model_arguments(p)
    opts = lambda *a: engine_options(p.parse_args(list(a)))  # noqa: E731
    assert opts() == {"backend": "onnxruntime", "device": "auto", "quantized": False, "intra_op_threads": None}
    assert opts("--int8")["quantized"] is True and opts("--precision", "int8")["quantized"] is True
    assert opts("--backend", "openvino", "--precision", "bf16", "--threads", "2") == {
        "backend": "openvino", "precision": "bf16", "intra_op_threads": 2}
    assert opts("--backend", "openvino", "--int8")["precision"] == "int8"
    assert opts("--backend", "auto") == {"backend": "auto", "quantized": False, "intra_op_threads": None}
    with pytest.raises(ValueError, match="--precision bf16 needs --backend openvino"):
        opts("--precision", "bf16")
    path = tmp_path / "a.wav"
    sf.write(path, np.concatenate([synth("hi"), silence(2.0), synth("yo")]), 16000, subtype="FLOAT")
    assert main(["transcribe", str(path), "--model", str(toy), "--backend", "openvino", "--threads", "1"]) == 0
    assert capsys.readouterr().out.splitlines() == ["hi", "yo"]
    assert main(["transcribe", str(path), "--model", str(toy), "--precision", "bf16"]) == 2
    assert "--precision bf16 needs --backend openvino" in capsys.readouterr().err
    assert main(["transcribe", str(path), "--model", str(toy), "--backend", "openvino", "--int8"]) == 2
    assert "no int8 model file" in capsys.readouterr().err


def test_a_server_compiles_every_batch_shape_before_its_first_client(toy: Path) -> None:
    """OpenVINO compiles per batch bucket: a server warms them all at start, so no client's chunk waits for it."""
    import asyncio

    from wavstream.stream.server import Server
    from wavstream.stream.server.batcher import warm_engine

    rec = Recognizer.from_bundle(toy, backend="openvino", intra_op_threads=1)

    async def start_and_stop() -> list[int]:
        server = Server(rec, "127.0.0.1", 0, max_batch=8, max_sessions=4, serve_pages=False)
        await server.start()
        compiled = sorted(rec.engine.compiled_batches)
        await server.shutdown()
        return compiled

    assert asyncio.run(start_and_stop()) == [1, 2, 3, 4, 6, 8]
    assert warm_engine(Recognizer.from_bundle(toy, intra_op_threads=1), 8) == []  # ONNX Runtime: nothing to compile
