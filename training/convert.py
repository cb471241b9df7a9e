"""Weight import from Hugging Face transformers, and the published -> streaming conversion.

    from transformers import WavLMModel
    from wavstream.training.convert import from_transformers, to_streaming

    hf = WavLMModel.from_pretrained("microsoft/wavlm-base-plus")
    model = from_transformers(hf)                 # published form: equals hf's last_hidden_state
    live = to_streaming(model, chunk_frames=16, left_chunks=4)   # needs fine-tuning, see below

`from_transformers` accepts transformers' `Wav2Vec2Model`, `HubertModel`,
`WavLMModel`, their `*ForCTC` heads and `Wav2Vec2ForPreTraining`, whose
pretraining heads (quantiser, `project_q`, `project_hid`) belong to the
objective: `heads_from_transformers` imports them as `Wav2Vec2Heads`. The imported model is in *published form*
(unpadded convs, the extractor of the checkpoint, a symmetric positional conv,
full attention) and reproduces HF's `last_hidden_state` and CTC logits to
float tolerance (tests/training/test_models_parity_hf.py; max |diff| ~1e-6 in fp32).

Two things are deliberately *not* inside the imported model:

* waveform normalisation. HF's `Wav2Vec2FeatureExtractor(do_normalize=True)`
  z-normalises each utterance *outside* the model, so `normalize_waveform`
  is left False and the model equals HF's model on the same input values. Set
  `normalize_waveform=True` on the config (or run the HF feature extractor)
  to reproduce the full published pipeline of the LARGE checkpoints.
* CTC label names. HF models store only `vocab_size`; pass the tokenizer's
  vocabulary (`tokenizer.get_vocab()` or a list) as `vocab=` to get real names,
  otherwise placeholders `<0>`, `<1>`, ... are used. HF's CTC blank is
  `config.pad_token_id` (0 for the released checkpoints, named `<pad>`); the
  row order of the head is kept as it is, so blank_id stays pad_token_id.

`to_streaming` is documented on the function and in docs/streaming.md.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from wavstream.stream.errors import WavstreamError

from .checkpoint import split_state
from .models import ModelConfig, SpeechEncoder, model_from_config
from .objectives.heads import Wav2Vec2Heads

__all__ = [
    "config_from_transformers",
    "from_transformers",
    "heads_from_transformers",
    "hf_state_dict_to_wavstream",
    "load_state_dict_any",
    "to_streaming",
]

_BACKBONE_PREFIXES = ("wav2vec2.", "hubert.", "wavlm.")
_WN_RENAMES = (
    ("parametrizations.weight.original0", "weight_g"),
    ("parametrizations.weight.original1", "weight_v"),
)
# Keys of HF models with no counterpart here (buffers or heads we do not model).
_HF_IGNORED_SUFFIXES = ("num_batches_tracked",)


# ---------------------------------------------------------------------------
# config


def _family_of(hf_config: Any) -> str:
    mt = getattr(hf_config, "model_type", "")
    if mt in ("wav2vec2", "hubert", "wavlm"):
        return mt
    raise ValueError(f"unsupported transformers model_type {mt!r} (expected wav2vec2, hubert or wavlm)")


def _vocab_from(vocab: Any, size: int) -> list[str]:
    """vocab: None (placeholders), a list of labels, a dict label->id, or a
    tokenizer with get_vocab()."""
    if vocab is None:
        return [f"<{i}>" for i in range(size)]
    if hasattr(vocab, "get_vocab"):
        vocab = vocab.get_vocab()
    if isinstance(vocab, Mapping):
        labels = [f"<{i}>" for i in range(size)]
        for tok, idx in vocab.items():
            if 0 <= int(idx) < size:
                labels[int(idx)] = str(tok)
        return labels
    labels = [str(t) for t in vocab]
    if len(labels) != size:
        raise ValueError(f"vocab has {len(labels)} labels but the CTC head has {size} outputs")
    return labels


def config_from_transformers(hf_config: Any, *, ctc: bool = False, pretraining: bool = False,
                             vocab: Any = None) -> ModelConfig:
    """A published-form ModelConfig equivalent to a transformers Wav2Vec2/Hubert/WavLM config."""
    c = hf_config
    family = _family_of(c)
    norm = getattr(c, "feat_extract_norm", "group")
    if norm not in ("group", "layer"):
        raise ValueError(f"unsupported feat_extract_norm {norm!r}")
    act = getattr(c, "feat_extract_activation", "gelu")
    if act != "gelu" or getattr(c, "hidden_act", "gelu") != "gelu":
        raise ValueError("only GELU activations are supported (feat_extract_activation / hidden_act)")
    if getattr(c, "add_adapter", False) or getattr(c, "adapter_attn_dim", None):
        raise ValueError("models with adapters (add_adapter / adapter_attn_dim) are not supported")
    if getattr(c, "num_conv_pos_embeddings", 128) <= 0:
        raise ValueError("a positional conv is required")
    if family == "wav2vec2" and getattr(c, "position_embeddings_type", None) not in (None, "relative"):
        raise ValueError(f"unsupported position_embeddings_type {c.position_embeddings_type!r}")
    conv_layers = [(int(d), int(k), int(s)) for d, k, s in zip(c.conv_dim, c.conv_kernel, c.conv_stride)]
    if len(conv_layers) != getattr(c, "num_feat_extract_layers", len(conv_layers)):
        raise ValueError("conv_dim / conv_kernel / conv_stride lengths disagree")
    eps = float(getattr(c, "layer_norm_eps", 1e-5))
    if abs(eps - 1e-5) > 1e-12:
        raise ValueError(f"layer_norm_eps {eps} is not supported (the model uses 1e-5)")
    cfg = ModelConfig(
        family=family,
        sample_rate=16000,
        normalize_waveform=False,  # HF's feature extractor normalises outside the model
        conv_layers=conv_layers,
        extractor_mode=norm,
        conv_bias=bool(c.conv_bias),
        conv_padding="none",
        conv_activation="gelu",
        hidden_size=int(c.hidden_size),
        num_layers=int(c.num_hidden_layers),
        num_heads=int(c.num_attention_heads),
        ffn_size=int(c.intermediate_size),
        layer_norm_first=bool(c.do_stable_layer_norm),
        pos_conv_kernel=int(c.num_conv_pos_embeddings),
        pos_conv_groups=int(c.num_conv_pos_embedding_groups),
        pos_conv_causal=False,
        relative_bias=family == "wavlm",
        num_buckets=int(getattr(c, "num_buckets", 320)),
        max_distance=int(getattr(c, "max_bucket_distance", 800)),
        feat_proj_layer_norm=bool(getattr(c, "feat_proj_layer_norm", True)),
        chunk_frames=0,
        left_chunks=-1,
        dropout=float(c.hidden_dropout),
        attention_dropout=float(c.attention_dropout),
        activation_dropout=float(c.activation_dropout),
        dropout_input=float(c.feat_proj_dropout),
        dropout_features=float(getattr(c, "feat_quantizer_dropout", 0.0)),
        layerdrop=float(c.layerdrop),
        final_dropout=float(getattr(c, "final_dropout", 0.0)),
        feature_grad_mult=1.0,
        num_label_classes=0,  # HF has no HuBERT/WavLM pretraining head
        with_mask_emb=True,
        quantizer="none",
    )
    if pretraining:
        if family != "wav2vec2":
            raise ValueError("only wav2vec2 has a pretraining head in transformers")
        cfg = cfg.replace(quantizer="gumbel", vq_groups=int(c.num_codevector_groups),
                          vq_vars=int(c.num_codevectors_per_group), vq_dim=int(c.codevector_dim),
                          vq_combine_groups=False, final_dim=int(c.proj_codevector_dim))
    if ctc:
        cfg = cfg.replace(vocab=_vocab_from(vocab, int(c.vocab_size)))
    cfg.validate()
    return cfg


# ---------------------------------------------------------------------------
# state dict


def hf_state_dict_to_wavstream(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename HF keys to ours: strip the backbone prefix of *ForCTC /
    *ForPreTraining and map the weight-norm spelling
    `conv.parametrizations.weight.original0/1` to `conv.weight_g/weight_v`
    (the old `weight_g/weight_v` spelling passes through)."""
    out: dict[str, Tensor] = {}
    for k, v in sd.items():
        if k.endswith(_HF_IGNORED_SUFFIXES):
            continue
        for p in _BACKBONE_PREFIXES:
            if k.startswith(p):
                k = k[len(p):]
                break
        for new, old in _WN_RENAMES:
            if k.endswith(new):
                k = k[: -len(new)] + old
        if k in out:
            raise ValueError(f"state dict maps two tensors onto {k!r} (mixed prefixes or spellings)")
        out[k] = v
    return out


