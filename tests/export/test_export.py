"""Export: the ONNX streaming graph equals torch, bundles follow docs/bundle.md.

Models are tiny random-weight members of the five families with a CTC head;
every graph is exported once per module (cached) and reused by the tests.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

import torch
import onnx
import onnxscript  # noqa: F401

from wavstream.export.bundle import export_bundle  # noqa: E402
from wavstream.export.onnx_export import (  # noqa: E402
    export_offline,
    io_names,
    ort_session,
    run_ort_step,
    trt_unfriendly,
)
from wavstream.export.quantize import test_signal as make_signal  # noqa: E402
from wavstream.training.models import CTC_VOCAB, build_model  # noqa: E402

FAMILIES = ("wav2vec", "vq_wav2vec", "wav2vec2", "hubert", "wavlm")
N_CHUNKS = 20
from common import PARITY_TOL as TOL  # noqa: E402

# Smaller than the "tiny" presets so that five exports stay fast on 2 cores;
# same structure (every module kind, caches that wrap within 20 chunks).
_SMALL_TRANSFORMER = dict(
    conv_layers=[(64, 10, 5)] + [(64, 3, 2)] * 4 + [(64, 2, 2)] * 2,
    hidden_size=64, num_layers=2, num_heads=4, ffn_size=128, pos_conv_kernel=16, pos_conv_groups=4,
    chunk_frames=8, left_chunks=2, final_dim=32,
)
_SMALL_W2V1 = dict(
    conv_layers=[(64, 10, 5), (64, 8, 4), (64, 4, 2), (64, 4, 2), (64, 4, 2)],
    agg_layers=[(64, k, 1) for k in (2, 3, 4)], vq_dim=64, vq_vars=32, chunk_frames=16, left_chunks=0,
)


def small_model(family: str, seed: int = 0):
    torch.manual_seed(seed)
    kw = _SMALL_TRANSFORMER if family in ("wav2vec2", "hubert", "wavlm") else _SMALL_W2V1
    return build_model(family, "tiny", vocab=list(CTC_VOCAB), **kw).eval()


class _Cache:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.bundles: dict[str, tuple] = {}

    def get(self, family: str):
        if family not in self.bundles:
            model = small_model(family)
            out = self.root / family
            # one bundle per family; the wav2vec2 one also carries model.int8.onnx
            report = export_bundle(model, out, int8=family == "wav2vec2", log=lambda *_: None)
            self.bundles[family] = (model, out, report)
        return self.bundles[family]


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> _Cache:
    return _Cache(tmp_path_factory.mktemp("bundles"))


def audio(batch: int, n: int, seed: int = 0) -> np.ndarray:
    return make_signal(n, batch=batch, seed=seed)


def greedy(logits: np.ndarray, vocab=CTC_VOCAB) -> list[str]:
    texts = []
    for row in logits.argmax(-1):
        prev, out = -1, []
        for i in row:
            if i != prev and i != 0:
                out.append(vocab[i])
            prev = i
        texts.append("".join(out).replace("|", " ").strip())
    return texts


def stream_torch(model, wave: np.ndarray) -> dict:
    B, C = wave.shape[0], model.chunk_samples
    state = model.init_state(B, device="cpu")
    f, lg, cd = [], [], []
    with torch.no_grad():
        for i in range(0, wave.shape[1], C):
            o = model.step_outputs(torch.from_numpy(wave[:, i:i + C]), state)
            f.append(o.features.numpy())
            lg.append(o.logits.numpy())
            if o.codes is not None:
                cd.append(o.codes.numpy())
            state = o.state
    return {"features": np.concatenate(f, 1), "logits": np.concatenate(lg, 1),
            "codes": np.concatenate(cd, 1) if cd else None}


def stream_onnx(path: Path, model, wave: np.ndarray, session=None) -> dict:
    sess = session or ort_session(path)
    B, C = wave.shape[0], model.chunk_samples
    names = [s.name for s in model.state_specs()]
    states = [t.numpy() for t in model.init_state(B, device="cpu")]
    f, lg, cd = [], [], []
    for i in range(0, wave.shape[1], C):
        o = run_ort_step(sess, wave[:, i:i + C], states)
        f.append(o["features"])
        lg.append(o["logits"])
        if "codes" in o:
            cd.append(o["codes"])
        states = [o[f"new_state_{n}"] for n in names]
    return {"features": np.concatenate(f, 1), "logits": np.concatenate(lg, 1),
            "codes": np.concatenate(cd, 1) if cd else None}


# ----------------------------------------------------------- torch == ONNX
@pytest.mark.parametrize("family", FAMILIES)
def test_onnx_streaming_equals_torch_step(cache, family):
    model, out, _ = cache.get(family)
    sess = ort_session(out / "model.onnx")
    for batch in (1, 3):
        wave = audio(batch, N_CHUNKS * model.chunk_samples, seed=batch)
        t = stream_torch(model, wave)
        o = stream_onnx(out / "model.onnx", model, wave, sess)
        assert o["features"].shape == t["features"].shape == (batch, N_CHUNKS * model.chunk_frames,
                                                               model.config.feature_dim)
        assert np.abs(o["features"] - t["features"]).max() <= TOL
        assert np.abs(o["logits"] - t["logits"]).max() <= TOL
        if family == "vq_wav2vec":
            assert o["codes"].dtype == np.int64
            np.testing.assert_array_equal(o["codes"], t["codes"])
        else:
            assert o["codes"] is None
        assert greedy(o["logits"]) == greedy(t["logits"])


@pytest.mark.parametrize("family", ("vq_wav2vec", "wav2vec2"))
def test_exported_gelu_is_fused_by_onnxruntime(cache, family):
    """The exporter reorders GELU so ONNX Runtime runs it as one kernel: no Erf
    is left after its optimizer, none is left to reorder, and the reordered
    graph computes the same bits as torch's order when nothing is fused."""
    import onnxruntime as ort

    from wavstream.export.graph_passes import gelu_fusable, optimized_node_count

    model, out, _ = cache.get(family)
    m = onnx.load(str(out / "model.onnx"))
    assert any(n.op_type == "Erf" for n in m.graph.node)
    assert gelu_fusable(m)[1] == 0  # already in the fusable order
    opt = out.parent / f"{family}_opt.onnx"
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(opt)
    ort.InferenceSession(str(out / "model.onnx"), sess_options=so, providers=["CPUExecutionProvider"])
    assert not any(n.op_type == "Erf" for n in onnx.load(str(opt)).graph.node)
    assert optimized_node_count(str(out / "model.onnx")) < len(m.graph.node)
    # torch's order, rebuilt by swapping the two Muls back, gives bit-identical unfused results
    torch_order = _swap_gelu_muls(m)
    plain = ort.SessionOptions()
    plain.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    wave = audio(2, 3 * model.chunk_samples, seed=5)
    a = stream_onnx(out / "model.onnx", model, wave,
                    ort.InferenceSession(m.SerializeToString(), plain, providers=["CPUExecutionProvider"]))
    b = stream_onnx(out / "model.onnx", model, wave,
                    ort.InferenceSession(torch_order.SerializeToString(), plain, providers=["CPUExecutionProvider"]))
    np.testing.assert_array_equal(a["features"], b["features"])
    back, n = gelu_fusable(torch_order)
    assert n == sum(1 for x in m.graph.node if x.op_type == "Erf")
    assert [list(x.input) for x in back.graph.node] == [list(x.input) for x in m.graph.node]


