"""Shared pieces of the streaming contract: state specs and chunk masks.

Every module that keeps state between chunks declares it with `state_specs()`
(fixed shapes, batch axis first and implied) and implements
``stream(x, states, ctx) -> (y, new_states)``. The top-level encoder packs all
of them into one flat tuple, which is what ONNX export needs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

if TYPE_CHECKING:
    from .encoder import SpeechEncoder


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
    left_chunks < 0 means unlimited history. For example, 6 frames in chunks
    of 2 with 1 left chunk (rows are queries, columns keys, 1 = may attend):

        >>> chunk_attention_mask(6, 2, 1).long()
        tensor([[1, 1, 0, 0, 0, 0],
                [1, 1, 0, 0, 0, 0],
                [1, 1, 1, 1, 0, 0],
                [1, 1, 1, 1, 0, 0],
                [0, 0, 1, 1, 1, 1],
                [0, 0, 1, 1, 1, 1]])
    """
    idx = torch.arange(num_frames, device=device)
    if chunk_frames <= 0:
        return torch.ones(num_frames, num_frames, dtype=torch.bool, device=device)
    c = idx // chunk_frames
    allowed = c[None, :] <= c[:, None]
    if left_chunks >= 0:
        allowed = allowed & (c[None, :] >= c[:, None] - left_chunks)
    return allowed


@dataclass
class StreamedOutput:
    """The outputs of every chunk of `stream_chunks`, joined along time."""

    features: Tensor  # (B, n * C, D)
    logits: Tensor | None  # (B, n * C, V) with a CTC head
    codes: Tensor | None  # (B, n * C, G) vq-wav2vec
    state: tuple[Tensor, ...]  # the state after the last chunk


def stream_chunks(model: "SpeechEncoder", wave: Tensor, chunking: tuple[int, int] | None = None,
                  state: tuple[Tensor, ...] | None = None, steps: int | None = None) -> StreamedOutput:
    """The reference chunk loop (WeNet's `forward_chunk_by_chunk`): feed wave
    (B, L) through `model.step` chunk by chunk, the last chunk zero-padded,
    and join the outputs. `chunking` = (chunk_frames, left_chunks) runs the
    model at that latency for this call only; `state` continues a stream;
    `steps` feeds exactly that many chunks (zeros past the end of `wave`).
    Frames past ceil(length / stride) of a row are padding."""
    if chunking is not None:
        model = model.with_chunking(*chunking)
    cs = model.chunk_samples
    n = math.ceil(wave.shape[1] / cs) if steps is None else steps
    wave = F.pad(wave, (0, max(n * cs - wave.shape[1], 0)))
    if state is None:
        state = model.init_state(wave.shape[0], device=wave.device)
    feats, logits, codes = [], [], []
    for i in range(n):
        out = model.step_outputs(wave[:, i * cs:(i + 1) * cs], state)
        state = out.state
        feats.append(out.features)
        if out.logits is not None:
            logits.append(out.logits)
        if out.codes is not None:
            codes.append(out.codes)
    return StreamedOutput(
        features=torch.cat(feats, 1),
        logits=torch.cat(logits, 1) if logits else None,
        codes=torch.cat(codes, 1) if codes else None,
        state=state,
    )
