"""The one encoder contract shared by all five families.

    model.stride, model.chunk_samples
    out = model(wave, lengths)                        # offline, chunk-masked
    state = model.init_state(batch)
    features, logits, state = model.step(samples, state)   # streaming
    view = model.with_chunking(chunk_frames, left_chunks)  # another latency, same weights

`SpeechEncoder` implements the contract once: waveform preparation, the rule
for partial chunks, output lengths, state packing, the frame counter and the
CTC head. The encoder is the backbone plus an optional CTC head; the
pretraining heads belong to the objectives (training/objectives/heads.py).
Two subclasses supply only the frame computation:
`TransformerEncoderModel` (wav2vec 2.0, HuBERT, WavLM) and
`ConvContextModel` (wav2vec, vq-wav2vec).

Rule for the last partial chunk: the streaming runtime zero-pads it to a whole
chunk. The offline form does the same (it zero-pads every utterance to whole
chunks), so both see the same zeros; of the frames of the padded chunk only
the first ceil(samples / stride) are real, and `lengths` says so.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import ModelConfig
from .conv import Aggregator, ConvFeatureEncoder, GradMultiply
from .quantizers import GumbelVectorQuantizer, KmeansVectorQuantizer, QuantizerOutput
from .streaming import StateSpec, StreamContext, chunk_attention_mask
from .transformer import FeatureProjection, TransformerEncoder


@dataclass
class EncoderOutput:
    features: Tensor  # (B, T, D) from config.feature_layer
    lengths: Tensor  # (B,) valid frames
    logits: Tensor | None = None  # (B, T, V) when a CTC head is configured
    hidden_states: list[Tensor] | None = None  # every layer, on request
    codes: Tensor | None = None  # (B, T, G) vq-wav2vec
    # what the pretraining objectives read besides the features:
    conv_features: Tensor | None = None  # (B, T, C) conv encoder output (z for wav2vec 1)
    norm_features: Tensor | None = None  # (B, T, C) LayerNorm'ed conv features (wav2vec 2.0 quantiser input)
    targets: Tensor | None = None  # (B, T, C) wav2vec 1 prediction targets (z, or the quantised z)
    quantized: QuantizerOutput | None = None  # vq-wav2vec: the quantiser's output (perplexities, loss)


@dataclass
class StepOutput:
    """What one streaming chunk gives (`step_outputs`)."""

    features: Tensor  # (B, C, D) from config.feature_layer
    logits: Tensor | None  # (B, C, V) with a CTC head
    codes: Tensor | None  # (B, C, G) vq-wav2vec
    state: tuple[Tensor, ...]  # the state for the next chunk


@dataclass
class FrameOutputs:
    """What a subclass's offline frame computation returns (untrimmed)."""

    hidden: list[Tensor]  # every layer, (B, T', D)
    conv_features: Tensor | None = None
    norm_features: Tensor | None = None
    targets: Tensor | None = None
    quantized: QuantizerOutput | None = None


