"""Model configurations: one dataclass for all five families, with presets.

A config describes both worlds. The *published* form (unpadded convs, the
GroupNorm "group" extractor, a symmetric positional conv, full attention,
utterance normalisation) reproduces the released models, so imported weights
give the published outputs. The *streaming* form (left-padded convs, per-frame
LayerNorm, a causal positional conv, chunked attention) is what wavstream
trains and exports. Field comments name the fairseq/HF option they match.

A `ModelConfig` is frozen: a change is a new config (`cfg.replace(...)` or
`dataclasses.replace`). Sequences are stored as tuples so that nothing can
edit a config that a model or a checkpoint already shares.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

FAMILIES = ("wav2vec", "vq_wav2vec", "wav2vec2", "hubert", "wavlm")
SIZES = ("tiny", "base", "large")

# Character vocabulary for CTC: blank, word boundary, a-z, apostrophe.
CTC_VOCAB: tuple[str, ...] = ("<blank>", "|") + tuple("abcdefghijklmnopqrstuvwxyz") + ("'",)

ConvSpec = tuple[int, int, int]  # (out_channels, kernel, stride)

W2V2_CONV: tuple[ConvSpec, ...] = ((512, 10, 5),) + ((512, 3, 2),) * 4 + ((512, 2, 2),) * 2


@dataclass(frozen=True)
class ModelConfig:
    family: str = "wav2vec2"

    # --- input -----------------------------------------------------------
    sample_rate: int = 16000
    normalize_waveform: bool = False  # fairseq task.normalize: utterance z-norm (published LARGE)

    # --- conv feature encoder --------------------------------------------
    conv_layers: tuple[ConvSpec, ...] = W2V2_CONV
    # "group": GroupNorm(C, C) in layer 0 over all time (fairseq "default", published BASE);
    # "layer": per-frame LayerNorm in every layer (fairseq "layer_norm"; streamable);
    # "group1": wav2vec-1 GroupNorm(1, C) over channels x time in every layer;
    # "none": no normalisation.
    extractor_mode: str = "layer"
    conv_bias: bool = False
    # "none": unpadded (published); "causal": left zero-padding of kernel-stride per layer
    # so that N*stride samples give exactly N frames and nothing looks ahead.
    conv_padding: str = "causal"
    conv_activation: str = "gelu"  # wav2vec 1 uses relu, vq-wav2vec gelu
    log_compression: bool = False  # wav2vec 1: z = log(|x| + 1)

    # --- wav2vec 1 / vq-wav2vec context network (aggregator) ------------
    agg_layers: tuple[ConvSpec, ...] = ()  # (channels, kernel, stride=1)
    agg_zero_pad: bool = False  # False: replicate the first frame on the left (fairseq default)
    agg_skip: bool = True
    agg_residual_scale: float = 0.5
    agg_norm: str = "group1"  # "group1" (published, over all time) or "layer" (per frame)
    prediction_steps: int = 12
    prediction_offset: int = -1  # -1: auto = ceil(receptive field / hop)

    # --- quantiser (vq-wav2vec between encoder and aggregator; wav2vec 2.0 targets) ----
    quantizer: str = "none"  # "none" | "gumbel" | "kmeans"
    vq_groups: int = 2
    vq_vars: int = 320
    vq_dim: int = 256  # total codeword dim over groups
    vq_combine_groups: bool = False
    vq_depth: int = 1  # gumbel weight_proj depth (vq-wav2vec uses 2)
    vq_proj_factor: int = 2
    vq_temp: tuple[float, float, float] = (2.0, 0.5, 0.999995)
    vq_gamma: float = 0.25  # k-means commitment weight

    # --- transformer (wav2vec2 / hubert / wavlm) --------------------------
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    ffn_size: int = 3072
    layer_norm_first: bool = False  # pre-LN (HF do_stable_layer_norm)
    pos_conv_kernel: int = 128
    pos_conv_groups: int = 16
    pos_conv_causal: bool = True  # False: symmetric padding, 63 future frames (published)
    relative_bias: bool = False  # WavLM gated relative position bias
    num_buckets: int = 320
    max_distance: int = 800
    feat_proj_layer_norm: bool = True
    # chunked attention: a frame sees its own chunk and `left_chunks` chunks before it.
    chunk_frames: int = 16  # 0 = full attention (published)
    left_chunks: int = 4  # -1 = unlimited history (offline only; streaming needs a bound)

    # --- dropouts (training) ---------------------------------------------
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.0
    dropout_input: float = 0.1
    dropout_features: float = 0.1
    layerdrop: float = 0.0
    final_dropout: float = 0.0
    feature_grad_mult: float = 0.1

    # --- pretraining heads -------------------------------------------------
    final_dim: int = 256  # wav2vec2 / hubert projection dim
    num_label_classes: int = 0  # hubert / wavlm: k-means K (+4 specials, fairseq dictionary)
    with_mask_emb: bool = True

    # --- outputs -----------------------------------------------------------
    vocab: tuple[str, ...] = ()  # CTC vocabulary; empty = no CTC head
    feature_layer: int = -1  # which hidden layer the streamed `features` come from

    def __post_init__(self) -> None:
        # Lists from JSON or callers become tuples (frozen all the way down).
        set_ = object.__setattr__
        set_(self, "conv_layers", tuple(tuple(int(v) for v in x) for x in self.conv_layers))
        set_(self, "agg_layers", tuple(tuple(int(v) for v in x) for x in self.agg_layers))
        set_(self, "vq_temp", tuple(float(v) for v in self.vq_temp))
        set_(self, "vocab", tuple(str(v) for v in self.vocab))

    # ------------------------------------------------------------------------
    @property
    def stride(self) -> int:
        s = 1
        for _, _, st in self.conv_layers:
            s *= st
        return s

    @property
    def is_transformer(self) -> bool:
        return self.family in ("wav2vec2", "hubert", "wavlm")

    @property
    def conv_dim(self) -> int:
        return self.conv_layers[-1][0]

    @property
    def feature_dim(self) -> int:
        if self.is_transformer:
            return self.hidden_size
        return self.agg_layers[-1][0] if self.agg_layers else self.conv_dim

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["conv_layers"] = [list(x) for x in self.conv_layers]
        d["agg_layers"] = [list(x) for x in self.agg_layers]
        d["vq_temp"] = list(self.vq_temp)
        d["vocab"] = list(self.vocab)
        return d

    def to_json(self, **kw: Any) -> str:
        return json.dumps(self.to_dict(), **kw)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown config fields: {sorted(unknown)}")
        return cls(**d)  # __post_init__ turns the JSON lists into tuples

    @classmethod
    def from_json(cls, s: str) -> "ModelConfig":
        return cls.from_dict(json.loads(s))

    def replace(self, **overrides: Any) -> "ModelConfig":
        """A copy with `overrides` (unknown field names are an error)."""
        known = {f.name for f in dataclasses.fields(self)}
        bad = set(overrides) - known
        if bad:
            raise ValueError(f"unknown config fields: {sorted(bad)}")
        return dataclasses.replace(self, **overrides)

    def with_chunking(self, chunk_frames: int, left_chunks: int) -> "ModelConfig":
        """The same model at another latency (the run-time knobs; no weight depends on them)."""
        return dataclasses.replace(self, chunk_frames=int(chunk_frames), left_chunks=int(left_chunks))

    def validate(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, got {self.family!r}")
        if self.conv_padding not in ("none", "causal"):
            raise ValueError(f"conv_padding must be 'none' or 'causal', got {self.conv_padding!r}")
        if self.extractor_mode not in ("group", "layer", "group1", "none"):
            raise ValueError(f"unknown extractor_mode {self.extractor_mode!r}")
        if self.is_transformer and self.hidden_size % self.num_heads:
            raise ValueError("hidden_size must be divisible by num_heads")
        if self.quantizer not in ("none", "gumbel", "kmeans"):
            raise ValueError(f"unknown quantizer {self.quantizer!r}")

    @property
    def streamable(self) -> bool:
        """True when the model has no utterance-level or future dependency."""
        if self.normalize_waveform or self.conv_padding != "causal":
            return False
        if self.extractor_mode == "group" or self.extractor_mode == "group1":
            return False
        if self.is_transformer:
            return self.pos_conv_causal and self.chunk_frames > 0 and self.left_chunks >= 0
        return self.agg_norm != "group1"


# ---------------------------------------------------------------------------
# Presets. tiny = streaming form sized for 2 CPU cores; base/large = the
# published architectures (published form, so imported weights reproduce them).

# Narrow early layers: on CPU the high-rate layers' elementwise work (norm,
# GELU, their backward) dominates training time, not their multiply-adds.
_TINY_CONV: tuple[ConvSpec, ...] = ((64, 10, 5), (64, 3, 2)) + ((128, 3, 2),) * 3 + ((128, 2, 2),) * 2
_W2V1_CONV_SMALL: tuple[ConvSpec, ...] = ((512, 10, 5), (512, 8, 4), (512, 4, 2), (512, 4, 2), (512, 4, 2))
_W2V1_CONV_LARGE: tuple[ConvSpec, ...] = _W2V1_CONV_SMALL + ((512, 1, 1),) * 2
_VQ_CONV: tuple[ConvSpec, ...] = _W2V1_CONV_SMALL + ((512, 1, 1),) * 3
_W2V1_AGG_LARGE: tuple[ConvSpec, ...] = tuple((512, k, 1) for k in range(2, 14))


def _transformer_published(family: str, size: str) -> ModelConfig:
    large = size == "large"
    cfg = ModelConfig(
        family=family,
        conv_layers=W2V2_CONV,
        extractor_mode="layer" if large else "group",
        conv_bias=large and family == "wav2vec2",
        conv_padding="none",
        normalize_waveform=large,
        hidden_size=1024 if large else 768,
        num_layers=24 if large else 12,
        num_heads=16 if large else 12,
        ffn_size=4096 if large else 3072,
        layer_norm_first=large,
        pos_conv_kernel=128,
        pos_conv_groups=16,
        pos_conv_causal=False,
        chunk_frames=0,
        left_chunks=-1,
        relative_bias=family == "wavlm",
        final_dim=768 if large else 256,
        feature_grad_mult=1.0 if large else 0.1,
    )
    if family == "wav2vec2":
        cfg = cfg.replace(quantizer="gumbel", vq_dim=768 if large else 256,
                          vq_temp=(2.0, 0.1, 0.999995) if large else (2.0, 0.5, 0.999995))
    else:
        cfg = cfg.replace(num_label_classes=504)
    if large:
        cfg = cfg.replace(dropout=0.0, attention_dropout=0.0, dropout_input=0.0, dropout_features=0.0)
    return cfg


def _transformer_tiny(family: str) -> ModelConfig:
    cfg = ModelConfig(
        family=family,
        conv_layers=_TINY_CONV,
        extractor_mode="layer",
        conv_bias=False,
        conv_padding="causal",
        hidden_size=256,
        num_layers=4,
        num_heads=4,
        ffn_size=1024,
        layer_norm_first=True,  # pre-LN trains more stably from scratch at small scale
        pos_conv_kernel=32,
        pos_conv_groups=16,
        pos_conv_causal=True,
        chunk_frames=16,
        left_chunks=4,
        relative_bias=family == "wavlm",
        num_buckets=64,
        max_distance=160,
        final_dim=128,
        feature_grad_mult=1.0,
        dropout=0.1,
        attention_dropout=0.05,
        dropout_input=0.05,
        dropout_features=0.05,
    )
    if family == "wav2vec2":
        return cfg.replace(quantizer="gumbel", vq_groups=2, vq_vars=64, vq_dim=128)
    return cfg.replace(num_label_classes=104)  # K=100 clusters + 4 fairseq specials


def _w2v1(family: str, size: str) -> ModelConfig:
    vq = family == "vq_wav2vec"
    if size == "tiny":
        return ModelConfig(
            family=family,
            conv_layers=[(64, 10, 5), (128, 8, 4), (256, 4, 2), (256, 4, 2), (256, 4, 2)],
            extractor_mode="layer",
            conv_padding="causal",
            conv_activation="gelu" if vq else "relu",
            log_compression=not vq,
            agg_layers=[(256, k, 1) for k in range(2, 8)],
            agg_zero_pad=False,
            agg_norm="layer",
            prediction_steps=12,
            quantizer="gumbel" if vq else "none",
            vq_groups=2,
            vq_vars=64,
            vq_dim=256,
            vq_combine_groups=False,
            vq_depth=2,
            dropout=0.0,
            feature_grad_mult=1.0,
            chunk_frames=32,  # 320 ms at 10 ms frames; any value works (fully causal)
            left_chunks=0,
        )
    conv = (_VQ_CONV if vq else (_W2V1_CONV_LARGE if size == "large" else _W2V1_CONV_SMALL))
    agg = _W2V1_AGG_LARGE if (vq or size == "large") else ((512, 3, 1),) * 9
    return ModelConfig(
        family=family,
        conv_layers=conv,
        extractor_mode="group1",
        conv_padding="none",
        conv_activation="gelu" if vq else "relu",
        log_compression=not vq,
        agg_layers=agg,
        agg_zero_pad=False,
        agg_norm="group1",
        prediction_steps=12,
        quantizer="gumbel" if vq else "none",
        vq_groups=2,
        vq_vars=320,
        vq_dim=512,
        vq_combine_groups=False,
        vq_depth=2,
        dropout=0.0,
        feature_grad_mult=1.0,
        chunk_frames=32,
        left_chunks=0,
    )


def preset(family: str, size: str = "tiny") -> ModelConfig:
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, got {size!r}")
    if family in ("wav2vec", "vq_wav2vec"):
        return _w2v1(family, size)
    if size == "tiny":
        return _transformer_tiny(family)
    return _transformer_published(family, size)
