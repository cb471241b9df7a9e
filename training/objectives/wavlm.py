"""WavLM objective (MODELS.md 6.3): HuBERT's masked prediction, denoising.

The targets are the pseudo-labels of the CLEAN utterance (the label files
are computed from the corpus audio, before any augmentation), while the
model sees the utterance with reverberation, additive noise (white, pink,
brown, babble from the other rows) and/or a segment of another utterance of
the batch (utterance mixing: overlap <= 50%, -5..5 dB; noise -5..20 dB), the
transforms of training/data/augment.py applied per row on its valid samples.
The gated relative position bias is part of the model (config.relative_bias).

Probabilities: the derived task code defaults to mixing_prob 0.5 and
mixing_noise_prob 0.5; MODELS.md recalls the paper mixing a minority
(10-20%). The tiny recipe uses this project's `wavlm_augment` defaults
(mixing 0.2 with 20% of it noise, additive noise 0.25, reverb 0.15);
all are options.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..data.augment import Compose, wavlm_augment
from .hubert import HubertObjective


class WavLMObjective(HubertObjective):
    def __init__(self, model, labels, crop_starts=None, mix_prob: float = 0.2, noise_prob: float = 0.25,
                 reverb_prob: float = 0.15, **kw) -> None:
        super().__init__(model, labels, crop_starts, **kw)
        if not model.config.relative_bias:
            raise ValueError("WavLM pretraining expects the gated relative position bias (config.relative_bias)")
        self.mix_prob, self.noise_prob, self.reverb_prob = mix_prob, noise_prob, reverb_prob
        self.last_augmented = 0

    def augmenter(self, others: list[np.ndarray]) -> Compose:
        return wavlm_augment(others, noise_p=self.noise_prob, mix_p=self.mix_prob, reverb_p=self.reverb_prob)

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