class SpeechEncoder(nn.Module):
    """Base class: the streaming contract, family-independent."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        if config.vocab:
            self.lm_head: nn.Linear | None = nn.Linear(config.feature_dim, len(config.vocab))
            nn.init.xavier_uniform_(self.lm_head.weight)
            nn.init.zeros_(self.lm_head.bias)
        else:
            self.lm_head = None

    # -- geometry ------------------------------------------------------------------
    @property
    def stride(self) -> int:
        """Samples per output frame (320 for transformers, 160 for wav2vec 1)."""
        return self.config.stride

    @property
    def chunk_frames(self) -> int:
        return self.config.chunk_frames

    @property
    def left_chunks(self) -> int:
        return self.config.left_chunks

    @property
    def chunk_samples(self) -> int:
        return self.config.chunk_frames * self.stride

    def with_chunking(self, chunk_frames: int, left_chunks: int) -> "SpeechEncoder":
        """This model at another latency: a view that shares every parameter
        (training it trains this model) and has its own config. This model's
        config is left as it is, so what is saved is what was trained."""
        if (chunk_frames, left_chunks) == (self.config.chunk_frames, self.config.left_chunks):
            return self
        view = copy.copy(self)  # shallow: the same parameter and submodule dicts
        view.config = self.config.with_chunking(chunk_frames, left_chunks)
        return view

    def add_ctc_head(self, vocab: list[str] | tuple[str, ...]) -> None:
        """A fresh CTC head over `vocab`; the model's config gets the vocabulary."""
        self.config = self.config.replace(vocab=tuple(vocab))
        p = next(self.parameters())
        self.lm_head = nn.Linear(self.config.feature_dim, len(vocab)).to(p.device)
        nn.init.xavier_uniform_(self.lm_head.weight)
        nn.init.zeros_(self.lm_head.bias)

    @property
    def emits_codes(self) -> bool:
        """Whether `step` returns codes (vq-wav2vec's quantiser indices)."""
        return False

    # -- offline -----------------------------------------------------------------------
    def frame_lengths(self, lengths: Tensor) -> Tensor:
        if self.config.conv_padding == "causal":
            return torch.div(lengths + self.stride - 1, self.stride, rounding_mode="floor")
        return self._conv_output_lengths(lengths).clamp(min=0)

    def _conv_output_lengths(self, lengths: Tensor) -> Tensor:
        return self.feature_extractor.output_lengths(lengths)  # type: ignore[attr-defined]

    def _prepare(self, wave: Tensor, lengths: Tensor | None, chunk_frames: int) -> tuple[Tensor, Tensor]:
        if wave.dim() == 1:
            wave = wave.unsqueeze(0)
        B, L = wave.shape
        if lengths is None:
            lengths = torch.full((B,), L, dtype=torch.long, device=wave.device)
        lengths = lengths.to(wave.device)
        valid = torch.arange(L, device=wave.device)[None, :] < lengths[:, None]
        if self.config.normalize_waveform:  # utterance-level (published LARGE); not streamable
            n = lengths.clamp(min=1).unsqueeze(1).to(wave.dtype)
            mean = (wave * valid).sum(1, keepdim=True) / n
            var = (((wave - mean) * valid) ** 2).sum(1, keepdim=True) / n
            wave = (wave - mean) / torch.sqrt(var + 1e-7)
        wave = wave * valid  # padded samples are zeros, as in streaming
        if self.config.conv_padding == "causal":
            unit = self.stride * (chunk_frames if (self.config.is_transformer and chunk_frames > 0) else 1)
            total = math.ceil(max(L, 1) / unit) * unit
            if total > L:
                wave = F.pad(wave, (0, total - L))
        return wave, lengths

    def forward(self, wave: Tensor, lengths: Tensor | None = None, *, chunk_frames: int | None = None,
                left_chunks: int | None = None, output_hidden_states: bool = False,
                mask_time_indices: Tensor | None = None,
                mask_channel_indices: Tensor | None = None,
                feature_grad_mult: float | None = None) -> EncoderOutput:
        """wave: (B, L) float at 16 kHz (zero-padded rows, true lengths in `lengths`).

        chunk_frames / left_chunks override the config for this call (dynamic
        chunk training); chunk_frames=0 is full attention. mask_time_indices (B, T)
        replaces frames by the learned mask embedding; mask_channel_indices (B, D)
        zeroes feature channels (SpecAugment-style fine-tuning, transformers only).
        feature_grad_mult overrides the config's gradient scale of the conv
        encoder for this call (0: it runs without gradients, as when fine-tuning).
        """
        C = self.config.chunk_frames if chunk_frames is None else chunk_frames
        Lc = self.config.left_chunks if left_chunks is None else left_chunks
        wave, lengths = self._prepare(wave, lengths, C)
        frame_lengths = self.frame_lengths(lengths)
        T = int(frame_lengths.max().item()) if frame_lengths.numel() else 0
        mult = self.config.feature_grad_mult if feature_grad_mult is None else feature_grad_mult
        out = self._forward_frames(wave, frame_lengths, C, Lc, mask_time_indices, mask_channel_indices, mult)
        hidden = [h[:, :T] for h in out.hidden]

        def trim(x: Tensor | None) -> Tensor | None:
            return None if x is None else x[:, :T]

        q = out.quantized
        return EncoderOutput(
            features=hidden[self.config.feature_layer],
            lengths=frame_lengths,
            logits=self._logits(hidden[-1]),
            hidden_states=hidden if output_hidden_states else None,
            codes=trim(q.codes) if q is not None else None,
            conv_features=trim(out.conv_features),
            norm_features=trim(out.norm_features),
            targets=trim(out.targets),
            quantized=q,
        )

    def _logits(self, last: Tensor) -> Tensor | None:
        if self.lm_head is None:
            return None
        return self.lm_head(F.dropout(last, self.config.final_dropout, self.training))

    # -- streaming ----------------------------------------------------------------
    def state_specs(self) -> list[StateSpec]:
        """Names, shapes (without batch) and dtypes of the flat state tuple."""
        # The frame counter is (B, 1), not (B,): every state then has a dimension besides the batch axis,
        # which Triton's implicit state needs (as in NVIDIA's, WeNet's and k2 sherpa's examples).
        return [StateSpec("frames_seen", (1,), torch.long)] + self._state_specs()

    @property
    def state_names(self) -> list[str]:
        return [s.name for s in self.state_specs()]

    def init_state(self, batch: int, device: torch.device | str | None = None) -> tuple[Tensor, ...]:
        if device is None:
            device = next(self.parameters()).device
        return tuple(torch.zeros((batch, *s.shape), dtype=s.dtype, device=device) for s in self.state_specs())

    def step_outputs(self, samples: Tensor, state: tuple[Tensor, ...]) -> StepOutput:
        """One chunk for a batch of streams: features, logits, codes and the new state."""
        if samples.dim() != 2 or samples.shape[1] != self.chunk_samples:
            raise ValueError(f"step expects samples of shape (batch, {self.chunk_samples}), "
                             f"got {tuple(samples.shape)}")
        specs = self.state_specs()
        if len(state) != len(specs):
            raise ValueError(f"state has {len(state)} tensors, expected {len(specs)} ({[s.name for s in specs]})")
        for s, t in zip(specs, state):
            if tuple(t.shape[1:]) != s.shape or t.shape[0] != samples.shape[0]:
                raise ValueError(f"state {s.name!r} has shape {tuple(t.shape)}, expected "
                                 f"({samples.shape[0]}, {', '.join(map(str, s.shape))})")
        if self.config.is_transformer and self.config.left_chunks < 0:
            raise ValueError("streaming needs a bounded left context (left_chunks >= 0)")
        ctx = StreamContext(state[0].reshape(-1), self.config.chunk_frames, self.config.left_chunks)
        hidden, codes, new = self._stream_frames(samples, list(state[1:]), ctx)
        new_state = (state[0] + self.config.chunk_frames, *new)
        return StepOutput(features=hidden[self.config.feature_layer], logits=self._logits(hidden[-1]),
                          codes=codes, state=new_state)

    def step(self, samples: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, Tensor | None, tuple[Tensor, ...]]:
        """samples: (B, chunk_samples) -> features (B, C, D), logits (B, C, V) or None, new state."""
        out = self.step_outputs(samples, state)
        return out.features, out.logits, out.state

    # -- for subclasses -----------------------------------------------------------
    def _forward_frames(self, wave: Tensor, frame_lengths: Tensor, chunk_frames: int, left_chunks: int,
                        mask_time_indices: Tensor | None, mask_channel_indices: Tensor | None = None,
                        grad_mult: float = 1.0) -> FrameOutputs:
        raise NotImplementedError

    def _state_specs(self) -> list[StateSpec]:
        raise NotImplementedError

    def _stream_frames(self, samples: Tensor, states: list[Tensor], ctx: StreamContext):
        raise NotImplementedError

    def num_parameters(self, backbone_only: bool = False) -> int:
        """All parameters, or those of the backbone (without the CTC head)."""
        skip = {"lm_head"} if backbone_only else set()
        return sum(p.numel() for n, p in self.named_parameters() if n.split(".")[0] not in skip)


