"""Word-time errors of a bundle, and the spike delay to write into its config.json.

Audio with known word boundaries: each word of a few short commands is read
on its own by espeak-ng (4 voices), trimmed to its sound, and the words are
joined with random pauses of 150-350 ms. Each Final's words are compared with
the truth where the model gave as many words as were said. A model whose CTC
spikes come late (deeper models, larger chunks) has a steady positive start
error; its median, in frames, is the ``word_time_delay_frames`` the bundle's
config.json should carry (stream/bundle.py), which word times then subtract.

A second set, the tuning set (10 other commands in 5 other voices), is where
the word-end rule's settings (stream/alignment.py) were chosen, so that the
test's set above measures them on audio they were not fitted to; ``--snr``
adds white noise at that signal-to-noise ratio (dB, against the speech).

    python -m wavstream.bench.word_times BUNDLE                      # prints one JSON object
    python -m wavstream.bench.word_times BUNDLE --tuning --snr 20    # the tuning set, in noise
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from typing import Any, Optional, Sequence

import numpy as np

__all__ = ["SENTENCES", "VOICES", "TUNING_SENTENCES", "TUNING_VOICES", "TUNING_SEED", "spoken_word", "joined",
           "errors", "measure"]

SR = 16000
SENTENCES = (
    ("seven", "purple", "windows"), ("open", "the", "garden", "door"), ("turn", "off", "kitchen", "lights"),
    ("call", "my", "mother", "tomorrow"), ("play", "some", "music", "please"),
)
VOICES = ("en-us", "en-gb", "en-us+f3", "en-us+m7")
# The word-end rule's own set: no sentence and no voice of the two above.
TUNING_SENTENCES = (
    ("set", "an", "alarm", "tonight"), ("show", "me", "sunny", "pictures"), ("lock", "every", "front", "gate"),
    ("read", "your", "new", "messages"), ("send", "five", "happy", "emails"), ("dim", "both", "bedroom", "lamps"),
    ("find", "her", "blue", "phone"), ("start", "a", "quiet", "movie"), ("go", "away", "slowly"),
    ("say", "hello", "to", "grandma"),
)
TUNING_VOICES = ("en-us+f2", "en-gb-x-rp", "en-us+m3", "en-029", "en-gb+f4")
TUNING_SEED = 7


def spoken_word(word: str, voice: str) -> np.ndarray:
    """One word read by espeak-ng, trimmed to its sound (no espeak silences), 16 kHz float32."""
    import soundfile as sf
    import soxr

    wav = subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "--stdout", word], capture_output=True, check=True).stdout
    x, sr = sf.read(io.BytesIO(wav), dtype="float32")
    x = soxr.resample(x, sr, SR)
    loud = np.flatnonzero(np.abs(x) > 0.02 * np.abs(x).max())
    return x[loud[0] : loud[-1] + 1]


def joined(words: Sequence[str], voice: str, rng: np.random.Generator) -> tuple[np.ndarray, list[tuple[str, float, float]]]:
    """The words read one by one and joined with 150-350 ms pauses; and (word, start s, end s) of each."""
    parts, truth, n = [np.zeros(int(0.4 * SR), np.float32)], [], int(0.4 * SR)
    for w in words:
        a = spoken_word(w, voice)
        gap = np.zeros(int(rng.uniform(0.15, 0.35) * SR), np.float32)
        truth.append((w, n / SR, (n + len(a)) / SR))
        parts += [a, gap]
        n += len(a) + len(gap)
    parts.append(np.zeros(SR // 2, np.float32))
    return np.concatenate(parts), truth


def errors(rec: Any, seed: int = 0, sentences: Sequence[Sequence[str]] = SENTENCES, voices: Sequence[str] = VOICES,
           snr_db: Optional[float] = None) -> tuple[np.ndarray, np.ndarray, list[Any]]:
    """(start errors s, end errors s, every word given) of ``rec`` over the ``sentences`` in the ``voices``,
    optionally in white noise ``snr_db`` below the speech.

    Errors count only sentences whose words pair one-to-one with what was said (``_paired``).
    """
    from wavstream.stream import Final

    rng = np.random.default_rng(seed)
    starts: list[float] = []
    ends: list[float] = []
    words: list[Any] = []
    for k, (voice, sentence) in enumerate((v, w) for v in voices for w in sentences):
        x, truth = joined(sentence, voice, rng)
        if snr_db is not None:
            x = _with_noise(x, snr_db, k)
        s = rec.create_stream()
        s.accept_waveform(x, SR)
        s.input_finished()
        got = []
        while s.is_ready():
            got += [w for e in rec.decode_stream(s) if isinstance(e, Final) for w in e.words]
        words += got
        if _paired([w.word for w in got], [t for t, _, _ in truth]):
            starts += [w.start - a for w, (_, a, _) in zip(got, truth)]
            ends += [w.end - b for w, (_, _, b) in zip(got, truth)]
    return np.array(starts), np.array(ends), words


def _paired(got: Sequence[str], said: Sequence[str], min_ratio: float = 0.3) -> bool:
    """Whether the recognised words stand one-to-one for the words said: as many of them (else the model
    merged or split a word), and each shares letters with its own (difflib ratio >= ``min_ratio``; "af"
    for "off" is 0.4) -- a sentence heard as other words of the same count ("colmi muther tomor o" for
    "call my mother tomorrow") would pair each time with the wrong word's truth."""
    import difflib

    return len(got) == len(said) and all(
        difflib.SequenceMatcher(None, g, w).ratio() >= min_ratio for g, w in zip(got, said))


