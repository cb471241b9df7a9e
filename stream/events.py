"""Events emitted by the recogniser.

Three kinds, all plain frozen dataclasses so they compare, print and
serialise easily (a Features event prints its arrays' shape and dtype, not
their values, so ``print(event)`` stays one short line):

- ``Partial(text, segment)``: the current, still-changing hypothesis of the
  utterance in progress. Emitted only when the text changes.
- ``Final(text, start, end, segment, words)``: a finished utterance (an
  endpoint fired, or the input ended). ``start``/``end`` are seconds from the
  start of the stream; ``words`` holds a ``Word(word, start, end,
  confidence)`` per word (times in the same seconds; see stream/alignment.py),
  empty when the text could not be aligned to the frames. ``segment`` numbers the stream's utterances from 0: a Partial and
  the Final that settles it carry the same number (counted once, by the Stream).
- ``Features(frames, start_frame, codes)``: the model's frame features of one
  decoded chunk, ``frames`` (T, D) float32; ``start_frame`` is the index of the
  first of these frames in the stream; ``codes`` (T, G) int64 for bundles that
  export discrete codes (vq-wav2vec), else None.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Union

import numpy as np

__all__ = ["Partial", "Word", "Final", "Features", "Event"]


@dataclass(frozen=True)
class Partial:
    text: str
    segment: int = 0  # index of the utterance in its stream

    def to_dict(self) -> dict:
        return {"type": "partial", "text": self.text}


@dataclass(frozen=True)
class Word:
    word: str
    start: float  # seconds from stream start
    end: float  # seconds from stream start
    confidence: float  # 0..1

    def __repr__(self) -> str:
        return f"Word({self.word!r}, {round(self.start, 3)}, {round(self.end, 3)}, {round(self.confidence, 3)})"

    def to_dict(self) -> dict:
        return {"word": self.word, "start": round(self.start, 3), "end": round(self.end, 3), "conf": round(self.confidence, 3)}


@dataclass(frozen=True)
class Final:
    text: str
    start: float  # seconds from stream start
    end: float  # seconds from stream start
    segment: int = 0  # index of the utterance in its stream
    words: tuple[Word, ...] = ()

    def __repr__(self) -> str:
        # Times are frame multiples (0.42000000000000004 s); milliseconds are all they mean.
        return f"Final(text={self.text!r}, start={round(self.start, 3)}, end={round(self.end, 3)}, segment={self.segment})"

    def to_dict(self) -> dict:
        d: dict = {"type": "final", "text": self.text, "start": round(self.start, 3), "end": round(self.end, 3)}
        if self.words:
            d["words"] = [w.to_dict() for w in self.words]
        return d


@dataclass(frozen=True, eq=False)
class Features:
    frames: np.ndarray  # (T, D) float32
    start_frame: int  # index of frames[0] in the stream
    codes: Optional[np.ndarray] = field(default=None)  # (T, G) int64 or None

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    def __eq__(self, other: object) -> bool:
        # Arrays make the generated __eq__ ambiguous; compare by value.
        if not isinstance(other, Features):
            return NotImplemented
        if self.start_frame != other.start_frame or not np.array_equal(self.frames, other.frames):
            return False
        if (self.codes is None) != (other.codes is None):
            return False
        return self.codes is None or np.array_equal(self.codes, other.codes)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        # The dataclass repr would print every value: thousands of numbers per chunk.
        codes = "None" if self.codes is None else _array_summary(self.codes)
        return f"Features(frames={_array_summary(self.frames)}, start_frame={self.start_frame}, codes={codes})"

    def to_dict(self) -> dict:
        d = {"type": "features", "start_frame": self.start_frame, "frames": self.frames.tolist()}
        if self.codes is not None:
            d["codes"] = self.codes.tolist()
        return d


def _array_summary(a: np.ndarray) -> str:
    """'<12x256 float32>': what an array is, in a few characters."""
    return f"<{'x'.join(str(n) for n in a.shape)} {a.dtype}>"


Event = Union[Partial, Final, Features]
