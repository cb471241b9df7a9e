"""HuBERT objective (docs/pretraining.md): masked prediction of k-means labels.

* Span masking with mask_prob 0.80 (p = 8%), M = 10, min_masks 2, rows
  equalised (fairseq's default `require_same_masks`); masked frames get the
  model's mask embedding; the Transformer runs under the batch's streaming
  chunk mask (dynamic chunk training).
* Logits: cos(final_proj(o_t), e_c) / 0.1 over all label embeddings (this
  objective's head, `HubertHead`); classes are k-means labels + 4 (fairseq dictionary
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
from torch import Tensor

from ..labels import LabelStore
from ..masking import compute_mask_indices
from ..models import SpeechEncoder
from .base import Objective
from .heads import HubertHead
from .losses import feature_penalty, masked_label_loss
from .settings import HubertSettings


class HubertObjective(Objective):
    heads: HubertHead

    def __init__(self, model: SpeechEncoder, labels: LabelStore, crop_starts: dict | None = None,
                 settings: HubertSettings = HubertSettings(), heads: HubertHead | None = None) -> None:
        c = model.config
        if heads is None:
            if c.num_label_classes <= 0:
                raise ValueError("HuBERT-style pretraining needs label classes (config.num_label_classes > 0)")
            heads = HubertHead(c.hidden_size, c.final_dim, c.num_label_classes)
        super().__init__(model, heads)
        self.settings = settings
        self.labels = labels
        self.crop_starts = crop_starts if crop_starts is not None else {}

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
        model, s = self.model, self.settings
        rng: np.random.Generator = batch.get("rng") or np.random.default_rng(step)
        lengths = batch["lengths"].to(batch["wave"].device)
        frame_lengths = model.frame_lengths(lengths)
        T = int(frame_lengths.max())
        m = compute_mask_indices((lengths.shape[0], T), frame_lengths, s.mask_prob, s.mask_length,
                                 min_masks=s.min_masks, require_same_masks=True, rng=rng)
        mask = torch.from_numpy(m).to(lengths.device)
        wave = self.input_wave(batch, rng)
        out = model(wave, lengths, chunk_frames=chunk[0], left_chunks=chunk[1], mask_time_indices=mask,
                    output_hidden_states=True)
        logits = self.heads(out.hidden_states[-1], s.temperature)  # (B, T, C)
        targets = self.targets(batch, T, frame_lengths)
        l_pred, metrics = masked_label_loss(logits, targets, mask, s.masked_weight, s.unmasked_weight)
        l_f = feature_penalty(out.conv_features, frame_lengths)
        loss = l_pred + s.feature_penalty_weight * l_f
        metrics.update(pred_loss=float(l_pred.detach()), feature_pen=float(l_f.detach()),
                       masked_frac=float(mask.sum()) / float(frame_lengths.sum()))
        return loss, metrics