class StateDictMismatch(WavstreamError, ValueError):
    """Raised when a state dict does not cover a model exactly."""


def load_state_dict_any(model: nn.Module, sd: Mapping[str, Tensor], *, strict: bool = True,
                        allow_missing: Sequence[str] = ("masked_spec_embed",)) -> list[str]:
    """Load a wavstream, HF (`*Model`, `*ForCTC`, `*ForPreTraining`) or old-spelling
    (`weight_g`/`weight_v`) state dict into `model`.

    Strict by default: any key missing from `sd` (except `allow_missing`,
    e.g. `masked_spec_embed`, which HF omits when masking is off) or present
    in `sd` but unknown to the model raises StateDictMismatch listing the keys;
    so do shape mismatches. Returns the tolerated missing keys.
    """
    mapped = hf_state_dict_to_wavstream(sd)
    own = model.state_dict()
    missing = [k for k in own if k not in mapped]
    unexpected = [k for k in mapped if k not in own]
    tolerated = [k for k in missing if k in allow_missing]
    missing = [k for k in missing if k not in allow_missing]
    shape_bad = [f"{k}: checkpoint {tuple(mapped[k].shape)} vs model {tuple(own[k].shape)}"
                 for k in mapped if k in own and tuple(mapped[k].shape) != tuple(own[k].shape)]
    if strict and (missing or unexpected or shape_bad):
        msg = ["state dict does not match the model:"]
        if missing:
            msg.append(f"  missing ({len(missing)}): {missing}")
        if unexpected:
            msg.append(f"  unexpected ({len(unexpected)}): {unexpected}")
        if shape_bad:
            msg.append(f"  shape mismatch ({len(shape_bad)}): {shape_bad}")
        raise StateDictMismatch("\n".join(msg))
    with torch.no_grad():
        for k, v in mapped.items():
            if k in own and tuple(v.shape) == tuple(own[k].shape):
                own[k].copy_(v.to(own[k].dtype))
    return tolerated


