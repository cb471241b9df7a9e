"""CTC fine-tuning objective (MODELS.md section 7), streaming-aware.

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
from torch import Tensor, nn

from ..masking import compute_channel_mask, compute_mask_indices
from ..models import SpeechEncoder


class CTCObjective(nn.Module):
    def __init__(self, model: SpeechEncoder, freeze_encoder: bool = True, freeze_transformer_steps: int = 0,
                 mask_prob: float = 0.3, mask_length: int = 10, mask_channel_prob: float = 0.1,
                 mask_channel_length: int = 16) -> None:
        super().__init__()
        if model.lm_head is None:
            raise ValueError("CTC fine-tuning needs a model with a CTC head (config.vocab)")
        self.model = model
        self.freeze_encoder = freeze_encoder
        self.freeze_transformer_steps = freeze_transformer_steps
        self.mask_prob, self.mask_length = mask_prob, mask_length
        self.mask_channel_prob, self.mask_channel_length = mask_channel_prob, mask_channel_length
        if freeze_encoder:
            # fairseq feature_grad_mult 0: the conv encoder runs without gradients
            model.config.feature_grad_mult = 0.0
            for p in model.feature_extractor.parameters():
                p.requires_grad_(False)

    def before_step(self, step: int) -> None:
        """Only the CTC head trains for the first `freeze_transformer_steps`."""
        frozen = step < self.freeze_transformer_steps
        for name, p in self.model.named_parameters():
            if name.startswith("lm_head"):
                continue
            if self.freeze_encoder and name.startswith("feature_extractor"):
                continue
            p.requires_grad_(not frozen)

    def forward(self, batch: dict, chunk: tuple[int, int], step: int) -> tuple[Tensor, dict]:
        model = self.model
        wave, lengths = batch["wave"], batch["lengths"]
        rng: np.random.Generator = batch.get("rng") or np.random.default_rng(step)
        mask = None
        if self.training and self.mask_prob > 0 and model.config.is_transformer:
            T = int(model.frame_lengths(lengths).max())
            m = compute_mask_indices((wave.shape[0], T), model.frame_lengths(lengths), self.mask_prob,
                                     self.mask_length, min_masks=2, require_same_masks=False, rng=rng)
            mask = torch.from_numpy(m).to(wave.device)
        cmask = None
        if self.training and self.mask_channel_prob > 0 and model.config.is_transformer:
            c = compute_channel_mask(wave.shape[0], model.config.hidden_size, self.mask_channel_prob,
                                     self.mask_channel_length, rng)
            cmask = torch.from_numpy(c).to(wave.device)
        out = model(wave, lengths, chunk_frames=chunk[0], left_chunks=chunk[1], mask_time_indices=mask,
                    mask_channel_indices=cmask)
        # the loss in fp32 even under bf16 autocast: CTC sums many small log-probabilities
        with torch.autocast(wave.device.type, enabled=False):
            log_probs = F.log_softmax(out.logits.float(), dim=-1).transpose(0, 1)
            loss = F.ctc_loss(log_probs, batch["tokens"], out.lengths, batch["token_lengths"], blank=0,
                              reduction="sum", zero_infinity=True) / wave.shape[0]
        return loss, {"frames": float(out.lengths.sum())}
