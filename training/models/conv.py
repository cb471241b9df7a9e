"""Convolutional parts: the feature encoder (all families) and wav2vec 1's
causal context network (aggregator).

Layout of tensors in the offline form is channels-first (B, C, T), as in the
published code. In training, the feature encoder computes the same stack
time-major instead (`ConvFeatureEncoder.forward_time_major`): with only
per-frame LayerNorms and no GroupNorm, channels-first spends most of its time
in transposes around the norms and in strided GELU/conv backward; time-major
memory needs none of them. Same weights, same outputs to float rounding.

The streaming form (`stream`) is time-major too, with time-major caches
(B, pad, C), and runs each convolution as one matrix product over an unfolded
window (`_unfold_time_major`). A 320 ms chunk has only 32-1024 frames per
layer; there the transposes a channels-first LayerNorm needs and a Conv
kernel's set-up cost more than the arithmetic, and the second intra-op thread
barely helps (wav2vec's step measured 1.6x dearer than its offline pass per
audio second in ONNX Runtime; time-major, about 1.1x). The offline form keeps
Conv: over a whole utterance it is the faster kernel.
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


def _unfold_time_major(full: Tensor, kernel: int, stride: int, n: int) -> Tensor:
    """(B, kernel - stride + n*stride, C) -> (B, n, kernel*C): row t holds the
    ``kernel`` input frames of output t, oldest first (tap-major, channel-minor,
    which is `_weight_time_major`'s row order).

    One Gather with a constant index, not ``kernel`` slices and a concat: in a
    streaming step every node costs a fixed few microseconds, and the
    aggregator alone would need 33 of them.
    """
    B, T, C = full.shape
    if kernel % stride == 0:  # gather whole blocks of `stride` frames (a free view): m per output
        rows, step, width = full.reshape(B, T // stride, stride * C), 1, kernel // stride
    else:
        rows, step, width = full, stride, kernel
    if width == 1 and step == 1:
        return rows
    idx = torch.arange(n, device=full.device)[:, None] * step + torch.arange(width, device=full.device)[None, :]
    return rows.index_select(1, idx.reshape(-1)).reshape(B, n, kernel * C)  # one ONNX Gather on axis 1


def _weight_time_major(conv: nn.Conv1d) -> Tensor:
    """Conv1d weight (Cout, Cin, k) as the (k*Cin, Cout) matrix `_unfold_time_major` multiplies."""
    w = conv.weight
    return w.permute(2, 1, 0).reshape(w.shape[2] * w.shape[1], w.shape[0])


# Exported, a stride-1 layer whose window (kernel x input channels) is at least this wide runs
# as an ONNX Conv on a transposed view instead of an unfold and a product: the unfold copies
# the window of every output frame (32 rows x 13 taps x 512 channels = 852 KB for wav2vec
# large's widest aggregator layer), and ONNX Runtime's direct convolution does not. Measured
# on 320 ms steps (docs/bench.md): wav2vec-large step -6 % on two threads and -11 % on one,
# OpenVINO fp32 -2 % and bf16 -14 %; wav2vec-tiny's narrow layers (at most 7 x 256) as Conv
# cost 2-7 % on two threads (saved 2-4 % on one), so they keep the unfold.
CONV_OP_MIN_WINDOW = 2048


class TimeMajorConv(nn.Module):
    """The streaming form's convolution on time-major (B, T, C) input.

    Exported (ONNX), it is an unfold and one matrix product, the fast form in
    ONNX Runtime and OpenVINO for strided and narrow layers; a wide stride-1
    layer (``CONV_OP_MIN_WINDOW``) exports as Conv on a transposed view. In
    eager torch the unfold costs more than torch's own conv1d (wav2vec-tiny's
    torch step 1.5x slower), so eager torch runs conv1d on a transposed view;
    all forms are tested equal to the offline form.
    It holds no parameters (the block's ``conv`` does; checkpoints are
    unchanged); it is a module so that its nodes carry the block's name in an
    exported graph, which is how the int8 pass finds and keeps the conv stacks fp32.
    """

    def forward(self, conv: nn.Conv1d, full: Tensor, kernel: int, stride: int, n: int) -> Tensor:  # type: ignore[override]
        exporting = torch.compiler.is_exporting() or torch.onnx.is_in_onnx_export()
        if not exporting or (stride == 1 and kernel * full.shape[-1] >= CONV_OP_MIN_WINDOW):
            return F.conv1d(full.transpose(1, 2), conv.weight, conv.bias, stride=stride).transpose(1, 2)
        y = _unfold_time_major(full, kernel, stride, n) @ _weight_time_major(conv)
        return y if conv.bias is None else y + conv.bias


def _norm_time_major(norm: nn.Module | None, y: Tensor) -> Tensor:
    """The per-frame LayerNorm over the last axis of (B, T, C): no transposes."""
    if norm is None:
        return y
    if isinstance(norm, nn.GroupNorm):  # normalises over time: never in a streaming config, kept exact
        return norm(y.transpose(1, 2).float()).to(y.dtype).transpose(1, 2)
    return F.layer_norm(y, norm.normalized_shape, norm.weight, norm.bias, norm.eps)


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
        self.conv_tm = TimeMajorConv()
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
        return [StateSpec(self.state_name, (self.pad, self.cin))] if self.pad else []

    def stream(self, x: Tensor, states: list[Tensor], ctx: StreamContext) -> tuple[Tensor, list[Tensor]]:
        """Time-major: x (B, n*stride, Cin) -> (B, n, Cout); the cache holds the last ``pad`` input frames."""
        full = torch.cat([states[0], x], dim=1) if self.pad else x
        y = self.conv_tm(self.conv, full, self.kernel, self.stride, x.shape[1] // self.stride)
        y = self.activation(_norm_time_major(self.layer_norm, y))
        return y, ([full[:, full.shape[1] - self.pad:]] if self.pad else [])


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
        """(B, L) -> time-major (B, T, C) features and the new caches."""
        x = wave.unsqueeze(2)
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
        self.conv_tm = TimeMajorConv()
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
        return [StateSpec(self.state_name, (self.kernel - 1, self.cin))] if self.kernel > 1 else []

    def stream(self, x: Tensor, states: list[Tensor], ctx: StreamContext) -> tuple[Tensor, list[Tensor]]:
        """Time-major: x (B, T, Cin) -> (B, T, Cout)."""
        p = self.kernel - 1
        full, new = x, []
        if p:
            cache = states[0]
            if not self.zero_pad:
                # The first chunk of a stream replicates its first frame, as offline.
                first = (ctx.frames_seen == 0).view(-1, 1, 1)
                cache = torch.where(first, x[:, :1], cache)  # broadcasts over the p frames
            full = torch.cat([cache, x], dim=1)
            new = [full[:, full.shape[1] - p:]]
        y = self.conv_tm(self.conv, full, self.kernel, 1, x.shape[1])
        return self.activation(_norm_time_major(self.layer_norm, y)), new


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
        self.proj_tm = TimeMajorConv()  # the 1x1 projections on time-major input (stream)
        self.skip = skip
        self.residual_scale = math.sqrt(residual_scale)

    def _combine(self, i: int, y: Tensor, residual: Tensor, time_major: bool = False) -> Tensor:
        if not self.skip:
            return y
        proj = self.residual_proj[i]
        if time_major and not isinstance(proj, nn.Identity):
            residual = self.proj_tm(proj, residual, 1, 1, residual.shape[1])
        else:
            residual = proj(residual)
        return (y + residual) * self.residual_scale

    def forward(self, x: Tensor) -> Tensor:
        for i, block in enumerate(self.conv_layers):
            x = self._combine(i, block(x), x)
        return x

    def state_specs(self) -> list[StateSpec]:
        return [s for b in self.conv_layers for s in b.state_specs()]

    def stream(self, x: Tensor, states: list[Tensor], ctx: StreamContext) -> tuple[Tensor, list[Tensor]]:
        """Time-major: (B, T, C) -> (B, T, C)."""
        new: list[Tensor] = []
        j = 0
        for i, block in enumerate(self.conv_layers):
            n = len(block.state_specs())
            y, s = block.stream(x, states[j:j + n], ctx)
            x = self._combine(i, y, x, time_major=True)
            new += s
            j += n
        return x, new
