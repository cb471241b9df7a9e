"""The fast training path: the conv encoder time-major, bf16 autocast, the
prefetch thread, and speaker/channel augmentation redrawn every epoch.

The fast path must be the same model: the time-major encoder equals the
published channels-first one on the committed checkpoint, and bf16 changes
the loss and the gradient direction only by rounding.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from wavstream.training.checkpoint import load_checkpoint
from wavstream.training.models import CTC_VOCAB, build_model
from wavstream.training.objectives.ctc import CTCObjective
from wavstream.training.objectives.settings import CTCSettings

ROOT = Path(__file__).resolve().parents[2]
CKPT = ROOT / "training" / "recipes" / "checkpoints" / "wav2vec2_tiny_ctc"


def _wave(b: int = 2, seconds: float = 1.37, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, int(16000 * seconds), generator=g) * 0.1


def test_time_major_encoder_equals_channels_first_on_old_checkpoint():
    model = load_checkpoint(CKPT)
    fe = model.feature_extractor
    assert fe.supports_time_major
    wave = _wave()
    fe.eval()
    with torch.no_grad():
        ref = fe(wave)  # eval: the published channels-first graph
        tm = fe.forward_time_major(wave)
    assert tm.shape == ref.shape
    assert (tm - ref).abs().max().item() <= 1e-5
    fe.train()  # training mode takes the time-major path by itself
    with torch.no_grad():
        assert (fe(wave) - ref).abs().max().item() <= 1e-5


def test_time_major_gradients_equal_channels_first():
    torch.manual_seed(0)
    model = build_model("wav2vec2", "tiny", vocab=list(CTC_VOCAB))
    fe = model.feature_extractor.train()
    wave = _wave(seed=1)
    grads = []
    for tm in (False, True):
        fe.time_major = tm
        fe.zero_grad()
        out = fe(wave)
        (out.square().mean() + out[:, :, ::3].mean()).backward()
        grads.append(torch.cat([p.grad.flatten() for p in fe.parameters()]))
    assert torch.allclose(grads[0], grads[1], rtol=1e-3, atol=1e-6)


def test_group_norm_encoders_keep_the_published_layout():
    model = build_model("wav2vec2", "base", vocab=list(CTC_VOCAB))  # layer 0 GroupNorm over time
    assert not model.feature_extractor.supports_time_major


def _real_batch() -> dict:
    """Three committed utterances with their transcripts."""
    from wavstream.training.dataset import collate, load_audio, read_manifest

    utts = read_manifest(ROOT / "tests" / "data" / "eval_utts")[:3]
    return collate([{"index": i, "wave": load_audio(u.path), "text": u.text} for i, u in enumerate(utts)])


def test_bf16_loss_and_gradient_match_fp32():
    model = load_checkpoint(CKPT)  # a trained model on speech: the regime training is in
    obj = CTCObjective(model, CTCSettings(freeze_encoder=False, mask_prob=0.0, mask_channel_prob=0.0))
    obj.train()
    batch = _real_batch()
    res = []
    for bf16 in (False, True):
        model.zero_grad()
        torch.manual_seed(0)  # the same dropout masks both ways
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss, _ = obj(batch, (16, 4), 0)
        assert loss.dtype == torch.float32  # the loss itself stays fp32
        loss.backward()
        res.append((float(loss.detach()), torch.cat([p.grad.flatten().float() for p in model.parameters()
                                                     if p.grad is not None])))
    (l32, g32), (l16, g16) = res
    assert l16 == pytest.approx(l32, rel=0.005)  # measured 0.07 %
    assert torch.nn.functional.cosine_similarity(g32, g16, dim=0) >= 0.99


def test_prefetch_thread_yields_in_order_raises_and_stops():
    from wavstream.training.loop import _prefetch

    assert list(_prefetch(iter(range(10)))) == list(range(10))

    def bad():
        yield 1
        raise RuntimeError("decoder broke")

    it = _prefetch(bad())
    assert next(it) == 1
    with pytest.raises(RuntimeError, match="decoder broke"):
        next(it)
    produced = []

    def many():
        for i in range(1000):
            produced.append(i)
            yield i

    it = _prefetch(many(), depth=2)
    assert next(it) == 0
    it.close()  # the consumer stops early: the producer must stop too
    import time

    time.sleep(0.6)
    n = len(produced)
    time.sleep(0.3)
    assert len(produced) == n < 1000


def test_training_loop_bf16_with_augmentation_and_resume(tmp_path):
    """Three steps with bf16 and channel augmentation, then a resume continues
    at the saved step; each epoch redraws the augmentation, deterministically."""
    import soundfile as sf

    from wavstream.training.data.channel import ChannelAugment
    from wavstream.training.data.manifest import Entry
    from wavstream.training.dataset import AudioDataset
    from wavstream.training.loop import TrainConfig, train

    rng = np.random.default_rng(0)
    utts = []
    for i in range(6):
        x = (0.1 * rng.standard_normal(16000 + 1000 * i)).astype(np.float32)
        p = tmp_path / f"u{i}.wav"
        sf.write(p, x, 16000)
        utts.append(Entry(str(p), len(x), "hello world"))
    ds = AudioDataset(utts, transform=ChannelAugment())
    ds.set_epoch(0, 7)
    a0 = ds[2]["wave"]
    ds.set_epoch(1, 7)
    a1 = ds[2]["wave"]
    ds.set_epoch(0, 7)
    assert np.array_equal(ds[2]["wave"], a0) and not np.array_equal(a0, a1)

    torch.manual_seed(0)
    model = build_model("wav2vec2", "tiny", vocab=list(CTC_VOCAB), num_layers=1)
    obj = CTCObjective(model, CTCSettings(freeze_encoder=False))
    cfg = TrainConfig(out_dir=str(tmp_path / "run"), max_steps=3, batch_seconds=3.0, bf16=True,
                      ckpt_every=2, warmup_steps=1, log_every=1)
    res = train(obj, ds, cfg, progress=False)
    assert res["step"] == 3 and np.isfinite(res.get("frames", 0.0))
    cfg = dataclasses.replace(cfg, max_steps=5)
    model2 = build_model("wav2vec2", "tiny", vocab=list(CTC_VOCAB), num_layers=1)
    res2 = train(CTCObjective(model2, CTCSettings(freeze_encoder=False)), ds, cfg, progress=False)
    assert res2["step"] == 5
    import json

    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5]  # resumed at 3, not from scratch


def test_compact_checkpoint_resumes_in_a_fresh_folder(tmp_path):
    """A run packed with save_compact continues in another folder at its step,
    with its chunk-sampler state and curve, and the lr re-warms."""
    import json

    import soundfile as sf

    from wavstream.training.data.manifest import Entry
    from wavstream.training.dataset import AudioDataset
    from wavstream.training.loop import TrainConfig, save_compact, train

    rng = np.random.default_rng(1)
    utts = []
    for i in range(4):
        x = (0.1 * rng.standard_normal(12000)).astype(np.float32)
        sf.write(tmp_path / f"u{i}.wav", x, 16000)
        utts.append(Entry(str(tmp_path / f"u{i}.wav"), len(x), "abc"))
    ds = AudioDataset(utts)
    torch.manual_seed(0)
    model = build_model("wav2vec2", "tiny", vocab=list(CTC_VOCAB), num_layers=1)
    cfg = TrainConfig(out_dir=str(tmp_path / "a"), max_steps=4, batch_seconds=2.0, ckpt_every=100,
                      warmup_steps=1, log_every=1, schedule="constant")
    train(CTCObjective(model, CTCSettings(freeze_encoder=False)), ds, cfg, progress=False)
    save_compact(tmp_path / "a" / "last", tmp_path / "packed")
    assert {p.name for p in (tmp_path / "packed").iterdir()} == {"model.safetensors", "config.json",
                                                                  "resume.json", "log.jsonl"}
    model2 = build_model("wav2vec2", "tiny", vocab=list(CTC_VOCAB), num_layers=1)
    cfg2 = TrainConfig(out_dir=str(tmp_path / "b"), max_steps=6, batch_seconds=2.0, ckpt_every=100,
                       warmup_steps=1, log_every=1, schedule="constant", resume_from=str(tmp_path / "packed"),
                       rewarm_steps=4)
    res = train(CTCObjective(model2, CTCSettings(freeze_encoder=False)), ds, cfg2, progress=False)
    assert res["step"] == 6
    rows = [json.loads(line) for line in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert rows[4]["lr"] == pytest.approx(cfg2.lr * 1 / 4) and rows[5]["lr"] == pytest.approx(cfg2.lr * 2 / 4)
