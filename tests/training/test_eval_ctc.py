"""CTC evaluation and fine-tuning (issue 4).

- `wavstream eval` on committed utterances gives the CER the shipped model is
  known to give (a regression guard), through the torch checkpoint and the
  exported bundle alike.
- Fine-tuning a few steps from a pretrained tiny checkpoint lowers CTC loss.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import torch

ROOT = Path(__file__).resolve().parents[2]
UTTS = ROOT / "tests" / "data" / "eval_utts"
CKPT = ROOT / "training" / "recipes" / "checkpoints" / "wav2vec2_ctc_v2"  # the default model's checkpoint
# Measured when the default model was shipped (issue 12, the ctc_v2 run at step 15,000): 0.251 on these
# 7 utterances at 320 ms chunks (the first default gave 0.518). The bound tolerates thread-count
# rounding, not a different model.
KNOWN_CER = 0.251


def _eval(*args: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "wavstream.cli.main", "eval", *args],
                         capture_output=True, text=True, timeout=300, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_eval_checkpoint_regression():
    res = _eval("--model", str(CKPT), str(UTTS), "--chunk-ms", "320", "--threads", "1")
    assert res["utterances"] == 7
    assert res["cer"] == pytest.approx(KNOWN_CER, abs=0.02)
    assert 0.0 < res["wer"] <= 1.0 and res["rtf"] > 0
    assert res["chunk_ms"] == 320 and res["full_context"] is False


def test_eval_bundle_equals_checkpoint(tmp_path):
    per_utt = tmp_path / "hyps.tsv"
    bundle = _eval("--model", "default", str(UTTS), "--per-utt", str(per_utt))
    ckpt = _eval("--model", str(CKPT), str(UTTS), "--chunk-ms", "320", "--threads", "1")
    assert bundle["cer"] == pytest.approx(ckpt["cer"], abs=1e-9)
    lines = per_utt.read_text().splitlines()
    assert lines[0] == "path\treference\thypothesis" and len(lines) == 8


def test_eval_full_context_runs():
    res = _eval("--model", str(CKPT), str(UTTS), "--full-context", "--threads", "1")
    assert res["full_context"] is True and res["chunk_ms"] is None
    assert res["cer"] < 0.8  # a working model, not noise


def test_finetune_lowers_ctc_loss(tmp_path):
    """A few steps of `wavstream train ctc --init CKPT` lower the CTC loss."""
    from wavstream.training.loop import save_checkpoint
    from wavstream.training.models import build_model

    torch.manual_seed(0)
    pre = build_model("wav2vec2", "tiny", num_layers=2)  # stands in for a pretrained encoder
    save_checkpoint(tmp_path / "pre", pre, {"objective": "wav2vec2"})
    out = tmp_path / "ft"
    cmd = [sys.executable, "-m", "wavstream.cli.main", "train", "ctc", "--init", str(tmp_path / "pre"),
           "--train", str(UTTS), "--out", str(out), "--steps", "40", "--lr", "5e-3", "--warmup", "4",
           "--batch-seconds", "30", "--threads", "2", "--freeze-transformer-steps", "5",
           "--mask-prob", "0", "--mask-channel-prob", "0", "--no-dynamic-chunks", "--seed", "0"]
    subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=True)
    rows = [json.loads(l) for l in (out / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) >= 4
    assert losses[-1] < 0.7 * losses[0], losses
    assert (out / "final" / "model.safetensors").exists() and (out / "loss.png").exists()
    # the conv encoder stayed frozen (fairseq fine-tuning); the head and transformer moved
    from wavstream.training.checkpoint import load_checkpoint

    ft = load_checkpoint(out)
    for name, p in pre.state_dict().items():
        if name.startswith("feature_extractor"):
            assert torch.equal(p, ft.state_dict()[name]), name
    assert not torch.equal(pre.state_dict()["encoder.layers.0.attention.q_proj.weight"],
                           ft.state_dict()["encoder.layers.0.attention.q_proj.weight"])


def test_finetune_with_one_seed_is_reproducible(tmp_path):
    """Two runs with --seed 0 log the same losses (the CTC head's initial weights are seeded too)."""
    from wavstream.training.loop import save_checkpoint
    from wavstream.training.models import build_model

    torch.manual_seed(0)
    save_checkpoint(tmp_path / "pre", build_model("wav2vec2", "tiny", num_layers=1), {"objective": "wav2vec2"})
    logs = []
    for run in range(2):
        out = tmp_path / f"ft{run}"
        subprocess.run([sys.executable, "-m", "wavstream.cli.main", "train", "ctc", "--init", str(tmp_path / "pre"),
                        "--train", str(UTTS), "--out", str(out), "--steps", "10", "--batch-seconds", "20",
                        "--threads", "1", "--seed", "0"], capture_output=True, text=True, timeout=300, check=True)
        logs.append([json.loads(line)["loss"] for line in (out / "log.jsonl").read_text().splitlines()
                     if "loss" in json.loads(line)])
    assert logs[0] and logs[0] == logs[1], logs


def test_finetune_train_conv_differs_from_scratch_only_in_init(tmp_path):
    """`--train-conv --freeze-transformer-steps 0 --schedule linear`: the recipe of the scratch control."""
    from wavstream.training.checkpoint import load_checkpoint, read_config
    from wavstream.training.loop import save_checkpoint
    from wavstream.training.models import build_model

    torch.manual_seed(0)
    pre = build_model("wav2vec2", "tiny", num_layers=1)
    save_checkpoint(tmp_path / "pre", pre, {"objective": "wav2vec2"})
    out = tmp_path / "ft"
    cmd = [sys.executable, "-m", "wavstream.cli.main", "train", "ctc", "--init", str(tmp_path / "pre"),
           "--train", str(UTTS), "--out", str(out), "--steps", "3", "--lr", "3e-3", "--warmup", "1",
           "--batch-seconds", "10", "--threads", "2", "--train-conv", "--freeze-transformer-steps", "0",
           "--schedule", "linear", "--no-dynamic-chunks", "--seed", "0"]
    subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=True)
    ft = load_checkpoint(out)
    name = "feature_extractor.conv_layers.0.conv.weight"
    assert not torch.equal(pre.state_dict()[name], ft.state_dict()[name])  # the conv encoder trained
    _, extra = read_config(out / "final")
    assert extra["train_config"]["schedule"] == "linear"
    assert extra["conv_frozen"] is False and extra["freeze_transformer_steps"] == 0
