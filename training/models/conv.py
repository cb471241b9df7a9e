"""Convolutional parts: the feature encoder (all families) and wav2vec 1's
causal context network (aggregator).

Layout of tensors here is channels-first (B, C, T), as in the published code.
In training, the feature encoder computes the same stack time-major instead
(`ConvFeatureEncoder.forward_time_major`): with only per-frame LayerNorms and
no GroupNorm, channels-first spends most of its time in transposes around the
norms and in strided GELU/conv backward; time-major memory needs none of them.
Same weights, same outputs to float rounding.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .streaming import StateSpec, StreamContext


class GradMultiply(torch.autograd.Function):
    """Scale the gradient flowing into the conv encoder (fairseq feature_grad_mult)."""

    @staticmethod
    def forward(ctx, x: Tensor, scale: float) -> Tensor:  # type: ignore[override]
        ctx.scale = scale
        return x.clone()

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        return grad * ctx.scale, None


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over channels at each frame of a (B, C, T) tensor: streamable."""

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


def _activation(name: str) -> nn.Module:
    return {"gelu": nn.GELU(), "relu": nn.ReLU()}[name]


class ConvBlock(nn.Module):
    """conv -> norm -> activation, with optional causal left padding and a cache.

    With causal padding of (kernel - stride) zeros, n*stride input steps give
    exactly n outputs and no output sees input beyond its own hop; the stream
    form keeps the last (kernel - stride) input steps as its state instead.
    """

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, norm: str, bias: bool,
                 activation: str, causal: bool, name: str) -> None:
        super().__init__()
        self.kernel, self.stride, self.causal, self.cin = kernel, stride, causal, cin
        self.state_name = name
        self.conv = nn.Conv1d(cin, cout, kernel, stride=stride, bias=bias)
        if norm == "group":  # per channel over all time (fairseq "default" mode, layer 0)
            self.layer_norm: nn.Module | None = nn.GroupNorm(cout, cout, affine=True)
        elif norm == "group1":  # wav2vec 1: one group over channels x time
            self.layer_norm = nn.GroupNorm(1, cout, affine=True)
        elif norm == "layer":
            self.layer_norm = ChannelLayerNorm(cout)
        else:
            self.layer_norm = None
        self.activation = _activation(activation)
        nn.init.kaiming_normal_(self.conv.weight)

    @property
    def pad(self) -> int:
        return max(self.kernel - self.stride, 0) if self.causal else 0

    def _post(self, x: Tensor) -> Tensor:
        if self.layer_norm is not None:
            if isinstance(self.layer_norm, nn.GroupNorm):
                x = self.layer_norm(x.float()).to(x.dtype)
            else:
                x = self.layer_norm(x)
        return self.activation(x)

    def forward(self, x: Tensor) -> Tensor:
        if self.pad:
            x = F.pad(x, (self.pad, 0))
        return self._post(self.conv(x))

    def state_specs(self) -> list[StateSpec]:
        return [StateSpec(self.state_name, (self.cin, self.pad))] if self.pad else []

    def stream(self, x: Tensor, states: list[Tensor], ctx: StreamContext) -> tuple[Tensor, list[Tensor]]:
        if not self.pad:
            return self._post(self.conv(x)), []
        full = torch.cat([states[0], x], dim=2)
        new_cache = full[:, :, full.shape[2] - self.pad:]
        return self._post(self.conv(full)), [new_cache]


class ConvFeatureEncoder(nn.Module):
    """Raw waveform (B, L) -> conv features (B, C, T). HF: `feature_extractor`."""

    def __init__(self, layers: list[tuple[int, int, int]], mode: str, bias: bool,
                 activation: str, causal: bool, log_compression: bool = False,
                 prefix: str = "fe") -> None:
        super().__init__()
        blocks = []
        cin = 1
        for i, (cout, k, s) in enumerate(layers):
            if mode == "group":
                norm = "group" if i == 0 else "none"
            else:
                norm = mode
            blocks.append(ConvBlock(cin, cout, k, s, norm, bias, activation, causal, f"{prefix}{i}"))
            cin = cout
        self.conv_layers = nn.ModuleList(blocks)
        self.log_compression = log_compression
        self.time_major = True  # training layout switch (benchmarks compare both)

    @property
    def supports_time_major(self) -> bool:
        """Per-frame norms only (GroupNorm normalises over time: kept channels-first)."""
        return all(b.layer_norm is None or isinstance(b.layer_norm, ChannelLayerNorm)
                   for b in self.conv_layers)

    def forward(self, wave: Tensor) -> Tensor:
        """(B, L) -> (B, C, T). Training takes the time-major path when it can;
        evaluation and export keep the published channels-first graph."""
        if self.training and self.time_major and self.supports_time_major:
            return self.forward_time_major(wave)
        x = wave.unsqueeze(1)
        for block in self.conv_layers:
            x = block(x)
        if self.log_compression:
            x = torch.log(x.abs() + 1)
        return x

    def forward_time_major(self, wave: Tensor) -> Tensor:
        """The same stack with time-major memory: each Conv1d runs as a Conv2d
        over (B, C, 1, T) in channels-last memory, which is (B, T, C) in
        memory, so the LayerNorm over channels is a view, not a transpose.
        Returns a (B, C, T) view of (B, T, C) memory: `.transpose(1, 2)` is free."""
        x = wave[:, None, None, :].contiguous(memory_format=torch.channels_last)
        for b in self.conv_layers:
            T = x.shape[-1]
            # symmetric conv padding, then drop the outputs that saw right padding:
            # equals the causal left pad, and keeps channels-last memory (F.pad would not)
            y = F.conv2d(x, b.conv.weight.unsqueeze(2), b.conv.bias, stride=(1, b.stride), padding=(0, b.pad))
            n = (T + b.pad - b.kernel) // b.stride + 1
            if y.shape[-1] != n:
                y = y[..., :n]
            y = y.permute(0, 2, 3, 1)  # (B, 1, T, C): a view
            if b.layer_norm is not None:
                ln = b.layer_norm
                y = F.layer_norm(y, (y.shape[-1],), ln.weight, ln.bias, ln.eps)  # type: ignore[arg-type]
            x = b.activation(y).permute(0, 3, 1, 2)
        out = x.squeeze(2)
        if self.log_compression:
            out = torch.log(out.abs() + 1)
        return out

    def state_specs(self) -> list[StateSpec]:
        return [s for b in self.conv_layers for s in b.state_specs()]

    def stream(self, wave: Tensor, states: list[Tensor], ctx: StreamContext) -> tuple[Tensor, list[Tensor]]:
        x = wave.unsqueeze(1)
        new: list[Tensor] = []
        i = 0
        for block in self.conv_layers:
            n = len(block.state_specs())
            x, s = block.stream(x, states[i:i + n], ctx)
            new += s
            i += n
        if self.log_compression:
            x = torch.log(x.abs() + 1)
        return x, new

    def output_lengths(self, lengths: Tensor) -> Tensor:
        for b in self.conv_layers:
            lengths = torch.div(lengths + b.pad - b.kernel, b.stride, rounding_mode="floor") + 1
        return lengths

    @property
    def receptive_field(self) -> int:
        rf, jump = 1, 1
        for b in self.conv_layers:
            rf += (b.kernel - 1) * jump
            jump *= b.stride
        return rf


