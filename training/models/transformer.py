"""Transformer context network of wav2vec 2.0 / HuBERT / WavLM.

Tensors are time-major per utterance: (B, T, D). Names follow Hugging Face
(`pos_conv_embed`, `layers.N.attention`, `feed_forward.intermediate_dense`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import SelfAttention
from .streaming import StateSpec, StreamContext


class WeightNormConv1d(nn.Module):
    """Grouped Conv1d with weight normalisation over dim=2 (one g per kernel tap).

    Kept as explicit (weight_g, weight_v) parameters rather than torch's
    parametrisation so that the graph exports plainly and both key spellings
    of published checkpoints map onto it.
    """

    def __init__(self, dim: int, kernel: int, groups: int) -> None:
        super().__init__()
        self.groups = groups
        self.weight_v = nn.Parameter(torch.empty(dim, dim // groups, kernel))
        nn.init.normal_(self.weight_v, mean=0.0, std=(4.0 / (kernel * dim)) ** 0.5)
        self.weight_g = nn.Parameter(self.weight_v.detach().norm(dim=(0, 1), keepdim=True))
        self.bias = nn.Parameter(torch.zeros(dim))

    def weight(self) -> Tensor:
        return self.weight_g * self.weight_v / self.weight_v.norm(dim=(0, 1), keepdim=True)

    def forward(self, x: Tensor) -> Tensor:  # (B, D, T) unpadded
        return F.conv1d(x, self.weight(), self.bias, groups=self.groups)


class PositionalConv(nn.Module):
    """x + GELU(conv(x)). Published: symmetric padding K//2 and the last output
    dropped (63 future frames for K=128). Causal: K-1 frames of left padding,
    streamed with a cache of the last K-1 input frames."""

    def __init__(self, dim: int, kernel: int, groups: int, causal: bool) -> None:
        super().__init__()
        self.conv = WeightNormConv1d(dim, kernel, groups)
        self.kernel, self.causal, self.dim = kernel, causal, dim

    def forward(self, x: Tensor) -> Tensor:
        xt = x.transpose(1, 2)
        if self.causal:
            y = self.conv(F.pad(xt, (self.kernel - 1, 0)))
        else:
            pad = self.kernel // 2
            y = self.conv(F.pad(xt, (pad, pad)))
            if self.kernel % 2 == 0:
                y = y[:, :, :-1]
        return F.gelu(y).transpose(1, 2)

    def state_specs(self) -> list[StateSpec]:
        return [StateSpec("pos_conv", (self.kernel - 1, self.dim))]

    def stream(self, x: Tensor, states: list[Tensor], ctx: StreamContext) -> tuple[Tensor, list[Tensor]]:
        full = torch.cat([states[0], x], dim=1)
        y = self.conv(full.transpose(1, 2))
        return F.gelu(y).transpose(1, 2), [full[:, full.shape[1] - (self.kernel - 1):]]


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int, activation_dropout: float, dropout: float) -> None:
        super().__init__()
        self.intermediate_dense = nn.Linear(dim, hidden)
        self.output_dense = nn.Linear(hidden, dim)
        self.activation_dropout, self.dropout = activation_dropout, dropout
        for lin in (self.intermediate_dense, self.output_dense):
            nn.init.normal_(lin.weight, std=0.02)
            nn.init.zeros_(lin.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = F.dropout(F.gelu(self.intermediate_dense(x)), self.activation_dropout, self.training)
        return F.dropout(self.output_dense(x), self.dropout, self.training)


class EncoderLayer(nn.Module):
    def __init__(self, index: int, dim: int, heads: int, ffn: int, layer_norm_first: bool,
                 dropout: float, attention_dropout: float, activation_dropout: float,
                 relative_bias: bool, num_buckets: int, max_distance: int) -> None:
        super().__init__()
        self.index = index
        self.attention = SelfAttention(dim, heads, attention_dropout, index, relative_bias,
                                       num_buckets, max_distance)
        self.layer_norm = nn.LayerNorm(dim)
        self.feed_forward = FeedForward(dim, ffn, activation_dropout, dropout)
        self.final_layer_norm = nn.LayerNorm(dim)
        self.layer_norm_first = layer_norm_first
        self.dropout = dropout

    def _block(self, x: Tensor, attend) -> Tensor:
        if self.layer_norm_first:
            x = x + F.dropout(attend(self.layer_norm(x)), self.dropout, self.training)
            return x + self.feed_forward(self.final_layer_norm(x))
        x = self.layer_norm(x + F.dropout(attend(x), self.dropout, self.training))
        return self.final_layer_norm(x + self.feed_forward(x))

    def forward(self, x: Tensor, allowed: Tensor | None, bias: Tensor | None) -> Tensor:
        return self._block(x, lambda h: self.attention(h, allowed, bias))

    def stream(self, x: Tensor, states: list[Tensor], ctx: StreamContext,
               bias: Tensor | None) -> tuple[Tensor, list[Tensor]]:
        new: list[Tensor] = []

        def attend(h: Tensor) -> Tensor:
            out, s = self.attention.stream(h, states, ctx, bias)
            new.extend(s)
            return out

        return self._block(x, attend), new


class TransformerEncoder(nn.Module):
    """pos_conv -> (post-LN: LayerNorm) -> layers -> (pre-LN: final LayerNorm)."""

    def __init__(self, cfg) -> None:
        super().__init__()
        D = cfg.hidden_size
        self.pos_conv_embed = PositionalConv(D, cfg.pos_conv_kernel, cfg.pos_conv_groups, cfg.pos_conv_causal)
        self.layer_norm = nn.LayerNorm(D)
        self.layers = nn.ModuleList(
            EncoderLayer(i, D, cfg.num_heads, cfg.ffn_size, cfg.layer_norm_first, cfg.dropout,
                         cfg.attention_dropout, cfg.activation_dropout, cfg.relative_bias,
                         cfg.num_buckets, cfg.max_distance)
            for i in range(cfg.num_layers)
        )
        self.layer_norm_first = cfg.layer_norm_first
        self.relative_bias = cfg.relative_bias
        self.dropout = cfg.dropout
        self.layerdrop = cfg.layerdrop

    def _pre(self, x: Tensor) -> Tensor:
        if not self.layer_norm_first:
            x = self.layer_norm(x)
        return F.dropout(x, self.dropout, self.training)

    def _finish(self, hidden: list[Tensor]) -> list[Tensor]:
        if self.layer_norm_first:
            hidden[-1] = self.layer_norm(hidden[-1])
        return hidden

    def forward(self, x: Tensor, allowed: Tensor | None, pad_mask: Tensor | None = None) -> list[Tensor]:
        """x: (B, T, D). Returns hidden states [input to layer 0, out of layer 1..N]
        (the last one after the final LayerNorm in pre-LN models)."""
        if pad_mask is not None:  # zero padded frames before the positional conv (as HF)
            x = x.masked_fill(pad_mask.unsqueeze(-1), 0.0)
        x = x + self.pos_conv_embed(x)
        x = self._pre(x)
        bias = None
        if self.relative_bias:
            T = x.shape[1]
            pos = torch.arange(T, device=x.device)
            bias = self.layers[0].attention.position_bias(pos[None, :] - pos[:, None])
        hidden = [x]
        for i, layer in enumerate(self.layers):
            # LayerDrop never drops layer 0 (it creates WavLM's bias; HF does the same).
            if self.training and i > 0 and self.layerdrop > 0 and torch.rand(()) < self.layerdrop:
                hidden.append(x)
                continue
            x = layer(x, allowed, bias)
            hidden.append(x)
        return self._finish(hidden)

    def state_specs(self, cache_frames: int) -> list[StateSpec]:
        specs = self.pos_conv_embed.state_specs()
        for i, layer in enumerate(self.layers):
            specs += layer.attention.state_specs(cache_frames, f"layer{i}")
        return specs

    def stream(self, x: Tensor, states: list[Tensor], ctx: StreamContext) -> tuple[list[Tensor], list[Tensor]]:
        pos_out, new = self.pos_conv_embed.stream(x, states[:1], ctx)
        x = self._pre(x + pos_out)
        bias = None
        cache = ctx.chunk_frames * max(ctx.left_chunks, 0)
        if self.relative_bias:
            # Distances are translation-invariant: query i of the chunk against
            # cache slot p (absolute offset p - cache) and new key j.
            q = torch.arange(ctx.chunk_frames, device=x.device)
            kpos = torch.arange(cache + ctx.chunk_frames, device=x.device) - cache
            bias = self.layers[0].attention.position_bias(kpos[None, :] - q[:, None])
        hidden = [x]
        j = 1
        for layer in self.layers:
            n = 2 if cache > 0 else 0
            x, s = layer.stream(x, states[j:j + n], ctx, bias)
            new += s
            j += n
            hidden.append(x)
        return self._finish(hidden), new


class FeatureProjection(nn.Module):
    """LayerNorm(conv_dim) -> Linear(conv_dim -> D) -> dropout. HF `feature_projection`."""

    def __init__(self, conv_dim: int, dim: int, dropout: float, use_layer_norm: bool = True) -> None:
        super().__init__()
        self.layer_norm = nn.LayerNorm(conv_dim) if use_layer_norm else nn.Identity()
        self.projection = nn.Linear(conv_dim, dim)
        self.dropout = dropout

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        normed = self.layer_norm(x)
        return F.dropout(self.projection(normed), self.dropout, self.training), normed
