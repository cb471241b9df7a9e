"""Character tokens for CTC: blank 0, word boundary "|", a-z, apostrophe."""

from __future__ import annotations

from collections.abc import Sequence

from .models.config import CTC_VOCAB

BLANK = 0
_INDEX = {c: i for i, c in enumerate(CTC_VOCAB)}


def encode(text: str, vocab: Sequence[str] = CTC_VOCAB) -> list[int]:
    """'hello world' -> ids of h e l l o | w o r l d. Unknown characters are dropped."""
    index = _INDEX if vocab is CTC_VOCAB else {c: i for i, c in enumerate(vocab)}
    words = text.lower().split()
    out: list[int] = []
    for w, word in enumerate(words):
        if w:
            out.append(index["|"])
        out.extend(index[c] for c in word if c in index)
    return out
