"""Streaming CTC decoding in numpy: greedy and prefix beam search.

Both decoders are frame-synchronous, so feeding logits chunk by chunk gives
exactly the same result as feeding the whole utterance at once (the only
state carried between chunks is the previous argmax for greedy, the beam for
beam search).

The beam can add a word n-gram language model (stream/lm/, an ARPA file read
in pure Python) and hotwords (stream/hotwords.py): a hypothesis scores
``log P_ctc + alpha * log P_lm(words) + beta * words + hotword bonus``. The LM
scores each word when the beam spells its end (the word delimiter, or the
next word's start), so streaming partials come from the LM-fused beam; at
``finalize()`` the last word and the end of the sentence are scored too. A word
still being spelled that starts no word of the LM's vocabulary pays the LM's
``<unk>`` score at once (so the beam does not keep misspellings alive for free);
with a lexicon, words outside it are not hypothesised at all.

Vocabulary conventions (from the bundle): ``blank_id`` is the CTC blank, the
``word_delimiter`` token ("|") becomes a space, tokens written ``<...>`` are
specials and produce no text, and a leading "▁" (sentencepiece) starts a word.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Optional, Sequence, Union

import numpy as np

from .alignment import WordSpan, word_spans
from .lm import LmFormatError

if TYPE_CHECKING:
    from .hotwords import Hotword

__all__ = [
    "Vocabulary",
    "LmConfig",
    "greedy_decode",
    "prefix_beam_search",
    "log_softmax",
    "StreamingCtcDecoder",
]

_NEG_INF = -math.inf
# With an LM or hotwords, tokens less likely than this in a frame do not extend hypotheses.
TOKEN_MIN_LOGP = -5.0


@dataclass(frozen=True)
class Vocabulary:
    tokens: tuple[str, ...]
    blank_id: int = 0
    word_delimiter: str = "|"

    def __post_init__(self) -> None:
        if not 0 <= self.blank_id < len(self.tokens):
            raise ValueError(f"blank_id {self.blank_id} outside vocabulary of {len(self.tokens)} tokens")
        # Each token's text, worked out once: a partial's text is rebuilt at every chunk of every stream.
        object.__setattr__(self, "_pieces", tuple(self._piece(i, t) for i, t in enumerate(self.tokens)))

    def _piece(self, i: int, tok: str) -> str:
        if i == self.blank_id or (len(tok) > 2 and tok.startswith("<") and tok.endswith(">")):
            return ""
        return " " if tok == self.word_delimiter else tok.replace("▁", " ")

    def __len__(self) -> int:
        return len(self.tokens)

    def ids_to_text(self, ids: Sequence[int]) -> str:
        """Token ids (already CTC-collapsed, no blanks) -> text."""
        pieces = self._pieces  # type: ignore[attr-defined]
        return " ".join("".join([pieces[int(i)] for i in ids]).split())

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
    """A word n-gram LM for the beam: an ARPA file (``"default"``: the package's) and its weights.

    alpha: LM weight; beta: bonus per word (balances the LM's cost of each word);
    lexicon: optional file, one word per line: the only words the beam may spell.
    """

    path: str = "default"
    alpha: float = 0.3  # tuned on corpus v2 dev with the default model (docs/decoding.md)
    beta: float = 2.0
    lexicon: Optional[str] = None

    def __post_init__(self) -> None:
        for name in ("alpha", "beta"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"LM {name} must be a finite number, got {v!r}")
        if self.alpha < 0:
            raise ValueError(f"LM alpha must be >= 0, got {self.alpha!r}")

    @property
    def kenlm_path(self) -> str:  # the field's name before the pure-Python LM
        return self.path


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


# Token kinds for word scoring.
_NONE, _DELIM, _CHAR, _START = 0, 1, 2, 3


class _Info(NamedTuple):
    """What a prefix has scored besides acoustics (a function of the prefix alone)."""

    lm_state: tuple[str, ...] = ()
    lm: float = 0.0  # ln P_lm of the completed words
    words: int = 0  # completed words
    partial: str = ""  # the word being spelled
    node: Any = None  # hotword automaton state
    bonus: float = 0.0  # committed hotword bonus
    dead: bool = False  # spelled a word outside the lexicon
    score: float = 0.0  # the non-acoustic score while decoding (_WordScorer.score), computed once


class _WordScorer:
    """LM, lexicon and hotwords over a vocabulary's tokens: prefix info and its score."""

    def __init__(self, vocab: Vocabulary, lm: Any = None, alpha: float = 0.0, beta: float = 0.0,
                 lexicon: Optional[frozenset[str]] = None, context: Any = None,
                 hot_words: frozenset[str] = frozenset()) -> None:
        self.lm, self.alpha, self.beta, self.context = lm, alpha, beta, context
        # A hotword's word being spelled is not an unknown word in the making, even outside the LM.
        self._hot_prefixes = frozenset(w[:i] for w in hot_words for i in range(1, len(w) + 1))
        self.kind: list[int] = []
        self.chars: list[str] = []
        for i, tok in enumerate(vocab.tokens):
            if i == vocab.blank_id or (len(tok) > 2 and tok.startswith("<") and tok.endswith(">")):
                self.kind.append(_NONE); self.chars.append("")  # noqa: E702
            elif tok == vocab.word_delimiter:
                self.kind.append(_DELIM); self.chars.append("")  # noqa: E702
            elif tok.startswith("▁"):
                self.kind.append(_START); self.chars.append(tok[1:])  # noqa: E702
            else:
                self.kind.append(_CHAR); self.chars.append(tok)  # noqa: E702
        self.lexicon = lexicon
        self._lex_prefixes = frozenset(w[:i] for w in lexicon for i in range(1, len(w) + 1)) if lexicon else None
        root = _Info(lm.begin() if lm is not None else (), node=context.root if context is not None else None)
        self.root = root._replace(score=self.score(root))

    def _close_word(self, info: _Info, lm_state: tuple[str, ...], lm_sum: float, words: int
                    ) -> tuple[tuple[str, ...], float, int, bool]:
        w = info.partial
        if not w:
            return lm_state, lm_sum, words, False
        dead = self.lexicon is not None and w not in self.lexicon
        if self.lm is not None:
            lp, lm_state = self.lm.score(lm_state, w)
            lm_sum += lp
        return lm_state, lm_sum, words + 1, dead

    def extend(self, info: _Info, token: int) -> _Info:
        kind = self.kind[token]
        if kind == _NONE:
            return info
        state, lm_sum, words, partial, dead = info.lm_state, info.lm, info.words, info.partial, info.dead
        if kind == _DELIM or kind == _START:
            state, lm_sum, words, d = self._close_word(info, state, lm_sum, words)
            dead = dead or d
            partial = self.chars[token]
        else:
            partial = partial + self.chars[token]
        if partial and self._lex_prefixes is not None and partial not in self._lex_prefixes:
            dead = True
        node, bonus = info.node, info.bonus
        # A hotword starts only where a word starts: a letter inside another word ("k" of "fork")
        # must not lift that word's hypotheses over the others.
        if self.context is not None and not (kind == _CHAR and info.partial and node is self.context.root):
            node, bonus = self.context.step(node, bonus, token)
        info = _Info(state, lm_sum, words, partial, node, bonus, dead)
        return info._replace(score=self.score(info))

    def score(self, info: _Info) -> float:
        """Non-acoustic score of a prefix still being decoded (stored in its _Info.score)."""
        if info.dead:
            return _NEG_INF
        s = self.alpha * info.lm + self.beta * info.words + info.bonus
        if info.node is not None:
            s += info.node.bonus
        if (self.lm is not None and info.partial and not self.lm.is_word_prefix(info.partial)
                and info.partial not in self._hot_prefixes):
            s += self.alpha * self.lm.unk_logp  # an unknown word in the making pays now
        return s

    def final_score(self, info: _Info) -> float:
        """Score of a prefix as a whole utterance: its last word and the sentence end scored; an unfinished
        hotword match gives back what it has not completed."""
        state, lm_sum, words, dead = self._close_word(info, info.lm_state, info.lm, info.words)
        if dead or info.dead:
            return _NEG_INF
        if self.lm is not None and words:
            lm_sum += self.lm.score(state, "</s>")[0]
        # A match stopped inside a longer phrase keeps what it completed ("new" of "new york").
        kept = info.node.done if info.node is not None else 0.0
        return self.alpha * lm_sum + self.beta * words + info.bonus + kept


class _PrefixBeam:
    """Frame-synchronous CTC prefix beam search over log-probabilities.

    With a ``scorer`` (LM, lexicon, hotwords) hypotheses are ranked by acoustic
    plus word score; without one, by acoustic probability alone.
    """

    def __init__(self, blank_id: int, beam_size: int, token_cutoff: int, scorer: Optional[_WordScorer] = None,
                 token_min_logp: float = _NEG_INF) -> None:
        self.blank_id = blank_id
        self.beam_size = beam_size
        self.token_cutoff = token_cutoff
        self.scorer = scorer
        self.token_min_logp = token_min_logp
        self.reset()

    def reset(self) -> None:
        # prefix -> [log P(prefix, ends in blank), log P(prefix, ends in non-blank), _Info or None]
        root = self.scorer.root if self.scorer is not None else None
        self.beams: dict[tuple[int, ...], list[Any]] = {(): [0.0, _NEG_INF, root]}
        # Word scores of prefixes met in this utterance: the same extension is proposed frame after frame.
        self._infos: dict[tuple[int, ...], Any] = {}

    def step(self, logp: np.ndarray) -> None:
        """logp: (T, V) log-probabilities."""
        blank = self.blank_id
        scorer = self.scorer
        k = min(self.token_cutoff, logp.shape[1])
        for frame in logp:
            # Only the k most likely tokens of this frame can extend a prefix
            # (plus blank, always): the usual pruning, exact for large k.
            fl = frame.tolist()
            cand = [c for c in np.argpartition(-frame, k - 1)[:k].tolist() if fl[c] >= self.token_min_logp]
            if blank not in cand:
                cand.append(blank)
            new: dict[tuple[int, ...], list[Any]] = {}
            infos = self._infos

            def get(p: tuple[int, ...], parent: Any, c: int) -> list[Any]:
                e = new.get(p)
                if e is None:
                    if scorer is None:
                        info = None
                    elif c < 0:
                        info = parent
                    else:
                        info = infos.get(p)
                        if info is None:
                            if len(infos) > 200_000:  # bounded: a long utterance meets many prefixes
                                infos.clear()
                            info = infos[p] = scorer.extend(parent, c)
                    e = new[p] = [_NEG_INF, _NEG_INF, info]
                return e

            for prefix, (pb, pnb, info) in self.beams.items():
                ptot = _lae(pb, pnb)
                last = prefix[-1] if prefix else -1
                for c in cand:
                    p = fl[c]
                    if c == blank:
                        e = get(prefix, info, -1)
                        e[0] = _lae(e[0], ptot + p)
                    elif c == last:
                        # Repeat without a blank between: stays the same prefix...
                        e = get(prefix, info, -1)
                        e[1] = _lae(e[1], pnb + p)
                        # ...with a blank between: a new token.
                        if pb > _NEG_INF:
                            e2 = get(prefix + (c,), info, c)
                            e2[1] = _lae(e2[1], pb + p)
                    else:
                        e = get(prefix + (c,), info, c)
                        e[1] = _lae(e[1], ptot + p)
            if scorer is None:
                scored = [(_lae(v[0], v[1]), p, v) for p, v in new.items()]
            else:
                scored = [(_lae(v[0], v[1]) + v[2].score, p, v) for p, v in new.items()]
            scored = [x for x in scored if x[0] > _NEG_INF]
            if scored:  # all -inf only with -inf logits; keep the old beam then
                scored.sort(key=lambda x: x[0], reverse=True)
                self.beams = {p: v for _, p, v in scored[: self.beam_size]}

    def _total(self, v: list[Any]) -> float:
        return _lae(v[0], v[1]) + (v[2].score if self.scorer is not None else 0.0)

    def best(self) -> tuple[int, ...]:
        return max(self.beams.items(), key=lambda kv: self._total(kv[1]))[0]

    def nbest(self) -> list[tuple[tuple[int, ...], float]]:
        return sorted(((p, self._total(v)) for p, v in self.beams.items()), key=lambda x: x[1], reverse=True)

    def final_best(self) -> tuple[int, ...]:
        """The best prefix as a finished utterance (its last word and the sentence end scored)."""
        if self.scorer is None:
            return self.best()
        sc = self.scorer
        ranked = [(_lae(v[0], v[1]) + sc.final_score(v[2]), p) for p, v in self.beams.items()]
        score, best = max(ranked, key=lambda x: x[0])
        return best if score > _NEG_INF else self.best()


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
        lm: optional LmConfig: word n-gram LM fused into the beam (needs method="beam").
        hotwords: optional phrases (or Hotwords with their scores) to bias the beam towards
            (needs method="beam").
    Raises LmFormatError (bad LM file), HotwordError (bad hotwords), ValueError (bad settings).
    """

    def __init__(self, vocab: Vocabulary, method: str = "greedy", beam_size: int = 8, lm: Optional[LmConfig] = None,
                 hotwords: Optional[Sequence[Union[str, "Hotword"]]] = None) -> None:
        if method not in ("greedy", "beam"):
            raise ValueError(f"method must be 'greedy' or 'beam', got {method!r}")
        if beam_size < 1:
            raise ValueError(f"beam_size must be >= 1, got {beam_size}")
        if method != "beam" and (lm is not None or hotwords):
            raise ValueError("a language model or hotwords need method='beam'")
        self.vocab = vocab
        self.method = method
        self.beam_size = beam_size
        self.lm = lm
        self._beam: Optional[_PrefixBeam] = None
        if method == "beam":
            scorer = _make_scorer(vocab, lm, hotwords) if (lm is not None or hotwords) else None
            # A token below e^-5 in a frame almost never wins (as pyctcdecode's token_min_logp), and each one
            # costs a Python loop over the beam (docs/decoding.md has the measurements): with or without an LM.
            self._beam = _PrefixBeam(vocab.blank_id, beam_size, min(beam_size, 16), scorer, TOKEN_MIN_LOGP)
        self.reset()

    def reset(self) -> None:
        """Start a new utterance."""
        self._ids: list[int] = []
        self._prev = -1
        self._frames = 0
        self._logits: list[np.ndarray] = []  # the utterance's, for word times at its end
        self._levels: Optional[list[np.ndarray]] = []  # the input level each frame heard; None once one is missing
        if self._beam is not None:
            self._beam.reset()

    @property
    def num_frames(self) -> int:
        """Frames accepted since the last reset."""
        return self._frames

    def accept(self, logits: np.ndarray, levels_db: Optional[np.ndarray] = None) -> None:
        """logits: (T, V) for consecutive frames of the current utterance; levels_db: optional (T,) level
        of the audio each frame heard (alignment.frame_levels), which word ends then follow."""
        logits = np.asarray(logits)
        if logits.ndim != 2 or logits.shape[1] != len(self.vocab):
            raise ValueError(f"logits must be (frames, {len(self.vocab)}), found {logits.shape}")
        if logits.shape[0] == 0:
            return
        if levels_db is not None and np.shape(levels_db) != (logits.shape[0],):
            raise ValueError(f"levels_db must be ({logits.shape[0]},), found {np.shape(levels_db)}")
        if self._levels is not None:
            if levels_db is None:
                self._levels = None  # a part of the utterance without levels: ends come from the posteriors
            else:
                self._levels.append(np.asarray(levels_db, dtype=np.float64))
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
        """Final text of the utterance (its last word and the sentence end LM-scored, if an LM is set); then reset."""
        return self.finalize_utterance(words=False)[0]

    def finalize_utterance(self, words: bool = True) -> tuple[str, list[WordSpan]]:
        """Final text of the utterance and, with ``words``, its words with frames counted from
        the utterance's first frame (empty when the text cannot be aligned); then reset."""
        ids = list(self._beam.final_best()) if self._beam is not None else list(self._ids)
        text = self.vocab.ids_to_text(ids)
        spans: list[WordSpan] = []
        if words and ids and self._logits:
            logp = log_softmax(np.concatenate(self._logits).astype(np.float64))
            levels = np.concatenate(self._levels) if self._levels else None
            spans = word_spans(logp, ids, self.vocab.tokens, self.vocab.blank_id, self.vocab.word_delimiter, levels)
        self.reset()
        return text, spans


@functools.lru_cache(maxsize=4)
def _load_lm_cached(path: str, mtime: float) -> Any:
    from .lm import load_lm

    return load_lm(path)


def _load_lexicon(path: str) -> frozenset[str]:
    try:
        text = Path(path).expanduser().read_text(encoding="utf-8")
    except OSError as exc:
        raise LmFormatError(f"cannot read lexicon {path!r}: {exc.strerror or exc}") from None
    words = frozenset(line.split()[0].lower() for line in text.splitlines() if line.split())
    if not words:
        raise LmFormatError(f"lexicon {path!r} lists no words")
    return words


def _make_scorer(vocab: Vocabulary, lm: Optional[LmConfig], hotwords: Optional[Sequence[Union[str, "Hotword"]]]
                 ) -> _WordScorer:
    from .hotwords import ContextGraph, HotwordError, parse_hotwords
    from .lm import DEFAULT_LM_PATH

    model = None
    lexicon = None
    phrases = parse_hotwords(hotwords or [])
    if lm is not None:
        p = DEFAULT_LM_PATH if lm.path == "default" else Path(lm.path).expanduser()
        model = _load_lm_cached(str(p), p.stat().st_mtime if p.is_file() else 0.0)
        if lm.lexicon is not None:
            # Hotword words are always allowed.
            lexicon = _load_lexicon(lm.lexicon) | {w for h in phrases for w in h.phrase.split()}
    context = None
    if phrases:
        seqs = []
        for h in phrases:
            ids = vocab.text_to_ids(h.phrase)
            if not ids:
                raise HotwordError(f"hotword {h.phrase!r} has characters the model cannot spell "
                                   "(hotwords need a character vocabulary)")
            seqs.append((ids, h.score))
        context = ContextGraph(seqs)
    return _WordScorer(vocab, model, lm.alpha if lm else 0.0, lm.beta if lm else 0.0, lexicon, context,
                       frozenset(w for h in phrases for w in h.phrase.split()))
