"""Loss functions shared by the self-supervised objectives (docs/models.md).

Pure functions on tensors, so each can be tested on constructed inputs:

* :func:`sample_negatives` / :func:`wav2vec_bce_loss`: wav2vec and vq-wav2vec
  (docs/models.md, wav2vec): step-specific predictions scored by a dot product against
  the target at t + k - 1 + offset and against negatives drawn uniformly
  from the same utterance (excluding the positive's own position), binary
  cross-entropy with logits, normalised by the number of positives.
* :func:`contrastive_loss`: wav2vec 2.0 (docs/models.md, wav2vec 2.0): cosine logits over a
  temperature against the quantised target and distractors from the masked
  frames of the same utterance; distractors equal to the positive get -inf.
* :func:`diversity_loss`: (GV - sum_g exp H(p_g)) / GV (the code's form).
* :func:`feature_penalty`: mean square of the conv encoder output.
* :func:`masked_label_loss`: HuBERT/WavLM cross-entropy on masked frames only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def sample_negatives(lengths: Tensor, T: int, num: int, generator: torch.Generator | None = None) -> Tensor:
    """(B, T, num) indices into each utterance's own frames: uniform over
    [0, len_b) excluding the position itself (fairseq's ``randint(0, high-1)``
    followed by ``idx[idx >= t] += 1``). Rows shorter than 2 frames get index 0
    (callers mask those positions out)."""
    B = lengths.shape[0]
    device = lengths.device
    high = (lengths.clamp(min=2) - 1).to(torch.float32).view(B, 1, 1)  # draw from [0, len-1)
    u = torch.rand((B, T, num), generator=generator).to(device)
    idx = (u * high).long()
    pos = torch.arange(T, device=device).view(1, T, 1)
    idx = idx + (idx >= pos).long()
    return idx.clamp(max=max(T - 1, 0))


def wav2vec_bce_loss(preds: Tensor, targets: Tensor, lengths: Tensor, offset: int, num_negatives: int = 10,
                     generator: torch.Generator | None = None, neg_idx: Tensor | None = None
                     ) -> tuple[Tensor, dict]:
    """wav2vec / vq-wav2vec loss (docs/models.md, wav2vec).

    preds: (B, T, K, C) = h_k(c_t); targets: (B, T, C) = z (or quantised z);
    lengths: (B,) valid frames. Step k (1-based) made at t predicts
    targets[t + k - 1 + offset]. Negatives for target position u are shared by
    every step that targets u (fairseq draws them once per position).

    Returns (loss, metrics): loss = sum of BCE-with-logits over positives and
    negatives of all valid (t, k) pairs, divided by the number of positives.
    """
    B, T, K, C = preds.shape
    if neg_idx is None:
        neg_idx = sample_negatives(lengths, T, num_negatives, generator)  # (B, T, N)
    bidx = torch.arange(B, device=targets.device).view(B, 1, 1)
    negs = targets[bidx, neg_idx]  # (B, T, N, C)
    cand = torch.cat([targets.unsqueeze(2), negs], dim=2)  # (B, T, 1+N, C): index 0 = positive
    total = preds.new_zeros((), dtype=torch.float32)
    n_pos = 0
    correct = 0.0
    for k in range(K):
        shift = k + offset
        if shift >= T:
            break
        p = preds[:, : T - shift, k].float()  # predictions at t
        c = cand[:, shift:].float()  # candidates of target position t + shift
        logits = torch.einsum("btc,btnc->btn", p, c)  # (B, T-shift, 1+N)
        valid = (torch.arange(T - shift, device=preds.device)[None, :] + shift) < lengths[:, None]
        labels = torch.zeros_like(logits)
        labels[..., 0] = 1.0
        bce = F.binary_cross_entropy_with_logits(logits, labels, reduction="none").sum(-1)
        total = total + (bce * valid).sum()
        n_pos += int(valid.sum())
        with torch.no_grad():
            correct += float(((logits[..., 0:1] > logits[..., 1:]).all(-1) & valid).sum())
    n = max(n_pos, 1)
    return total / n, {"positives": float(n_pos), "acc": correct / n}


def contrastive_loss(x: Tensor, y: Tensor, num_negatives: int = 100, temperature: float = 0.1,
                     generator: torch.Generator | None = None, neg_idx: Tensor | None = None
                     ) -> tuple[Tensor, dict]:
    """wav2vec 2.0 contrastive loss, summed over masked positions (docs/models.md, wav2vec 2.0).

    x: (B, M, D) context vectors c~_t at the masked positions; y: (B, M, D)
    quantised-and-projected targets q_t of the same positions (rows hold the
    same number M of masked frames: `require_same_masks`). Distractors for
    each position are drawn with replacement from the other M-1 masked
    positions of the same utterance. Returns (sum over B*M of -log softmax[0],
    metrics); divide by B*M for the per-frame loss.
    """
    B, M, D = y.shape
    if neg_idx is None:
        lengths = torch.full((B,), M, dtype=torch.long, device=y.device)
        neg_idx = sample_negatives(lengths, M, num_negatives, generator)  # (B, M, N)
    bidx = torch.arange(B, device=y.device).view(B, 1, 1)
    negs = y[bidx, neg_idx]  # (B, M, N, D)
    cand = torch.cat([y.unsqueeze(2), negs], dim=2).float()  # (B, M, 1+N, D)
    logits = F.cosine_similarity(x.float().unsqueeze(2), cand, dim=-1) / temperature
    neg_is_pos = (negs == y.unsqueeze(2)).all(-1)  # identical codeword -> -inf
    if M < 2:  # no distractor can exist
        neg_is_pos = torch.ones_like(neg_is_pos)
    logits = torch.cat([logits[..., :1], logits[..., 1:].masked_fill(neg_is_pos, float("-inf"))], dim=-1)
    flat = logits.reshape(B * M, -1)
    target = torch.zeros(B * M, dtype=torch.long, device=y.device)
    loss = F.cross_entropy(flat, target, reduction="sum")
    with torch.no_grad():
        acc = float((flat.argmax(-1) == 0).float().mean()) if flat.numel() else 0.0
        # distractors that differ from the positive: ~0 means a collapsed codebook
        distinct = float(1.0 - neg_is_pos.float().mean()) if neg_is_pos.numel() else 0.0
    return loss, {"acc": acc, "distinct_negatives": distinct}


def diversity_loss(prob_perplexity: Tensor, num_vars: int) -> Tensor:
    """(G*V - sum_g exp(H(mean softmax_g))) / (G*V): 0 for a uniformly used
    codebook, approaching 1 - G/(G*V) when each group uses one entry."""
    return (num_vars - prob_perplexity) / num_vars


def feature_penalty(conv_features: Tensor, lengths: Tensor | None = None) -> Tensor:
    """Mean of squares of the conv encoder output (B, T, C) over valid frames."""
    f = conv_features.float().pow(2)
    if lengths is None:
        return f.mean()
    valid = (torch.arange(f.shape[1], device=f.device)[None, :] < lengths[:, None]).unsqueeze(-1)
    n = valid.sum() * f.shape[-1]
    return (f * valid).sum() / n.clamp(min=1)


def masked_label_loss(logits: Tensor, targets: Tensor, mask: Tensor, masked_weight: float = 1.0,
                      unmasked_weight: float = 0.0, ignore_index: int = -100) -> tuple[Tensor, dict]:
    """HuBERT/WavLM prediction loss (docs/models.md, HuBERT), normalised by the number
    of masked frames with a label.

    logits (B, T, C) (cosine/tau over the label embeddings), targets (B, T)
    class indices with `ignore_index` for padding or frames without a label,
    mask (B, T) bool = the frames that were replaced by the mask embedding.
    With the published weights (1, 0) the unmasked frames do not count.
    """
    valid = targets != ignore_index
    m = mask & valid
    u = ~mask & valid
    n_m = int(m.sum())
    loss = logits.new_zeros((), dtype=torch.float32)
    metrics: dict = {"masked_frames": float(n_m)}
    if masked_weight > 0 and n_m:
        lm = logits[m].float()
        loss = loss + masked_weight * F.cross_entropy(lm, targets[m], reduction="sum")
        with torch.no_grad():
            metrics["acc_m"] = float((lm.argmax(-1) == targets[m]).float().mean())
    if unmasked_weight > 0 and int(u.sum()):
        lu = logits[u].float()
        loss = loss + unmasked_weight * F.cross_entropy(lu, targets[u], reduction="sum")
        with torch.no_grad():
            metrics["acc_u"] = float((lu.argmax(-1) == targets[u]).float().mean())
    return loss / max(n_m, 1), metrics
