"""Input that used to give a silently wrong answer now gives the right one or a clear refusal.

Channels-first arrays, NaN samples, a WAV piped to stdin, and out-of-range
command-line numbers (toy bundle, no device, no network).
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from toy_bundle import build_toy_bundle, silence, synth  # noqa: E402

from wavstream.stream import AudioFormatError, DecodingConfig, EndpointConfig, Final, Recognizer  # noqa: E402

WAVSTREAM = [sys.executable, "-m", "wavstream.cli.main"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_toy_bundle(tmp_path_factory.mktemp("b") / "toy")


@pytest.fixture(scope="module")
def rec(bundle: Path) -> Recognizer:
    return Recognizer.from_bundle(bundle, intra_op_threads=1, emit_features=False)


def _events(rec: Recognizer, blocks: list, rate: int = 16000) -> list:
    s = rec.create_stream()
    out: list = []
    for b in blocks:
        s.accept_waveform(b, rate)
        while rec.is_ready(s):
            out += rec.decode_stream(s)
    s.input_finished()
    while rec.is_ready(s):
        out += rec.decode_stream(s)
    return out


# ------------------------------------------------------------------ channel layouts
def test_channels_first_array_is_mixed_down_not_misread(rec: Recognizer) -> None:
    """A (2, n) array (torchaudio's layout) gives the same text as (n, 2) and mono."""
    wave = synth("pcm")
    pcm = np.round(wave * 32767).astype(np.int16)
    assert rec.transcribe(np.stack([wave, wave]), 16000) == "pcm"  # float (2, n)
    assert rec.transcribe(np.stack([pcm, pcm]), 16000) == "pcm"  # int16 (2, n)
    assert rec.transcribe(np.stack([pcm, pcm], axis=1), 16000) == "pcm"  # (n, 2)
    assert rec.transcribe(wave[None, :], 16000) == "pcm"  # (1, n)


def test_short_blocks_keep_the_stream_layout(rec: Recognizer) -> None:
    """A (2, 5) tail block after (2, 1600) blocks is read channels-first like them."""
    wave = np.concatenate([synth("ok"), silence(0.1)])
    st = np.stack([wave, wave])
    n = st.shape[1]
    blocks = [st[:, i : i + 1600] for i in range(0, n - 5, 1600)]
    rest = st[:, sum(b.shape[1] for b in blocks):]
    blocks += [rest[:, :-5], rest[:, -5:]] if rest.shape[1] > 5 else [rest]
    assert [e.text for e in _events(rec, blocks) if isinstance(e, Final)] == ["ok"]


def test_unreadable_layouts_are_refused_by_name(rec: Recognizer) -> None:
    s = rec.create_stream()
    with pytest.raises(AudioFormatError, match=r"shape \(100, 200\) has no channel axis"):
        s.accept_waveform(np.zeros((100, 200), np.float32), 16000)
    s.accept_waveform(np.zeros((1600, 2), np.float32), 16000)  # (n, channels) from here on
    with pytest.raises(AudioFormatError, match="earlier blocks were \\(samples, channels\\)"):
        s.accept_waveform(np.zeros((2, 1600), np.float32), 16000)
    assert s.samples_accepted == 1600


# ------------------------------------------------------------------ non-finite samples
def test_nan_samples_are_refused_and_lose_nothing(rec: Recognizer) -> None:
    """A block with 3 NaNs is refused by name; the stream goes on as if it had not been given."""
    a, b = synth("ab"), np.concatenate([synth("cd"), silence(0.1)])
    bad = synth("xx").copy()
    bad[[100, 200, 300]] = np.nan
    with pytest.raises(AudioFormatError, match=rf"3 non-finite sample\(s\).*first at sample {a.shape[0] + 100} "):
        rec.transcribe(np.concatenate([a, bad, b]), 16000)

    s = rec.create_stream()
    s.accept_waveform(a, 16000)
    before = s.samples_accepted
    with pytest.raises(AudioFormatError):
        s.accept_waveform(bad, 16000)
    with pytest.raises(AudioFormatError, match="non-finite"):
        s.accept_waveform(np.full(10, 1e39), 16000)  # finite float64, infinite as float32
    assert s.samples_accepted == before
    s.accept_waveform(b, 16000)
    s.input_finished()
    got: list = []
    while rec.is_ready(s):
        got += rec.decode_stream(s)
    assert [e.text for e in got if isinstance(e, Final)] == [e.text for e in _events(rec, [a, b]) if isinstance(e, Final)]


def test_cli_transcribe_nan_file_exits_2_naming_it(bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from wavstream.cli.main import main

    wave = np.concatenate([synth("hi"), silence(2.0), synth("yo")])
    wave[synth("hi").shape[0] + 100] = np.nan  # in the silence after "hi": "yo" is never reached
    path = tmp_path / "nan.wav"
    sf.write(path, wave, 16000, subtype="FLOAT")
    assert main(["transcribe", str(path), "--model", str(bundle)]) == 2
    out, err = capsys.readouterr()
    assert out.splitlines() == ["hi"]  # what came before the bad block
    assert "1 non-finite sample" in err and "nan.wav" in err and "Traceback" not in err


# ------------------------------------------------------------------ stdin
def _finals_json(out: str) -> list:
    return [json.loads(x) for x in out.splitlines() if '"final"' in x]


def test_wav_on_stdin_pipe_is_decoded_from_its_header(bundle: Path, tmp_path: Path) -> None:
    """`cat x.wav | wavstream transcribe -` equals `wavstream transcribe x.wav` (22.05 kHz float WAV, through a pipe)."""
    import soxr

    wave = np.concatenate([synth("hi"), silence(2.0), synth("yo")])
    path = tmp_path / "a.wav"
    sf.write(path, soxr.resample(wave, 16000, 22050), 22050, subtype="FLOAT")
    args = ["transcribe", "--model", str(bundle), "--json", "--threads", "1"]
    from_file = subprocess.run(WAVSTREAM + args + [str(path)], capture_output=True, text=True, timeout=60)
    piped = subprocess.run(WAVSTREAM + args + ["-"], input=path.read_bytes(), capture_output=True, timeout=60)
    assert from_file.returncode == 0 and piped.returncode == 0, piped.stderr
    want = _finals_json(from_file.stdout)
    assert want and [f["text"] for f in want] == ["hi", "yo"]
    assert _finals_json(piped.stdout.decode()) == want


@pytest.mark.parametrize("kind", ["flac", "wav_pcm16", "raw"])
def test_stdin_formats(kind: str, bundle: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """FLAC (read whole), 16-bit WAV (streamed) and headerless s16le at --rate all give the text."""
    from wavstream.cli.main import main

    wave = np.concatenate([synth("hi"), silence(0.2)])
    pcm = np.round(wave * 32767).astype("<i2")
    if kind == "raw":
        data = pcm.tobytes()
    else:
        buf = io.BytesIO()
        sf.write(buf, pcm, 16000, format="FLAC" if kind == "flac" else "WAV", subtype="PCM_16")
        data = buf.getvalue()

    class Stdin:
        buffer = io.BufferedReader(io.BytesIO(data))  # type: ignore[arg-type]

    monkeypatch.setattr(sys, "stdin", Stdin)
    assert main(["transcribe", "-", "--model", str(bundle), "--rate", "16000"]) == 0
    assert capsys.readouterr().out.splitlines() == ["hi"]


# ------------------------------------------------------------------ numbers on the command line
@pytest.mark.parametrize(
    "argv, flag",
    [
        (["transcribe", "x.wav", "--beam-size", "0"], "--beam-size"),
        (["transcribe", "x.wav", "--rule2-silence", "-1"], "--rule2-silence"),
        (["transcribe", "x.wav", "--chunk", "0"], "--chunk"),
        (["transcribe", "x.wav", "--threads", "-1"], "--threads"),
        (["transcribe", "x.wav", "--rate", "12.5"], "--rate"),
        (["features", "x.wav", "--out", "f", "--threads", "-1"], "--threads"),
        (["mic", "--threads", "-1"], "--threads"),
        (["mic", "--block-ms", "0"], "--block-ms"),
        (["mic", "--beam-size", "0"], "--beam-size"),
        (["mic", "--max-utterance", "nan"], "--max-utterance"),
    ],
)
def test_cli_refuses_out_of_range_numbers_naming_the_flag(argv: list, flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    from wavstream.cli.main import main

    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and f"argument {flag}" in err, err


def test_configs_refuse_bad_values() -> None:
    """The same checks in the library, for callers that build configs themselves."""
    with pytest.raises(ValueError, match="beam_size must be an integer >= 1"):
        DecodingConfig("beam", 0)
    with pytest.raises(ValueError, match="'greedy' or 'beam'"):
        DecodingConfig("viterbi")
    with pytest.raises(ValueError, match="rule2_silence_s must be a positive number"):
        EndpointConfig.with_times(rule2_silence_s=-1)
