"""Interpolated modified Kneser-Ney n-gram estimation (Chen & Goodman 1998, as
KenLM's lmplz does it), with count pruning, written as an ARPA file.

Estimation, for order n and a context h of n-1 words:

* counts ``a``: the raw count at the highest order and for n-grams that start
  with ``<s>``; otherwise the continuation count, the number of distinct words
  seen before the n-gram (how many contexts it completes, not how often);
* three discounts per order from the counts of counts t1..t4 of ``a``:
  ``Y = t1 / (t1 + 2 t2)``, ``D1 = 1 - 2Y t2/t1``, ``D2 = 2 - 3Y t3/t2``,
  ``D3+ = 3 - 4Y t4/t3`` (clipped into (0, k) when the text is too small);
* ``p(w|h) = (a(hw) - D(a(hw))) / sum_v a(hv) + gamma(h) p(w|h')`` where h' drops
  h's oldest word, ``gamma(h) = (D1 N1(h) + D2 N2(h) + D3 N3+(h)) / sum_v a(hv)``,
  and the unigrams interpolate with the uniform distribution over the vocabulary
  (the words, ``</s>`` and ``<unk>``; ``<s>`` is never predicted).

The ARPA file stores the interpolated ``log10 p(w|h)`` of every kept n-gram and
``log10 gamma(h)`` as the backoff of every context, so a reader that backs off
(``p(w|h) = gamma(h) p(w|h')`` for an unseen ``hw``) gets exactly the
interpolated model. Pruning drops n-grams of order >= 2 whose raw count is below
the order's threshold (never a prefix of a kept one) and recomputes each
context's backoff so every distribution still sums to one.
"""

from __future__ import annotations

import gzip
import io
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Iterable, Union

__all__ = ["KneserNeyConfig", "NgramModel", "build_arpa", "estimate", "write_arpa"]

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
Ngram = tuple[str, ...]


@dataclass(frozen=True)
class KneserNeyConfig:
    order: int = 3
    # Minimum raw count to keep an n-gram, per order from 2 up (missing entries repeat the last; 1 keeps all).
    min_counts: tuple[int, ...] = (1,)
    # Words seen fewer times than this become <unk> (1 keeps every word).
    min_word_count: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.order, int) or not 1 <= self.order <= 6:
            raise ValueError(f"order must be an integer in 1..6, got {self.order!r}")
        if not self.min_counts or any(not isinstance(c, int) or c < 1 for c in self.min_counts):
            raise ValueError(f"min_counts must be integers >= 1, got {self.min_counts!r}")
        if self.min_word_count < 1:
            raise ValueError(f"min_word_count must be >= 1, got {self.min_word_count!r}")

    def min_count(self, n: int) -> int:
        if n < 2:
            return 1
        return self.min_counts[min(n - 2, len(self.min_counts) - 1)]


@dataclass
class NgramModel:
    """What goes into the ARPA file: per order, {ngram: (log10 prob, log10 backoff or None)}."""

    order: int
    grams: list[dict[Ngram, tuple[float, float | None]]] = field(default_factory=list)  # index n-1


def _discounts(counts: Iterable[int]) -> tuple[float, float, float]:
    t = [0, 0, 0, 0, 0]
    for c in counts:
        if c <= 4:
            t[c] += 1
    t1, t2, t3, t4 = t[1], t[2], t[3], t[4]
    if min(t1, t2, t3, t4) == 0:
        # Too little text for the estimate: the usual fixed discounts.
        return 0.5, 1.0, 1.5
    y = t1 / (t1 + 2 * t2)
    d = [1 - 2 * y * t2 / t1, 2 - 3 * y * t3 / t2, 3 - 4 * y * t4 / t3]
    # Each discount must stay in (0, k) for the counts it applies to.
    return tuple(min(max(dk, 1e-3), k + 1 - 1e-3) for k, dk in enumerate(d))  # type: ignore[return-value]


def _disc(d: tuple[float, float, float], c: int) -> float:
    return d[min(c, 3) - 1]


