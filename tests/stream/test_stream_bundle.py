"""Bundle loading/validation and engine input checks on the toy bundle."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from toy_bundle import STRIDE, build_toy_bundle  # noqa: E402

from wavstream.stream import (  # noqa: E402
    BundleError,
    BundleNotFoundError,
    ChunkSizeError,
    EngineUnavailableError,
    OrtEngine,
    Recognizer,
    StateShapeError,
    load_bundle,
    stack_states,
    unstack_states,
)
from wavstream.stream.recognizer import DEFAULT_MODEL_DIR  # noqa: E402


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_toy_bundle(tmp_path_factory.mktemp("b") / "toy", with_int8=True)


@pytest.fixture()
def copy(good: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "bundle"
    shutil.copytree(good, dst)
    return dst


def _edit_config(path: Path, **changes: object) -> None:
    cfg = json.loads((path / "config.json").read_text())
    cfg.update(changes)
    (path / "config.json").write_text(json.dumps(cfg))


def test_good_bundle_loads(good: Path) -> None:
    b = load_bundle(good)
    assert b.config.chunk_samples == 8 * STRIDE
    assert [s.name for s in b.config.states] == ["frames_seen", "prev_frame"]
    assert b.tokens[0] == "<blank>" and len(b.tokens) == 29
    e = OrtEngine(b, intra_op_threads=1, inter_op_threads=1)
    assert e.model_path.name == "model.onnx"
    assert OrtEngine(b, quantized=True).model_path.name == "model.int8.onnx"


def test_pool_threads_do_not_spin_by_default(good: Path) -> None:
    # A live stream steps once per chunk; spinning pool threads would burn a core each in between.
    def spinning(e: OrtEngine) -> str:
        opts = e.session.get_session_options()
        try:
            return opts.get_session_config_entry("session.intra_op.allow_spinning")
        except Exception:  # unset: onnxruntime's default, which spins
            return "unset"

    assert spinning(OrtEngine(good, intra_op_threads=2)) == "0"
    assert spinning(OrtEngine(good, intra_op_threads=2, spin_us=None)) == "unset"
    bounded = OrtEngine(good, intra_op_threads=2, spin_us=100)
    assert spinning(bounded) == "1"
    assert bounded.session.get_session_options().get_session_config_entry("session.intra_op.spin_duration_us") == "100"
    with pytest.raises(ValueError, match="spin_us"):
        OrtEngine(good, spin_us=-1)


# -- bad bundles: each raises BundleError naming the problem ------------------
def test_missing_folder(tmp_path: Path) -> None:
    """Bundle path does not exist."""
    with pytest.raises(BundleNotFoundError, match="not found.*nope"):
        load_bundle(tmp_path / "nope")
    with pytest.raises(BundleError):
        Recognizer.from_bundle(tmp_path / "nope")


def test_missing_config(copy: Path) -> None:
    """config.json deleted."""
    (copy / "config.json").unlink()
    with pytest.raises(BundleNotFoundError, match="config.json"):
        load_bundle(copy)


def test_missing_model_file(copy: Path) -> None:
    """model.onnx deleted."""
    (copy / "model.onnx").unlink()
    with pytest.raises(BundleNotFoundError, match="model.onnx"):
        Recognizer.from_bundle(copy)


def test_missing_int8_when_asked(copy: Path) -> None:
    """quantized=True but the bundle has no model.int8.onnx."""
    (copy / "model.int8.onnx").unlink()
    with pytest.raises(BundleNotFoundError, match="int8"):
        OrtEngine(copy, quantized=True)


def test_missing_tokens(copy: Path) -> None:
    """tokens.txt deleted while the model has logits."""
    (copy / "tokens.txt").unlink()
    with pytest.raises(BundleNotFoundError, match="tokens.txt"):
        load_bundle(copy)


def test_tokens_disagree_with_vocab(copy: Path) -> None:
    """tokens.txt and config vocab differ."""
    lines = (copy / "tokens.txt").read_text().splitlines()
    lines[3] = "X 3"
    (copy / "tokens.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(BundleError, match="first difference at id 3"):
        load_bundle(copy)


def test_corrupted_onnx(copy: Path) -> None:
    """model.onnx is truncated garbage."""
    data = (copy / "model.onnx").read_bytes()
    (copy / "model.onnx").write_bytes(data[: len(data) // 3] + b"\x00garbage")
    with pytest.raises(BundleError, match="model.onnx could not be loaded by onnxruntime"):
        Recognizer.from_bundle(copy)


def test_newer_format_version_refused_by_name(copy: Path) -> None:
    """config.json says format_version 3."""
    _edit_config(copy, format_version=3)
    with pytest.raises(BundleError, match="format_version 3 is newer than format_version 2"):
        load_bundle(copy)


def test_state_shape_disagrees_with_graph(copy: Path) -> None:
    """Config's state shape differs from the graph's declared input."""
    cfg = json.loads((copy / "config.json").read_text())
    cfg["states"][1]["shape"] = ["batch", 1, 99]
    (copy / "config.json").write_text(json.dumps(cfg))
    load_bundle(copy)  # self-consistent config...
    with pytest.raises(BundleError, match=r"state_prev_frame.*dimension 2 is 160 in the graph.*99 in config"):
        OrtEngine(copy)  # ...that its graph contradicts


def test_state_name_disagrees_with_graph(copy: Path) -> None:
    """Config names a state the graph doesn't have."""
    cfg = json.loads((copy / "config.json").read_text())
    cfg["states"][1]["name"] = "conv0"
    cfg["inputs"][2] = "state_conv0"
    cfg["outputs"][-1] = "new_state_conv0"
    (copy / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(BundleError, match=r"config-only \['state_conv0'\], graph-only \['state_prev_frame'\]"):
        OrtEngine(copy)


def test_chunk_size_disagrees_with_graph(copy: Path) -> None:
    """Config chunk is 16 frames, graph takes 8."""
    _edit_config(copy, chunk_frames=16, chunk_samples=16 * STRIDE)
    with pytest.raises(BundleError, match=r"'samples': dimension 1 is 1280 in the graph .* 2560 in config"):
        OrtEngine(copy)


def test_config_inputs_list_inconsistent(copy: Path) -> None:
    """'inputs' does not follow the states order."""
    _edit_config(copy, inputs=["samples", "state_prev_frame", "state_frames_seen"])
    with pytest.raises(BundleError, match="'inputs' is"):
        load_bundle(copy)


def test_chunk_samples_not_frames_times_stride(copy: Path) -> None:
    _edit_config(copy, chunk_samples=1000)
    with pytest.raises(BundleError, match=r"chunk_samples=1000 but chunk_frames\*stride = 8\*160 = 1280"):
        load_bundle(copy)


def test_default_model_missing_is_clear() -> None:
    if (DEFAULT_MODEL_DIR / "config.json").is_file():
        rec = Recognizer.default()
        assert rec.config.chunk_samples > 0
    else:
        with pytest.raises(BundleNotFoundError, match="no embedded default model"):
            Recognizer.default()


# -- engine input validation -------------------------------------------------
@pytest.fixture(scope="module")
def engine(good: Path) -> OrtEngine:
    return OrtEngine(good, intra_op_threads=1)


def test_wrong_chunk_length_is_value_error(engine: OrtEngine) -> None:
    st = engine.init_state(1)
    with pytest.raises(ValueError, match="expected chunks of 1280 samples .* found 1000"):
        engine.step(np.zeros((1, 1000), np.float32), st)
    with pytest.raises(ChunkSizeError, match=r"must be \(batch, 1280\)"):
        engine.step(np.zeros(1280, np.float32), st)


def test_wrong_state_shape_is_value_error(engine: OrtEngine) -> None:
    st = engine.init_state(2)
    x = np.zeros((1, 1280), np.float32)
    with pytest.raises(StateShapeError, match=r"state 'frames_seen': expected shape \(1,\) for batch 1, found \(2,\)"):
        engine.step(x, st)
    with pytest.raises(ValueError, match="expected 2 state tensors"):
        engine.step(x, st[:1])
    bad = engine.init_state(1)
    bad[0] = bad[0].astype(np.float32)
    with pytest.raises(StateShapeError, match="expected dtype int64"):
        engine.step(x, bad)


def test_step_advances_state_and_batches_independently(engine: OrtEngine) -> None:
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, 1, 1280)).astype(np.float32) * 0.1
    ra = engine.step(a, engine.init_state(1))
    rb = engine.step(b, engine.init_state(1))
    both = engine.step(np.concatenate([a, b]), stack_states([engine.init_state(1), engine.init_state(1)]))
    np.testing.assert_allclose(both.features[0], ra.features[0], atol=1e-6)
    np.testing.assert_allclose(both.features[1], rb.features[0], atol=1e-6)
    sa, sb = unstack_states(both.states)
    assert int(sa[0][0]) == 8 and sa[1].shape == (1, 1, STRIDE)
    np.testing.assert_array_equal(sb[1], rb.states[1])


