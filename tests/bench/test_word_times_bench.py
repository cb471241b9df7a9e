"""bench/word_times.py: the word-time errors of a bundle and the spike delay to configure."""

from __future__ import annotations

import json
import shutil

from wavstream.bench.word_times import measure
from wavstream.stream import Recognizer
from wavstream.stream.recognizer import resolve_model


def _with_delay(tmp_path, frames: int):
    copy = tmp_path / f"delay{frames}"
    shutil.copytree(resolve_model("default"), copy)
    cfg = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**cfg, "word_time_delay_frames": frames}))
    return Recognizer.from_bundle(copy, intra_op_threads=1)


def test_the_suggested_delay_removes_the_start_bias(tmp_path) -> None:
    before = measure(_with_delay(tmp_path, 0))  # the default's raw spikes, whatever delay it ships with
    assert before["words_aligned"] >= 40 and before["word_time_delay_frames"] == 0
    lag = before["suggested_word_time_delay_frames"]
    assert lag >= 1 and before["start_median_signed_ms"] > 0  # CTC spikes come a frame or more after the onset
    after = measure(_with_delay(tmp_path, lag))
    assert abs(after["start_median_signed_ms"]) < before["start_median_signed_ms"]
    assert after["suggested_word_time_delay_frames"] == lag  # measuring again suggests the same


def test_the_tuning_set_shares_no_sentence_and_no_voice_with_the_test_set() -> None:
    from wavstream.bench.word_times import SENTENCES, TUNING_SENTENCES, TUNING_VOICES, VOICES

    assert not set(TUNING_SENTENCES) & set(SENTENCES) and not set(TUNING_VOICES) & set(VOICES)


def test_noise_is_added_at_the_asked_snr() -> None:
    import numpy as np

    from wavstream.bench.word_times import _with_noise

    x = np.concatenate([np.zeros(8000), 0.1 * np.sin(np.arange(16000) / 5.0), np.zeros(8000)]).astype(np.float32)
    noisy = _with_noise(x, 20.0, seed=1)
    speech, noise = x[x != 0], (noisy - x)
    snr = 10 * np.log10(np.mean(speech.astype(np.float64) ** 2) / np.mean(noise.astype(np.float64) ** 2))
    assert abs(snr - 20.0) < 0.1 and noisy.dtype == np.float32
