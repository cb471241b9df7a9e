"""The five wav2vec-family models behind one streaming contract.

    from wavstream.training.models import build_model
    model = build_model("wavlm", "tiny")           # streaming form, ~3.6M params
    out = model(wave)                              # offline, chunk-masked
    state = model.init_state(batch=1)
    feats, logits, state = model.step(chunk, state)  # streaming, equal to offline
    out = stream_chunks(model, wave)               # the reference chunk loop over a whole wave
"""

from __future__ import annotations

from typing import Any

from .config import CTC_VOCAB, FAMILIES, SIZES, ModelConfig, preset
from .encoder import ConvContextModel, EncoderOutput, SpeechEncoder, StepOutput, TransformerEncoderModel
from .streaming import StateSpec, StreamedOutput, chunk_attention_mask, stream_chunks

__all__ = [
    "CTC_VOCAB", "FAMILIES", "SIZES", "ModelConfig", "preset", "build_model", "model_from_config",
    "SpeechEncoder", "TransformerEncoderModel", "ConvContextModel", "EncoderOutput", "StepOutput", "StateSpec",
    "chunk_attention_mask", "stream_chunks", "StreamedOutput",
]


def model_from_config(config: ModelConfig) -> SpeechEncoder:
    if config.is_transformer:
        return TransformerEncoderModel(config)
    return ConvContextModel(config)


def build_model(family: str, size: str = "tiny", **overrides: Any) -> SpeechEncoder:
    """Build a model of `family` ("wav2vec", "vq_wav2vec", "wav2vec2", "hubert",
    "wavlm") and `size` ("tiny": streaming form for CPU training; "base" and
    "large": the published architectures in published form). Any config field
    can be overridden, e.g. ``vocab=CTC_VOCAB`` for a CTC head."""
    cfg = preset(family, size)
    if overrides:
        cfg = cfg.replace(**overrides)
    return model_from_config(cfg)
