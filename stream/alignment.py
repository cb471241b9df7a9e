"""Word times and confidences from CTC output: a Viterbi forced alignment.

Whatever decoder chose the text (greedy, beam, beam with a language model),
the words' times come the same way: the utterance's token ids are aligned to
its frame log-probabilities by the best CTC path (Viterbi over the usual
blank-interleaved state sequence), and each word spans the frames of its
tokens. A CTC model emits each token as a spike of one or two frames, usually
near the token's onset, so a word's start is its first token's first frame.
A word's end is not marked by a spike at all: the model commits to its last
letter and then emits blanks through the letter's (or an unspelled glide's)
sound. So the end comes from the input's own level when the caller gives it
(``frame_levels``): after the word's last spike, the word goes on while the
audio stays loud against the utterance's quiet frames. On audio without that
contrast (or without levels) it comes from the posteriors: the word goes on
while the non-blank mass stays above the pause level (``_word_end`` for
both). On words with known boundaries (docs/word-times.md) the level rule
ends the glide of "my" where its sound ends, 300 ms after the posteriors
fell to the pause level.

Confidence is the geometric mean, over the word's tokens, of each token's
peak posterior probability on its aligned frames: 1.0 when the model was sure
of every letter, small when one letter was a guess.

Pure numpy; the cost is O(frames x tokens) per utterance, paid once at its end.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

__all__ = ["WordSpan", "ctc_forced_align", "frame_levels", "word_spans"]

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
    if len(ids) == 0:
        return []
    greedy = _argmax_path_spans(logp, ids, blank_id)
    if greedy is not None:
        return greedy
    return _viterbi_spans(logp, ids, blank_id)


def _argmax_path_spans(logp: np.ndarray, ids: Sequence[int], blank_id: int) -> Optional[list[tuple[int, int]]]:
    """The spans of the frame-wise argmax path when it collapses to ``ids``, else None.

    That path scores the most of all paths, so when it spells ``ids`` it is the
    forced alignment too (up to exact ties). It does whenever the text came from
    greedy decoding, the server's default: there this replaces a per-frame
    Python loop (~10 % of a loaded server's inference thread) by a few array ops.
    """
    if logp.shape[0] == 0:
        return None
    a = logp.argmax(axis=1)
    last = np.flatnonzero(np.append(a[1:] != a[:-1], True))  # last frame of each run of one label
    first = np.concatenate(([0], last[:-1] + 1))
    keep = a[first] != blank_id
    if int(keep.sum()) != len(ids) or not np.array_equal(a[first][keep], np.asarray(ids, dtype=a.dtype)):
        return None
    return [(int(f), int(e)) for f, e in zip(first[keep], last[keep])]


def _viterbi_spans(logp: np.ndarray, ids: Sequence[int], blank_id: int) -> Optional[list[tuple[int, int]]]:
    T = int(logp.shape[0])
    L = len(ids)
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
    levels_db: Optional[np.ndarray] = None,
) -> list[WordSpan]:
    """The words of token ids ``ids`` with their frames and confidences; [] when alignment fails.

    Words are split at the word delimiter token (and before a sentencepiece
    "▁" token); specials written ``<...>`` belong to no word. ``levels_db``:
    optional (T,) level of the audio each frame heard (``frame_levels``,
    already moved by the model's spike delay), which word ends follow.
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
    loud = _loud_frames(levels_db, T)
    if loud is None:
        speech_mass = 1.0 - np.exp(logp[:, blank_id])
        # The pause level is the utterance's own: noisy input (or a soft model) hears a little speech everywhere.
        threshold = max(_SPEECH_MASS, _FLOOR_RATIO * float(np.quantile(speech_mass, 0.1)))
        loud = speech_mass >= threshold
    out: list[WordSpan] = []
    for g, members in enumerate(groups):
        text = "".join(tokens[int(ids[k])] for k in members).replace("▁", "")
        start = spans[members[0]][0]
        # The next word's first token bounds this word's end.
        limit = spans[groups[g + 1][0]][0] if g + 1 < len(groups) else T
        end = _word_end(spans[members[-1]][1], limit, loud)
        conf = float(np.exp(np.mean(np.log(np.maximum([peak[k] for k in members], 1e-12)))))
        out.append(WordSpan(text, start, end, conf))
    return out


# Level rule, tuned on its own sentences and voices (clean, and with white noise at 20 dB SNR), not on the
# test's: a frame is loud when it is this many dB above the utterance's quiet frames (its 10th percentile)...
_LEVEL_ABOVE_FLOOR_DB = 4.0
# ...and not more than this far below the utterance's loudest frame (the floor of digital silence is far down).
_LEVEL_BELOW_PEAK_DB = 40.0
# Less contrast than this between loudest and quiet frames (speech in loud noise): the levels say
# nothing about pauses, and the posterior rule decides.
_LEVEL_MIN_CONTRAST_DB = 10.0
_SILENT_DB = -120.0


def frame_levels(samples: np.ndarray, stride: int) -> np.ndarray:
    """Level in dB (mean square, -120 for silence) of each whole or partial ``stride``-sample frame of ``samples``."""
    x = np.asarray(samples, dtype=np.float64).reshape(-1)
    n = -(-x.shape[0] // stride)
    padded = np.zeros(n * stride)
    padded[: x.shape[0]] = x
    power = np.mean(padded.reshape(n, stride) ** 2, axis=1)
    return 10.0 * np.log10(np.maximum(power, 10.0 ** (_SILENT_DB / 10.0)))


def _loud_frames(levels_db: Optional[np.ndarray], T: int) -> Optional[np.ndarray]:
    """(T,) bool: the frames whose audio is loud against the utterance's quiet ones; None without contrast."""
    if levels_db is None:
        return None
    db = np.asarray(levels_db, dtype=np.float64).reshape(-1)
    if db.shape[0] != T or T == 0:
        return None
    floor, peak = float(np.quantile(db, 0.1)), float(np.max(db))
    if peak - floor < _LEVEL_MIN_CONTRAST_DB:
        return None
    return db >= max(floor + _LEVEL_ABOVE_FLOOR_DB, peak - _LEVEL_BELOW_PEAK_DB)


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
    letter (or the word's unspelled tail) ends. The word goes on while there
    is still speech (``speech``: loud input, or else non-blank mass above the
    pause level), bounded by ``_MAX_TAIL_FRAMES`` and by the next word's start.
    """
    end = last_frame + 1
    stop = min(limit, last_frame + 1 + _MAX_TAIL_FRAMES)
    # A pause is _PAUSE_FRAMES quiet frames in a row: one quiet frame inside a long vowel is not one.
    while end < stop and np.any(speech[end : end + _PAUSE_FRAMES]):
        end += 1
    return end
