"""The Recognizer pipeline on the toy bundle: features parity, endpoints, batching, sources, CLI."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from toy_bundle import STRIDE, build_toy_bundle, silence, synth  # noqa: E402

from wavstream.stream import (  # noqa: E402
    DecodingConfig,
    Features,
    FileSource,
    Final,
    MicrophoneSource,
    OrtEngine,
    Partial,
    Recognizer,
    SourceError,
    StdinSource,
    load_bundle,
)

CHUNK = 8 * STRIDE


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_toy_bundle(tmp_path_factory.mktemp("b") / "toy", code_groups=2)


@pytest.fixture(scope="module")
def rec(bundle: Path) -> Recognizer:
    return Recognizer.from_bundle(bundle, intra_op_threads=1)


def _direct_features(bundle: Path, wave: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The bundle's engine fed directly: whole chunks, last one zero-padded, real frames kept."""
    eng = OrtEngine(load_bundle(bundle), intra_op_threads=1)
    st = eng.init_state(1)
    feats, codes = [], []
    for pos in range(0, wave.shape[0], CHUNK):
        real = wave[pos : pos + CHUNK]
        x = np.zeros((1, CHUNK), np.float32)
        x[0, : real.shape[0]] = real
        r = eng.step(x, st)
        st = r.states
        n = math.ceil(real.shape[0] / STRIDE)
        feats.append(r.features[0, :n])
        codes.append(r.codes[0, :n])
    return np.concatenate(feats), np.concatenate(codes)


@pytest.mark.parametrize("push", [1, 37, 16000])
def test_file_pipeline_features_equal_direct_engine(bundle: Path, rec: Recognizer, tmp_path: Path, push: int) -> None:
    """Features through FileSource -> Recognizer equal the engine fed directly, whatever the push size."""
    seconds = 0.4 if push == 1 else 2.0
    rng = np.random.default_rng(push)
    wave = (0.1 * rng.standard_normal(int(seconds * 16000) + 77)).astype(np.float32)  # not a whole chunk
    path = tmp_path / "in.wav"
    sf.write(path, wave, 16000, subtype="FLOAT")
    src = FileSource(path, block_samples=push)
    events = []
    for block in src:
        events.extend(rec.feed(block, src.sample_rate))
    events.extend(rec.finish())
    fe = [e for e in events if isinstance(e, Features)]
    assert [e.start_frame for e in fe] == list(np.cumsum([0] + [e.num_frames for e in fe[:-1]]))
    got = np.concatenate([e.frames for e in fe])
    got_codes = np.concatenate([e.codes for e in fe])
    want, want_codes = _direct_features(bundle, wave)
    assert got.shape == (math.ceil(wave.shape[0] / STRIDE), 16)
    np.testing.assert_allclose(got, want, atol=1e-6)
    np.testing.assert_array_equal(got_codes, want_codes)
    assert got_codes.dtype == np.int64 and got_codes.shape[1] == 2


def test_two_utterances_split_by_2s_silence_give_two_finals(rec: Recognizer) -> None:
    wave = np.concatenate([synth("hello world"), silence(2.0), synth("bye", seed=1)])
    events = list(rec.feed(wave, 16000)) + list(rec.finish())
    finals = [e for e in events if isinstance(e, Final)]
    assert [f.text for f in finals] == ["hello world", "bye"]
    # Times bound the speech: "hello world" starts after 10 lead frames (0.1 s).
    assert finals[0].start == pytest.approx(0.10)
    assert finals[0].end < finals[1].start
    assert finals[1].start == pytest.approx(len(synth("hello world")) / 16000 + 2.0 + 0.10, abs=0.011)
    # The first Final came from the endpoint (rule2), before the second utterance's partials.
    i_final = events.index(finals[0])
    assert any(isinstance(e, Partial) and e.text.startswith("b") for e in events[i_final:])
    partials = [e.text for e in events[:i_final] if isinstance(e, Partial)]
    assert partials[-1] == "hello world" and partials[0] == "h"


def test_no_endpoint_without_enough_silence(bundle: Path) -> None:
    rec = Recognizer.from_bundle(bundle, emit_features=False)
    # 0.8 s + the synth's lead/tail blanks = 1.02 s of blank frames < 1.2 s (rule2).
    wave = np.concatenate([synth("ab"), silence(0.8), synth("cd", seed=2)])
    finals = [e for e in list(rec.feed(wave, 16000)) + list(rec.finish()) if isinstance(e, Final)]
    assert [f.text for f in finals] == ["abcd"]


