"""CTC fine-tuning objective (docs/training.md), streaming-aware.

Departures from the published recipes, for tiny models on 2 CPU cores: the
from-scratch control (`freeze_encoder=False`) trains the conv encoder too
(a random frozen encoder would cripple it), and the masking rates default
lower than the published 0.65 because few labelled hours and tiny models
under-fit rather than over-fit.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..masking import compute_channel_mask, compute_mask_indices
from ..models import SpeechEncoder
from .base import Objective
from .settings import CTCSettings


class CTCObjective(Objective):
    def __init__(self, model: SpeechEncoder, settings: CTCSettings = CTCSettings()) -> None:
        super().__init__(model)
        if model.lm_head is None:
            raise ValueError("CTC fine-tuning needs a model with a CTC head (config.vocab)")
        self.settings = settings
        if settings.freeze_encoder:
            # fairseq feature_grad_mult 0: the conv encoder runs without gradients (no graph kept)
            for p in model.feature_extractor.parameters():
                p.requires_grad_(False)

    @property
    def freeze_encoder(self) -> bool:
        return self.settings.freeze_encoder

    def before_step(self, step: int) -> None:
        """Only the CTC head trains for the first `freeze_transformer_steps`."""
        frozen = step < self.settings.freeze_transformer_steps
        for name, p in self.model.named_parameters():
            if name.startswith("lm_head"):
                continue
            if self.settings.freeze_encoder and name.startswith("feature_extractor"):
                continue
            p.requires_grad_(not frozen)

    def forward(self, batch: dict, chunk: tuple[int, int], step: int) -> tuple[Tensor, dict]:
        model, s = self.model, self.settings
        wave, lengths = batch["wave"], batch["lengths"]
        rng: np.random.Generator = batch.get("rng") or np.random.default_rng(step)
        mask = None
        if self.training and s.mask_prob > 0 and model.config.is_transformer:
            T = int(model.frame_lengths(lengths).max())
            m = compute_mask_indices((wave.shape[0], T), model.frame_lengths(lengths), s.mask_prob,
                                     s.mask_length, min_masks=2, require_same_masks=False, rng=rng)
            mask = torch.from_numpy(m).to(wave.device)
        cmask = None
        if self.training and s.mask_channel_prob > 0 and model.config.is_transformer:
            c = compute_channel_mask(wave.shape[0], model.config.hidden_size, s.mask_channel_prob,
                                     s.mask_channel_length, rng)
            cmask = torch.from_numpy(c).to(wave.device)
        out = model(wave, lengths, chunk_frames=chunk[0], left_chunks=chunk[1], mask_time_indices=mask,
                    mask_channel_indices=cmask, feature_grad_mult=0.0 if s.freeze_encoder else None)
        # the loss in fp32 even under bf16 autocast: CTC sums many small log-probabilities
        with torch.autocast(wave.device.type, enabled=False):
            log_probs = F.log_softmax(out.logits.float(), dim=-1).transpose(0, 1)
            loss = F.ctc_loss(log_probs, batch["tokens"], out.lengths, batch["token_lengths"], blank=0,
                              reduction="sum", zero_infinity=True) / wave.shape[0]
        return loss, {"frames": float(out.lengths.sum())}
