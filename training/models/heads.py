"""Pretraining heads that belong to the model (losses live in training/objectives)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Wav2VecPredictions(nn.Module):
    """wav2vec 1 step-specific transforms h_k(c) = W_k c + b, k = 1..K.

    fairseq implements all K at once as ConvTranspose2d(C_in -> C_out, (1, K));
    that is K matrices with ONE shared bias, kept here as such.
    """

    def __init__(self, in_dim: int, out_dim: int, steps: int) -> None:
        super().__init__()
        self.steps = steps
        self.weight = nn.Parameter(torch.empty(steps, out_dim, in_dim))
        nn.init.kaiming_uniform_(self.weight.view(steps * out_dim, in_dim), a=5 ** 0.5)
        self.bias = nn.Parameter(torch.zeros(out_dim))

    def forward(self, c: Tensor) -> Tensor:
        """c: (B, T, C_in) -> predictions (B, T, K, C_out)."""
        return torch.einsum("btc,koc->btko", c, self.weight) + self.bias


class HubertHead(nn.Module):
    """final_proj (D -> final_dim) and one learned embedding per label class;
    logits are cosine similarities over a temperature (computed in the loss)."""

    def __init__(self, dim: int, final_dim: int, num_classes: int) -> None:
        super().__init__()
        self.final_proj = nn.Linear(dim, final_dim)
        self.label_embs_concat = nn.Parameter(torch.rand(num_classes, final_dim))

    def forward(self, hidden: Tensor, temperature: float = 0.1) -> Tensor:
        """hidden (..., D) -> logits (..., num_classes)."""
        p = nn.functional.normalize(self.final_proj(hidden).float(), dim=-1)
        e = nn.functional.normalize(self.label_embs_concat.float(), dim=-1)
        return p @ e.t() / temperature
