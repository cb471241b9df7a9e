"""The pretraining heads. Each objective owns its heads (as torchaudio's
HuBERTPretrainModel owns its logit generator); the encoder is the backbone
plus an optional CTC head, so fine-tuning and export never see these.

`build_heads(config)` makes the heads a family pretrains with, sized by the
model config (`final_dim`, `num_label_classes`, `vq_*`, `prediction_steps`).
In a checkpoint the heads' tensors are stored beside the encoder's under
``heads.`` (training/checkpoint.py reads the older layout too).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..models.config import ModelConfig
from ..models.quantizers import GumbelVectorQuantizer


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


class Wav2Vec2Heads(nn.Module):
    """wav2vec 2.0: the Gumbel quantiser of the targets, `project_q` (codeword
    -> final_dim) and `project_hid` (fairseq final_proj: context -> final_dim)."""

    def __init__(self, c: ModelConfig) -> None:
        super().__init__()
        self.quantizer = GumbelVectorQuantizer(c.conv_dim, c.vq_vars, c.vq_groups, c.vq_dim,
                                               c.vq_combine_groups, c.vq_temp, depth=1)
        self.project_q = nn.Linear(c.vq_dim, c.final_dim)
        self.project_hid = nn.Linear(c.hidden_size, c.final_dim)


def build_heads(config: ModelConfig) -> nn.Module | None:
    """The pretraining heads of `config`'s family, or None when it has none
    (a wav2vec2 config without a quantiser, a HuBERT/WavLM one without label classes)."""
    c = config
    if c.family in ("wav2vec", "vq_wav2vec"):
        agg_in = c.vq_dim if c.quantizer == "gumbel" else c.conv_dim
        return Wav2VecPredictions(c.feature_dim, agg_in, c.prediction_steps)
    if c.family == "wav2vec2":
        return Wav2Vec2Heads(c) if c.quantizer == "gumbel" else None
    if c.num_label_classes > 0:
        return HubertHead(c.hidden_size, c.final_dim, c.num_label_classes)
    return None