def estimate(sentences: Iterable[str], config: KneserNeyConfig = KneserNeyConfig()) -> NgramModel:
    """Sentences (words separated by spaces) -> the pruned, normalised model."""
    N = config.order
    sents = [s.split() for s in sentences]
    sents = [s for s in sents if s]
    if not sents:
        raise ValueError("no text to build a language model from")
    if config.min_word_count > 1:
        wc: dict[str, int] = defaultdict(int)
        for s in sents:
            for w in s:
                wc[w] += 1
        sents = [[w if wc[w] >= config.min_word_count else UNK for w in s] for s in sents]
    # Raw counts of every order.
    raw: list[dict[Ngram, int]] = [defaultdict(int) for _ in range(N)]
    for s in sents:
        toks = [BOS] + s + [EOS]
        for n in range(1, N + 1):
            r = raw[n - 1]
            for i in range(max(0, 1 if n == 1 else 0), len(toks) - n + 1):
                r[tuple(toks[i : i + n])] += 1
    raw[0].pop((BOS,), None)
    # Adjusted counts: continuation counts below the top order, except after <s>.
    adj: list[dict[Ngram, int]] = [dict() for _ in range(N)]
    adj[N - 1] = dict(raw[N - 1])
    for n in range(N - 1, 0, -1):
        cont: dict[Ngram, int] = defaultdict(int)
        for g in raw[n]:  # the (n+1)-grams
            cont[g[1:]] += 1
        a = adj[n - 1]
        for g, c in raw[n - 1].items():
            a[g] = c if g[0] == BOS else cont.get(g, 0) or c
    vocab = {g[0] for g in raw[0]} | {EOS, UNK}
    vocab.discard(BOS)
    # Interpolated probabilities of the full estimate, order by order.
    prob: list[dict[Ngram, float]] = []
    for n in range(1, N + 1):
        a = adj[n - 1]
        d = _discounts(a.values())
        total: dict[Ngram, int] = defaultdict(int)
        nk: dict[Ngram, list[int]] = defaultdict(lambda: [0, 0, 0])
        for g, c in a.items():
            total[g[:-1]] += c
            nk[g[:-1]][min(c, 3) - 1] += 1
        gam = {h: (d[0] * k[0] + d[1] * k[1] + d[2] * k[2]) / total[h] for h, k in nk.items()}
        p: dict[Ngram, float] = {}
        if n == 1:
            g0 = gam[()]
            for w in vocab:
                c = a.get((w,), 0)
                p[(w,)] = (c - _disc(d, c)) / total[()] + g0 / len(vocab) if c else g0 / len(vocab)
        else:
            lower = prob[n - 2]
            for g, c in a.items():
                # Every suffix of a seen n-gram was seen, so lower[g[1:]] exists.
                p[g] = (c - _disc(d, c)) / total[g[:-1]] + gam[g[:-1]] * lower[g[1:]]
        prob.append(p)
    # Pruning by raw count (order >= 2), keeping every prefix of a kept n-gram.
    for n in range(N, 1, -1):
        m = config.min_count(n)
        if m > 1:
            kept_above = {g[:-1] for g in prob[n]} if n < N else set()
            prob[n - 1] = {g: v for g, v in prob[n - 1].items() if raw[n - 1][g] >= m or g in kept_above}
    # Backoffs, shortest contexts first, so that each distribution of the final (pruned,
    # backing-off) model sums to one: gamma(h) = (1 - sum p(w|h)) / (1 - sum P(w|h')).
    model = NgramModel(N)
    backoff: dict[Ngram, float] = {}

    def query(g: Ngram) -> float:
        v = prob[len(g) - 1].get(g)
        if v is not None:
            return v
        return backoff.get(g[:-1], 1.0) * query(g[1:])

    for n in range(2, N + 1):
        by_ctx: dict[Ngram, list[Ngram]] = defaultdict(list)
        for g in prob[n - 1]:
            by_ctx[g[:-1]].append(g)
        for h, gs in by_ctx.items():
            num = 1.0 - sum(prob[n - 1][g] for g in gs)
            den = 1.0 - sum(query(g[1:]) for g in gs)
            backoff[h] = max(num, 1e-12) / den if den > 1e-12 else 1.0
    for n in range(1, N + 1):
        out: dict[Ngram, tuple[float, float | None]] = {}
        for g, pv in prob[n - 1].items():
            out[g] = (math.log10(pv), math.log10(backoff.get(g, 1.0)) if n < N else None)
        if n == 1:
            # <s> starts every sentence and is never predicted.
            out[(BOS,)] = (-99.0, math.log10(backoff.get((BOS,), 1.0)) if N > 1 else None)
        model.grams.append(out)
    return model


def write_arpa(model: NgramModel, out: Union[str, Path, IO[str]]) -> None:
    """Write ``model`` as ARPA text; a path ending in .gz is gzip-compressed."""
    if isinstance(out, (str, Path)):
        path = Path(out)
        if path.suffix == ".gz":
            # mtime=0: the same model gives the same bytes (a committed LM can be rebuilt and compared).
            with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz, \
                    io.TextIOWrapper(gz, encoding="utf-8") as f:
                write_arpa(model, f)
        else:
            with open(path, "w", encoding="utf-8") as f:
                write_arpa(model, f)
        return
    out.write("\\data\\\n")
    for n, grams in enumerate(model.grams, 1):
        out.write(f"ngram {n}={len(grams)}\n")
    for n, grams in enumerate(model.grams, 1):
        out.write(f"\n\\{n}-grams:\n")
        for g in sorted(grams):
            lp, bo = grams[g]
            line = f"{lp:.6f}\t{' '.join(g)}"
            if bo is not None and abs(bo) > 1e-9:
                line += f"\t{bo:.6f}"
            out.write(line + "\n")
    out.write("\n\\end\\\n")


def build_arpa(sentences: Iterable[str], out: Union[str, Path, IO[str]],
               config: KneserNeyConfig = KneserNeyConfig()) -> NgramModel:
    """Estimate from ``sentences`` and write the ARPA file; returns the model."""
    model = estimate(sentences, config)
    write_arpa(model, out)
    return model
