"""The runtime on bundles written by the real exporter (needs torch; skipped without it).

Keeps wavstream.stream and wavstream.export in agreement on docs/bundle.md:
a tiny random-weight model with a CTC head is exported, then loaded and run
by the torch-free runtime (in this process, but through the public API only).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import torch
import wavstream.training.models as models
import wavstream.export.bundle as export_bundle_mod

from wavstream.stream import Features, OrtEngine, Recognizer, load_bundle  # noqa: E402


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from wavstream.training.models.config import CTC_VOCAB

    torch.manual_seed(0)
    model = models.build_model("wav2vec2", "tiny", vocab=list(CTC_VOCAB)).eval()
    out = tmp_path_factory.mktemp("real") / "w2v2"
    export_bundle_mod.export_bundle(model, out, verify=False, simplify=False, log=lambda *a: None)
    return out


def test_exported_bundle_loads_and_streams_push_size_independently(bundle: Path) -> None:
    cfg = load_bundle(bundle).config
    assert cfg.has_logits and cfg.states[0].name == "frames_seen"
    rng = np.random.default_rng(0)
    wave = (0.1 * rng.standard_normal(cfg.chunk_samples * 3 + 777)).astype(np.float32)

    def run(push: int) -> tuple[np.ndarray, list]:
        rec = Recognizer.from_bundle(bundle, intra_op_threads=1)
        evs: list = []
        for i in range(0, len(wave), push):
            evs.extend(rec.feed(wave[i : i + push], 16000))
        evs.extend(rec.finish())
        feats = np.concatenate([e.frames for e in evs if isinstance(e, Features)])
        return feats, [e for e in evs if not isinstance(e, Features)]

    f1, t1 = run(37)
    f2, t2 = run(16000)
    assert f1.shape == (int(np.ceil(len(wave) / cfg.stride)), cfg.feature_dim)
    np.testing.assert_allclose(f1, f2, atol=1e-5)
    assert t1 == t2  # same partial/final events whatever the push size


def test_exported_bundle_batches_like_single_streams(bundle: Path) -> None:
    eng = OrtEngine(bundle, intra_op_threads=1)
    rng = np.random.default_rng(1)
    x = (0.1 * rng.standard_normal((2, eng.chunk_samples))).astype(np.float32)
    both = eng.step(x, eng.init_state(2))
    one = eng.step(x[1:], eng.init_state(1))
    np.testing.assert_allclose(both.features[1], one.features[0], atol=1e-4)
