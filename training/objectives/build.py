"""`build_objective`: the pretraining objective of a family, with its settings.

The settings dataclasses (training/objectives/settings.py) hold the only
defaults; `settings_for(family, **given)` fills in what a caller gives.
"""

from __future__ import annotations

from typing import Any

from ..labels import LabelStore
from ..models import SpeechEncoder
from .base import Objective
from .hubert import HubertObjective
from .settings import settings_for
from .wav2vec import Wav2VecObjective
from .wav2vec2 import Wav2Vec2Objective
from .wavlm import WavLMObjective

def build_objective(family: str, model: SpeechEncoder, settings: Any = None, labels: LabelStore | None = None,
                    crop_starts: dict | None = None) -> Objective:
    """The objective module of `family` (heads built from the model's config).
    HuBERT and WavLM need `labels` (and the dataset's `crop_starts`)."""
    s = settings if settings is not None else settings_for(family)
    if family in ("wav2vec", "vq_wav2vec"):
        return Wav2VecObjective(model, s)
    if family == "wav2vec2":
        return Wav2Vec2Objective(model, s)
    if family in ("hubert", "wavlm"):
        if labels is None:
            raise ValueError(f"{family} pretraining needs frame labels (a LabelStore)")
        cls = HubertObjective if family == "hubert" else WavLMObjective
        return cls(model, labels, crop_starts, s)
    raise ValueError(f"unknown family {family!r}")
