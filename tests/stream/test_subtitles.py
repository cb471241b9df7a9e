"""SRT / WebVTT cues from Finals (stream/subtitles.py) and `wavstream transcribe --format srt|vtt`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from toy_bundle import build_toy_bundle, silence, synth

from wavstream.stream import Final, Word
from wavstream.stream.subtitles import Cue, cues_of, format_cue, subtitles


def test_a_long_final_is_cut_at_words_and_each_cue_timed_by_them() -> None:
    words = tuple(Word(f"word{i}", i * 0.5, i * 0.5 + 0.4, 0.9) for i in range(12))
    f = Final(" ".join(w.word for w in words), 0.0, 5.9, 0, words)
    cues = cues_of(f, max_chars=20, max_seconds=6.0)
    assert " ".join(c.text for c in cues) == f.text
    assert all(len(c.text) <= 20 for c in cues)
    assert cues[0] == Cue(0.0, 1.4, "word0 word1 word2")  # 17 chars; a fourth word would make 23
    assert [c.start for c in cues] == sorted(c.start for c in cues)
    long = tuple(Word("w", i * 1.0, i * 1.0 + 0.5, 0.9) for i in range(10))
    assert all(c.end - c.start <= 6.0 for c in cues_of(Final("w " * 10, 0, 10, 0, long), max_chars=80))


def test_without_words_a_final_is_one_cue_and_an_empty_one_none() -> None:
    assert cues_of(Final("hello there", 1.0, 2.5)) == [Cue(1.0, 2.5, "hello there")]
    assert cues_of(Final("", 1.0, 2.5)) == []


def test_srt_and_vtt_text() -> None:
    finals = [Final("hello", 0.28, 1.0), Final("again", 3661.5, 3662.25)]
    assert subtitles(finals, "srt") == (
        "1\n00:00:00,280 --> 00:00:01,000\nhello\n\n2\n01:01:01,500 --> 01:01:02,250\nagain\n\n"
    )
    assert subtitles(finals, "vtt").startswith("WEBVTT\n\n00:00:00.280 --> 00:00:01.000\nhello\n\n")
    with pytest.raises(ValueError, match="srt"):
        format_cue(1, Cue(0, 1, "x"), "ass")


@pytest.mark.parametrize("style", ["srt", "vtt"])
def test_transcribe_command_writes_subtitles(tmp_path: Path, style: str) -> None:
    import soundfile as sf

    bundle = build_toy_bundle(tmp_path / "bundle")
    wav = tmp_path / "a.wav"
    sf.write(wav, np.concatenate([synth("hello world"), silence(1.5), synth("again"), silence(0.5)]), 16000)
    out = subprocess.run(
        [sys.executable, "-m", "wavstream.cli.main", "transcribe", str(wav), "--model", str(bundle), "--format", style],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout
    blocks = [b for b in out.split("\n\n") if b.strip() and b.strip() != "WEBVTT"]
    texts = [b.splitlines()[-1] for b in blocks]
    assert texts == ["hello world", "again"]
    sep = "," if style == "srt" else "."
    assert all(f" --> " in b and sep in b.splitlines()[-2] for b in blocks)
    assert out.startswith("WEBVTT\n\n") == (style == "vtt")
