"""Vector quantisers: Gumbel-softmax (vq-wav2vec, wav2vec 2.0) and k-means
(vq-wav2vec). Both are per-frame, hence streamable as they are.

Input and output are time-major (B, T, C).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class QuantizerOutput:
    x: Tensor  # (B, T, vq_dim) quantised vectors
    codes: Tensor  # (B, T, G) int64 code indices
    prob_perplexity: Tensor  # sum_g exp(H(mean softmax)) (soft, no noise)
    code_perplexity: Tensor  # the same from hard one-hots
    num_vars: int  # G * V
    loss: Tensor | None = None  # k-means codebook + commitment loss


def _perplexity(probs: Tensor, mask: Tensor | None) -> Tensor:
    """probs (N, G, V) -> sum over groups of exp(entropy of the mean distribution)."""
    if mask is not None:
        probs = probs[mask.reshape(-1)]
    avg = probs.mean(dim=0)
    return torch.exp(-(avg * torch.log(avg + 1e-7)).sum(-1)).sum()


class GumbelVectorQuantizer(nn.Module):
    """G groups of V entries; hard Gumbel-softmax (straight-through) in training,
    argmax at evaluation. Temperature annealed per update by `set_num_updates`."""

    def __init__(self, dim: int, num_vars: int, groups: int, vq_dim: int, combine_groups: bool,
                 temp: tuple[float, float, float], depth: int = 1, factor: int = 2) -> None:
        super().__init__()
        assert vq_dim % groups == 0
        self.groups, self.num_vars = groups, num_vars
        self.combine_groups = combine_groups
        n_entries = 1 if combine_groups else groups
        self.codevectors = nn.Parameter(torch.rand(1, n_entries * num_vars, vq_dim // groups))
        if depth == 1:
            self.weight_proj: nn.Module = nn.Linear(dim, groups * num_vars)
            nn.init.normal_(self.weight_proj.weight, mean=0, std=1)
            nn.init.zeros_(self.weight_proj.bias)
        else:
            inner = dim * factor
            layers: list[nn.Module] = []
            d = dim
            for _ in range(depth - 1):
                layers.append(nn.Sequential(nn.Linear(d, inner), nn.GELU()))
                d = inner
            layers.append(nn.Linear(d, groups * num_vars))
            self.weight_proj = nn.Sequential(*layers)
        self.max_temp, self.min_temp, self.temp_decay = temp
        self.curr_temp = self.max_temp

    def set_num_updates(self, n: int, decay: float | None = None) -> None:
        """The temperature after `n` updates: max(max_temp * decay^n, min_temp);
        `decay` defaults to the config's (a trainer may anneal faster)."""
        d = self.temp_decay if decay is None else decay
        self.curr_temp = max(self.max_temp * d ** n, self.min_temp)

    def _codebook(self) -> Tensor:
        cv = self.codevectors
        if self.combine_groups:
            cv = cv.repeat(1, self.groups, 1)
        return cv.view(self.groups, self.num_vars, -1)  # (G, V, d)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> QuantizerOutput:
        B, T, _ = x.shape
        logits = self.weight_proj(x).view(B * T, self.groups, self.num_vars)
        codes = logits.argmax(dim=-1)
        hard = F.one_hot(codes, self.num_vars).to(logits.dtype)
        soft = torch.softmax(logits.float(), dim=-1)
        prob_ppl = _perplexity(soft, mask)
        code_ppl = _perplexity(hard.float(), mask)
        if self.training:
            onehot = F.gumbel_softmax(logits.float(), tau=self.curr_temp, hard=True).to(x.dtype)
            codes = onehot.argmax(dim=-1)
        else:
            onehot = hard
        q = torch.einsum("ngv,gvd->ngd", onehot, self._codebook()).reshape(B, T, -1)
        return QuantizerOutput(q, codes.view(B, T, self.groups), prob_ppl, code_ppl,
                               self.groups * self.num_vars)

    def codes(self, x: Tensor) -> Tensor:
        """(B, T, C) -> (B, T, G) argmax code indices (inference, streamable)."""
        B, T, _ = x.shape
        return self.weight_proj(x).view(B, T, self.groups, self.num_vars).argmax(dim=-1)

    def lookup(self, codes: Tensor) -> Tensor:
        """(B, T, G) indices -> (B, T, vq_dim) codewords."""
        cb = self._codebook()
        parts = [cb[g][codes[..., g]] for g in range(self.groups)]
        return torch.cat(parts, dim=-1)


class KmeansVectorQuantizer(nn.Module):
    """Nearest codeword per group (Euclidean), straight-through gradient, and
    the loss mse(q, sg(z)) + gamma * mse(z, sg(q)).

    Departure from fairseq: its pre-projection GroupNorm(G, C) normalises over
    all time, which cannot stream; here each group is normalised per frame.
    """

    def __init__(self, dim: int, num_vars: int, groups: int, combine_groups: bool, gamma: float) -> None:
        super().__init__()
        assert dim % groups == 0
        self.groups, self.num_vars, self.gamma = groups, num_vars, gamma
        self.var_dim = dim // groups
        self.combine_groups = combine_groups
        n = 1 if combine_groups else groups
        self.embedding = nn.Parameter(0.01 * torch.randn(num_vars, n, self.var_dim))
        self.projection = nn.Conv1d(dim, dim, 1, groups=groups, bias=False)
        self.norm_weight = nn.Parameter(torch.ones(dim))
        self.norm_bias = nn.Parameter(torch.zeros(dim))

    def _project(self, x: Tensor) -> Tensor:
        B, T, C = x.shape
        z = self.projection(x.transpose(1, 2)).transpose(1, 2).reshape(B, T, self.groups, self.var_dim)
        z = F.layer_norm(z, (self.var_dim,))
        return z.reshape(B, T, C) * self.norm_weight + self.norm_bias

    def _expanded(self) -> Tensor:
        e = self.embedding
        if self.combine_groups:
            e = e.expand(self.num_vars, self.groups, self.var_dim)
        return e  # (V, G, d)

    def _assign(self, z: Tensor) -> Tensor:
        B, T, _ = z.shape
        zg = z.view(B * T, self.groups, self.var_dim)
        e = self._expanded()
        d = (zg.unsqueeze(0) - e.unsqueeze(1)).pow(2).sum(-1)  # (V, N, G)
        return d.argmin(dim=0).view(B, T, self.groups)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> QuantizerOutput:
        B, T, C = x.shape
        z = self._project(x)
        codes = self._assign(z)
        e = self._expanded()
        q = torch.stack([e[codes[..., g], g] for g in range(self.groups)], dim=2).reshape(B, T, C)
        loss = F.mse_loss(q, z.detach()) + self.gamma * F.mse_loss(z, q.detach())
        out = q.detach() + z - z.detach()  # straight-through
        hard = F.one_hot(codes.view(-1, self.groups), self.num_vars).float()
        ppl = _perplexity(hard, mask)
        return QuantizerOutput(out, codes, ppl, ppl, self.groups * self.num_vars, loss)

    def codes(self, x: Tensor) -> Tensor:
        return self._assign(self._project(x))

    def lookup(self, codes: Tensor) -> Tensor:
        e = self._expanded()
        B, T, _ = codes.shape
        return torch.stack([e[codes[..., g], g] for g in range(self.groups)], dim=2).reshape(B, T, -1)