def test_beam_decoding_gives_same_text(bundle: Path) -> None:
    rec = Recognizer.from_bundle(bundle, decoding=DecodingConfig("beam", beam_size=4), emit_features=False)
    wave = np.concatenate([synth("it's ok"), silence(2.0), synth("zz top", seed=3)])
    assert rec.transcribe(wave, 16000) == "it's ok zz top"


def test_resampled_input_decodes(rec: Recognizer) -> None:
    import soxr

    wave = synth("stream")
    for rate in (8000, 44100, 48000):
        x = soxr.resample(wave, 16000, rate).astype(np.float32)
        assert rec.transcribe(x, rate) == "stream"


def test_decode_streams_batches_and_matches_single_streams(bundle: Path) -> None:
    """A server's batched decode_streams gives each session what it would get alone."""
    rec = Recognizer.from_bundle(bundle, intra_op_threads=1)
    waves = [
        np.concatenate([synth("one"), silence(1.5), synth("two")]),
        synth("three", seed=5),
        np.concatenate([silence(0.3), synth("four", seed=6)])[:-333],
    ]
    calls = []
    real_step = rec.engine.step

    def counting_step(samples, states):  # type: ignore[no-untyped-def]
        calls.append(samples.shape[0])
        return real_step(samples, states)

    rec.engine.step = counting_step  # type: ignore[method-assign]
    streams = [rec.create_stream() for _ in waves]
    for s, w in zip(streams, waves):
        s.accept_waveform(w, 16000)
        s.input_finished()
    batched: list[list] = [[] for _ in waves]
    while any(rec.is_ready(s) for s in streams):
        for i, evs in enumerate(rec.decode_streams(streams)):
            batched[i].extend(evs)
    assert max(calls) == 3  # all three in one engine call while all had audio
    rec.engine.step = real_step  # type: ignore[method-assign]
    for w, evs in zip(waves, batched):
        alone = list(rec.feed(w, 16000)) + list(rec.finish())
        assert [e for e in evs if not isinstance(e, Features)] == [e for e in alone if not isinstance(e, Features)]
        fa = np.concatenate([e.frames for e in alone if isinstance(e, Features)])
        fb = np.concatenate([e.frames for e in evs if isinstance(e, Features)])
        np.testing.assert_allclose(fb, fa, atol=1e-5)
    assert [[e.text for e in evs if isinstance(e, Final)] for evs in batched] == [["one", "two"], ["three"], ["four"]]


def test_callbacks_and_listener_receive_events(bundle: Path) -> None:
    rec = Recognizer.from_bundle(bundle)
    seen: list = []
    rec.on_final(lambda e: seen.append(("final", e.text)))

    class App:
        partials: list[str] = []
        feats = 0

        def on_partial(self, e: Partial) -> None:
            self.partials.append(e.text)

        def on_features(self, e: Features) -> None:
            self.feats += e.num_frames

    app = App()
    rec.add_listener(app)
    wave = synth("go")
    rec.feed(wave, 16000)  # not iterated: work and callbacks happen anyway
    rec.finish()
    assert seen == [("final", "go")]
    assert app.partials == ["g", "go"]
    assert app.feats == math.ceil(len(wave) / STRIDE)


def test_stream_api_errors(rec: Recognizer) -> None:
    s = rec.create_stream()
    with pytest.raises(ValueError, match="not a usable audio rate"):
        s.accept_waveform(np.zeros(10, np.float32), 5)
    s.accept_waveform(np.zeros(10, np.float32), 16000)
    with pytest.raises(ValueError, match="one rate per stream"):
        s.accept_waveform(np.zeros(10, np.float32), 8000)
    with pytest.raises(TypeError, match="swapped"):
        s.accept_waveform(16000, np.zeros(10, np.float32))  # type: ignore[arg-type]
    s.input_finished()
    with pytest.raises(RuntimeError, match="after input_finished"):
        s.accept_waveform(np.zeros(10, np.float32), 16000)


def test_int16_and_stereo_input(rec: Recognizer) -> None:
    wave = synth("pcm")
    pcm = np.round(wave * 32767).astype(np.int16)
    stereo = np.stack([pcm, pcm], axis=1)
    assert rec.transcribe(stereo, 16000) == "pcm"


