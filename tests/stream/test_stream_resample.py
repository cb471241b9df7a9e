"""Streaming resampler: lengths, frequency, identity, refusing absurd rates."""

from __future__ import annotations

import numpy as np
import pytest

from wavstream.stream.resample import StreamResampler, to_mono_float32


def _peak_hz(x: np.ndarray, rate: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spec) * rate / len(x))


@pytest.mark.parametrize("in_rate", [44100, 48000, 8000, 22050])
def test_sine_resampled_to_16k_keeps_length_and_frequency(in_rate: int) -> None:
    seconds, f0 = 2.0, 440.0
    t = np.arange(int(seconds * in_rate)) / in_rate
    x = (0.5 * np.sin(2 * np.pi * f0 * t)).astype(np.float32)
    rs = StreamResampler(in_rate)
    rng = np.random.default_rng(in_rate)
    out, pos = [], 0
    while pos < len(x):
        n = int(rng.integers(1, 3000))  # random block sizes, as from a socket
        out.append(rs.process(x[pos : pos + n]))
        pos += n
    out.append(rs.flush())
    y = np.concatenate(out)
    assert y.dtype == np.float32
    assert len(y) == round(len(x) * 16000 / in_rate)
    assert abs(_peak_hz(y, 16000) - f0) < 1.0
    # Block boundaries leave no clicks: the middle matches a clean 440 Hz sine's amplitude.
    mid = y[4000:-4000]
    assert 0.48 < np.max(np.abs(mid)) < 0.52


def test_identity_at_16k() -> None:
    x = np.random.default_rng(0).standard_normal(1234).astype(np.float32)
    rs = StreamResampler(16000)
    assert rs.identity
    np.testing.assert_array_equal(rs.process(x), x)
    assert rs.flush().size == 0


@pytest.mark.parametrize("rate", [0, 5, -16000, 10_000_000, float("nan"), 44100.5, "fast"])
def test_absurd_rates_refused_by_name(rate: object) -> None:
    with pytest.raises(ValueError, match="input sample rate .* Hz is not a usable audio rate|must be a number"):
        StreamResampler(rate)  # type: ignore[arg-type]


def test_to_mono_float32() -> None:
    st = np.array([[32767, -32768], [0, 16384]], np.int16)
    np.testing.assert_allclose(to_mono_float32(st), [-0.5 / 32768, 0.25], atol=1e-6)
    with pytest.raises(ValueError, match="found shape"):
        to_mono_float32(np.zeros((2, 2, 2)))
