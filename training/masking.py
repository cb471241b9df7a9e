"""Span masking (fairseq `compute_mask_indices`, docs/models.md, span masking) and the
dynamic-chunk sampler used by every training objective."""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
from torch import Tensor


def compute_mask_indices(
    shape: tuple[int, int],
    lengths: Tensor | np.ndarray | None,
    mask_prob: float,
    mask_length: int,
    min_masks: int = 0,
    require_same_masks: bool = True,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """(B, T) bool mask of time spans, fairseq semantics.

    mask_prob is p*M (the config value, e.g. 0.65 for wav2vec 2.0): per
    utterance of length sz, num_mask = max(min_masks, int(mask_prob*sz/M + U)),
    starts drawn distinct from [0, sz - M), spans may overlap (so the masked
    fraction is below mask_prob). With require_same_masks every row is cut to
    the batch's minimum masked count by randomly unmasking frames.
    """
    rng = rng or np.random.default_rng()
    B, T = shape
    mask = np.zeros((B, T), dtype=bool)
    if lengths is None:
        sizes = np.full(B, T)
    else:
        sizes = np.asarray(lengths.cpu() if isinstance(lengths, Tensor) else lengths).astype(int)
    if mask_prob <= 0:
        return mask
    for b in range(B):
        sz = int(sizes[b])
        if sz <= mask_length:
            # too short for a whole span: mask a proportional prefix-free handful of frames
            continue
        num = int(mask_prob * sz / float(mask_length) + rng.random())
        num = max(min_masks, num)
        num = min(num, sz - mask_length)
        if num <= 0:
            continue
        starts = rng.choice(sz - mask_length, num, replace=False)
        idx = (starts[:, None] + np.arange(mask_length)[None, :]).reshape(-1)
        mask[b, idx[idx < sz]] = True
    if require_same_masks and B > 1:
        counts = mask.sum(1)
        target = counts[counts > 0].min() if (counts > 0).any() else 0
        for b in range(B):
            extra = int(counts[b] - target)
            if extra > 0:
                on = np.flatnonzero(mask[b])
                mask[b, rng.choice(on, extra, replace=False)] = False
    return mask


def compute_channel_mask(batch: int, dim: int, mask_prob: float, mask_length: int,
                         rng: np.random.Generator | None = None) -> np.ndarray:
    """(B, D) bool: the same span routine on the channel axis (fine-tuning)."""
    return compute_mask_indices((batch, dim), None, mask_prob, mask_length, 0, False, rng)


@dataclass
class ChunkSampler:
    """Dynamic chunk training (WeNet): per batch draw a chunk size and a left
    context, or full context with probability `full_context_prob`, so one model
    serves several latencies."""

    chunk_choices: tuple[int, ...] = (4, 8, 16, 32)
    left_choices: tuple[int, ...] = (1, 2, 4, 8)
    full_context_prob: float = 0.1
    enabled: bool = True

    def sample(self, rnd: random.Random, default: tuple[int, int]) -> tuple[int, int]:
        if not self.enabled:
            return default
        if rnd.random() < self.full_context_prob:
            return 0, -1
        return rnd.choice(self.chunk_choices), rnd.choice(self.left_choices)