# ----------------------------------------------------------------- sources
def test_stdin_source_s16le_with_split_samples() -> None:
    pcm = (np.arange(-500, 500, dtype=np.int16) * 30).astype("<i2")
    raw = pcm.tobytes()

    class Trickle(io.RawIOBase):
        """Returns odd-sized reads so samples get split across reads."""

        def __init__(self) -> None:
            self.pos = 0

        def read(self, n: int = -1) -> bytes:
            k = min(n, 333, len(raw) - self.pos)
            out = raw[self.pos : self.pos + k]
            self.pos += k
            return out

    src = StdinSource(16000, block_s=0.01, stream=Trickle())  # type: ignore[arg-type]
    got = np.concatenate(list(src))
    np.testing.assert_allclose(got, pcm.astype(np.float32) / 32768.0)


def test_file_source_errors(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="not found"):
        FileSource(tmp_path / "missing.wav")
    bad = tmp_path / "notes.wav"
    bad.write_text("this is not audio")
    with pytest.raises(SourceError, match="unsupported or unreadable audio file"):
        FileSource(bad)


def test_file_source_realtime_paces(tmp_path: Path) -> None:
    import time

    path = tmp_path / "short.wav"
    sf.write(path, np.zeros(3200, np.float32), 16000)  # 0.2 s
    t0 = time.monotonic()
    n = sum(b.shape[0] for b in FileSource(path, realtime=True, block_s=0.05))
    assert n == 3200 and time.monotonic() - t0 >= 0.18


def test_microphone_without_device_is_clear(monkeypatch) -> None:
    """PortAudio that lists only an output device: the error names what exists.
    (A real PortAudio with no input device is exercised in test_mic_virtual.py.)"""
    from wavstream.stream import sources

    class OutputOnlyPortAudio:
        @staticmethod
        def query_devices(*args, **kwargs):
            return [{"name": "speakers", "max_input_channels": 0, "default_samplerate": 48000.0}]

    monkeypatch.setattr(sources, "_sounddevice", lambda: OutputOnlyPortAudio)
    assert sources.list_input_devices() == []
    with pytest.raises(SourceError, match="no audio input device.*speakers"):
        MicrophoneSource()


# --------------------------------------------------------------------- CLI
def test_cli_transcribe_json(bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from wavstream.cli.main import main

    path = tmp_path / "a.wav"
    sf.write(path, np.concatenate([synth("hi"), silence(2.0), synth("yo")]), 16000, subtype="FLOAT")
    assert main(["transcribe", str(path), "--model", str(bundle), "--json"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    finals = [x for x in lines if x["type"] == "final"]
    assert [f["text"] for f in finals] == ["hi", "yo"]
    assert finals[0]["start"] == pytest.approx(0.1) and finals[1]["end"] > finals[1]["start"]
    assert main(["transcribe", str(path), "--model", str(bundle)]) == 0
    assert capsys.readouterr().out.splitlines() == ["hi", "yo"]  # not a TTY: finals only


def test_cli_features(bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from wavstream.cli.main import main

    wave = synth("abc")
    path = tmp_path / "a.wav"
    sf.write(path, wave, 16000, subtype="FLOAT")
    out = tmp_path / "f.npy"
    assert main(["features", str(path), "--model", str(bundle), "--out", str(out)]) == 0
    want, want_codes = _direct_features(bundle, wave)
    np.testing.assert_allclose(np.load(out), want, atol=1e-6)
    np.testing.assert_array_equal(np.load(tmp_path / "f.codes.npy"), want_codes)
    assert main(["features", str(path), "--model", str(bundle), "--out", str(out), "--layer", "-1"]) == 0
    capsys.readouterr()
    assert main(["features", str(path), "--model", str(bundle), "--out", str(out), "--layer", "3"]) == 2
    err = capsys.readouterr().err
    assert "layer 3 is not in this bundle" in err and "Available: --layer 1" in err


def test_cli_bad_model_and_file(bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from wavstream.cli.main import main

    assert main(["transcribe", str(tmp_path / "x.wav"), "--model", str(bundle)]) == 2
    assert "audio file not found" in capsys.readouterr().err
    path = tmp_path / "a.wav"
    sf.write(path, np.zeros(1600, np.float32), 16000)
    assert main(["transcribe", str(path), "--model", str(tmp_path / "nobundle")]) == 2
    assert "model bundle not found" in capsys.readouterr().err