def test_state_stacker_equals_stack_states_and_reuses_its_buffers() -> None:
    from wavstream.stream.engines.base import StateStacker

    rng = np.random.default_rng(1)
    streams = [[np.full((1, 1), i, np.int64), rng.standard_normal((1, 3, 4)).astype(np.float32)] for i in range(5)]
    st = StateStacker()
    three = st.stack(streams[:3])
    for got, want in zip(three, stack_states(streams[:3])):
        np.testing.assert_array_equal(got, want)
        assert got.dtype == want.dtype
    base = three[1].base
    two = st.stack(streams[3:])  # fewer rows: the same buffer
    assert two[1].base is base and two[1].shape == (2, 3, 4)
    np.testing.assert_array_equal(two[1], stack_states(streams[3:])[1])
    five = st.stack(streams)  # more rows: grown
    assert five[1].shape == (5, 3, 4) and five[1].base is not base
    np.testing.assert_array_equal(five[0][:, 0], np.arange(5))
    with pytest.raises(StateShapeError, match="different numbers"):
        st.stack([streams[0], streams[1][:1]])
    with pytest.raises(ValueError):
        st.stack([streams[0], [streams[1][0], np.zeros((1, 2, 4), np.float32)]])


def test_cuda_without_provider_is_clear(good: Path) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    with pytest.raises(EngineUnavailableError, match="no CUDAExecutionProvider"):
        OrtEngine(good, device="cuda")


def test_tensorrt_missing_is_clear(copy: Path) -> None:
    """TensorRT requested where the tensorrt package (or a GPU) is absent."""
    try:
        import tensorrt  # noqa: F401

        pytest.skip("tensorrt is installed here")
    except Exception:
        pass
    (copy / "model.plan").write_bytes(b"not a real plan")
    with pytest.raises(EngineUnavailableError, match="needs the 'tensorrt' Python package"):
        Recognizer.from_bundle(copy, backend="tensorrt")