class AggregatorBlock(nn.Module):
    """Left-padded causal conv (stride 1) -> norm -> activation (wav2vec 1)."""

    def __init__(self, cin: int, cout: int, kernel: int, norm: str, activation: str,
                 zero_pad: bool, name: str) -> None:
        super().__init__()
        self.kernel, self.cin, self.zero_pad, self.state_name = kernel, cin, zero_pad, name
        self.conv = nn.Conv1d(cin, cout, kernel, bias=True)
        self.layer_norm: nn.Module = nn.GroupNorm(1, cout) if norm == "group1" else ChannelLayerNorm(cout)
        self.activation = _activation(activation)

    def _post(self, x: Tensor) -> Tensor:
        return self.activation(self.layer_norm(x))

    def forward(self, x: Tensor) -> Tensor:
        p = self.kernel - 1
        if p:
            if self.zero_pad:
                x = F.pad(x, (p, 0))
            else:  # fairseq ReplicationPad1d((k-1, 0)): repeat the first frame
                x = torch.cat([x[:, :, :1].expand(-1, -1, p), x], dim=2)
        return self._post(self.conv(x))

    def state_specs(self) -> list[StateSpec]:
        return [StateSpec(self.state_name, (self.cin, self.kernel - 1))] if self.kernel > 1 else []

    def stream(self, x: Tensor, states: list[Tensor], ctx: StreamContext) -> tuple[Tensor, list[Tensor]]:
        p = self.kernel - 1
        if not p:
            return self._post(self.conv(x)), []
        cache = states[0]
        if not self.zero_pad:
            # The first chunk of a stream replicates its first frame, as offline.
            first = (ctx.frames_seen == 0).view(-1, 1, 1)
            cache = torch.where(first, x[:, :, :1].expand(-1, -1, p), cache)
        full = torch.cat([cache, x], dim=2)
        return self._post(self.conv(full)), [full[:, :, full.shape[2] - p:]]


class Aggregator(nn.Module):
    """wav2vec 1 context network g: Z -> C, causal, with scaled skip connections."""

    def __init__(self, cin: int, layers: list[tuple[int, int, int]], norm: str, activation: str,
                 zero_pad: bool, skip: bool, residual_scale: float) -> None:
        super().__init__()
        blocks, projs = [], []
        for i, (cout, k, _) in enumerate(layers):
            blocks.append(AggregatorBlock(cin, cout, k, norm, activation, zero_pad, f"agg{i}"))
            projs.append(nn.Conv1d(cin, cout, 1, bias=False) if (skip and cin != cout) else nn.Identity())
            cin = cout
        self.conv_layers = nn.ModuleList(blocks)
        self.residual_proj = nn.ModuleList(projs)
        self.skip = skip
        self.residual_scale = math.sqrt(residual_scale)

    def _combine(self, i: int, y: Tensor, residual: Tensor) -> Tensor:
        if not self.skip:
            return y
        return (y + self.residual_proj[i](residual)) * self.residual_scale

    def forward(self, x: Tensor) -> Tensor:
        for i, block in enumerate(self.conv_layers):
            x = self._combine(i, block(x), x)
        return x

    def state_specs(self) -> list[StateSpec]:
        return [s for b in self.conv_layers for s in b.state_specs()]

    def stream(self, x: Tensor, states: list[Tensor], ctx: StreamContext) -> tuple[Tensor, list[Tensor]]:
        new: list[Tensor] = []
        j = 0
        for i, block in enumerate(self.conv_layers):
            n = len(block.state_specs())
            y, s = block.stream(x, states[j:j + n], ctx)
            x = self._combine(i, y, x)
            new += s
            j += n
        return x, new
