"""Streaming CTC decoding in numpy: greedy and prefix beam search.

Both decoders are frame-synchronous, so feeding logits chunk by chunk gives
exactly the same result as feeding the whole utterance at once (the only
state carried between chunks is the previous argmax for greedy, the beam for
beam search).

Optional KenLM shallow fusion goes through ``pyctcdecode`` (a lazy,
optional import). pyctcdecode has no incremental API, so with an LM the
partial text comes from the LM-free beam and the LM beam search runs once
over the utterance's logits at ``finalize()``; its cost is one offline decode
per utterance, not per chunk.

Vocabulary conventions (from the bundle): ``blank_id`` is the CTC blank, the
``word_delimiter`` token ("|") becomes a space, tokens written ``<...>`` are
specials and produce no text, and a leading "▁" (sentencepiece) starts a word.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

from .alignment import WordSpan, word_spans

__all__ = [
    "Vocabulary",
    "LmConfig",
    "greedy_decode",
    "prefix_beam_search",
    "log_softmax",
    "StreamingCtcDecoder",
]

_NEG_INF = -math.inf


@dataclass(frozen=True)
class Vocabulary:
    tokens: tuple[str, ...]
    blank_id: int = 0
    word_delimiter: str = "|"

    def __post_init__(self) -> None:
        if not 0 <= self.blank_id < len(self.tokens):
            raise ValueError(f"blank_id {self.blank_id} outside vocabulary of {len(self.tokens)} tokens")

    def __len__(self) -> int:
        return len(self.tokens)

    def ids_to_text(self, ids: Sequence[int]) -> str:
        """Token ids (already CTC-collapsed, no blanks) -> text."""
        parts: list[str] = []
        for i in ids:
            tok = self.tokens[int(i)]
            if int(i) == self.blank_id or (len(tok) > 2 and tok.startswith("<") and tok.endswith(">")):
                continue
            if tok == self.word_delimiter:
                parts.append(" ")
            else:
                parts.append(tok.replace("▁", " "))
        return " ".join("".join(parts).split())

    def text_to_ids(self, text: str) -> Optional[list[int]]:
        """Text -> token ids for a character vocabulary (words joined by the delimiter); None if a
        character has no token (or the vocabulary is not one letter per token)."""
        index = {t: i for i, t in enumerate(self.tokens)}
        ids: list[int] = []
        for w, word in enumerate(text.split()):
            if w and self.word_delimiter in index:
                ids.append(index[self.word_delimiter])
            for ch in word:
                i = index.get(ch)
                if i is None:
                    return None
                ids.append(i)
        return ids


@dataclass(frozen=True)
class LmConfig:
    """KenLM n-gram for pyctcdecode: path to an .arpa/.bin file and its weights."""

    kenlm_path: str
    alpha: float = 0.5  # LM weight
    beta: float = 1.0  # word insertion bonus
    beam_width: int = 64


def log_softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    m = np.max(logits, axis=axis, keepdims=True)
    z = logits - m
    return z - np.log(np.sum(np.exp(z), axis=axis, keepdims=True))


def greedy_decode(logits: np.ndarray, blank_id: int = 0, prev_id: int = -1) -> list[int]:
    """Best-path decoding of (T, V) logits: argmax, collapse repeats, drop blanks.

    ``prev_id`` is the argmax of the frame before ``logits[0]`` (for chunked
    use: a token repeated across a chunk boundary is one token).
    """
    best = np.argmax(logits, axis=-1)  # (T,)
    out: list[int] = []
    prev = prev_id
    for b in best.tolist():
        if b != prev and b != blank_id:
            out.append(b)
        prev = b
    return out


def _lae(a: float, b: float) -> float:
    # log(exp(a) + exp(b)) for scalars, -inf safe.
    if a == _NEG_INF:
        return b
    if b == _NEG_INF:
        return a
    if a > b:
        return a + math.log1p(math.exp(b - a))
    return b + math.log1p(math.exp(a - b))


class _PrefixBeam:
    """Frame-synchronous CTC prefix beam search over log-probabilities."""

    def __init__(self, blank_id: int, beam_size: int, token_cutoff: int) -> None:
        self.blank_id = blank_id
        self.beam_size = beam_size
        self.token_cutoff = token_cutoff
        self.reset()

    def reset(self) -> None:
        # prefix -> (log P(prefix, ends in blank), log P(prefix, ends in non-blank))
        self.beams: dict[tuple[int, ...], tuple[float, float]] = {(): (0.0, _NEG_INF)}

    def step(self, logp: np.ndarray) -> None:
        """logp: (T, V) log-probabilities."""
        blank = self.blank_id
        k = min(self.token_cutoff, logp.shape[1])
        for frame in logp:
            # Only the k most likely tokens of this frame can extend a prefix
            # (plus blank, always): the usual pruning, exact for large k.
            cand = np.argpartition(-frame, k - 1)[:k].tolist()
            if blank not in cand:
                cand.append(blank)
            fl = frame.tolist()
            new: dict[tuple[int, ...], list[float]] = {}

            def get(p: tuple[int, ...]) -> list[float]:
                e = new.get(p)
                if e is None:
                    e = new[p] = [_NEG_INF, _NEG_INF]
                return e

            for prefix, (pb, pnb) in self.beams.items():
                ptot = _lae(pb, pnb)
                last = prefix[-1] if prefix else -1
                for c in cand:
                    p = fl[c]
                    if c == blank:
                        e = get(prefix)
                        e[0] = _lae(e[0], ptot + p)
                    elif c == last:
                        # Repeat without a blank between: stays the same prefix...
                        e = get(prefix)
                        e[1] = _lae(e[1], pnb + p)
                        # ...with a blank between: a new token.
                        if pb > _NEG_INF:
                            e2 = get(prefix + (c,))
                            e2[1] = _lae(e2[1], pb + p)
                    else:
                        e = get(prefix + (c,))
                        e[1] = _lae(e[1], ptot + p)
            ranked = sorted(
                (kv for kv in new.items() if _lae(kv[1][0], kv[1][1]) > _NEG_INF),
                key=lambda kv: _lae(kv[1][0], kv[1][1]),
                reverse=True,
            )
            if ranked:  # all -inf only with -inf logits; keep the old beam then
                self.beams = {p: (v[0], v[1]) for p, v in ranked[: self.beam_size]}

    def best(self) -> tuple[int, ...]:
        return max(self.beams.items(), key=lambda kv: _lae(*kv[1]))[0]

    def nbest(self) -> list[tuple[tuple[int, ...], float]]:
        return sorted(((p, _lae(*v)) for p, v in self.beams.items()), key=lambda x: x[1], reverse=True)


def prefix_beam_search(
    logits: np.ndarray, blank_id: int = 0, beam_size: int = 8, token_cutoff: Optional[int] = None
) -> list[tuple[tuple[int, ...], float]]:
    """CTC prefix beam search on (T, V) logits; returns [(ids, log prob)], best first."""
    beam = _PrefixBeam(blank_id, beam_size, token_cutoff or beam_size)
    beam.step(log_softmax(np.asarray(logits, dtype=np.float64)))
    return beam.nbest()


class StreamingCtcDecoder:
    """Accepts logits chunk by chunk; exposes the growing text; ``finalize()`` ends an utterance.

    Args:
        vocab: the bundle's Vocabulary.
        method: "greedy" or "beam" (prefix beam search).
        beam_size: beams kept per frame (beam only).
        lm: optional LmConfig (KenLM via pyctcdecode) applied at finalize().
    """

    def __init__(self, vocab: Vocabulary, method: str = "greedy", beam_size: int = 8, lm: Optional[LmConfig] = None) -> None:
        if method not in ("greedy", "beam"):
            raise ValueError(f"method must be 'greedy' or 'beam', got {method!r}")
        if beam_size < 1:
            raise ValueError(f"beam_size must be >= 1, got {beam_size}")
        self.vocab = vocab
        self.method = method
        self.beam_size = beam_size
        self.lm = lm
        self._lm_decoder: Any = _build_lm_decoder(vocab, lm) if lm is not None else None
        self._beam = _PrefixBeam(vocab.blank_id, beam_size, beam_size) if method == "beam" else None
        self.reset()

    def reset(self) -> None:
        """Start a new utterance."""
        self._ids: list[int] = []
        self._prev = -1
        self._frames = 0
        self._logits: list[np.ndarray] = []  # the utterance's, for word times at its end
        if self._beam is not None:
            self._beam.reset()

    @property
    def num_frames(self) -> int:
        """Frames accepted since the last reset."""
        return self._frames

    def accept(self, logits: np.ndarray) -> None:
        """logits: (T, V) for consecutive frames of the current utterance."""
        logits = np.asarray(logits)
        if logits.ndim != 2 or logits.shape[1] != len(self.vocab):
            raise ValueError(f"logits must be (frames, {len(self.vocab)}), found {logits.shape}")
        if logits.shape[0] == 0:
            return
        self._frames += logits.shape[0]
        if self._beam is not None:
            self._beam.step(log_softmax(logits.astype(np.float64)))
        else:
            self._ids.extend(greedy_decode(logits, self.vocab.blank_id, self._prev))
            self._prev = int(np.argmax(logits[-1]))
        self._logits.append(logits)

    @property
    def token_ids(self) -> list[int]:
        return list(self._beam.best()) if self._beam is not None else list(self._ids)

    @property
    def text(self) -> str:
        """Current (partial) text of the utterance."""
        return self.vocab.ids_to_text(self.token_ids)

    def finalize(self) -> str:
        """Final text of the utterance (LM-rescored if configured); then reset."""
        return self.finalize_utterance(words=False)[0]

    def finalize_utterance(self, words: bool = True) -> tuple[str, list[WordSpan]]:
        """Final text of the utterance and, with ``words``, its words with frames counted from
        the utterance's first frame (empty when the text cannot be aligned); then reset."""
        ids: Optional[list[int]]
        if self._lm_decoder is not None and self._logits:
            logp = log_softmax(np.concatenate(self._logits).astype(np.float32))
            text = self._lm_decoder.decode(logp, beam_width=self.lm.beam_width)  # type: ignore[union-attr]
            text = " ".join(text.split())
            ids = self.vocab.text_to_ids(text) if words else None
        else:
            ids = self.token_ids
            text = self.vocab.ids_to_text(ids)
        spans: list[WordSpan] = []
        if words and ids and self._logits:
            logp = log_softmax(np.concatenate(self._logits).astype(np.float64))
            spans = word_spans(logp, ids, self.vocab.tokens, self.vocab.blank_id, self.vocab.word_delimiter)
        self.reset()
        return text, spans


def _build_lm_decoder(vocab: Vocabulary, lm: LmConfig) -> Any:
    try:
        from pyctcdecode import build_ctcdecoder  # type: ignore[import-not-found]
    except ImportError as exc:
        raise ImportError(
            "KenLM decoding needs pyctcdecode and kenlm: pip install pyctcdecode kenlm "
            f"(or decode without an LM) [{exc}]"
        ) from exc
    labels = []
    for i, tok in enumerate(vocab.tokens):
        if i == vocab.blank_id:
            labels.append("")
        elif tok == vocab.word_delimiter:
            labels.append(" ")
        else:
            labels.append(tok)
    return build_ctcdecoder(labels, kenlm_model_path=lm.kenlm_path, alpha=lm.alpha, beta=lm.beta)
