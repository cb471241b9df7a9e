"""Word-time errors of a bundle, and the spike delay to write into its config.json.

Audio with known word boundaries: each word of a few short commands is read
on its own by espeak-ng (4 voices), trimmed to its sound, and the words are
joined with random pauses of 150-350 ms. Each Final's words are compared with
the truth where the model gave as many words as were said. A model whose CTC
spikes come late (deeper models, larger chunks) has a steady positive start
error; its median, in frames, is the ``word_time_delay_frames`` the bundle's
config.json should carry (stream/bundle.py), which word times then subtract.

    python -m wavstream.bench.word_times BUNDLE      # prints one JSON object
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from typing import Any, Sequence

import numpy as np

__all__ = ["SENTENCES", "VOICES", "spoken_word", "joined", "errors", "measure"]

SR = 16000
SENTENCES = (
    ("seven", "purple", "windows"), ("open", "the", "garden", "door"), ("turn", "off", "kitchen", "lights"),
    ("call", "my", "mother", "tomorrow"), ("play", "some", "music", "please"),
)
VOICES = ("en-us", "en-gb", "en-us+f3", "en-us+m7")


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


def errors(rec: Any, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[Any]]:
    """(start errors s, end errors s, every word given) of ``rec`` over the SENTENCES in the VOICES.

    Errors count only sentences where the model gave as many words as were said.
    """
    from wavstream.stream import Final

    rng = np.random.default_rng(seed)
    starts: list[float] = []
    ends: list[float] = []
    words: list[Any] = []
    for voice in VOICES:
        for sentence in SENTENCES:
            x, truth = joined(sentence, voice, rng)
            s = rec.create_stream()
            s.accept_waveform(x, SR)
            s.input_finished()
            got = []
            while s.is_ready():
                got += [w for e in rec.decode_stream(s) if isinstance(e, Final) for w in e.words]
            words += got
            if len(got) == len(truth):  # else the model merged or split a word: no one-to-one truth
                starts += [w.start - a for w, (_, a, _) in zip(got, truth)]
                ends += [w.end - b for w, (_, _, b) in zip(got, truth)]
    return np.array(starts), np.array(ends), words


def measure(rec: Any, seed: int = 0) -> dict:
    """Start/end errors (s) of ``rec``'s word times and the suggested delay in frames."""
    st, en, _ = errors(rec, seed)
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
    from wavstream.stream import Recognizer

    if len(argv) != 1:
        print("usage: python -m wavstream.bench.word_times BUNDLE", file=sys.stderr)
        return 2
    print(json.dumps(measure(Recognizer.from_bundle(argv[0], intra_op_threads=1))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
