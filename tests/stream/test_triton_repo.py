"""`wavstream triton-repo`: the generated Triton repository and its validator (no Triton server needed).

The onnxruntime-backend model cannot run here (that backend is not on PyPI):
its config is checked by the validator, and its rewritten graph by onnxruntime.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from toy_bundle import build_toy_bundle

from wavstream.cli.main import main
from wavstream.stream.bundle import UnsupportedLatencyError, load_bundle
from wavstream.stream.recognizer import DEFAULT_MODEL_DIR
from wavstream.stream.triton import (
    TritonConfigError,
    TritonRepoError,
    check_against_graph,
    validate_model_config,
    write_repository,
)
from wavstream.stream.triton.validate import graph_io


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_toy_bundle(tmp_path_factory.mktemp("toy") / "bundle")


@pytest.fixture(scope="module")
def repo(toy: Path, tmp_path_factory: pytest.TempPathFactory):
    return write_repository(toy, tmp_path_factory.mktemp("repo") / "repo", name="toy")


def test_repository_layout(repo) -> None:
    root = repo.root
    assert set(repo.models) == {"toy", "toy_onnx"}
    assert (root / "toy" / "1" / "model.py").is_file()
    assert (root / "toy" / "1" / "bundle" / "config.json").is_file()
    assert (root / "toy_onnx" / "1" / "model.onnx").is_file()
    assert repo.latency_ms == 80
    assert any("frames_seen" in n for n in repo.notes)


def test_configs_parse_against_tritons_schema_with_the_right_fields(repo) -> None:
    py = validate_model_config((repo.root / "toy" / "config.pbtxt").read_text())
    assert py.backend == "python" and py.max_batch_size == 32
    assert [c.name for c in py.sequence_batching.control_input] == ["START", "END", "CORRID"]
    assert py.sequence_batching.HasField("oldest")
    assert len(py.instance_group) == 1 and py.instance_group[0].count == 1  # states live in one process
    assert list(py.input[0].dims) == [1280]
    params = {k: v.string_value for k, v in py.parameters.items()}
    assert params["latency_ms"] == "80" and len(params["bundle_fingerprint"]) == 16

    onnx_cfg = validate_model_config((repo.root / "toy_onnx" / "config.pbtxt").read_text())
    states = {s.input_name: s for s in onnx_cfg.sequence_batching.state}
    assert set(states) == {"state_frames_seen", "state_prev_frame"}
    fs, pf = states["state_frames_seen"], states["state_prev_frame"]
    assert list(fs.dims) == [1] and list(pf.dims) == [1, 160]  # the frame counter as (B, 1)
    for s in (fs, pf):
        assert s.output_name == "new_" + s.input_name
        (init,) = s.initial_state
        assert init.zero_data and init.data_type == s.data_type and list(init.dims) == list(s.dims)
    ins, outs = graph_io(repo.root / "toy_onnx" / "1" / "model.onnx")
    check_against_graph(onnx_cfg, ins, outs, "model.onnx")  # no error: every name, dtype and dim agrees


def test_rewritten_graph_computes_what_the_bundle_does(toy: Path, repo) -> None:
    """The (B, 1) frame counter is a reshape only: three chained steps give the bundle graph's outputs."""
    a = ort.InferenceSession(str(toy / "model.onnx"), providers=["CPUExecutionProvider"])
    b = ort.InferenceSession(str(repo.root / "toy_onnx" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    sa = {"state_frames_seen": np.zeros(2, np.int64), "state_prev_frame": np.zeros((2, 1, 160), np.float32)}
    sb = {"state_frames_seen": np.zeros((2, 1), np.int64), "state_prev_frame": np.zeros((2, 1, 160), np.float32)}
    for _ in range(3):
        x = rng.standard_normal((2, 1280)).astype(np.float32) * 0.1
        ra = dict(zip([o.name for o in a.get_outputs()], a.run(None, {"samples": x, **sa})))
        rb = dict(zip([o.name for o in b.get_outputs()], b.run(None, {"samples": x, **sb})))
        np.testing.assert_array_equal(ra["features"], rb["features"])
        np.testing.assert_array_equal(ra["logits"], rb["logits"])
        np.testing.assert_array_equal(ra["new_state_frames_seen"][:, None], rb["new_state_frames_seen"])
        sa = {k: ra["new_" + k] for k in sa}
        sb = {k: rb["new_" + k] for k in sb}


def test_external_data_weights_are_copied(tmp_path: Path) -> None:
    """A bundle whose graph keeps its weights in weights.bin (format 2) gives a repository that loads."""
    from wavstream.export.shared_weights import share_weights

    bundle = tmp_path / "bundle"
    shutil.copytree(DEFAULT_MODEL_DIR, bundle)
    if not (bundle / "weights.bin").exists():  # a format-1 default keeps its weights inside the graph
        share_weights([bundle / "model.onnx"])
    assert (bundle / "weights.bin").is_file()
    layout = write_repository(bundle, tmp_path / "repo", python=False)
    version = layout.models["wavstream_onnx"] / "1"
    assert (version / "weights.bin").stat().st_size == (bundle / "weights.bin").stat().st_size
    assert (version / "model.onnx").stat().st_size < 1_000_000  # the weights stayed outside the graph
    ins, _ = graph_io(version / "model.onnx")  # onnxruntime loads it, weights and all
    assert [i.shape for i in ins if i.name == "state_frames_seen"] == [("batch", 1)]


def test_latency_choice(toy: Path, tmp_path: Path) -> None:
    assert write_repository(toy, tmp_path / "a", latency_ms=80).latency_ms == 80
    with pytest.raises(UnsupportedLatencyError, match="80"):
        write_repository(toy, tmp_path / "b", latency_ms=160)


def test_output_folder_is_not_overwritten_by_accident(toy: Path, tmp_path: Path) -> None:
    out = tmp_path / "repo"
    write_repository(toy, out, onnx=False)
    with pytest.raises(TritonRepoError, match="not empty"):
        write_repository(toy, out, onnx=False)
    write_repository(toy, out, onnx=False, overwrite=True)


# ------------------------------------------------------------------ the validator
def _onnx_config(repo) -> str:
    return (repo.root / "toy_onnx" / "config.pbtxt").read_text()


def test_validator_refuses_an_fp16_initial_state_of_an_fp32_state(repo) -> None:
    """The bug class of k2 sherpa's template (Triton 2.51 crashes on it at load, SIGSEGV, measured here)."""
    text = _onnx_config(repo)
    i = text.index('input_name: "state_prev_frame"')
    j = text.index("data_type: TYPE_FP32", text.index("initial_state", i))
    broken = text[:j] + "data_type: TYPE_FP16" + text[j + len("data_type: TYPE_FP32"):]
    with pytest.raises(TritonConfigError, match="initial_state 'zeros' is TYPE_FP16 but the state is TYPE_FP32"):
        validate_model_config(broken)


@pytest.mark.parametrize("edit, message", [
    (('dims: [ 1, 160 ]\n        zero_data', 'dims: [ 1, 161 ]\n        zero_data'), "differ from the state's"),
    (("zero_data: true", ""), "needs zero_data or data_file"),
    (('output_name: "new_state_prev_frame"', 'output_name: "features"'), "also an ordinary model output"),
    (("sequence_batching {", "sequence_batchin {"), "does not parse as Triton's ModelConfig"),
    (("data_type: TYPE_INT64", "data_type: TYPE_INT65"), "does not parse"),
])
def test_validator_names_what_is_wrong(repo, edit, message) -> None:
    text = _onnx_config(repo)
    assert edit[0] in text
    with pytest.raises(TritonConfigError, match=message):
        validate_model_config(text.replace(edit[0], edit[1], 1))


def test_graph_cross_check(repo) -> None:
    ins, outs = graph_io(repo.root / "toy_onnx" / "1" / "model.onnx")
    good = _onnx_config(repo)
    cases = [
        (good.replace("dims: [ 1, 160 ]", "dims: [ 1, 150 ]"), "state input 'state_prev_frame': config dims"),
        (good.replace("data_type: TYPE_INT64", "data_type: TYPE_INT32"), "TYPE_INT32 in config.pbtxt but int64"),
        (good.replace('"logits"', '"logprobs"'), "output 'logprobs' is not in the graph"),
    ]
    for text, message in cases:
        with pytest.raises(TritonConfigError, match=message):
            check_against_graph(validate_model_config(text), ins, outs, "model.onnx")
    # a state Triton would not feed: the graph input is left without a source
    i = good.index("    {\n      input_name: \"state_prev_frame\"")
    j = good.index("\n    }", i) + len("\n    }")
    dropped = good[:i].rstrip(",\n") + "\n" + good[j:]
    with pytest.raises(TritonConfigError, match=r"graph inputs \['state_prev_frame'\]"):
        check_against_graph(validate_model_config(dropped), ins, outs, "model.onnx")


def test_command(toy: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["triton-repo", str(toy), str(tmp_path / "r"), "--name", "asr", "--max-batch", "8"]) == 0
    out = capsys.readouterr().out
    assert "asr_onnx" in out and "validated" in out
    cfg = validate_model_config((tmp_path / "r" / "asr" / "config.pbtxt").read_text())
    assert cfg.max_batch_size == 8 and list(cfg.sequence_batching.oldest.preferred_batch_size) == []
    assert main(["triton-repo", str(toy), str(tmp_path / "r")]) == 2
    assert "not empty" in capsys.readouterr().err
    assert main(["triton-repo", str(toy), str(tmp_path / "s"), "--latency-ms", "999"]) == 2
    assert "999 ms" in capsys.readouterr().err
    bundle = load_bundle(tmp_path / "r" / "asr" / "1" / "bundle")
    assert bundle.config.chunk_samples == 1280