def _scale_grad(x: Tensor, mult: float, training: bool) -> Tensor:
    if training and mult != 1.0:
        return GradMultiply.apply(x, mult)
    return x


class TransformerEncoderModel(SpeechEncoder):
    """wav2vec 2.0, HuBERT and WavLM: conv encoder -> projection -> transformer."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        c = config
        self.feature_extractor = ConvFeatureEncoder(
            c.conv_layers, c.extractor_mode, c.conv_bias, c.conv_activation, c.conv_padding == "causal")
        self.feature_projection = FeatureProjection(c.conv_dim, c.hidden_size, c.dropout_input, c.feat_proj_layer_norm)
        if c.with_mask_emb:
            self.masked_spec_embed = nn.Parameter(torch.rand(c.hidden_size))
        self.encoder = TransformerEncoder(c)

    def _conv_features(self, wave: Tensor, mult: float) -> Tensor:
        if mult == 0.0:
            with torch.no_grad():
                x = self.feature_extractor(wave)
        else:
            x = _scale_grad(self.feature_extractor(wave), mult, self.training)
        return x.transpose(1, 2)  # (B, T, C)

    def _forward_frames(self, wave, frame_lengths, chunk_frames, left_chunks, mask_time_indices,
                        mask_channel_indices=None, grad_mult=1.0):
        conv = self._conv_features(wave, grad_mult)
        T = conv.shape[1]
        x, normed = self.feature_projection(conv)
        if mask_time_indices is not None:
            m = F.pad(mask_time_indices, (0, T - mask_time_indices.shape[1])) if mask_time_indices.shape[1] < T \
                else mask_time_indices[:, :T]
            x = torch.where(m.unsqueeze(-1), self.masked_spec_embed.to(x.dtype), x)
        if mask_channel_indices is not None:
            x = x.masked_fill(mask_channel_indices[:, None, :], 0.0)
        pad_mask = None
        if chunk_frames > 0:
            allowed = chunk_attention_mask(T, chunk_frames, left_chunks, x.device)[None, None]
        else:
            key_valid = torch.arange(T, device=x.device)[None, :] < frame_lengths[:, None]
            allowed = key_valid[:, None, None, :]
            pad_mask = ~key_valid
        hidden = self.encoder(x, allowed, pad_mask)
        return FrameOutputs(hidden=hidden, conv_features=conv, norm_features=normed)

    def _state_specs(self) -> list[StateSpec]:
        cache = self.config.chunk_frames * max(self.config.left_chunks, 0)
        return self.feature_extractor.state_specs() + self.encoder.state_specs(cache)

    def _stream_frames(self, samples, states, ctx):
        n_fe = len(self.feature_extractor.state_specs())
        conv, fe_new = self.feature_extractor.stream(samples, states[:n_fe], ctx)  # (B, T, C)
        x, _ = self.feature_projection(conv)
        hidden, enc_new = self.encoder.stream(x, states[n_fe:], ctx)
        return hidden, None, fe_new + enc_new


class ConvContextModel(SpeechEncoder):
    """wav2vec (2019) and vq-wav2vec: causal conv encoder -> (quantiser) -> causal aggregator."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        c = config
        self.feature_extractor = ConvFeatureEncoder(
            c.conv_layers, c.extractor_mode, c.conv_bias, c.conv_activation,
            c.conv_padding == "causal", log_compression=c.log_compression)
        if c.quantizer == "gumbel":
            self.vector_quantizer: nn.Module | None = GumbelVectorQuantizer(
                c.conv_dim, c.vq_vars, c.vq_groups, c.vq_dim, c.vq_combine_groups, c.vq_temp,
                depth=c.vq_depth, factor=c.vq_proj_factor)
        elif c.quantizer == "kmeans":
            self.vector_quantizer = KmeansVectorQuantizer(c.conv_dim, c.vq_vars, c.vq_groups,
                                                          c.vq_combine_groups, c.vq_gamma)
        else:
            self.vector_quantizer = None
        agg_in = c.vq_dim if self.vector_quantizer is not None and c.quantizer == "gumbel" else c.conv_dim
        self.feature_aggregator = Aggregator(agg_in, c.agg_layers, c.agg_norm, c.conv_activation,
                                             c.agg_zero_pad, c.agg_skip, c.agg_residual_scale)

    @property
    def emits_codes(self) -> bool:
        return self.vector_quantizer is not None

    @property
    def prediction_offset(self) -> int:
        if self.config.prediction_offset >= 0:
            return self.config.prediction_offset
        return math.ceil(self.feature_extractor.receptive_field / self.stride)

    def _forward_frames(self, wave, frame_lengths, chunk_frames, left_chunks, mask_time_indices,
                        mask_channel_indices=None, grad_mult=1.0):
        z = _scale_grad(self.feature_extractor(wave), grad_mult, self.training)
        zt = z.transpose(1, 2)
        q = self.vector_quantizer(zt) if self.vector_quantizer is not None else None
        x = zt if q is None else q.x
        c = self.feature_aggregator(x.transpose(1, 2)).transpose(1, 2)
        hidden = [zt, c] if q is None else [zt, x, c]
        return FrameOutputs(hidden=hidden, conv_features=zt, targets=x, quantized=q)

    def _state_specs(self) -> list[StateSpec]:
        return self.feature_extractor.state_specs() + self.feature_aggregator.state_specs()

    def _stream_frames(self, samples, states, ctx):
        n_fe = len(self.feature_extractor.state_specs())
        zt, fe_new = self.feature_extractor.stream(samples, states[:n_fe], ctx)  # (B, T, C)
        x, codes = zt, None
        if self.vector_quantizer is not None:
            codes = self.vector_quantizer.codes(zt)
            x = self.vector_quantizer.lookup(codes)
        ct, agg_new = self.feature_aggregator.stream(x, states[n_fe:], ctx)
        hidden = [zt, ct] if self.vector_quantizer is None else [zt, x, ct]
        return hidden, codes, fe_new + agg_new
