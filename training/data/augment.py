"""On-the-fly waveform augmentation for WavLM's denoising objective (numpy).

Every transform takes a float32 mono waveform and returns a new one of the
same length; the caller keeps the clean waveform for the targets (WavLM
computes its pseudo-labels from the clean utterance, docs/models.md, WavLM).
Each transform has a probability ``p`` and its own seeded
``numpy.random.Generator`` (``seed``), or uses the generator passed to
``__call__`` (``Compose`` passes its own, so one seed fixes a whole chain).

* :class:`AddNoise`: white, pink (1/f power), brown (1/f^2 power) or babble
  (the sum of several other utterances) at an SNR drawn from a range.
* :class:`Reverb`: convolution with a synthetic room impulse response:
  a direct path plus exponentially decaying Gaussian noise whose decay gives
  the drawn RT60 (60 dB decay time), via ``scipy.signal.fftconvolve``.
* :class:`UtteranceMixing`: WavLM's utterance mixing (docs/models.md, WavLM): a
  segment of a second utterance (or of noise) of length l ~ U{0..floor(T/2)}
  is added at a random offset, so at most 50% of the primary is overlapped,
  with energy ratio r ~ U(-5, 5) dB for speech and U(-5, 20) dB for noise,
  scale = sqrt(E_primary / (10^(r/10) E_interferer)) with E the mean power of
  each whole signal. ``UtteranceMixing.batch`` does it over a collated batch,
  drawing the secondary from the other rows (as NeMo does).
* :class:`Compose`: applies transforms in order.

Sources of other utterances (babble, mixing) are callables ``rng -> array``
or sequences of arrays; :class:`ManifestSource` reads them from a corpus.
"""

from __future__ import annotations

from typing import Callable, Sequence, Union

import numpy as np

SAMPLE_RATE = 16000
Source = Union[Callable[[np.random.Generator], np.ndarray], Sequence[np.ndarray]]
NOISE_KINDS = ("white", "pink", "brown", "babble")


def power(x: np.ndarray) -> float:
    return float(np.mean(np.square(x, dtype=np.float64)))


def snr_db(signal: np.ndarray, noise: np.ndarray) -> float:
    return 10.0 * np.log10(power(signal) / max(power(noise), 1e-20))