@pytest.mark.parametrize("family", ("wav2vec2", "hubert", "wavlm"))
def test_exported_attention_projects_query_key_value_in_one_product(cache, family):
    """The exporter fuses each layer's query/key/value MatMuls (graph_passes.fuse_sibling_matmuls);
    the parity tests above run on these fused graphs."""
    model, out, _ = cache.get(family)
    g = onnx.load(str(out / "model.onnx"), load_external_data=False).graph
    splits = [n for n in g.node if n.op_type == "Split" and n.name.endswith("_fused_split")]
    assert len(splits) == model.config.num_layers and all(len(n.output) == 3 for n in splits)


def _swap_gelu_muls(m):
    """(x * a) * 0.5 -> x * (0.5 * a): the order torch's exporter writes."""
    out = onnx.ModelProto()
    out.CopyFrom(m)
    cons = {}
    for n in out.graph.node:
        for i in n.input:
            cons.setdefault(i, []).append(n)
    for erf in [n for n in out.graph.node if n.op_type == "Erf"]:
        add = cons[erf.output[0]][0]
        xmul = cons[add.output[0]][0]
        halfmul = cons[xmul.output[0]][0]
        root = xmul.input[0] if xmul.input[1] == add.output[0] else xmul.input[1]
        half = halfmul.input[1] if halfmul.input[0] == xmul.output[0] else halfmul.input[0]
        del xmul.input[:]
        xmul.input.extend([half, add.output[0]])
        del halfmul.input[:]
        halfmul.input.extend([root, xmul.output[0]])
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_openvino_streaming_equals_torch_step(cache, family):
    """The OpenVINO engine (fp32) on the same model.onnx: torch's numbers within the parity tolerance,
    states carried over 20 chunks, one and three streams."""
    from wavstream.stream.engines.openvino import OpenVinoEngine

    model, out, _ = cache.get(family)
    eng = OpenVinoEngine(out, precision="fp32", intra_op_threads=1)
    for batch in (1, 3):
        wave = audio(batch, N_CHUNKS * model.chunk_samples, seed=batch)
        t = stream_torch(model, wave)
        st = eng.init_state(batch)
        f, lg, cd = [], [], []
        for i in range(0, wave.shape[1], model.chunk_samples):
            r = eng.step(wave[:, i:i + model.chunk_samples], st)
            f.append(r.features)
            lg.append(r.logits)
            if r.codes is not None:
                cd.append(r.codes)
            st = r.states
        assert np.abs(np.concatenate(f, 1) - t["features"]).max() <= TOL
        assert np.abs(np.concatenate(lg, 1) - t["logits"]).max() <= TOL
        if family == "vq_wav2vec":
            np.testing.assert_array_equal(np.concatenate(cd, 1), t["codes"])
        assert greedy(np.concatenate(lg, 1)) == greedy(t["logits"])


