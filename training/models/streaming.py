"""Shared pieces of the streaming contract: state specs and chunk masks.

Every module that keeps state between chunks declares it with `state_specs()`
(fixed shapes, batch axis first and implied) and implements
``stream(x, states, ctx) -> (y, new_states)``. The top-level encoder packs all
of them into one flat tuple, which is what ONNX export needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor


class StateSpec(NamedTuple):
    name: str
    shape: tuple[int, ...]  # without the batch axis
    dtype: torch.dtype = torch.float32


@dataclass
class StreamContext:
    """What every streaming module may need to know about the current step."""

    frames_seen: Tensor  # (B,) int64: output frames processed before this chunk
    chunk_frames: int
    left_chunks: int


def chunk_attention_mask(
    num_frames: int, chunk_frames: int, left_chunks: int, device: torch.device | None = None
) -> Tensor:
    """(T, T) bool, True where query i may attend key j.

    Frame i in chunk c = i // C sees chunks max(c - L, 0) .. c (WeNet's
    `subsequent_chunk_mask`). chunk_frames <= 0 means full attention;
    left_chunks < 0 means unlimited history.
    """
    idx = torch.arange(num_frames, device=device)
    if chunk_frames <= 0:
        return torch.ones(num_frames, num_frames, dtype=torch.bool, device=device)
    c = idx // chunk_frames
    allowed = c[None, :] <= c[:, None]
    if left_chunks >= 0:
        allowed = allowed & (c[None, :] >= c[:, None] - left_chunks)
    return allowed


def roll_cache(cache: Tensor, new: Tensor, dim: int) -> tuple[Tensor, Tensor]:
    """Concatenate cache and new along `dim`; return (full, last cache-length part)."""
    full = torch.cat([cache, new], dim=dim)
    keep = cache.shape[dim]
    if keep == 0:
        return full, cache
    return full, full.narrow(dim, full.shape[dim] - keep, keep)