# ---------------------------------------------------------------------------
# import


def from_transformers(hf_model: nn.Module, vocab: Any = None) -> SpeechEncoder:
    """Import a transformers Wav2Vec2/Hubert/WavLM model (bare, *ForCTC or
    Wav2Vec2ForPreTraining) into a published-form wavstream model with the same
    weights. `vocab` names the CTC labels (list, dict label->id or tokenizer)."""
    cls = type(hf_model).__name__
    sd = hf_model.state_dict()
    ctc = cls.endswith("ForCTC")
    pretraining = cls.endswith("ForPreTraining")
    if not (ctc or pretraining or cls.endswith("Model")):
        raise TypeError(f"unsupported transformers class {cls} (use *Model, *ForCTC or Wav2Vec2ForPreTraining)")
    if pretraining and cls != "Wav2Vec2ForPreTraining":
        raise TypeError(f"unsupported pretraining class {cls}")
    cfg = config_from_transformers(hf_model.config, ctc=ctc, pretraining=pretraining, vocab=vocab)
    if ctc and getattr(hf_model.config, "pad_token_id", 0) not in (0, None):
        warnings.warn(f"HF CTC blank is pad_token_id={hf_model.config.pad_token_id}, not 0: "
                      "set blank_id accordingly when bundling", stacklevel=2)
    model = model_from_config(cfg)
    p = next(hf_model.parameters())
    model.to(dtype=p.dtype)
    # A missing masked_spec_embed (HF drops it when masking is off) keeps the
    # model's own U[0, 1) init, as fairseq/HF would create it.
    encoder, _ = split_state(hf_state_dict_to_wavstream(sd))  # the pretraining heads: heads_from_transformers
    load_state_dict_any(model, encoder)
    model.train(hf_model.training)
    return model.to(p.device)