@pytest.mark.parametrize("family", ["wav2vec2", "wavlm", "wav2vec"])
def test_chain_offline_torch_streaming_onnx(cache, family):
    """torch offline (chunk mask) == torch streaming == ONNX streaming, with a
    last partial chunk (zero-padded; only its first ceil(rest/stride) frames real)."""
    model, out, _ = cache.get(family)
    n = 7 * model.chunk_samples + model.chunk_samples // 3 + 17
    wave = audio(2, n, seed=5)
    with torch.no_grad():
        off = model(torch.from_numpy(wave))
    T = int(off.lengths[0])
    assert T == -(-n // model.stride)
    padded = np.pad(wave, ((0, 0), (0, -n % model.chunk_samples)))
    t = stream_torch(model, padded)
    o = stream_onnx(out / "model.onnx", model, padded)
    off_f, off_l = off.features.numpy(), off.logits.numpy()
    assert np.abs(t["features"][:, :T] - off_f).max() <= TOL
    assert np.abs(o["features"][:, :T] - off_f).max() <= TOL
    assert np.abs(o["logits"][:, :T] - off_l).max() <= TOL
    assert greedy(o["logits"][:, :T]) == greedy(off_l)


def test_wide_stride1_layers_export_as_conv_and_stream_exactly(tmp_path):
    """A stride-1 layer whose window (kernel x channels) reaches CONV_OP_MIN_WINDOW exports as
    Conv, narrower ones and strided ones as an unfold and a product; the step still equals
    torch's step and the offline form, across chunks shorter than the wide layer's cache."""
    from wavstream.training.models.conv import CONV_OP_MIN_WINDOW

    torch.manual_seed(3)
    wide = CONV_OP_MIN_WINDOW // 64  # 32 taps at 64 channels: a 31-frame cache, chunks of 16 frames
    model = build_model("wav2vec", "tiny", vocab=list(CTC_VOCAB),
                        **{**_SMALL_W2V1, "agg_layers": [(64, 2, 1), (64, wide, 1), (64, 3, 1)]}).eval()
    out = tmp_path / "wide"
    export_bundle(model, out, log=lambda *_: None)
    graph = onnx.load(str(out / "model.onnx"), load_external_data=False).graph
    convs = [n for n in graph.node if n.op_type == "Conv"]
    assert len(convs) == 1, [n.name for n in convs]  # the wide aggregator layer only
    assert [a.ints for a in convs[0].attribute if a.name == "kernel_shape"] in ([[wide]], [])
    n = 6 * model.chunk_samples + 123
    wave = audio(2, n, seed=9)
    with torch.no_grad():
        off = model(torch.from_numpy(wave))
    T = int(off.lengths[0])
    padded = np.pad(wave, ((0, 0), (0, -n % model.chunk_samples)))
    t = stream_torch(model, padded)
    o = stream_onnx(out / "model.onnx", model, padded)
    assert np.abs(o["features"] - t["features"]).max() <= TOL
    assert np.abs(o["features"][:, :T] - off.features.numpy()).max() <= TOL
    assert greedy(o["logits"][:, :T]) == greedy(off.logits.numpy())


# ----------------------------------------------------------- bundle contract
@pytest.mark.parametrize("family", FAMILIES)
def test_bundle_contract(cache, family):
    model, out, report = cache.get(family)
    cfg = json.loads((out / "config.json").read_text())
    for key in ("format_version", "family", "sample_rate", "stride", "chunk_frames", "chunk_samples",
                "left_chunks", "feature_dim", "feature_layer", "num_layers", "vocab", "blank_id",
                "word_delimiter", "code_groups", "states", "inputs", "outputs", "files", "model", "exported_with"):
        assert key in cfg, key
    assert cfg["format_version"] == 1 and cfg["family"] == family
    assert cfg["chunk_samples"] == cfg["chunk_frames"] * cfg["stride"] == model.chunk_samples
    assert cfg["vocab"] == list(CTC_VOCAB) and cfg["blank_id"] == 0
    assert cfg["code_groups"] == (2 if family == "vq_wav2vec" else 0)
    # (B, 1) since issue 17 (bundles with a (B,) counter still load: tests/stream, the toy bundle)
    assert cfg["states"][0] == {"name": "frames_seen", "shape": ["batch", 1], "dtype": "int64", "init": "zeros"}
    assert [s["name"] for s in cfg["states"]] == model.state_names
    ins, outs = io_names(model)
    assert cfg["inputs"] == ins and cfg["outputs"] == outs
    lines = (out / "tokens.txt").read_text().splitlines()
    assert lines == [f"{t} {i}" for i, t in enumerate(CTC_VOCAB)]
    # the graph: named I/O, only the batch axis dynamic, nothing TensorRT lacks
    m = onnx.load(str(out / "model.onnx"))
    assert [i.name for i in m.graph.input] == ins
    assert [o.name for o in m.graph.output] == outs
    for vi in list(m.graph.input) + list(m.graph.output):
        dims = vi.type.tensor_type.shape.dim
        assert dims[0].dim_param and not dims[0].HasField("dim_value"), vi.name
        assert all(d.HasField("dim_value") for d in dims[1:]), vi.name
    assert not trt_unfriendly(m)
    assert not list(out.glob("*.data"))  # weights inline: one self-contained file
    # the runtime loads it (config <-> graph cross-check) and steps it
    import wavstream.stream.engines  # noqa: F401
    from wavstream.stream.engines import OrtEngine

    eng = OrtEngine(out, device="cpu")
    st = eng.init_state(2)
    res = eng.step(audio(2, eng.chunk_samples), st)
    assert res.features.shape == (2, cfg["chunk_frames"], cfg["feature_dim"])
    assert st[0].shape == (2, 1) and res.states[0].shape == (2, 1)


def test_triton_repository_takes_an_exported_graph_unchanged(cache, tmp_path):
    """Every exported state has a dimension besides the batch axis: the Triton repository's graph is the
    bundle's own, with nothing reshaped (and a TensorRT plan of the bundle could be used as it is)."""
    from wavstream.stream.triton import write_repository

    _, out, _ = cache.get("wav2vec2")
    layout = write_repository(out, tmp_path / "repo", python=False)
    assert layout.notes == []
    copied = onnx.load(str(tmp_path / "repo" / "wavstream_onnx" / "1" / "model.onnx"))
    assert copied.graph == onnx.load(str(out / "model.onnx")).graph


# ----------------------------------------------------------- int8
def test_int8_bundle_tolerance(cache):
    """Documented tolerance (docs/export.md): relative RMS feature error <= 5%,
    per-frame cosine >= 0.99, greedy labels of >= 90% of frames unchanged."""
    model, out, report = cache.get("wav2vec2")
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["files"]["int8"] == "model.int8.onnx"
    assert (out / "model.int8.onnx").stat().st_size < 0.8 * (out / "model.onnx").stat().st_size
    wave = audio(1, N_CHUNKS * model.chunk_samples, seed=11)
    a = stream_onnx(out / "model.onnx", model, wave)
    b = stream_onnx(out / "model.int8.onnx", model, wave)
    d = a["features"] - b["features"]
    rel = np.sqrt((d ** 2).mean()) / np.sqrt((a["features"] ** 2).mean())
    cos = (a["features"] * b["features"]).sum(-1) / (
        np.linalg.norm(a["features"], axis=-1) * np.linalg.norm(b["features"], axis=-1))
    assert rel <= 0.05 and cos.min() >= 0.99
    assert (a["logits"].argmax(-1) == b["logits"].argmax(-1)).mean() >= 0.9
    assert cfg["int8"]["feature_rel_rms"] <= 0.05


def test_int8_keeps_vq_codes_exact(tmp_path):
    from wavstream.export.onnx_export import export_step
    from wavstream.export.quantize import compare_graphs, quantize_onnx

    model = small_model("vq_wav2vec")
    export_step(model, tmp_path / "m.onnx")
    q = quantize_onnx(tmp_path / "m.onnx", tmp_path / "q.onnx")
    assert q["kept_fp32"]  # the quantiser's projections stay fp32
    wave = audio(1, 5 * model.chunk_samples)
    a = stream_onnx(tmp_path / "m.onnx", model, wave)
    b = stream_onnx(tmp_path / "q.onnx", model, wave)
    np.testing.assert_array_equal(a["codes"], b["codes"])
    assert compare_graphs(tmp_path / "m.onnx", tmp_path / "q.onnx", model, chunks=3)["feature_rel_rms"] < 1e-3


# ----------------------------------------------------------- bad bundles
def _copy(out: Path, dst: Path) -> Path:
    shutil.copytree(out, dst)
    return dst


def test_bad_bundles_give_clear_errors(cache, tmp_path):
    import wavstream.stream.bundle as bundle_mod
    from wavstream.stream.engines import ChunkSizeError, OrtEngine, StateShapeError

    BundleError, load_bundle = bundle_mod.BundleError, bundle_mod.load_bundle
    model, out, _ = cache.get("wav2vec2")

    b = _copy(out, tmp_path / "no_onnx")
    (b / "model.onnx").unlink()
    with pytest.raises(BundleError, match="model.onnx"):
        OrtEngine(b, device="cpu")

    b = _copy(out, tmp_path / "no_config")
    (b / "config.json").unlink()
    with pytest.raises(BundleError, match="config.json"):
        load_bundle(b)

    b = _copy(out, tmp_path / "corrupt")
    (b / "model.onnx").write_bytes(b"\x08\x07garbage" * 100)
    with pytest.raises(BundleError, match="could not be loaded"):
        OrtEngine(b, device="cpu")

    b = _copy(out, tmp_path / "truncated")
    data = (out / "model.onnx").read_bytes()
    (b / "model.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(BundleError):
        OrtEngine(b, device="cpu")

    # config that disagrees with its graph: chunk size, a state shape
    b = _copy(out, tmp_path / "chunk")
    cfg = json.loads((b / "config.json").read_text())
    cfg["chunk_frames"] *= 2
    cfg["chunk_samples"] *= 2
    (b / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(BundleError, match="samples"):
        OrtEngine(b, device="cpu")

    b = _copy(out, tmp_path / "state")
    cfg = json.loads((b / "config.json").read_text())
    cfg["states"][1]["shape"][-1] += 1
    (b / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(BundleError, match=cfg["states"][1]["name"]):
        OrtEngine(b, device="cpu")

    b = _copy(out, tmp_path / "newer")
    cfg = json.loads((b / "config.json").read_text())
    cfg["format_version"] = 3
    (b / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(BundleError, match="format_version 3"):
        load_bundle(b)

    b = _copy(out, tmp_path / "tokens")
    (b / "tokens.txt").write_text("<blank> 0\n| 1\n")
    with pytest.raises(BundleError, match="tokens.txt"):
        load_bundle(b)

    # a wrong chunk length or state at run time: a clear error, never truncation
    eng = OrtEngine(out, device="cpu")
    with pytest.raises(ChunkSizeError, match=str(model.chunk_samples)):
        eng.step(audio(1, model.chunk_samples - 1), eng.init_state(1))
    st = eng.init_state(1)
    st[1] = np.zeros((1, *st[1].shape[1:-1], st[1].shape[-1] + 1), np.float32)
    with pytest.raises(StateShapeError):
        eng.step(audio(1, model.chunk_samples), st)


# ----------------------------------------------------------- checkpoints and CLI
def _save_checkpoint(model, path: Path, wrapped: bool, drop: tuple[str, ...] = ()) -> Path:
    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    sd = {k: v.contiguous() for k, v in model.state_dict().items() if k.split(".")[0] not in drop}
    save_file(sd, str(path / "model.safetensors"))
    cfg = model.config.to_dict()
    (path / "config.json").write_text(json.dumps({"model": cfg, "step": 10} if wrapped else cfg))
    return path


def test_load_checkpoint(tmp_path):
    from wavstream.export.checkpoint import CheckpointError, load_checkpoint

    model = build_model("hubert", "tiny", vocab=list(CTC_VOCAB), **_SMALL_TRANSFORMER).eval()
    x = torch.from_numpy(audio(1, model.chunk_samples))
    want = model.step(x, model.init_state(1))[0]
    for wrapped in (False, True):
        p = _save_checkpoint(model, tmp_path / f"ck{wrapped}", wrapped)
        m2 = load_checkpoint(p)
        assert not m2.training
        torch.testing.assert_close(m2.step(x, m2.init_state(1))[0], want)
    # pretraining heads may be absent (a fine-tuned checkpoint)
    p = _save_checkpoint(model, tmp_path / "nohead", True, drop=("label_head",))
    load_checkpoint(p)
    # training run folder -> final/
    _save_checkpoint(model, tmp_path / "run" / "final", True)
    load_checkpoint(tmp_path / "run")
    # anything else missing is an error naming the keys
    p = _save_checkpoint(model, tmp_path / "nolm", True, drop=("lm_head",))
    with pytest.raises(CheckpointError, match="lm_head"):
        load_checkpoint(p)
    with pytest.raises(CheckpointError, match="not found|lacks"):
        load_checkpoint(tmp_path / "nowhere")


def test_cli_export_from_checkpoint(tmp_path, capsys):
    from wavstream.cli.main import main

    model = small_model("wav2vec")
    ck = _save_checkpoint(model, tmp_path / "ck", wrapped=True)
    out = tmp_path / "bundle"
    rc = main(["export", str(ck), "--out", str(out), "--chunk-ms", "80", "--int8"])
    assert rc == 0, capsys.readouterr().err
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["chunk_frames"] == 8 and cfg["chunk_samples"] == 1280
    assert cfg["model"]["chunk_frames"] == 8
    assert {"model.onnx", "model.int8.onnx", "config.json", "tokens.txt"} <= {p.name for p in out.iterdir()}
    rc = main(["export", str(ck), "--out", str(tmp_path / "b2"), "--chunk-ms", "15"])
    assert rc == 2 and "multiple" in capsys.readouterr().err


def test_cli_export_int8_static_calibrated_on_given_audio(tmp_path, capsys):
    """--int8-static writes model.qdq.onnx calibrated on the manifest's audio (resampled to 16 kHz);
    OpenVINO's int8 precision then runs it, close to fp32."""
    import soundfile as sf

    from wavstream.cli.main import main
    from wavstream.stream import OrtEngine, load_bundle
    from wavstream.stream.engines.openvino import OpenVinoEngine, cpu_capabilities

    model = small_model("wav2vec2")
    ck = _save_checkpoint(model, tmp_path / "ck", wrapped=True)
    calib = tmp_path / "calib"
    calib.mkdir()
    for k in range(3):  # 8 kHz files: read and resampled for the 16 kHz model
        sf.write(calib / f"u{k}.wav", make_signal(8000, seed=k)[0], 8000)
        (calib / f"u{k}.txt").write_text("abc\n")
    out = tmp_path / "bundle"
    rc = main(["export", str(ck), "--out", str(out), "--chunk-ms", "80", "--int8-static",
               "--calibration", str(calib), "--calibration-count", "2"])
    assert rc == 0, capsys.readouterr().err
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["files"]["qdq"] == "model.qdq.onnx" and (out / "model.qdq.onnx").is_file()
    cal = cfg["qdq"]["calibration"]
    assert cal["utterances"] == 2 and cal["steps"] == 2 * (16000 // 1280) and str(calib) in cal["source"]
    assert cfg["qdq"]["argmax_agreement"] > 0.8  # measured by ONNX Runtime on the QDQ graph
    qdq = onnx.load(str(out / "model.qdq.onnx"))
    assert sum(n.op_type == "QuantizeLinear" for n in qdq.graph.node) > 0
    # activations: int8 with zero point 0 (symmetric); the conv stack's first two layers stay float,
    # its later layers (weights folded out of their Reshape) are quantised like the transformer's
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in qdq.graph.initializer}
    zps = [inits[n.input[2]] for n in qdq.graph.node if n.op_type == "QuantizeLinear"]
    assert zps and all(z.dtype == np.int8 and not z.any() for z in zps)
    producer = {o: n for n in qdq.graph.node for o in n.output}
    quantised = {}
    for n in qdq.graph.node:
        scope = next((p.value for p in n.metadata_props if p.key == "namespace"), "")
        if n.op_type == "MatMul" and "feature_extractor.conv_layers." in scope:
            layer = int(scope.split("feature_extractor.conv_layers.")[1].split(".")[0])
            quantised[layer] = getattr(producer.get(n.input[1]), "op_type", None) == "DequantizeLinear"
    assert quantised == {k: k >= 2 for k in range(len(model.config.conv_layers))}
    # OpenVINO's int8 runs the calibrated model (not ONNX Runtime's dynamic one)
    if "INT8" in cpu_capabilities():
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # no "slow fallback" warning with a qdq model
            ov = OpenVinoEngine(load_bundle(out), precision="int8", intra_op_threads=1)
        assert ov.static_int8 and ov.model_path.name == "model.qdq.onnx"
        ref = OrtEngine(out, device="cpu", intra_op_threads=1)
        x = make_signal(4 * ref.chunk_samples)
        st_o, st_r, fo, fr = ov.init_state(1), ref.init_state(1), [], []
        for i in range(4):
            chunk = x[:, i * ref.chunk_samples:(i + 1) * ref.chunk_samples]
            a, b = ov.step(chunk, st_o), ref.step(chunk, st_r)
            st_o, st_r = a.states, b.states
            fo.append(a.features)
            fr.append(b.features)
        fo, fr = np.concatenate(fo, 1)[0], np.concatenate(fr, 1)[0]
        cos = (fo * fr).sum(-1) / (np.linalg.norm(fo, axis=-1) * np.linalg.norm(fr, axis=-1))
        assert cos.min() > 0.9, cos.min()
    rc = main(["export", str(ck), "--out", str(tmp_path / "b2"), "--calibration", str(calib)])
    assert rc == 2 and "--calibration is for --int8-static" in capsys.readouterr().err
    rc = main(["export", str(ck), "--out", str(tmp_path / "b3"), "--int8-static", "--calibration",
               str(tmp_path / "nowhere.tsv")])
    assert rc == 2 and "nowhere.tsv" in capsys.readouterr().err
    # a later export without it leaves no stale model.qdq.onnx behind
    assert main(["export", str(ck), "--out", str(out), "--chunk-ms", "80", "--no-verify"]) == 0
    assert not (out / "model.qdq.onnx").exists()


def test_cli_tensorrt_says_what_is_missing(tmp_path, capsys):
    try:
        import tensorrt  # noqa: F401

        has_trt = torch.cuda.is_available()
    except Exception:
        has_trt = False
    if has_trt:
        pytest.skip("TensorRT and a GPU are present: covered by test_tensorrt_engine_build")
    from wavstream.cli.main import main

    ck = _save_checkpoint(small_model("wav2vec"), tmp_path / "ck", wrapped=False)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "model.plan").write_bytes(b"stale engine of an earlier export")
    rc = main(["export", str(ck), "--out", str(tmp_path / "b"), "--tensorrt", "--no-verify"])
    err = capsys.readouterr().err
    assert rc == 3
    assert "TensorRT is not installed" in err or "no CUDA GPU" in err
    assert (tmp_path / "b" / "model.onnx").is_file() and not (tmp_path / "b" / "model.plan").exists()


def test_tensorrt_engine_build(cache, tmp_path):
    pytest.importorskip("tensorrt")  # the GPU-only path: TensorRT cannot be installed without NVIDIA's index
    if not torch.cuda.is_available():
        pytest.skip("TensorRT is installed but no CUDA GPU is visible")
    from wavstream.export.tensorrt import build_engine

    _, out, _ = cache.get("wav2vec2")
    info = build_engine(out / "model.onnx", tmp_path / "model.plan")
    assert info["bytes"] > 0 and info["profile"] == [1, 8, 64]


# ----------------------------------------------------------- offline graphs
def test_offline_graph_published_form(tmp_path):
    """The whole-utterance graph (dynamic batch and time) of a published-form
    model equals torch at lengths other than the export example."""
    model = build_model("wavlm", "tiny", vocab=list(CTC_VOCAB), **{
        **_SMALL_TRANSFORMER, "conv_padding": "none", "extractor_mode": "group", "pos_conv_causal": False,
        "chunk_frames": 0, "left_chunks": -1, "layer_norm_first": False}).eval()
    export_offline(model, tmp_path / "off.onnx")
    m = onnx.load(str(tmp_path / "off.onnx"))
    dims = m.graph.input[0].type.tensor_type.shape.dim
    assert m.graph.input[0].name == "wave" and all(d.dim_param for d in dims)
    sess = ort_session(tmp_path / "off.onnx")
    for B, n in ((1, 8000), (2, 12345), (3, 33000)):
        wave = audio(B, n, seed=n)
        with torch.no_grad():
            ref = model(torch.from_numpy(wave))
        f, lg = sess.run(None, {"wave": wave})
        assert f.shape == tuple(ref.features.shape)
        assert np.abs(f - ref.features.numpy()).max() <= TOL
        assert np.abs(lg - ref.logits.numpy()).max() <= TOL


@pytest.mark.parametrize("family", ["wav2vec2", "wavlm"])
def test_offline_graph_of_transformers_model(tmp_path, family):
    import wavstream.training.convert as convert
    import transformers
    kw = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
              conv_dim=(32, 32, 32), conv_kernel=(10, 3, 3), conv_stride=(5, 2, 2), num_conv_pos_embeddings=16,
              num_conv_pos_embedding_groups=4, vocab_size=len(CTC_VOCAB), do_stable_layer_norm=False,
              feat_extract_norm="group", hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
              feat_proj_dropout=0.0, layerdrop=0.0)
    torch.manual_seed(0)
    if family == "wav2vec2":
        hf = transformers.Wav2Vec2ForCTC(transformers.Wav2Vec2Config(**kw)).eval()
    else:
        hf = transformers.WavLMForCTC(transformers.WavLMConfig(num_buckets=32, max_bucket_distance=64, **kw)).eval()
    model = convert.from_transformers(hf, vocab=list(CTC_VOCAB)).eval()
    export_offline(model, tmp_path / "off.onnx")
    sess = ort_session(tmp_path / "off.onnx")
    for B, n in ((1, 9000), (2, 16000)):
        wave = audio(B, n, seed=n)
        with torch.no_grad():
            ref = hf(torch.from_numpy(wave), output_hidden_states=True)
        f, lg = sess.run(None, {"wave": wave})
        assert np.abs(lg - ref.logits.numpy()).max() <= TOL
        assert np.abs(f - ref.hidden_states[-1].numpy()).max() <= TOL