def colored_noise(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise with power spectral density ~ 1/f**exponent, unit power.

    exponent 0: white, 1: pink, 2: brown (red). Shaped in the frequency domain.
    """
    if n <= 0:
        return np.zeros(0, np.float32)
    white = rng.standard_normal(n)
    if exponent == 0:
        out = white
    else:
        spec = np.fft.rfft(white)
        f = np.fft.rfftfreq(n)
        f[0] = f[1] if n > 1 else 1.0  # no infinite DC gain
        spec *= f ** (-exponent / 2.0)
        out = np.fft.irfft(spec, n)
    out = out - out.mean()
    return (out / np.sqrt(max(np.mean(out**2), 1e-20))).astype(np.float32)


def _draw(source: Source, rng: np.random.Generator) -> np.ndarray:
    if callable(source):
        return np.asarray(source(rng), dtype=np.float32)
    if len(source) == 0:
        raise ValueError("empty utterance source")
    return np.asarray(source[int(rng.integers(len(source)))], dtype=np.float32)


def _fit_length(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Random crop, or tile, of ``x`` to length ``n``."""
    if len(x) == 0:
        return np.zeros(n, np.float32)
    if len(x) >= n:
        start = int(rng.integers(0, len(x) - n + 1))
        return x[start:start + n]
    reps = int(np.ceil(n / len(x))) + 1
    tiled = np.tile(x, reps)
    start = int(rng.integers(0, len(x)))
    return tiled[start:start + n]


def babble(n: int, source: Source, rng: np.random.Generator, speakers: int = 4) -> np.ndarray:
    """The sum of ``speakers`` other utterances, each at unit power; unit power."""
    out = np.zeros(n, np.float64)
    for _ in range(max(1, speakers)):
        u = _fit_length(_draw(source, rng), n, rng).astype(np.float64)
        out += u / np.sqrt(max(power(u), 1e-20))
    return (out / np.sqrt(max(power(out), 1e-20))).astype(np.float32)


def add_at_snr(signal: np.ndarray, noise: np.ndarray, snr: float) -> np.ndarray:
    """signal + noise scaled so that 10 log10(P_signal / P_noise) = snr (whole-signal powers)."""
    ps, pn = power(signal), power(noise)
    if ps <= 0 or pn <= 0:
        return signal.astype(np.float32, copy=True)
    scale = np.sqrt(ps / (pn * 10.0 ** (snr / 10.0)))
    return (signal + scale * noise).astype(np.float32)


def synthetic_rir(rt60: float, rng: np.random.Generator, sr: int = SAMPLE_RATE,
                  drr_db: float = 0.0, predelay: float = 0.005) -> np.ndarray:
    """A synthetic room impulse response, peak-normalised to the direct path = 1.

    Direct impulse at t=0, then after ``predelay`` Gaussian noise with an
    exponential envelope falling 60 dB in ``rt60`` seconds; the tail energy
    is set so the direct-to-reverberant energy ratio is ``drr_db``.
    """
    length = max(int(rt60 * sr * 1.1), 2)
    t = np.arange(length) / sr
    env = np.exp(-3.0 * np.log(10.0) * t / rt60)  # amplitude 10^-3 (-60 dB) at rt60
    tail = rng.standard_normal(length) * env
    tail[: int(predelay * sr) + 1] = 0.0
    e_tail = float(np.sum(tail**2))
    if e_tail > 0:
        tail *= np.sqrt(10.0 ** (-drr_db / 10.0) / e_tail)
    tail[0] = 1.0
    return tail.astype(np.float32)


class Transform:
    """Base: applies ``self.apply`` with probability ``p``."""

    def __init__(self, p: float = 1.0, seed: int | None = None):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.p = float(p)
        self.rng = np.random.default_rng(seed)

    def __call__(self, wav: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        rng = self.rng if rng is None else rng
        wav = np.asarray(wav, dtype=np.float32)
        if self.p <= 0.0 or rng.random() >= self.p:
            return wav
        return self.apply(wav, rng)

    def apply(self, wav: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(p={self.p})"


class AddNoise(Transform):
    """Additive noise of a random kind at an SNR drawn uniformly from ``snr_db``."""

    EXPONENT = {"white": 0.0, "pink": 1.0, "brown": 2.0}

    def __init__(self, p: float = 0.5, snr_db: tuple[float, float] = (0.0, 20.0),
                 kinds: Sequence[str] = NOISE_KINDS, babble_source: Source | None = None,
                 babble_speakers: tuple[int, int] = (3, 7), seed: int | None = None):
        super().__init__(p, seed)
        bad = [k for k in kinds if k not in NOISE_KINDS]
        if bad:
            raise ValueError(f"unknown noise kinds {bad}; known: {NOISE_KINDS}")
        kinds = [k for k in kinds if k != "babble" or babble_source is not None]
        if not kinds:
            raise ValueError("no noise kind left (babble needs babble_source)")
        self.kinds = list(kinds)
        self.snr_db = snr_db
        self.babble_source = babble_source
        self.babble_speakers = babble_speakers

    def noise(self, kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
        if kind == "babble":
            k = int(rng.integers(self.babble_speakers[0], self.babble_speakers[1] + 1))
            return babble(n, self.babble_source, rng, k)
        return colored_noise(n, self.EXPONENT[kind], rng)

    def apply(self, wav, rng):
        kind = self.kinds[int(rng.integers(len(self.kinds)))]
        snr = float(rng.uniform(*self.snr_db))
        return add_at_snr(wav, self.noise(kind, len(wav), rng), snr)


class Reverb(Transform):
    """Simulated room: convolution with :func:`synthetic_rir` (RT60, DRR drawn uniformly).

    The output keeps the input's length (the tail past the end is dropped)
    and its RMS.
    """

    def __init__(self, p: float = 0.3, rt60: tuple[float, float] = (0.15, 0.8),
                 drr_db: tuple[float, float] = (-3.0, 10.0), seed: int | None = None):
        super().__init__(p, seed)
        self.rt60 = rt60
        self.drr_db = drr_db

    def apply(self, wav, rng):
        from scipy.signal import fftconvolve

        rir = synthetic_rir(float(rng.uniform(*self.rt60)), rng, drr_db=float(rng.uniform(*self.drr_db)))
        out = fftconvolve(wav.astype(np.float64), rir.astype(np.float64), mode="full")[: len(wav)]
        p_in, p_out = power(wav), power(out)
        if p_out > 0:
            out *= np.sqrt(p_in / p_out)
        return out.astype(np.float32)


class UtteranceMixing(Transform):
    """WavLM utterance mixing (docs/models.md, WavLM), one utterance at a time.

    With probability ``noise_prob`` the interferer is noise (from
    ``noise_source``, or generated white/pink/brown noise when none is given)
    at r ~ U(noise_db); otherwise a secondary utterance from ``source`` at
    r ~ U(speech_db). ``self.last`` records (start, length, ratio_db, kind)
    of the latest mix.
    """

    def __init__(self, p: float = 0.2, source: Source | None = None, noise_prob: float = 0.2,
                 speech_db: tuple[float, float] = (-5.0, 5.0), noise_db: tuple[float, float] = (-5.0, 20.0),
                 noise_source: Source | None = None, max_overlap: float = 0.5, seed: int | None = None):
        super().__init__(p, seed)
        if source is None and noise_prob < 1.0:
            raise ValueError("UtteranceMixing needs a source of utterances (or noise_prob=1)")
        self.source = source
        self.noise_prob = noise_prob
        self.speech_db = speech_db
        self.noise_db = noise_db
        self.noise_source = noise_source
        self.max_overlap = max_overlap
        self.last: dict | None = None

    def _noise(self, n: int, rng: np.random.Generator) -> np.ndarray:
        if self.noise_source is not None:
            return _draw(self.noise_source, rng)
        return colored_noise(n, float(rng.choice([0.0, 1.0, 2.0])), rng)

    def apply(self, wav, rng):
        if rng.random() < self.noise_prob:
            interferer, kind, rng_db = self._noise(len(wav), rng), "noise", self.noise_db
        else:
            interferer, kind, rng_db = _draw(self.source, rng), "speech", self.speech_db
        out, info = mix(wav, interferer, rng, rng_db, self.max_overlap)
        info["kind"] = kind
        self.last = info
        return out

    def batch(self, wavs: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        """Mix a collated batch (B, T): each row with probability p, the
        secondary drawn from the *other* rows (or noise with ``noise_prob``)."""
        rng = self.rng if rng is None else rng
        wavs = np.asarray(wavs, dtype=np.float32)
        out = wavs.copy()
        b = wavs.shape[0]
        for i in range(b):
            if self.p <= 0.0 or rng.random() >= self.p:
                continue
            if b < 2 or rng.random() < self.noise_prob:
                interferer, rng_db = self._noise(wavs.shape[1], rng), self.noise_db
            else:
                j = int(rng.integers(b - 1))
                j = j + 1 if j >= i else j
                interferer, rng_db = wavs[j], self.speech_db
            out[i], _ = mix(wavs[i], interferer, rng, rng_db, self.max_overlap)
        return out


def mix(primary: np.ndarray, interferer: np.ndarray, rng: np.random.Generator,
        ratio_db: tuple[float, float] = (-5.0, 5.0), max_overlap: float = 0.5
        ) -> tuple[np.ndarray, dict]:
    """Add a random segment of ``interferer`` onto at most ``max_overlap`` of ``primary``.

    Returns (mixed, {"start", "length", "ratio_db"}). The energy ratio uses
    the mean power of each whole signal, as in the WavLM data code.
    """
    primary = np.asarray(primary, dtype=np.float32)
    t = len(primary)
    length = int(rng.integers(0, int(t * max_overlap) + 1))  # l ~ U{0..floor(T/2)}
    length = min(length, len(interferer))
    ratio = float(rng.uniform(*ratio_db))
    out = primary.copy()
    start = int(rng.integers(0, t - length + 1))
    info = {"start": start, "length": length, "ratio_db": ratio}
    e_p, e_i = power(primary), power(interferer)
    if length == 0 or e_p <= 0 or e_i <= 0:
        return out, info
    src = int(rng.integers(0, len(interferer) - length + 1))
    scale = np.sqrt(e_p / (10.0 ** (ratio / 10.0) * e_i))
    out[start:start + length] += scale * interferer[src:src + length]
    return out, info


class Compose(Transform):
    """Apply ``transforms`` in order (each with its own p) with one seeded generator."""

    def __init__(self, transforms: Sequence[Transform], p: float = 1.0, seed: int | None = None):
        super().__init__(p, seed)
        self.transforms = list(transforms)

    def apply(self, wav, rng):
        for t in self.transforms:
            wav = t(wav, rng)
        return wav

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"


class ManifestSource:
    """Random utterances of a corpus for babble and mixing (callable ``rng -> array``).

    ``entries`` are :class:`wavstream.training.data.manifest.Entry` (or paths);
    up to ``cache`` decoded files are kept in memory.
    """

    def __init__(self, entries: Sequence, cache: int = 256):
        self.paths = [getattr(e, "path", e) for e in entries]
        if not self.paths:
            raise ValueError("empty manifest")
        self.cache_size = cache
        self._cache: dict[str, np.ndarray] = {}

    def __call__(self, rng: np.random.Generator) -> np.ndarray:
        import soundfile as sf

        path = str(self.paths[int(rng.integers(len(self.paths)))])
        wav = self._cache.get(path)
        if wav is None:
            wav, sr = sf.read(path, dtype="float32", always_2d=False)
            if wav.ndim == 2:
                wav = wav.mean(axis=1)
            if sr != SAMPLE_RATE:
                import soxr

                wav = soxr.resample(wav, sr, SAMPLE_RATE).astype(np.float32)
            if len(self._cache) >= self.cache_size:
                self._cache.pop(next(iter(self._cache)))
            self._cache[path] = wav
        return wav


def wavlm_augment(source: Source, seed: int | None = None, noise_p: float = 0.25,
                  mix_p: float = 0.2, reverb_p: float = 0.15) -> Compose:
    """A default chain for WavLM pretraining: reverb, then noise, then mixing.

    The probabilities are this project's tiny-recipe choices, not the
    paper's (about 10-20% of utterances mixed, docs/models.md).
    """
    return Compose([
        Reverb(p=reverb_p),
        AddNoise(p=noise_p, snr_db=(0.0, 20.0), babble_source=source),
        UtteranceMixing(p=mix_p, source=source, noise_prob=0.2),
    ], seed=seed)
