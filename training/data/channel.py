"""Speaker and channel augmentation for CTC training, and the fixed channels
used to evaluate on them.

Synthetic speech is clean, full-band and level-normalised; users send audio
from phone lines, laptop microphones and rooms. Each training utterance is
redrawn every epoch through a random chain (probabilities are per transform):

====================  =====  ===================================================
transform             p      what
====================  =====  ===================================================
speed                 0.5    0.85-1.15 by resampling (tempo and pitch, Kaldi's
                             speed perturbation): a new "speaker" per draw
pitch                 0.15   +-3 semitones at constant tempo (audiomentations)
eq                    0.3    seven-band parametric EQ, +-8 dB (pedalboard)
reverb                0.2    synthetic room, RT60 0.15-0.6 s (``augment.Reverb``)
telephone             0.3    300-3400 Hz band-pass (scipy), then GSM full
                             rate (pedalboard) or mu-law at 8 kHz
mp3                   0.1    low-bitrate MP3 (pedalboard/LAME)
noise                 0.4    white/pink/brown noise at 5-30 dB SNR (IIR-shaped)
gain/clip             0.15   +0..12 dB gain into hard clipping at 0 dBFS
====================  =====  ===================================================

Every transform is drawn from the generator passed in, so (seed, epoch,
utterance) fixes the whole chain and a resumed run sees the same audio.
pedalboard and audiomentations are imported on first use (``[train]`` extra).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .augment import AddNoise, Reverb, add_at_snr

SAMPLE_RATE = 16000


@dataclass
class ChannelAugmentConfig:
    """Probabilities and ranges of :class:`ChannelAugment` (0 turns one off)."""

    speed_p: float = 0.5
    speed: tuple[float, float] = (0.85, 1.15)
    pitch_p: float = 0.15  # speed perturbation shifts pitch too; this one is costly (~2.3 ms per audio-s)
    pitch_semitones: float = 3.0
    eq_p: float = 0.3
    eq_db: float = 8.0
    reverb_p: float = 0.2
    rt60: tuple[float, float] = (0.15, 0.6)
    telephone_p: float = 0.3
    mp3_p: float = 0.1
    noise_p: float = 0.4
    snr_db: tuple[float, float] = (5.0, 30.0)
    clip_p: float = 0.15
    clip_gain_db: tuple[float, float] = (0.0, 12.0)

    @classmethod
    def off(cls) -> "ChannelAugmentConfig":
        return cls(speed_p=0, pitch_p=0, eq_p=0, reverb_p=0, telephone_p=0, mp3_p=0, noise_p=0, clip_p=0)


# -- single channels (deterministic given rng) --------------------------------------


def speed_perturb(wave: np.ndarray, factor: float) -> np.ndarray:
    """Play `factor` times faster (shorter, higher): resample by 1/factor."""
    import soxr

    if abs(factor - 1.0) < 1e-6:
        return wave
    return soxr.resample(wave, SAMPLE_RATE * factor, SAMPLE_RATE, quality="MQ").astype(np.float32)


def mu_law(wave: np.ndarray, mu: int = 255) -> np.ndarray:
    """G.711-style 8-bit mu-law companding and expansion (the quantisation noise)."""
    x = np.clip(wave, -1.0, 1.0)
    y = np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu)
    q = np.round((y + 1) * 127.5) / 127.5 - 1  # 256 levels
    return (np.sign(q) * ((1 + mu) ** np.abs(q) - 1) / mu).astype(np.float32)


def telephone(wave: np.ndarray, codec: str = "gsm", rng: np.random.Generator | None = None) -> np.ndarray:
    """A narrow-band phone line: 300-3400 Hz band-pass, then a codec at 8 kHz.

    `codec`: "gsm" (2G full rate, pedalboard) or "mulaw" (G.711, landline).
    With `rng`, the band edges jitter a little (handsets differ).
    """
    import pedalboard as pb
    import soxr
    from scipy.signal import butter, sosfilt

    lo, hi = (300.0, 3400.0) if rng is None else (float(rng.uniform(200, 400)), float(rng.uniform(3000, 3600)))
    # a steep band-pass (pedalboard's high/low-pass filters are first order, 6 dB/octave)
    sos = butter(6, [lo, hi], btype="bandpass", fs=SAMPLE_RATE, output="sos")
    x = sosfilt(sos, np.asarray(wave, dtype=np.float64)).astype(np.float32)
    if codec == "gsm":
        x = pb.GSMFullRateCompressor()(x, SAMPLE_RATE)
    elif codec == "mulaw":
        x8 = soxr.resample(x, SAMPLE_RATE, 8000, quality="HQ")
        x = soxr.resample(mu_law(x8), 8000, SAMPLE_RATE, quality="HQ")
    else:
        raise ValueError(f"unknown telephone codec {codec!r} (gsm, mulaw)")
    return _same_length(np.asarray(x, dtype=np.float32), len(wave))


def mp3(wave: np.ndarray, vbr_quality: float) -> np.ndarray:
    import pedalboard as pb

    x = pb.MP3Compressor(vbr_quality=vbr_quality)(np.ascontiguousarray(wave, dtype=np.float32), SAMPLE_RATE)
    return _same_length(np.asarray(x, dtype=np.float32), len(wave))


def _same_length(x: np.ndarray, n: int) -> np.ndarray:
    if len(x) >= n:
        return x[:n]
    return np.pad(x, (0, n - len(x)))


CHANNELS = ("clean", "telephone", "telephone_mulaw", "mp3", "noisy")


def apply_channel(wave: np.ndarray, channel: str, seed: int = 0) -> np.ndarray:
    """A fixed evaluation channel (same output for the same wave and seed)."""
    if channel == "clean":
        return wave
    if channel == "telephone":
        return telephone(wave, "gsm")
    if channel == "telephone_mulaw":
        return telephone(wave, "mulaw")
    if channel == "mp3":
        return mp3(wave, 9.0)
    if channel == "noisy":
        return AddNoise(p=1.0, snr_db=(10.0, 10.0), kinds=("pink",))(wave, np.random.default_rng(seed))
    raise ValueError(f"unknown channel {channel!r}; known: {', '.join(CHANNELS)}")


# Paul Kellet's economy pink filter (1/f within about 1 dB over the audio band),
# and a leaky integrator for brown: IIR filters, ~10x cheaper than shaping an
# FFT of the whole utterance (augment.colored_noise), which matters per utterance
_PINK_B = np.array([0.049922035, -0.095993537, 0.050612699, -0.004408786])
_PINK_A = np.array([1.0, -2.494956002, 2.017265875, -0.522189400])


def fast_noise(n: int, kind: str, rng: np.random.Generator) -> np.ndarray:
    """Unit-power white, pink or brown noise of length `n` (float32)."""
    from scipy.signal import lfilter

    w = rng.standard_normal(n, dtype=np.float32)
    if kind == "pink":
        w = lfilter(_PINK_B, _PINK_A, w)
    elif kind == "brown":
        w = lfilter([1.0], [1.0, -0.995], w)
    elif kind != "white":
        raise ValueError(f"unknown noise kind {kind!r}")
    w = w - w.mean()
    return (w / np.sqrt(max(float(np.mean(np.square(w))), 1e-20))).astype(np.float32)


# seven bands as audiomentations' SevenBandParametricEQ: (low, high) centre frequency
_EQ_BANDS = [(42.0, 95.0), (91.0, 204.0), (196.0, 441.0), (421.0, 948.0), (909.0, 2045.0),
             (1957.0, 4404.0), (4216.0, 7500.0)]


def equalise(wave: np.ndarray, rng: np.random.Generator, max_db: float = 8.0) -> np.ndarray:
    """A random seven-band parametric EQ (low shelf, five peaks, high shelf):
    microphones and loudspeakers colour the spectrum."""
    import pedalboard as pb

    f = [float(np.exp(rng.uniform(np.log(lo), np.log(hi)))) for lo, hi in _EQ_BANDS]
    g = rng.uniform(-max_db, max_db, len(f))
    q = rng.uniform(0.5, 2.0, len(f))
    filters = [pb.LowShelfFilter(f[0], g[0], 0.707)]
    filters += [pb.PeakFilter(f[i], g[i], q[i]) for i in range(1, 6)]
    filters.append(pb.HighShelfFilter(f[6], g[6], 0.707))
    return np.asarray(pb.Pedalboard(filters)(np.ascontiguousarray(wave, dtype=np.float32), SAMPLE_RATE),
                      dtype=np.float32)


# -- the random training chain ------------------------------------------------------------


class ChannelAugment:
    """Random speaker and channel chain: ``aug(wave, rng) -> new wave``.

    The length changes only through speed perturbation; the peak is kept
    below 1 unless the clipping transform is drawn (then clipped at 1).
    """

    def __init__(self, config: ChannelAugmentConfig | None = None) -> None:
        self.config = config or ChannelAugmentConfig()
        c = self.config
        self._reverb = Reverb(p=1.0, rt60=c.rt60)
        self._pitch = None
        if c.pitch_p > 0:
            # import now (audiomentations pulls librosa: seconds), so DataLoader
            # workers forked later inherit it instead of each importing it
            self._pitch_shifter()

    def _pitch_shifter(self):
        if self._pitch is None:
            import audiomentations as am

            self._pitch = am.PitchShift(method="signalsmith_stretch", p=1.0)
        return self._pitch

    def pitch_shift(self, x: np.ndarray, semitones: float) -> np.ndarray:
        """audiomentations' PitchShift with our own draw: its own draws come from
        Python's global `random`, which would make a resumed run differ."""
        t = self._pitch_shifter()
        t.parameters = {"should_apply": True, "num_semitones": semitones}
        return np.asarray(t.apply(x, SAMPLE_RATE), dtype=np.float32)[: len(x)]

    def __call__(self, wave: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        c = self.config
        x = np.asarray(wave, dtype=np.float32)
        if len(x) < 400:  # too short to filter meaningfully
            return x
        if rng.random() < c.speed_p:
            x = speed_perturb(x, float(rng.uniform(*c.speed)))
        if rng.random() < c.pitch_p:
            x = self.pitch_shift(x, float(rng.uniform(-c.pitch_semitones, c.pitch_semitones)))
        if rng.random() < c.eq_p:
            x = equalise(x, rng, c.eq_db)
        if rng.random() < c.reverb_p:
            x = self._reverb.apply(x, rng)
        r = rng.random()
        if r < c.telephone_p:
            x = telephone(x, "gsm" if rng.random() < 0.6 else "mulaw", rng)
        elif r < c.telephone_p + c.mp3_p:
            x = mp3(x, float(rng.uniform(6.0, 9.5)))
        if rng.random() < c.noise_p:
            kind = ("white", "pink", "brown")[int(rng.integers(3))]
            x = add_at_snr(x, fast_noise(len(x), kind, rng), float(rng.uniform(*c.snr_db)))
        peak = float(np.max(np.abs(x))) if len(x) else 0.0
        if rng.random() < c.clip_p and peak > 0:
            gain = 10 ** (float(rng.uniform(*c.clip_gain_db)) / 20)
            x = np.clip(x / peak * 0.9 * gain, -1.0, 1.0)
        elif peak > 0.99:
            x = x * (0.99 / peak)
        return np.ascontiguousarray(x, dtype=np.float32)
