"""One bundle, several latencies (bundle format 2): chosen at run time, each equal to torch at its chunk size."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from common import PARITY_TOL as TOL

from wavstream.export.bundle import export_bundle, latency_views
from wavstream.export.quantize import test_signal as make_signal
from wavstream.stream import Recognizer, load_bundle
from wavstream.stream.bundle import UnsupportedLatencyError
from wavstream.training.models import CTC_VOCAB, build_model

_SMALL = {
    "wav2vec2": dict(conv_layers=[(64, 10, 5)] + [(64, 3, 2)] * 4 + [(64, 2, 2)] * 2, hidden_size=64, num_layers=2,
                     num_heads=4, ffn_size=128, pos_conv_kernel=16, pos_conv_groups=4, chunk_frames=8, left_chunks=2,
                     final_dim=32),
    "wav2vec": dict(conv_layers=[(64, 10, 5), (64, 8, 4), (64, 4, 2), (64, 4, 2), (64, 4, 2)],
                    agg_layers=[(64, k, 1) for k in (2, 3, 4)], vq_dim=64, vq_vars=32, chunk_frames=16, left_chunks=0),
}
LATENCIES = {"wav2vec2": (80, 160, 320), "wav2vec": (80, 160)}  # wav2vec2 tiny's own chunk: 8 x 20 ms = 160 ms


@pytest.fixture(scope="module", params=sorted(_SMALL))
def exported(request, tmp_path_factory):
    family = request.param
    torch.manual_seed(0)
    model = build_model(family, "tiny", vocab=list(CTC_VOCAB), **_SMALL[family]).eval()
    out = tmp_path_factory.mktemp(family)
    report = export_bundle(model, out, int8=family == "wav2vec2", latencies_ms=LATENCIES[family], log=lambda *_: None)
    return family, model, out, report


def torch_stream(model, wave: np.ndarray) -> np.ndarray:
    C = model.chunk_samples
    n = wave.shape[1] // C * C
    state = model.init_state(wave.shape[0], device="cpu")
    feats = []
    with torch.no_grad():
        for i in range(0, n, C):
            o = model.step_outputs(torch.from_numpy(wave[:, i : i + C]), state)
            feats.append(o.features.numpy())
            state = o.state
    return np.concatenate(feats, 1)


def test_each_latency_equals_torch_streaming_at_that_chunk(exported) -> None:
    family, model, out, _ = exported
    wave = make_signal(16000 * 2, batch=1, seed=3)
    views = latency_views(model, LATENCIES[family])
    for ms, view in views.items():
        rec = Recognizer.from_bundle(out, latency_ms=ms, intra_op_threads=1, decode_text=False)
        assert rec.config.chunk_ms == ms and rec.config.chunk_samples == view.chunk_samples
        want = torch_stream(view, wave)
        s = rec.create_stream()
        s.accept_waveform(wave[0, : want.shape[1] * model.stride], 16000)
        got = []
        while s.is_ready():
            got += [e.frames for e in rec.decode_stream(s) if type(e).__name__ == "Features"]
        got = np.concatenate(got)[: want.shape[1]]
        assert want.shape[1] >= 3 * view.config.chunk_frames  # several chunks, caches carried
        assert np.max(np.abs(got - want[0])) <= TOL, (family, ms)


def test_the_graphs_share_one_weights_file(exported) -> None:
    family, model, out, report = exported
    files = {p.name: p.stat().st_size for p in out.iterdir()}
    params = sum(p.numel() for p in model.parameters()) * 4
    graphs = [n for n in files if n.endswith(".onnx")]
    assert len(graphs) == len(LATENCIES[family]) * (2 if family == "wav2vec2" else 1)
    # One copy of the fp32 weights (plus the int8 copy), not one per latency.
    copies = 1.3 if family == "wav2vec2" else 1.0
    assert files["weights.bin"] <= params * (copies + 0.15), (files, params)
    assert all(files[g] < params / 4 for g in graphs)
    assert report["shared_weights"]["shared_tensors"] > 0


def test_config_lists_the_latencies_and_keeps_a_default(exported) -> None:
    family, model, out, _ = exported
    raw = json.loads((out / "config.json").read_text())
    assert raw["format_version"] == 2 and sorted(map(int, raw["latencies"])) == sorted(LATENCIES[family])
    b = load_bundle(out)
    assert b.config.chunk_ms == raw["default_latency_ms"] == round(1000 * model.chunk_samples / 16000)
    assert b.config.latencies_ms == tuple(sorted(LATENCIES[family]))


def test_an_unserved_latency_is_refused_by_name(exported) -> None:
    _, _, out, _ = exported
    with pytest.raises(UnsupportedLatencyError, match=r"240 ms is not served.*serves 80, 160"):
        load_bundle(out, latency_ms=240)
    with pytest.raises(UnsupportedLatencyError):
        Recognizer.from_bundle(out, latency_ms=240)


def test_a_version_1_bundle_serves_its_own_chunk_only(tmp_path: Path) -> None:
    from toy_bundle import build_toy_bundle

    v1 = build_toy_bundle(tmp_path / "v1")  # format version 1: one graph, no latencies table
    own = load_bundle(v1).config.chunk_ms
    assert load_bundle(v1, latency_ms=own).config.latencies_ms == (own,)
    with pytest.raises(UnsupportedLatencyError, match="--latencies-ms"):
        load_bundle(v1, latency_ms=own // 2)


def test_int8_variants_run_and_transcribe_command_takes_latency(exported, tmp_path: Path) -> None:
    family, _, out, _ = exported
    import soundfile as sf

    int8 = ["--int8"] if family == "wav2vec2" else []  # only the wav2vec2 bundle carries int8 graphs (export time)

    wav = tmp_path / "a.wav"
    sf.write(wav, make_signal(16000, batch=1, seed=1)[0], 16000)
    for ms in LATENCIES[family]:
        r = subprocess.run([sys.executable, "-m", "wavstream.cli.main", "transcribe", str(wav), "--model", str(out),
                            "--latency-ms", str(ms), *int8, "--json"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "-m", "wavstream.cli.main", "transcribe", str(wav), "--model", str(out),
                        "--latency-ms", "240"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "240 ms is not served" in r.stderr
