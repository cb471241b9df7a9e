"""The committed checkpoints load and give the outputs they gave before the
pretraining heads moved out of the encoder; a pretraining checkpoint's heads
load into its objective; evaluating a model leaves its config alone, so a run
trained at another chunk is saved and exported at that chunk; the ctc_v2
recipe resumes from its committed compact checkpoint (the finished run, kept resumable)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from wavstream.training.checkpoint import load_checkpoint, load_heads, read_config
from wavstream.training.models import CTC_VOCAB, build_model, stream_chunks

ROOT = Path(__file__).resolve().parents[2]
CKPTS = ROOT / "training" / "recipes" / "checkpoints"
UTTS = ROOT / "tests" / "data" / "eval_utts"

# Sums of |output| on one fixed second of noise, measured with the code before
# the heads moved (offline features, streamed features over 3 chunks, CTC logits).
REFERENCE = {
    "hubert_tiny_ctc_1h": (8967.5420416151, 8601.581405050616, 2826.977132692933),
    "hubert_tiny_pretrained": (10330.913129882421, 9917.078719125435, None),
    "vq_wav2vec_tiny_ctc_1h": (9795.69352826802, 9403.865830723196, 4448.941650241613),
    "wav2vec2_tiny_ctc": (9010.99758652634, 8646.01313482177, 3818.083863949403),
    "wav2vec2_tiny_ctc_1h": (8675.387328457367, 8327.553683938633, 2510.7771232307423),
    # the second default (issue 12: the finished ctc_v2 run, step 15,000), measured when it was packed
    "wav2vec2_ctc_v2": (5248.535041458366, 5023.82421285467, 4231.77482823655),
    "wav2vec_tiny_ctc_1h": (16467.822140895107, 15802.719034019472, 4574.786298256833),
    "wavlm_tiny_ctc_1h": (8721.37915823936, 8370.923487148772, 2765.7355801151134),
}
HUBERT_HEAD_ABS = 5385.934573173756  # hubert_tiny_pretrained's label head on the same input


def _wave() -> torch.Tensor:
    return torch.randn(1, 16000, generator=torch.Generator().manual_seed(1)) * 0.1


def test_every_committed_checkpoint_is_covered():
    assert sorted(p.name for p in CKPTS.iterdir() if (p / "model.safetensors").exists()) == sorted(REFERENCE)


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_committed_checkpoint_gives_the_same_outputs(name):
    feat_abs, step_abs, logit_abs = REFERENCE[name]
    m = load_checkpoint(CKPTS / name)
    wave = _wave()
    with torch.no_grad():
        out = m(wave)
        streamed = stream_chunks(m, wave, steps=3)
    assert float(out.features.double().abs().sum()) == pytest.approx(feat_abs, rel=1e-5)
    assert float(streamed.features.double().abs().sum()) == pytest.approx(step_abs, rel=1e-5)
    if logit_abs is None:
        assert out.logits is None
    else:
        assert float(out.logits.double().abs().sum()) == pytest.approx(logit_abs, rel=1e-5)


def test_pretraining_heads_of_the_old_layout_load_into_the_objective(tmp_path):
    """hubert_tiny_pretrained stores `label_head.*` as encoder keys (the layout
    before the heads moved): they load into HubertObjective's heads, and a
    checkpoint saved now (heads under `heads.`) reads back the same."""
    from wavstream.training.labels import LabelStore
    from wavstream.training.loop import save_checkpoint
    from wavstream.training.objectives.hubert import HubertObjective

    enc = load_checkpoint(CKPTS / "hubert_tiny_pretrained")
    obj = HubertObjective(enc, LabelStore([], 100.0))
    load_heads(CKPTS / "hubert_tiny_pretrained", obj.heads)
    with torch.no_grad():
        h = enc(_wave(), output_hidden_states=True).hidden_states[-1]
        assert float(obj.heads(h).double().abs().sum()) == pytest.approx(HUBERT_HEAD_ABS, rel=1e-5)
    save_checkpoint(tmp_path / "new", enc, {}, heads=obj.heads)
    from safetensors import safe_open

    with safe_open(str(tmp_path / "new" / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert any(k.startswith("heads.") for k in keys) and not any(k.startswith("label_head.") for k in keys)
    obj2 = HubertObjective(load_checkpoint(tmp_path / "new"), LabelStore([], 100.0))
    load_heads(tmp_path / "new", obj2.heads)
    for a, b in zip(obj.heads.state_dict().values(), obj2.heads.state_dict().values()):
        assert torch.equal(a, b)


def test_evaluating_leaves_the_config_unchanged():
    from wavstream.training.data.manifest import read_manifest
    from wavstream.training.evaluate import evaluate_checkpoint

    utts = read_manifest(UTTS)[:2]
    for family in ("wav2vec2", "wav2vec"):
        torch.manual_seed(0)
        m = build_model(family, "tiny", vocab=list(CTC_VOCAB), num_layers=1) if family == "wav2vec2" \
            else build_model(family, "tiny", vocab=list(CTC_VOCAB))
        before = m.config
        res, _ = evaluate_checkpoint(m, utts, chunk_ms=320)
        assert m.config == before and m.config is before
        assert res["chunk_frames"] == 320 // (m.stride * 1000 // 16000)
    assert before.left_chunks == 0  # the wav2vec preset keeps its 0 (was rewritten to 1)


def test_run_trained_at_chunk_8_is_saved_and_exported_at_8(tmp_path):
    """`train ctc --set chunk_frames=8 --dev ...` evaluates the live model at
    320 ms; the checkpoints still say 8 frames, and so does the bundle config."""
    from wavstream.export.bundle import bundle_config
    from wavstream.training.finetune import FinetuneJob, finetune_ctc
    from wavstream.training.loop import TrainConfig
    from wavstream.training.objectives.settings import CTCSettings

    job = FinetuneJob(train=str(UTTS), family="wav2vec2", overrides={"chunk_frames": 8, "num_layers": 1},
                      objective=CTCSettings(freeze_encoder=False), augment="none", dev=str(UTTS), dev_utterances=2)
    cfg = TrainConfig(out_dir=str(tmp_path / "run"), max_steps=2, batch_seconds=6.0, eval_every=1, ckpt_every=1,
                      warmup_steps=1, log_every=1, threads=1)
    finetune_ctc(job, cfg)
    rows = [json.loads(l) for l in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert any("dev_cer" in r for r in rows)  # the evaluation ran
    for sub in ("last", "final"):
        c, _ = read_config(tmp_path / "run" / sub)
        assert (c.chunk_frames, c.left_chunks) == (8, 4)
    m = load_checkpoint(tmp_path / "run")
    bc = bundle_config(m, {}, 18)
    assert bc["chunk_frames"] == 8 and bc["chunk_samples"] == 8 * 320


def test_ctc_v2_recipe_resumes_from_the_committed_checkpoint(tmp_path):
    """The flags of training/recipes/ctc_v2.sh, a tiny corpus, two steps past the
    committed step: the compact checkpoint loads into the recipe's model and the
    run continues from its step."""
    resume = CKPTS / "wav2vec2_ctc_v2"
    step0 = json.loads((resume / "resume.json").read_text())["step"]
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "wavstream.cli.main", "train", "ctc", "--init", "none", "--family", "wav2vec2",
           "--set", "num_layers=8", "--train", str(UTTS), "--dev", str(UTTS), "--out", str(out),
           "--steps", str(step0 + 2), "--lr", "1e-3", "--warmup", "1000", "--schedule", "cosine",
           "--batch-seconds", "8", "--eval-every", "500", "--ckpt-every", "200", "--threads", "1",
           "--mask-prob", "0.2", "--augment", "channel", "--precision", "fp32", "--max-minutes", "5",
           "--resume-from", str(resume)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"resumed from {resume} at step {step0}" in r.stdout
    assert json.loads(r.stdout.strip().splitlines()[-1])["step"] == step0 + 2
    c, extra = read_config(out / "final")
    assert c.num_layers == 8 and (c.chunk_frames, c.left_chunks) == (16, 4) and extra["step"] == step0 + 2
