"""Word times and confidences from CTC output: a Viterbi forced alignment.

Whatever decoder chose the text (greedy, beam, beam with a language model),
the words' times come the same way: the utterance's token ids are aligned to
its frame log-probabilities by the best CTC path (Viterbi over the usual
blank-interleaved state sequence), and each word spans the frames of its
tokens. A CTC model emits each token as a spike of one or two frames, usually
near the token's onset, so a word's start is its first token's first frame;
its end is where, after its last spike, the model stops hearing speech (the
non-blank posterior mass falls into the pause level; see ``_word_end``),
which tracks the acoustic end of the word better than the last spike does:
a word whose last letters the model never spelled still ends where its
sound ends.

Confidence is the geometric mean, over the word's tokens, of each token's
peak posterior probability on its aligned frames: 1.0 when the model was sure
of every letter, small when one letter was a guess.

Pure numpy; the cost is O(frames x tokens) per utterance, paid once at its end.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

__all__ = ["WordSpan", "ctc_forced_align", "word_spans"]

_NEG = -1.0e30


@dataclass(frozen=True)
class WordSpan:
    """A word of an utterance in frames of that utterance: [start, end) and a confidence in [0, 1]."""

    word: str
    start_frame: int
    end_frame: int
    confidence: float


def ctc_forced_align(logp: np.ndarray, ids: Sequence[int], blank_id: int = 0) -> Optional[list[tuple[int, int]]]:
    """The best CTC path of ``ids`` through (T, V) log-probabilities.

    Returns, for each token, (first frame, last frame) inclusive; None when the
    utterance has too few frames for the tokens (each token needs a frame, and
    a repeated token a blank between).
    """
    logp = np.asarray(logp, dtype=np.float64)
    T = int(logp.shape[0])
    L = len(ids)
    if L == 0:
        return []
    labels = np.full(2 * L + 1, blank_id, dtype=np.int64)
    labels[1::2] = np.asarray(ids, dtype=np.int64)
    S = labels.shape[0]
    # A skip over a blank (s-2 -> s) is allowed into a token that differs from the one two states back.
    skip = np.zeros(S, dtype=bool)
    skip[3::2] = labels[3::2] != labels[1:-2:2]
    emit = logp[:, labels]  # (T, S)
    delta = np.full(S, _NEG)
    delta[0] = emit[0, 0]
    delta[1] = emit[0, 1]
    back = np.zeros((T, S), dtype=np.int8)  # 0 stay, 1 from s-1, 2 from s-2
    for t in range(1, T):
        stay = delta
        one = np.concatenate(([_NEG], delta[:-1]))
        two = np.where(skip, np.concatenate(([_NEG, _NEG], delta[:-2])), _NEG)
        cand = np.stack([stay, one, two])  # (3, S)
        arg = np.argmax(cand, axis=0)
        back[t] = arg
        delta = cand[arg, np.arange(S)] + emit[t]
    ends = [S - 1, S - 2] if S > 1 else [S - 1]
    s = max(ends, key=lambda e: delta[e])
    if delta[s] <= _NEG / 2:
        return None  # no path: fewer frames than the tokens need
    path = np.empty(T, dtype=np.int64)
    for t in range(T - 1, -1, -1):
        path[t] = s
        s -= int(back[t, s])
    spans: list[tuple[int, int]] = []
    for k in range(L):
        frames = np.flatnonzero(path == 2 * k + 1)
        if frames.size == 0:
            return None
        spans.append((int(frames[0]), int(frames[-1])))
    return spans


def word_spans(
    logp: np.ndarray,
    ids: Sequence[int],
    tokens: Sequence[str],
    blank_id: int = 0,
    word_delimiter: str = "|",
) -> list[WordSpan]:
    """The words of token ids ``ids`` with their frames and confidences; [] when alignment fails.

    Words are split at the word delimiter token (and before a sentencepiece
    "▁" token); specials written ``<...>`` belong to no word.
    """
    logp = np.asarray(logp, dtype=np.float64)
    spans = ctc_forced_align(logp, ids, blank_id)
    if not spans:
        return []
    # Each token's peak posterior on its own frames.
    peak = [float(np.exp(np.max(logp[a : b + 1, int(i)]))) for (a, b), i in zip(spans, ids)]
    groups: list[list[int]] = []  # token positions of each word
    current: list[int] = []
    for k, i in enumerate(ids):
        tok = tokens[int(i)]
        if tok == word_delimiter:
            if current:
                groups.append(current)
            current = []
            continue
        if len(tok) > 2 and tok.startswith("<") and tok.endswith(">"):
            continue
        if tok.startswith("▁") and current:
            groups.append(current)
            current = []
        current.append(k)
    if current:
        groups.append(current)
    T = int(logp.shape[0])
    speech_mass = 1.0 - np.exp(logp[:, blank_id])
    # The pause level is the utterance's own: noisy input (or a soft model) hears a little speech everywhere.
    threshold = max(_SPEECH_MASS, _FLOOR_RATIO * float(np.quantile(speech_mass, 0.1)))
    out: list[WordSpan] = []
    for g, members in enumerate(groups):
        text = "".join(tokens[int(ids[k])] for k in members).replace("▁", "")
        start = spans[members[0]][0]
        # The next word's first token bounds this word's end.
        limit = spans[groups[g + 1][0]][0] if g + 1 < len(groups) else T
        end = _word_end(spans[members[-1]][1], limit, speech_mass >= threshold)
        conf = float(np.exp(np.mean(np.log(np.maximum([peak[k] for k in members], 1e-12)))))
        out.append(WordSpan(text, start, end, conf))
    return out


# A frame is the model hearing speech while its non-blank posterior mass is at least this;
# in pauses it falls to ~1e-3 and below, inside words it stays above ~2e-2 between spikes.
_SPEECH_MASS = 0.01
# A word's tail after its last spike is at most this long (frames of 20 ms): a bound for noisy input.
_MAX_TAIL_FRAMES = 25
_PAUSE_FRAMES = 3
# Above the utterance's quietest frames by this factor is speech (when that is above _SPEECH_MASS).
_FLOOR_RATIO = 3.0


def _word_end(last_frame: int, limit: int, speech: np.ndarray) -> int:
    """Exclusive end frame of a word whose last token spikes at ``last_frame``.

    A CTC spike marks where the model committed to a letter, often before the
    letter (or the word's unspelled tail) ends. The word goes on while the
    model still hears speech (``speech``: non-blank mass above the pause level), bounded
    by ``_MAX_TAIL_FRAMES`` and by the next word's start.
    """
    end = last_frame + 1
    stop = min(limit, last_frame + 1 + _MAX_TAIL_FRAMES)
    # A pause is _PAUSE_FRAMES quiet frames in a row: one quiet frame inside a long vowel is not one.
    while end < stop and np.any(speech[end : end + _PAUSE_FRAMES]):
        end += 1
    return end
