"""ARPA n-gram reader and back-off scorer.

A word's score given the words before it follows the ARPA back-off rule:
``log p(w | h) = log p(hw)`` if the n-gram ``hw`` is listed, else
``backoff(h) + log p(w | h')`` with ``h'`` the context without its oldest word
(a missing backoff is 0). Words outside the vocabulary score as ``<unk>``.
Scores are natural logs (the file's log10 times ln 10), the unit of CTC
log-probabilities, so the beam adds them with one weight.

The state passed between calls is the tuple of the last ``order - 1`` words,
shortened to the longest suffix the model lists (KenLM's state minimisation):
hypotheses that differ only in words the model cannot see share a state.
"""

from __future__ import annotations

import gzip
import math
from pathlib import Path
from typing import Union

from ..errors import WavstreamError

__all__ = ["DEFAULT_LM_PATH", "LmFormatError", "NgramLm", "load_lm"]

DEFAULT_LM_PATH = Path(__file__).resolve().parent / "default.arpa.gz"
_LN10 = math.log(10.0)
BOS, EOS, UNK = "<s>", "</s>", "<unk>"
State = tuple[str, ...]


class LmFormatError(WavstreamError, ValueError):
    """A language-model file that is missing or not ARPA."""


class NgramLm:
    """A back-off n-gram model held in dicts: {ngram: (ln prob, ln backoff)}."""

    def __init__(self, grams: dict[tuple[str, ...], tuple[float, float]], order: int) -> None:
        self.order = order
        self._grams = grams
        self.vocab = frozenset(g[0] for g in grams if len(g) == 1)
        unk = grams.get((UNK,))
        # A model without <unk> (closed vocabulary): out-of-vocabulary words get a fixed, low score.
        self.unk_logp = unk[0] if unk is not None else -10.0 * _LN10
        self._cache: dict[tuple[State, str], tuple[float, State]] = {}
        self._prefixes: frozenset[str] | None = None

    def __len__(self) -> int:
        return len(self._grams)

    def begin(self) -> State:
        """The state at the start of a sentence."""
        return (BOS,)

    def score(self, state: State, word: str) -> tuple[float, State]:
        """(ln p(word | state), the state after it). Cached: the beam asks the same often."""
        key = (state, word)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        w = word if word in self.vocab else UNK
        grams = self._grams
        total = 0.0
        ctx = state
        while True:
            e = grams.get(ctx + (w,))
            if e is not None:
                total += e[0]
                break
            if not ctx:
                total += self.unk_logp
                break
            b = grams.get(ctx)
            if b is not None:
                total += b[1]
            ctx = ctx[1:]
        full = (state + (w,))[-(self.order - 1):] if self.order > 1 else ()
        while full and full not in grams:
            full = full[1:]
        out = (total, full)
        if len(self._cache) > 500_000:  # bounded: a long-running server sees many contexts
            self._cache.clear()
        self._cache[key] = out
        return out

    def is_word_prefix(self, chars: str) -> bool:
        """True when some vocabulary word starts with ``chars`` (for scoring words being spelled)."""
        if self._prefixes is None:
            self._prefixes = frozenset(w[:i] for w in self.vocab for i in range(1, len(w) + 1))
        return chars in self._prefixes

    def sentence_logp(self, words: list[str]) -> float:
        """ln p of a whole sentence, </s> included."""
        st = self.begin()
        total = 0.0
        for w in words + [EOS]:
            lp, st = self.score(st, w)
            total += lp
        return total


def _open(path: Path):  # noqa: ANN202 - a text file object
    with open(path, "rb") as f:
        magic = f.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def load_lm(path: Union[str, Path]) -> NgramLm:
    """Read an ARPA file (plain or gzip); ``"default"`` is the model shipped with the package.

    Raises LmFormatError naming the file and the line when it is not ARPA.
    """
    p = DEFAULT_LM_PATH if str(path) == "default" else Path(path).expanduser()
    if not p.is_file():
        raise LmFormatError(f"language model {str(p)!r} not found (an ARPA file, .arpa or .arpa.gz, or 'default')")
    grams: dict[tuple[str, ...], tuple[float, float]] = {}
    order = 0
    section = 0
    seen_data = False
    with _open(p) as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            if line == "\\data\\":
                seen_data = True
                continue
            if line.startswith("ngram ") and section == 0:
                continue
            if line.startswith("\\") and line.endswith("-grams:"):
                try:
                    section = int(line[1:].split("-")[0])
                except ValueError:
                    raise LmFormatError(f"{p}:{lineno}: bad section header {line!r}") from None
                order = max(order, section)
                continue
            if line == "\\end\\":
                break
            if not seen_data or section == 0:
                raise LmFormatError(f"{p}:{lineno}: not an ARPA file (expected \\data\\ then \\1-grams:)")
            parts = line.split()
            if len(parts) not in (section + 1, section + 2):
                raise LmFormatError(f"{p}:{lineno}: a {section}-gram line needs {section} words and a log10 prob")
            try:
                lp = float(parts[0]) * _LN10
                bo = float(parts[section + 1]) * _LN10 if len(parts) == section + 2 else 0.0
            except ValueError:
                raise LmFormatError(f"{p}:{lineno}: bad number in {line!r}") from None
            grams[tuple(parts[1 : section + 1])] = (lp, bo)
    if not grams:
        raise LmFormatError(f"{p}: no n-grams found (not an ARPA file?)")
    return NgramLm(grams, order)
