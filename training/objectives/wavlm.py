"""WavLM objective (docs/pretraining.md): HuBERT's masked prediction, denoising.

The targets are the pseudo-labels of the CLEAN utterance (the label files
are computed from the corpus audio, before any augmentation), while the
model sees the utterance with reverberation, additive noise (white, pink,
brown, babble from the other rows) and/or a segment of another utterance of
the batch (utterance mixing: overlap <= 50%, -5..5 dB; noise -5..20 dB), the
transforms of training/data/augment.py applied per row on its valid samples.
The gated relative position bias is part of the model (config.relative_bias).

Probabilities: the derived task code defaults to mixing_prob 0.5 and
mixing_noise_prob 0.5; the paper describes mixing only a minority of
utterances (10-20%). The tiny recipe uses this project's `wavlm_augment` defaults
(mixing 0.2 with 20% of it noise, additive noise 0.25, reverb 0.15);
all are options.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..data.augment import Compose, wavlm_augment
from ..labels import LabelStore
from ..models import SpeechEncoder
from .heads import HubertHead
from .hubert import HubertObjective
from .settings import WavLMSettings


class WavLMObjective(HubertObjective):
    settings: WavLMSettings

    def __init__(self, model: SpeechEncoder, labels: LabelStore, crop_starts: dict | None = None,
                 settings: WavLMSettings = WavLMSettings(), heads: HubertHead | None = None) -> None:
        if not model.config.relative_bias:
            raise ValueError("WavLM pretraining expects the gated relative position bias (config.relative_bias)")
        super().__init__(model, labels, crop_starts, settings, heads)
        self.last_augmented = 0

    def augmenter(self, others: list[np.ndarray]) -> Compose:
        s = self.settings
        return wavlm_augment(others, noise_p=s.noise_prob, mix_p=s.mix_prob, reverb_p=s.reverb_prob)

    def input_wave(self, batch: dict, rng: np.random.Generator) -> Tensor:
        if not self.training:
            return batch["wave"]
        wave = batch["wave"]
        lengths = batch["lengths"].tolist()
        clean = [wave[b, : lengths[b]].detach().cpu().numpy() for b in range(wave.shape[0])]
        noisy = wave.clone()
        changed = 0
        for b, x in enumerate(clean):
            others = [c for j, c in enumerate(clean) if j != b and len(c) > 0] or [x]
            y = self.augmenter(others)(x, rng)
            if not np.array_equal(y, x):
                changed += 1
            noisy[b, : lengths[b]] = torch.from_numpy(np.ascontiguousarray(y, dtype=np.float32)).to(wave.device)
        self.last_augmented = changed
        return noisy

    def forward(self, batch: dict, chunk: tuple[int, int], step: int):
        loss, metrics = super().forward(batch, chunk, step)
        metrics["augmented"] = float(self.last_augmented)
        return loss, metrics