def heads_from_transformers(hf_model: nn.Module) -> Wav2Vec2Heads:
    """The pretraining heads of a transformers `Wav2Vec2ForPreTraining`
    (quantiser, project_q, project_hid) as this project's `Wav2Vec2Heads`."""
    if type(hf_model).__name__ != "Wav2Vec2ForPreTraining":
        raise TypeError(f"{type(hf_model).__name__} has no wav2vec 2.0 pretraining heads")
    cfg = config_from_transformers(hf_model.config, pretraining=True)
    heads = Wav2Vec2Heads(cfg)
    p = next(hf_model.parameters())
    heads.to(dtype=p.dtype)
    _, state = split_state(hf_state_dict_to_wavstream(hf_model.state_dict()))
    load_state_dict_any(heads, state, allow_missing=())
    heads.train(hf_model.training)
    return heads.to(p.device)


# ---------------------------------------------------------------------------
# published -> streaming


def _causal_pos_conv(g: Tensor, v: Tensor, bias: Tensor, new_kernel: int) -> tuple[Tensor, Tensor, Tensor]:
    """Map a symmetric positional conv (kernel K, padding K//2, last output
    dropped when K is even) onto a causal one of `new_kernel` taps.

    Published tap k sees relative frame d = k - K//2 (d in -K//2 .. K-1-K//2);
    causal tap k' sees d = k' - (new_kernel - 1). Taps with d <= 0 are copied;
    the future taps (d > 0) are dropped; causal taps with no published
    counterpart (further in the past) get g = 0 (weight exactly 0) and keep a
    non-zero v so that the weight norm stays finite and they can be learnt.
    """
    K = g.shape[-1]
    half = K // 2
    new_g = torch.zeros(*g.shape[:-1], new_kernel, dtype=g.dtype)
    new_v = torch.empty(*v.shape[:-1], new_kernel, dtype=v.dtype)
    for k2 in range(new_kernel):
        d = k2 - (new_kernel - 1)
        k = d + half
        if 0 <= k < K:
            new_g[..., k2] = g[..., k]
            new_v[..., k2] = v[..., k]
        else:  # no published tap: zero weight, borrow a v column to keep ||v|| > 0
            new_g[..., k2] = 0.0
            new_v[..., k2] = v[..., (K - 1 - (k2 % K))]
    return new_g, new_v, bias.clone()


