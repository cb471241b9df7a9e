"""Augmentation transforms for WavLM's denoising objective."""

from __future__ import annotations

import numpy as np
import pytest

from wavstream.training.data import augment as A


def _speech_like(n=32000, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2
    x = env * (np.sin(2 * np.pi * 150 * t) + 0.3 * rng.standard_normal(n))
    return (0.3 * x).astype(np.float32)


def _slope(x):
    """Slope of log10 power vs log10 frequency (Welch-style average)."""
    n = 4096
    frames = x[: len(x) // n * n].reshape(-1, n) * np.hanning(n)
    psd = np.mean(np.abs(np.fft.rfft(frames, axis=1)) ** 2, axis=0)
    f = np.fft.rfftfreq(n, 1 / 16000)
    band = (f >= 50) & (f <= 4000)
    return np.polyfit(np.log10(f[band]), np.log10(psd[band]), 1)[0]


@pytest.mark.parametrize("kind", ["white", "pink", "brown", "babble"])
@pytest.mark.parametrize("snr", [-5.0, 0.0, 7.5, 20.0])
def test_noise_snr_matches(kind, snr):
    x = _speech_like()
    others = [_speech_like(20000 + 3000 * i, seed=i + 1) for i in range(5)]
    t = A.AddNoise(p=1.0, snr_db=(snr, snr), kinds=[kind], babble_source=others, seed=1)
    y = t(x)
    assert y.shape == x.shape and y.dtype == np.float32
    assert abs(A.snr_db(x, y - x) - snr) < 0.5


def test_noise_spectral_slopes():
    rng = np.random.default_rng(0)
    n = 16000 * 20
    white, pink, brown = (_slope(A.colored_noise(n, e, rng)) for e in (0, 1, 2))
    assert abs(white - 0.0) < 0.15
    assert abs(pink + 1.0) < 0.15
    assert abs(brown + 2.0) < 0.25
    for e in (0, 1, 2):
        assert abs(A.power(A.colored_noise(n, e, rng)) - 1.0) < 1e-3


def test_babble_sums_other_utterances():
    rng = np.random.default_rng(0)
    a = np.sin(np.arange(8000) * 0.05).astype(np.float32)
    b = np.sign(np.sin(np.arange(8000) * 0.011)).astype(np.float32)
    out = A.babble(16000, [a, b], rng, speakers=4)
    assert out.shape == (16000,) and abs(A.power(out) - 1.0) < 1e-3
    spec = np.abs(np.fft.rfft(out))
    # both sources contribute energy at their fundamentals
    f_a = int(round(0.05 / (2 * np.pi) * 16000))
    f_b = int(round(0.011 / (2 * np.pi) * 16000))
    assert spec[f_a - 2:f_a + 3].max() > 10 * np.median(spec)
    assert spec[f_b - 2:f_b + 3].max() > 10 * np.median(spec)


def test_probability_zero_is_identity():
    x = _speech_like()
    others = [_speech_like(seed=3)]
    chain = A.Compose([A.Reverb(p=0.0), A.AddNoise(p=0.0, babble_source=others),
                       A.UtteranceMixing(p=0.0, source=others)], seed=0)
    for _ in range(20):
        assert np.array_equal(chain(x), x)
    assert np.array_equal(A.UtteranceMixing(p=0.0, source=others).batch(np.stack([x, x])), np.stack([x, x]))
    with pytest.raises(ValueError):
        A.AddNoise(p=1.5)


def test_probability_is_respected_and_seeded():
    x = _speech_like(4000)
    t = A.AddNoise(p=0.3, kinds=["white"], seed=7)
    changed = sum(not np.array_equal(t(x), x) for _ in range(400))
    assert 90 < changed < 150
    a = A.Compose([A.AddNoise(p=0.5, kinds=["pink"]), A.Reverb(p=0.5)], seed=11)
    b = A.Compose([A.AddNoise(p=0.5, kinds=["pink"]), A.Reverb(p=0.5)], seed=11)
    for _ in range(5):
        assert np.array_equal(a(x), b(x))


def test_mixing_overlap_at_most_half_and_ratio():
    rng = np.random.default_rng(0)
    lengths = []
    for i in range(300):
        n = int(rng.integers(1000, 40000))
        x = _speech_like(n, seed=i)
        other = _speech_like(int(rng.integers(500, 50000)), seed=1000 + i) + 1.0  # never zero
        y, info = A.mix(x, other, rng, (-5.0, 5.0))
        diff = np.flatnonzero(y != x)
        assert info["length"] <= n // 2
        if diff.size:
            assert diff[-1] - diff[0] + 1 <= n // 2
            assert info["start"] <= diff[0] and diff[-1] < info["start"] + info["length"]
        assert -5.0 <= info["ratio_db"] <= 5.0
        lengths.append(info["length"] / n)
    # l ~ U{0..T/2}: mean overlap near 25%
    assert 0.2 < np.mean(lengths) < 0.3


def test_mixing_energy_ratio_is_exact():
    rng = np.random.default_rng(1)
    x = _speech_like(16000)
    other = 3.0 * _speech_like(16000, seed=9)
    for r in (-5.0, 0.0, 5.0):
        y, info = A.mix(x, other, rng, (r, r))
        s, l = info["start"], info["length"]
        added = (y - x)[s:s + l]
        # the scale uses whole-signal powers: E_x / (10^(r/10) E_other)
        scale = np.sqrt(A.power(x) / (10 ** (r / 10) * A.power(other)))
        seg = [other[k:k + l] for k in range(len(other) - l + 1) if np.allclose(scale * other[k:k + l], added, atol=1e-5)]
        assert seg, "added segment is not the scaled interferer"


def test_utterance_mixing_transform_ranges():
    x = _speech_like(16000)
    src = [_speech_like(24000, seed=s) for s in range(3)]
    t = A.UtteranceMixing(p=1.0, source=src, noise_prob=0.5, seed=2)
    kinds = set()
    for _ in range(200):
        y = t(x)
        info = t.last
        kinds.add(info["kind"])
        assert info["length"] <= len(x) // 2
        lo, hi = (-5, 5) if info["kind"] == "speech" else (-5, 20)
        assert lo <= info["ratio_db"] <= hi
        assert y.shape == x.shape
    assert kinds == {"speech", "noise"}
    batch = np.stack([_speech_like(8000, seed=s) for s in range(4)])
    out = A.UtteranceMixing(p=1.0, source=src, seed=0).batch(batch)
    assert out.shape == batch.shape
    for row, orig in zip(out, batch):
        changed = np.flatnonzero(row != orig)
        assert changed.size == 0 or changed[-1] - changed[0] + 1 <= 4000


def test_reverb():
    rng = np.random.default_rng(0)
    rir = A.synthetic_rir(0.5, rng, drr_db=0.0)
    assert rir[0] == 1.0
    e = rir[1:] ** 2
    # energy decays ~60 dB over rt60: compare 50 ms windows 0.1 s and 0.4 s in
    w = lambda t: e[int(t * 16000):int(t * 16000) + 800].mean()
    decay_db = 10 * np.log10(w(0.1) / w(0.4))
    assert abs(decay_db - 60 * 0.3 / 0.5) < 4
    assert abs(10 * np.log10(1.0 / e.sum())) < 1e-3  # DRR 0 dB
    x = np.zeros(16000, np.float32)
    x[1000] = 1.0
    y = A.Reverb(p=1.0, rt60=(0.3, 0.3), drr_db=(0, 0), seed=0)(x)
    assert y.shape == x.shape and np.allclose(A.power(y), A.power(x), rtol=1e-4)
    assert np.abs(y[:1000]).max() < 1e-6  # causal (FFT round-off only)
    assert np.count_nonzero(np.abs(y[1100:5000]) > 1e-4) > 3000  # a tail


def test_wavlm_chain_and_manifest_source(tmp_path):
    import soundfile as sf

    paths = []
    for i in range(3):
        p = tmp_path / f"{i}.wav"
        sf.write(p, _speech_like(12000, seed=i), 16000)
        paths.append(p)
    src = A.ManifestSource(paths)
    chain = A.wavlm_augment(src, seed=0, noise_p=1.0, mix_p=1.0, reverb_p=1.0)
    x = _speech_like(16000)
    y = chain(x)
    assert y.shape == x.shape and np.isfinite(y).all() and not np.array_equal(x, y)
