"""Speaker and channel augmentation for CTC training (training/data/channel.py)."""

from __future__ import annotations

import numpy as np
import pytest

from wavstream.training.data import channel as C


def _speechlike(seconds: float = 2.0, seed: int = 0) -> np.ndarray:
    """Harmonics of 120 Hz up to 7.5 kHz, syllable-modulated: energy in and out of the phone band."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(16000 * seconds)) / 16000
    x = sum(np.sin(2 * np.pi * 120 * k * t) / k for k in range(1, 62))
    x = x * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t)) + 0.001 * rng.standard_normal(len(t))
    return (0.5 * x / np.abs(x).max()).astype(np.float32)


def _band_energy(x: np.ndarray, lo: float, hi: float) -> float:
    spec = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(len(x), 1 / 16000)
    return float(spec[(f >= lo) & (f < hi)].sum())


@pytest.mark.parametrize("codec", ["gsm", "mulaw"])
def test_telephone_is_band_limited(codec):
    x = _speechlike()
    y = C.telephone(x, codec)
    assert len(y) == len(x) and np.isfinite(y).all()
    ratio_in = _band_energy(x, 4500, 8000) / _band_energy(x, 500, 3000)
    ratio_out = _band_energy(y, 4500, 8000) / _band_energy(y, 500, 3000)
    assert ratio_out < ratio_in / 100  # > 20 dB less energy above the band
    assert _band_energy(y, 0, 150) < _band_energy(x, 0, 150) / 10


def test_mu_law_is_8_bit():
    x = np.linspace(-1, 1, 10001).astype(np.float32)
    assert len(np.unique(C.mu_law(x))) <= 256
    assert np.max(np.abs(C.mu_law(x) - x)) < 0.04


def test_speed_perturbation_changes_length_by_the_factor():
    x = _speechlike(2.0)
    assert len(C.speed_perturb(x, 1.15)) == pytest.approx(len(x) / 1.15, abs=2)
    assert len(C.speed_perturb(x, 0.85)) == pytest.approx(len(x) / 0.85, abs=2)


@pytest.mark.parametrize("kind,slope_db", [("white", 0.0), ("pink", 12.0), ("brown", 24.0)])
def test_fast_noise_has_unit_power_and_its_slope(kind, slope_db):
    rng = np.random.default_rng(0)
    x = C.fast_noise(2**18, kind, rng)
    assert np.mean(x**2) == pytest.approx(1.0, rel=1e-3)
    # 100-200 Hz against 1.6-3.2 kHz is four octaves: 3 dB per octave for pink, 6 for brown
    diff = 10 * np.log10(_band_energy(x, 100, 200) / 100 / (_band_energy(x, 1600, 3200) / 1600))
    assert diff == pytest.approx(slope_db, abs=2.0)


def test_chain_is_seeded_bounded_and_varied():
    aug = C.ChannelAugment()
    x = _speechlike(1.5)
    outs = [aug(x, np.random.default_rng(i)) for i in range(40)]
    again = [aug(x, np.random.default_rng(i)) for i in range(40)]
    assert all(np.array_equal(a, b) for a, b in zip(outs, again))
    assert all(np.isfinite(y).all() and np.abs(y).max() <= 1.0 for y in outs)
    lengths = {len(y) for y in outs}
    assert len(lengths) > 5  # speed perturbation drew several factors
    assert min(lengths) >= len(x) / 1.16 and max(lengths) <= len(x) / 0.84
    changed = sum(not (len(y) == len(x) and np.allclose(y, x)) for y in outs)
    assert changed >= 30  # most draws change something (p of the identity is about 0.06)


def test_off_is_identity():
    aug = C.ChannelAugment(C.ChannelAugmentConfig.off())
    x = _speechlike(1.0)
    assert np.array_equal(aug(x, np.random.default_rng(0)), x)


def test_fixed_eval_channels():
    x = _speechlike(1.0)
    for ch in C.CHANNELS:
        y = C.apply_channel(x, ch)
        assert len(y) == len(x) and np.isfinite(y).all()
        assert np.array_equal(y, C.apply_channel(x, ch))  # fixed, not random
    with pytest.raises(ValueError, match="unknown channel"):
        C.apply_channel(x, "radio")
