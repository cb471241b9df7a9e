"""What every objective is: the encoder it trains, the heads it owns, and a
loss of a batch.

    loss, metrics = objective(batch, chunk, step)

`objective.model` is the encoder (a `SpeechEncoder`; what is fine-tuned and
exported), `objective.heads` the objective's own pretraining heads (None for
CTC, whose head is part of the encoder), `objective.settings` a frozen
dataclass of its knobs. The training loop (training/loop.py) calls
`before_step(step)` before every update and saves model and heads together.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import Tensor, nn

from ..models import SpeechEncoder


class Objective(nn.Module):
    settings: Any  # a frozen dataclass; each subclass names its type

    def __init__(self, model: SpeechEncoder, heads: nn.Module | None = None) -> None:
        super().__init__()
        self.model = model
        self.heads = heads

    def before_step(self, step: int) -> None:
        """Per-update schedules (e.g. a quantiser temperature); none by default."""

    def settings_dict(self) -> dict:
        return dataclasses.asdict(self.settings)

    def forward(self, batch: dict, chunk: tuple[int, int], step: int) -> tuple[Tensor, dict]:
        raise NotImplementedError