def to_streaming(model: SpeechEncoder, chunk_frames: int, left_chunks: int, *,
                 pos_conv_kernel: int | None = None) -> SpeechEncoder:
    """Return a new model in streaming form with the weights of `model`.

    What changes (see docs/streaming.md):

    * `conv_padding` "none" -> "causal": each conv layer is left-padded with
      kernel - stride zeros (80 samples in total for the wav2vec 2.0 stack), so
      N*stride samples give exactly N frames and no frame looks ahead. Away from
      the start, frame t equals the published frame t computed on the input
      delayed by 80 samples (5 ms): same weights, exact up to that shift.
      The first few frames see zeros instead of the utterance start.
    * extractor "group" (GroupNorm over all time in layer 0; cannot stream)
      -> "layer" (per-frame LayerNorm in every conv layer). Layer 0's LayerNorm
      takes the GroupNorm's affine weight and bias; layers 1.. get identity
      affine (1, 0). This CHANGES THE OUTPUTS (a different normalisation) and
      needs fine-tuning. A "layer" extractor carries over unchanged.
      wav2vec 1 / vq-wav2vec: "group1" extractor and aggregator norms (one
      group over channels x time) -> per-frame LayerNorm with the same affine
      parameters; also changes outputs and needs fine-tuning.
    * positional conv: symmetric (63 future frames for K=128) -> causal. We
      ZERO THE FUTURE TAPS rather than shift the kernel: the taps for the past
      and current frame keep their weights at the same relative offsets, so
      the conv computes exactly the published past part. By default the kernel
      is truncated to those K//2 + 1 taps (65 for K=128: 64 past frames and the
      current one; a smaller state); pass `pos_conv_kernel` (> K//2) to keep
      more past taps, which start at zero weight (g = 0) and can be learnt.
      Losing the 63 future taps changes outputs: needs fine-tuning.
    * `normalize_waveform` -> False (utterance z-normalisation cannot stream).
      The LARGE checkpoints were trained on normalised input: feed audio with
      a comparable level (or fine-tune).
    * attention: full -> chunked, `chunk_frames` C and `left_chunks` L (a frame
      sees its chunk and L chunks before; K/V caches of L*C frames). Frames lose
      all context beyond that window: needs fine-tuning (ideally with dynamic
      chunks). WavLM's relative bias keeps its table and buckets; only the
      future buckets beyond the chunk are no longer reached.

    Everything else (projection, attention and FFN weights, WavLM gates, CTC
    head, dropouts) is copied unchanged; pretraining heads are not part of the
    encoder. Streaming output equals the offline output of the returned model
    with the same C and L.
    """
    cfg0 = model.config
    chunk_frames, left_chunks = int(chunk_frames), int(left_chunks)
    if chunk_frames <= 0 or left_chunks < 0:
        raise ValueError("streaming needs chunk_frames > 0 and left_chunks >= 0")
    over: dict[str, Any] = dict(conv_padding="causal", normalize_waveform=False,
                                chunk_frames=chunk_frames, left_chunks=left_chunks)
    if cfg0.extractor_mode in ("group", "group1"):
        over["extractor_mode"] = "layer"
    if not cfg0.is_transformer and cfg0.agg_norm == "group1":
        over["agg_norm"] = "layer"
    K = cfg0.pos_conv_kernel
    if cfg0.is_transformer and not cfg0.pos_conv_causal:
        new_k = K // 2 + 1 if pos_conv_kernel is None else int(pos_conv_kernel)
        if new_k < K // 2 + 1:
            raise ValueError(f"pos_conv_kernel must be >= {K // 2 + 1} to keep every past tap")
        over["pos_conv_kernel"] = new_k
        over["pos_conv_causal"] = True
    elif pos_conv_kernel is not None and pos_conv_kernel != K:
        raise ValueError("pos_conv_kernel can only be changed when converting a symmetric positional conv")
    cfg = cfg0.replace(**over)
    new = model_from_config(cfg)
    p = next(model.parameters())
    new.to(device=p.device, dtype=p.dtype)

    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if "pos_conv_kernel" in over:
        pre = "encoder.pos_conv_embed.conv."
        g, v, b = _causal_pos_conv(sd[pre + "weight_g"], sd[pre + "weight_v"], sd[pre + "bias"],
                                   over["pos_conv_kernel"])
        sd[pre + "weight_g"], sd[pre + "weight_v"], sd[pre + "bias"] = g, v, b
    own = new.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    # The only keys allowed to differ: the per-layer LayerNorms a "group" extractor lacks.
    bad_missing = [k for k in missing if not (k.startswith("feature_extractor.conv_layers.")
                                              and ".layer_norm." in k)]
    if bad_missing or unexpected:
        raise RuntimeError(f"to_streaming: unexpected key mismatch; missing {bad_missing}, extra {unexpected}")
    with torch.no_grad():
        for k, t in sd.items():
            if tuple(t.shape) != tuple(own[k].shape):
                raise RuntimeError(f"to_streaming: shape mismatch for {k}: {tuple(t.shape)} vs {tuple(own[k].shape)}")
            own[k].copy_(t)
    new.train(model.training)
    return new

