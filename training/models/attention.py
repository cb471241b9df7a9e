"""Multi-head self-attention with chunk masks, K/V caches, and WavLM's gated
relative position bias. One module for all three transformer families: WavLM
only switches on the gate (and layer 0 owns the bias table).

Parameter names follow Hugging Face (`q_proj`, `gru_rel_pos_linear`, ...), so
importing weights is a rename of prefixes only.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .streaming import StateSpec, StreamContext


def relative_position_bucket(relative: Tensor, num_buckets: int, max_distance: int) -> Tensor:
    """T5-style bidirectional buckets of delta = key - query (WavLM, docs/models.md)."""
    half = num_buckets // 2
    buckets = (relative > 0).long() * half
    rel = relative.abs()
    max_exact = half // 2
    is_small = rel < max_exact
    large = torch.log(rel.float().clamp(min=1) / max_exact) / math.log(max_distance / max_exact)
    large = (max_exact + large * (half - max_exact)).long()
    large = torch.clamp(large, max=half - 1)
    return buckets + torch.where(is_small, rel, large)


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float, layer_index: int,
                 relative_bias: bool = False, num_buckets: int = 320, max_distance: int = 800) -> None:
        super().__init__()
        self.dim, self.heads, self.head_dim = dim, heads, dim // heads
        self.scaling = self.head_dim ** -0.5
        self.dropout = dropout
        self.layer_index = layer_index
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        self.relative_bias = relative_bias
        self.num_buckets, self.max_distance = num_buckets, max_distance
        if relative_bias:
            self.gru_rel_pos_linear = nn.Linear(self.head_dim, 8)
            self.gru_rel_pos_const = nn.Parameter(torch.ones(1, heads, 1, 1))
            if layer_index == 0:
                self.rel_attn_embed = nn.Embedding(num_buckets, heads)
                nn.init.xavier_normal_(self.rel_attn_embed.weight)
        for lin in (self.q_proj, self.k_proj, self.v_proj, self.out_proj):
            nn.init.normal_(lin.weight, std=0.02)
            nn.init.zeros_(lin.bias)

    # -- WavLM relative bias --------------------------------------------------
    def position_bias(self, relative: Tensor) -> Tensor:
        """(Q, K) key-minus-query distances -> (H, Q, K) un-gated bias (layer 0 only)."""
        b = relative_position_bucket(relative, self.num_buckets, self.max_distance)
        return self.rel_attn_embed(b).permute(2, 0, 1)

    def _gate(self, x: Tensor) -> Tensor:
        """(B, Q, D) layer input -> (B, H, Q, 1) gate, from the query frame alone (causal)."""
        B, Q, _ = x.shape
        xh = x.view(B, Q, self.heads, self.head_dim).permute(0, 2, 1, 3)
        proj = self.gru_rel_pos_linear(xh).view(B, self.heads, Q, 2, 4).sum(-1)
        a, b = torch.sigmoid(proj).chunk(2, dim=-1)
        return a * (b * self.gru_rel_pos_const - 1.0) + 2.0

    # -- core -------------------------------------------------------------------
    def _split(self, t: Tensor) -> Tensor:
        B, T, _ = t.shape
        return t.view(B, T, self.heads, self.head_dim).transpose(1, 2)

    def _attend(self, x: Tensor, q: Tensor, k: Tensor, v: Tensor, allowed: Tensor | None,
                bias: Tensor | None) -> Tensor:
        scores = torch.matmul(q * self.scaling, k.transpose(-1, -2))  # (B, H, Q, K)
        if bias is not None:
            scores = scores + self._gate(x) * bias.unsqueeze(0)
        if allowed is not None:
            scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
        probs = torch.softmax(scores.float(), dim=-1).to(q.dtype)
        probs = F.dropout(probs, p=self.dropout, training=self.training)
        out = torch.matmul(probs, v).transpose(1, 2).reshape(x.shape[0], x.shape[1], self.dim)
        return self.out_proj(out)

    def forward(self, x: Tensor, allowed: Tensor | None = None, bias: Tensor | None = None) -> Tensor:
        """x: (B, T, D); allowed: broadcastable to (B, H, T, T) bool; bias: (H, T, T)."""
        q, k, v = self._split(self.q_proj(x)), self._split(self.k_proj(x)), self._split(self.v_proj(x))
        return self._attend(x, q, k, v, allowed, bias)

    # -- streaming ------------------------------------------------------------------
    def state_specs(self, cache_frames: int, name: str) -> list[StateSpec]:
        if cache_frames <= 0:
            return []
        shape = (self.heads, cache_frames, self.head_dim)
        return [StateSpec(f"{name}_k", shape), StateSpec(f"{name}_v", shape)]

    def stream(self, x: Tensor, states: list[Tensor], ctx: StreamContext,
               bias: Tensor | None) -> tuple[Tensor, list[Tensor]]:
        """One chunk x: (B, C, D). The cache holds the keys/values of the last
        L*C frames; positions not yet filled (frames_seen < L*C) are masked."""
        q, k, v = self._split(self.q_proj(x)), self._split(self.k_proj(x)), self._split(self.v_proj(x))
        if not states:
            return self._attend(x, q, k, v, None, bias), []
        ck, cv = states
        cache = ck.shape[2]
        k_all = torch.cat([ck, k], dim=2)
        v_all = torch.cat([cv, v], dim=2)
        pos = torch.arange(cache, device=x.device)
        valid_cache = (ctx.frames_seen.view(-1, 1) - cache + pos.view(1, -1)) >= 0  # (B, cache)
        valid_new = torch.ones(x.shape[0], x.shape[1], dtype=torch.bool, device=x.device)
        allowed = torch.cat([valid_cache, valid_new], dim=1).view(x.shape[0], 1, 1, -1)
        out = self._attend(x, q, k_all, v_all, allowed, bias)
        n = k_all.shape[2]
        return out, [k_all[:, :, n - cache:], v_all[:, :, n - cache:]]
