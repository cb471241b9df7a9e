"""The settings of each objective: frozen dataclasses whose defaults are the
only defaults (the command line passes only what a user gave). Torch-free,
so the command line can show them in --help without importing torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class CTCSettings:
    freeze_encoder: bool = True  # the conv encoder does not train (published fine-tuning)
    freeze_transformer_steps: int = 0  # only the CTC head trains for this many first updates
    mask_prob: float = 0.3
    mask_length: int = 10
    mask_channel_prob: float = 0.1
    mask_channel_length: int = 16


@dataclass(frozen=True)
class Wav2VecSettings:
    num_negatives: int = 10
    kmeans_weight: float = 1.0  # vq-wav2vec k-means codebook + commitment loss
    diversity_weight: float = 0.0  # the README Gumbel recipe has none
    temp_anneal_steps: int = 0  # Gumbel floor after this many updates; 0: the config's published rate


@dataclass(frozen=True)
class Wav2Vec2Settings:
    mask_prob: float = 0.65
    mask_length: int = 10
    min_masks: int = 2
    num_negatives: int = 100
    temperature: float = 0.1
    diversity_weight: float = 0.1
    feature_penalty_weight: float = 10.0
    temp_anneal_steps: int = 0  # Gumbel floor after this many updates; 0: the config's published rate


@dataclass(frozen=True)
class HubertSettings:
    mask_prob: float = 0.8
    mask_length: int = 10
    min_masks: int = 2
    masked_weight: float = 1.0
    unmasked_weight: float = 0.0  # published 0; the tiny recipes use 1.0 (objectives/hubert.py says why)
    feature_penalty_weight: float = 10.0
    temperature: float = 0.1


@dataclass(frozen=True)
class WavLMSettings(HubertSettings):
    mix_prob: float = 0.2  # utterance mixing
    noise_prob: float = 0.25  # additive noise
    reverb_prob: float = 0.15  # reverberation


SETTINGS: dict[str, type] = {
    "wav2vec": Wav2VecSettings,
    "vq_wav2vec": Wav2VecSettings,
    "wav2vec2": Wav2Vec2Settings,
    "hubert": HubertSettings,
    "wavlm": WavLMSettings,
}


def settings_for(family: str, **given: Any) -> Any:
    """The settings of `family`'s pretraining objective: the given values that
    it has (None means "not given"), its own defaults for the rest."""
    if family not in SETTINGS:
        raise ValueError(f"unknown family {family!r}")
    cls = SETTINGS[family]
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in given.items() if k in names and v is not None})
