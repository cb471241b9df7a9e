"""Training throughput: audio seconds trained per wall-clock second.

The same CTC model, batches and optimiser through the real training pipeline
(``training.loop._epoch_loader``: dataset, collate, prefetch thread),
three ways, interleaved round by round so a busy machine hurts all alike:

* ``old``: fp32, conv feature encoder channels-first (the published layout);
* ``new``: bf16 autocast (losses fp32) and the conv encoder time-major;
* ``new+augment``: ``new`` plus the speaker/channel augmentation of CTC
  training, prepared by the prefetch thread as the training command does.

Utterances are noise with random transcripts of speech-like length (the cost
of a step does not depend on what is said), written as WAV files and read
back as a corpus is.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from .common import Settings, noise


def _corpus(folder: Path, n: int, seed: int = 0) -> list:
    import soundfile as sf

    from wavstream.training.data.manifest import Entry

    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz   "))
    out = []
    for i in range(n):
        seconds = float(rng.uniform(2.0, 6.0))  # the synthetic corpus's typical range
        x = noise(seconds, seed=seed * 100003 + i)
        path = folder / f"u{i:04d}.wav"
        sf.write(str(path), x, 16000, subtype="PCM_16")
        text = " ".join("".join(rng.choice(letters, int(seconds * 15))).split())
        out.append(Entry(str(path), len(x), text or "a"))
    return out


def _model(config_name: str):
    from wavstream.training.models import CTC_VOCAB, build_model

    return build_model("wav2vec2", config_name, vocab=list(CTC_VOCAB))


def run(settings: Settings, size: str = "tiny") -> dict[str, Any]:
    import torch

    from wavstream.training.dataset import AudioDataset
    from wavstream.training.data.channel import ChannelAugment
    from wavstream.training.loop import TrainConfig, _batches, _epoch_loader, bf16_supported
    from wavstream.training.objectives.ctc import CTCObjective
    from wavstream.training.objectives.settings import CTCSettings

    quick = settings.quick
    steps = settings.pick(2, 12)  # timed steps per path per round
    rounds = settings.pick(1, 3)
    batch_seconds = settings.pick(20.0, 80.0)
    bf16 = bf16_supported(torch.device("cpu"))
    paths = {
        "old": dict(bf16=False, time_major=False, augment=False),
        "new": dict(bf16=bf16, time_major=True, augment=False),
        "new+augment": dict(bf16=bf16, time_major=True, augment=True),
    }
    torch.manual_seed(0)
    model = _model(size)
    objective = CTCObjective(model, CTCSettings(freeze_encoder=False, mask_prob=0.2))
    objective.train()
    opt = torch.optim.AdamW(objective.parameters(), lr=1e-4)
    rows: dict[str, list[float]] = {k: [] for k in paths}
    with tempfile.TemporaryDirectory(dir=settings.work) as d:
        utts = _corpus(Path(d), settings.pick(24, 96))
        plain = AudioDataset(utts, max_samples=16 * 16000)
        augmented = AudioDataset(utts, max_samples=16 * 16000, transform=ChannelAugment())
        cfg = TrainConfig(batch_seconds=batch_seconds, seed=0)
        batches = _batches(plain, cfg, 0, 1, 0)
        need = steps + 1  # +1 warm-up step
        batches = (batches * (need // max(len(batches), 1) + 1))[:need]
        for r in range(rounds):
            for name, p in paths.items():
                model.feature_extractor.time_major = p["time_major"]
                run_cfg = TrainConfig(batch_seconds=batch_seconds, seed=r, bf16=p["bf16"])
                loader = _epoch_loader(augmented if p["augment"] else plain, batches, run_cfg, epoch=r)
                amp = torch.autocast("cpu", dtype=torch.bfloat16, enabled=p["bf16"])
                audio, t0 = 0.0, 0.0
                for k, batch in enumerate(loader):
                    if k == 1:  # the first step (and a worker's start) is warm-up
                        t0, audio = time.perf_counter(), 0.0
                    with amp:
                        loss, _ = objective(batch, (16, 4), k)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    audio += float(batch["lengths"].sum()) / 16000
                rows[name].append(audio / (time.perf_counter() - t0))
                settings.log("training", f"round {r + 1}/{rounds} {name}: {rows[name][-1]:.1f} audio-s/s")
    model.feature_extractor.time_major = True
    best = {k: max(v) for k, v in rows.items()}
    return {
        "model": f"wav2vec2 {size} ({model.num_parameters() / 1e6:.2f} M params), CTC",
        "batch_seconds": batch_seconds, "steps_per_round": steps, "rounds": rounds,
        "bf16": bf16, "threads": torch.get_num_threads(),
        "audio_per_s": {k: round(v, 1) for k, v in best.items()},
        "audio_per_s_rounds": {k: [round(x, 1) for x in v] for k, v in rows.items()},
        "speedup_new": round(best["new"] / best["old"], 2),
        "speedup_new_augment": round(best["new+augment"] / best["old"], 2),
        "quick": quick,
    }
