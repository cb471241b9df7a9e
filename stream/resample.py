"""Streaming resampling to the model rate (16 kHz) over soxr's ResampleStream.

``StreamResampler(in_rate).process(block)`` returns however many output
samples soxr can produce so far (its filter delay is carried between blocks,
so block boundaries leave no clicks); ``flush()`` at end of stream returns the
tail. Over a whole stream the output length is round(n * 16000 / in_rate).
At 16 kHz in, it is the identity (no copy, no delay).

Multi-channel input is averaged to mono first. Both layouts are accepted:
(n, channels), as soundfile and sounddevice give, and (channels, n), as
torchaudio and librosa give. The channel axis is the one of length <=
MAX_CHANNELS; a block where both axes are that short (at most 32 samples)
is read as (n, channels) unless the caller says otherwise (a Stream passes
the layout of its earlier blocks). Non-finite samples (NaN, +-inf) are
refused with AudioFormatError rather than replaced: one NaN poisons the
model state for the rest of the stream, and silently zeroing it would hide
a bug in the caller's audio path.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from .errors import WavstreamError

__all__ = [
    "StreamResampler",
    "MIN_RATE",
    "MAX_RATE",
    "MAX_CHANNELS",
    "AudioFormatError",
    "check_sample_rate",
    "channels_first_layout",
    "to_mono_float32",
]

MIN_RATE = 1000  # below this it's not audio a speech model can use
MAX_RATE = 768_000  # above any real audio interface
# More channels than any capture device we know of has, fewer samples than
# any useful block: the axis at or under this length is the channel axis.
MAX_CHANNELS = 32


class AudioFormatError(WavstreamError, ValueError):
    """Audio samples that cannot be used as given: shape, dtype or non-finite values (the message says which)."""


def check_sample_rate(rate: float, what: str = "sample rate") -> int:
    """Validate an input rate; returns it as int. Raises ValueError naming it."""
    try:
        r = float(rate)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number of Hz, got {rate!r}") from None
    if not np.isfinite(r) or r != int(r) or not MIN_RATE <= r <= MAX_RATE:
        raise ValueError(f"{what} {rate!r} Hz is not a usable audio rate (expected an integer in {MIN_RATE}..{MAX_RATE} Hz)")
    return int(r)


def channels_first_layout(shape: tuple[int, ...]) -> Optional[bool]:
    """Layout of a 2-D audio block: False for (n, channels), True for (channels, n), None if both fit.

    Raises:
        AudioFormatError: neither axis is <= MAX_CHANNELS long, so neither can be the channels.
    """
    rows, cols = shape
    if cols <= MAX_CHANNELS and rows <= MAX_CHANNELS:
        return None
    if cols <= MAX_CHANNELS:
        return False
    if rows <= MAX_CHANNELS:
        return True
    raise AudioFormatError(
        f"audio of shape {tuple(shape)} has no channel axis: expected (samples,), (samples, channels) or "
        f"(channels, samples) with at most {MAX_CHANNELS} channels"
    )


def to_mono_float32(samples: Any, channels_first: Optional[bool] = None) -> np.ndarray:
    """(n,), (n, channels) or (channels, n), float or int PCM -> (n,) float32 in [-1, 1].

    ``channels_first`` forces the layout of a 2-D block; None infers it
    (channels_first_layout), reading an ambiguous block as (n, channels).
    Raises:
        AudioFormatError: a shape or dtype that is not audio, or NaN/infinite samples.
    """
    x = np.asarray(samples)
    if x.ndim not in (1, 2):
        raise AudioFormatError(f"audio must be (samples,), (samples, channels) or (channels, samples), found shape {x.shape}")
    if np.issubdtype(x.dtype, np.integer):
        # int16 PCM -> [-1, 1); other widths scaled by their range.
        x = x.astype(np.float32) / np.float32(float(np.iinfo(x.dtype).max) + 1.0)
    elif not np.issubdtype(x.dtype, np.floating):
        raise AudioFormatError(f"audio must be float or integer PCM, found dtype {x.dtype}")
    if x.ndim == 2:
        if channels_first is None:
            channels_first = bool(channels_first_layout(x.shape))
        if channels_first:
            x = x.T  # (n, channels)
    # The mean in float64: finite float32 input (all a server passes on) stays finite.
    # Float64 values beyond float32's range become inf here; the check below names them.
    with np.errstate(over="ignore", invalid="ignore"):
        if x.ndim == 2:
            x = x.mean(axis=1, dtype=np.float64) if x.shape[1] > 1 else x[:, 0]
        y = np.ascontiguousarray(x, dtype=np.float32)
    finite = np.isfinite(y)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise AudioFormatError(
            f"audio has {bad.size} non-finite sample(s) (NaN or infinity; the first at sample {int(bad[0])} of "
            f"{y.shape[0]}); the block was refused and nothing of it was used: replace them (e.g. np.nan_to_num) "
            "or drop the block"
        )
    return y


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