def _with_noise(x: np.ndarray, snr_db: float, seed: int) -> np.ndarray:
    """``x`` plus white noise ``snr_db`` below the power of its speech (its non-zero samples)."""
    speech = x[np.abs(x) > 0]
    noise = np.random.default_rng(seed).standard_normal(x.size)
    noise *= np.sqrt(np.mean(speech.astype(np.float64) ** 2) / 10 ** (snr_db / 10)) / np.sqrt(np.mean(noise**2))
    return (x + noise).astype(np.float32)


def measure(rec: Any, seed: int = 0, sentences: Sequence[Sequence[str]] = SENTENCES, voices: Sequence[str] = VOICES,
            snr_db: Optional[float] = None) -> dict:
    """Start/end errors (s) of ``rec``'s word times and the suggested delay in frames."""
    st, en, _ = errors(rec, seed, sentences, voices, snr_db)
    shift = rec.config.frame_shift_s
    current = rec.config.word_time_delay_frames
    return {
        "words_aligned": int(st.size),
        "start_abs_ms": {"median": _ms(np.median(np.abs(st))), "p95": _ms(np.percentile(np.abs(st), 95)),
                         "max": _ms(np.max(np.abs(st)))},
        "end_abs_ms": {"median": _ms(np.median(np.abs(en))), "p95": _ms(np.percentile(np.abs(en), 95)),
                       "max": _ms(np.max(np.abs(en)))},
        "start_median_signed_ms": _ms(np.median(st)),
        "starts_within_60ms": round(float(np.mean(np.abs(st) <= 0.060)), 3),
        "ends_within_60ms": round(float(np.mean(np.abs(en) <= 0.060)), 3),
        "word_time_delay_frames": current,
        "suggested_word_time_delay_frames": max(0, current + int(round(float(np.median(st)) / shift))),
    }


def _ms(v: Any) -> float:
    return round(1000.0 * float(v), 1)


def main(argv: list[str]) -> int:
    import argparse

    from wavstream.stream import Recognizer

    p = argparse.ArgumentParser(prog="python -m wavstream.bench.word_times", description=__doc__.split("\n")[0])
    p.add_argument("bundle")
    p.add_argument("--tuning", action="store_true", help="the word-end rule's tuning set instead of the test's")
    p.add_argument("--snr", type=float, default=None, metavar="DB", help="add white noise this many dB below the speech")
    args = p.parse_args(argv)
    sets = (TUNING_SEED, TUNING_SENTENCES, TUNING_VOICES) if args.tuning else (0, SENTENCES, VOICES)
    print(json.dumps(measure(Recognizer.from_bundle(args.bundle, intra_op_threads=1), *sets, snr_db=args.snr)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
