"""HuBERT objective (MODELS.md 5.2): masked prediction of k-means labels.

* Span masking with mask_prob 0.80 (p = 8%), M = 10, min_masks 2, rows
  equalised (fairseq's default `require_same_masks`); masked frames get the
  model's mask embedding; the Transformer runs under the batch's streaming
  chunk mask (dynamic chunk training).
* Logits: cos(final_proj(o_t), e_c) / 0.1 over all label embeddings (the
  model's `label_head`); classes are k-means labels + 4 (fairseq dictionary
  specials, never targets).
* Loss = 1.0 * CE(masked frames) + 0.0 * CE(unmasked) + 10 * feature
  penalty, normalised by the number of masked frames. Padding frames and
  frames without a label (the label sequence is a little shorter than the
  frame sequence) are excluded.
* Labels (training/labels.py) are at 100 Hz (MFCC, iteration 1) or 50 Hz
  (layer features, iteration 2) and are mapped to the 50 Hz frames by
  floor(i * ratio); a random crop of the audio shifts its labels with it
  (`crop_starts`, recorded by the dataset).

Departures for the tiny CPU recipe: the streaming model form (causal convs,
per-frame LayerNorm extractor, chunked attention) and tiny sizes; K = 100
clusters in both iterations by default in the tiny recipe (published: 100
then 500), since a 5-hour corpus with a 4-layer model supports fewer units;
and the tiny recipes weight the unmasked frames 1.0 (`unmasked_weight`,
published 0.0): with masked frames alone, 600 CPU updates collapsed the
encoder to 1-3 dimensions and the model fine-tuned worse than a random start;
the unmasked term keeps each frame's own cluster recoverable, and the same
run then beat its scratch control (docs/pretraining.md).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from ..labels import LabelStore
from ..masking import compute_mask_indices
from ..models import SpeechEncoder
from .losses import feature_penalty, masked_label_loss


class HubertObjective(nn.Module):
    def __init__(self, model: SpeechEncoder, labels: LabelStore, crop_starts: dict | None = None,
                 mask_prob: float = 0.8, mask_length: int = 10, min_masks: int = 2,
                 masked_weight: float = 1.0, unmasked_weight: float = 0.0,
                 feature_penalty_weight: float = 10.0, temperature: float = 0.1) -> None:
        super().__init__()
        if not hasattr(model, "label_head"):
            raise ValueError("HuBERT-style pretraining needs a model with a label_head (num_label_classes > 0)")
        self.model = model
        self.labels = labels
        self.crop_starts = crop_starts if crop_starts is not None else {}
        self.mask_prob, self.mask_length, self.min_masks = mask_prob, mask_length, min_masks
        self.masked_weight, self.unmasked_weight = masked_weight, unmasked_weight
        self.feature_penalty_weight = feature_penalty_weight
        self.temperature = temperature

    def input_wave(self, batch: dict, rng: np.random.Generator) -> Tensor:
        """The waveform the model sees (WavLM overrides: noisy / mixed)."""
        return batch["wave"]

    def targets(self, batch: dict, T: int, frame_lengths: Tensor) -> Tensor:
        idx = [int(i) for i in batch["indices"]]
        starts = [int(self.crop_starts.get(i, 0)) for i in idx]
        frame_rate = 16000 / self.model.stride
        t = self.labels.targets(idx, starts, T, frame_rate, frame_lengths.tolist())
        return torch.from_numpy(t).to(batch["wave"].device)

    def forward(self, batch: dict, chunk: tuple[int, int], step: int) -> tuple[Tensor, dict]:
        model = self.model
        rng: np.random.Generator = batch.get("rng") or np.random.default_rng(step)
        lengths = batch["lengths"].to(batch["wave"].device)
        frame_lengths = model.frame_lengths(lengths)
        T = int(frame_lengths.max())
        m = compute_mask_indices((lengths.shape[0], T), frame_lengths, self.mask_prob, self.mask_length,
                                 min_masks=self.min_masks, require_same_masks=True, rng=rng)
        mask = torch.from_numpy(m).to(lengths.device)
        wave = self.input_wave(batch, rng)
        out = model(wave, lengths, chunk_frames=chunk[0], left_chunks=chunk[1], mask_time_indices=mask,
                    output_hidden_states=True)
        logits = model.label_head(out.hidden_states[-1], self.temperature)  # (B, T, C)
        targets = self.targets(batch, T, frame_lengths)
        l_pred, metrics = masked_label_loss(logits, targets, mask, self.masked_weight, self.unmasked_weight)
        l_f = feature_penalty(out.extra["conv_features"], frame_lengths)
        loss = l_pred + self.feature_penalty_weight * l_f
        metrics.update(pred_loss=float(l_pred.detach()), feature_pen=float(l_f.detach()),
                       masked_frac=float(mask.sum()) / float(frame_lengths.sum()))
        return loss, metrics
