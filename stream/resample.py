"""Streaming resampling to the model rate (16 kHz) over soxr's ResampleStream.

``StreamResampler(in_rate).process(block)`` returns however many output
samples soxr can produce so far (its filter delay is carried between blocks,
so block boundaries leave no clicks); ``flush()`` at end of stream returns the
tail. Over a whole stream the output length is round(n * 16000 / in_rate).
At 16 kHz in, it is the identity (no copy, no delay).

Multi-channel input (n, channels) is averaged to mono first.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["StreamResampler", "MIN_RATE", "MAX_RATE", "check_sample_rate", "to_mono_float32"]

MIN_RATE = 1000  # below this it's not audio a speech model can use
MAX_RATE = 768_000  # above any real audio interface


def check_sample_rate(rate: float, what: str = "sample rate") -> int:
    """Validate an input rate; returns it as int. Raises ValueError naming it."""
    try:
        r = float(rate)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number of Hz, got {rate!r}") from None
    if not np.isfinite(r) or r != int(r) or not MIN_RATE <= r <= MAX_RATE:
        raise ValueError(f"{what} {rate!r} Hz is not a usable audio rate (expected an integer in {MIN_RATE}..{MAX_RATE} Hz)")
    return int(r)


def to_mono_float32(samples: Any) -> np.ndarray:
    """(n,) or (n, channels), float or int PCM -> (n,) float32 in [-1, 1]."""
    x = np.asarray(samples)
    if x.ndim not in (1, 2):
        raise ValueError(f"audio must be (samples,) or (samples, channels), found shape {x.shape}")
    if np.issubdtype(x.dtype, np.integer):
        # int16 PCM -> [-1, 1); other widths scaled by their range.
        x = x.astype(np.float32) / np.float32(float(np.iinfo(x.dtype).max) + 1.0)
    elif not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"audio must be float or integer PCM, found dtype {x.dtype}")
    if x.ndim == 2:
        x = x.mean(axis=1) if x.shape[1] > 1 else x[:, 0]
    return np.ascontiguousarray(x, dtype=np.float32)


class StreamResampler:
    """in_rate -> out_rate (default 16 kHz), block by block."""

    def __init__(self, in_rate: float, out_rate: int = 16000, quality: str = "HQ") -> None:
        self.in_rate = check_sample_rate(in_rate, "input sample rate")
        self.out_rate = check_sample_rate(out_rate, "output sample rate")
        self.identity = self.in_rate == self.out_rate
        self._rs: Any = None
        if not self.identity:
            import soxr

            self._rs = soxr.ResampleStream(self.in_rate, self.out_rate, 1, dtype="float32", quality=quality)
        self._finished = False

    def process(self, samples: np.ndarray) -> np.ndarray:
        """Resample one block (1-D float32); may return fewer/more samples than the ratio suggests."""
        if self._finished:
            raise RuntimeError("StreamResampler.process() after flush(); create a new one for a new stream")
        x = np.ascontiguousarray(samples, dtype=np.float32)
        if self.identity:
            return x
        return self._rs.resample_chunk(x, last=False)

    def flush(self) -> np.ndarray:
        """End of stream: the remaining output samples."""
        self._finished = True
        if self.identity:
            return np.zeros(0, dtype=np.float32)
        return self._rs.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
