"""Protocol v1 against a real server on 127.0.0.1 (port 0): results equal the local recogniser and `wavstream transcribe`."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from server_harness import raw_session, recv_until_close, run, running_server, silence, synth, toy_recognizer, utterance

from wavstream.stream import Features, Final
from wavstream.stream.client import Client, transcribe
from wavstream.stream.protocol import (
    ErrorCode,
    ProtocolError,
    StartMessage,
    decode_audio,
    pack_features,
    parse_client_text,
    unpack_features,
)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def rec(tmp_path_factory: pytest.TempPathFactory):
    return toy_recognizer(tmp_path_factory.mktemp("toy") / "bundle")


# ------------------------------------------------------------ Sans-I/O parts
@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_feature_frame_round_trip(dtype: str) -> None:
    f = np.random.default_rng(0).standard_normal((7, 5)).astype(np.float32)
    data = pack_features(123, f, dtype)
    assert len(data) == 20 + 7 * 5 * (2 if dtype == "float16" else 4)
    start, g = unpack_features(data)
    assert start == 123 and g.shape == (7, 5) and g.dtype == np.float32
    np.testing.assert_allclose(g, f, atol=1e-2 if dtype == "float16" else 0)
    with pytest.raises(ValueError, match="needs"):
        unpack_features(data[:-1])


def test_start_and_audio_validation() -> None:
    s = StartMessage.from_dict({"type": "start", "sample_rate": 44100, "format": "float32", "channels": 2, "extra": 1})
    assert s.frame_bytes == 8 and s.endpoint.enabled
    assert StartMessage.from_dict(s.to_dict()) == s
    for bad, code in [
        ({"sample_rate": 7999}, ErrorCode.BAD_SAMPLE_RATE),
        ({"sample_rate": 48001}, ErrorCode.BAD_SAMPLE_RATE),
        ({"sample_rate": "16000"}, ErrorCode.BAD_SAMPLE_RATE),
        ({"format": "mulaw"}, ErrorCode.BAD_FORMAT),
        ({"channels": 0}, ErrorCode.BAD_FORMAT),
        ({"protocol": 2}, ErrorCode.UNSUPPORTED_VERSION),
        ({"features": "yes"}, ErrorCode.BAD_START),
        ({"words": 1}, ErrorCode.BAD_START),
        ({"endpoint": {"rule2_silence": -1}}, ErrorCode.BAD_START),
    ]:
        with pytest.raises(ProtocolError) as exc:
            StartMessage.from_dict({"type": "start", **bad})
        assert exc.value.code == code, bad
    with pytest.raises(ProtocolError, match="whole number"):
        decode_audio(b"\0" * 6, s)  # 6 bytes is not a whole float32 stereo frame
    with pytest.raises(ProtocolError, match="NaN or infinite"):
        decode_audio(np.array([0, np.inf], "<f4").tobytes(), StartMessage(format="float32"))
    assert decode_audio(b"\0" * 16, s).shape == (2, 2)
    assert parse_client_text('{"type": "eof"}')["type"] == "eof"
    for text, code in [("nope", ErrorCode.BAD_JSON), ("[1]", ErrorCode.BAD_JSON), ('{"type": "x"}', ErrorCode.UNKNOWN_MESSAGE)]:
        with pytest.raises(ProtocolError) as exc:
            parse_client_text(text)
        assert exc.value.code == code


# ------------------------------------------------------- against the server
def test_file_through_server_equals_transcribe_command(rec, tmp_path: Path) -> None:
    """A WAV file streamed through the server gives the finals (text and times) of `wavstream transcribe`."""
    import soundfile as sf

    wave = np.concatenate([synth("hello world"), silence(1.5), synth("streaming works"), silence(0.5)])
    wav = tmp_path / "a.wav"
    sf.write(wav, wave, 16000, subtype="FLOAT")
    out = subprocess.run(
        [sys.executable, "-m", "wavstream.cli.main", "transcribe", str(wav), "--model", str(rec.bundle.path), "--json"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout
    cli_finals = [json.loads(line) for line in out.splitlines() if '"final"' in line]
    assert [f["text"] for f in cli_finals] == ["hello world", "streaming works"]

    async def go():
        async with running_server(rec) as server:
            audio = sf.read(wav, dtype="float32")[0]
            return (await transcribe(server.url, audio, 16000, block_s=0.05, words=True),
                    await transcribe(server.url, audio, 16000, block_s=0.05))

    with_words, plain = run(go())
    assert [f.to_dict() for f in with_words] == cli_finals  # word times and confidences too
    assert all(f.words for f in with_words) and not any(f.words for f in plain)  # only when asked for
    assert [(f.text, f.start, f.end) for f in plain] == [(f.text, f.start, f.end) for f in with_words]


def test_int16_stereo_44k_and_features(rec) -> None:
    """int16 stereo at 44.1 kHz: text, times and feature frames equal the local Recognizer's."""
    rng = np.random.default_rng(3)
    mono = np.concatenate([synth("abc def"), silence(1.4), synth("xyz")])
    from wavstream.stream import StreamResampler

    x44 = StreamResampler(16000, 44100).process(mono)
    stereo = np.stack([x44, x44 + 0.001 * rng.standard_normal(x44.shape[0])], axis=1)
    pcm = np.clip(stereo * 32768, -32768, 32767).astype(np.int16)

    local: list = []
    s = rec.create_stream()
    s.accept_waveform(pcm, 44100)
    s.input_finished()
    while rec.is_ready(s):
        local.extend(rec.decode_stream(s))
    want_feats = np.concatenate([e.frames for e in local if isinstance(e, Features)])
    want_finals = [e for e in local if isinstance(e, Final)]

    async def go():
        async with running_server(rec) as server:
            got: list = []
            async with await Client.connect(server.url, sample_rate=44100, channels=2, features=True, feature_dtype="float32",
                                            words=True) as c:
                assert c.ready["feature_dim"] == 16 and c.ready["chunk_ms"] == 80.0
                for i in range(0, len(pcm), 3001):  # odd block size
                    await c.send_audio(pcm[i : i + 3001])
                await c.end()
                async for ev in c.events():
                    got.append(ev)
                assert c.done_reason == "end"
            return got

    got = run(go())
    feats = [e for e in got if isinstance(e, Features)]
    assert [f.start_frame for f in feats] == [e.start_frame for e in local if isinstance(e, Features)]
    np.testing.assert_array_equal(np.concatenate([f.frames for f in feats]), want_feats)
    assert [e.to_dict() for e in got if isinstance(e, Final)] == [f.to_dict() for f in want_finals]  # times in ms on the wire
    assert [f.text for f in want_finals] == ["abc def", "xyz"]


def test_partials_segments_and_done_close_code(rec) -> None:
    """Wire-level: ready, partial(segment), final(segment), done, close 1000; 'eof' is an alias of 'end'."""

    async def go():
        async with running_server(rec) as server:
            ws = await raw_session(server.url, {"sample_rate": 16000, "format": "float32"})
            await ws.send(np.concatenate([utterance("ab"), silence(1.3), synth("cd")]).astype("<f4").tobytes())
            await ws.send(json.dumps({"type": "eof"}))
            return await recv_until_close(ws)

    msgs, code = run(go())
    assert code == 1000
    kinds = [m["type"] for m in msgs]
    assert kinds[-1] == "done" and msgs[-1]["reason"] == "end"
    finals = [m for m in msgs if m["type"] == "final"]
    assert [(f["text"], f["segment"]) for f in finals] == [("ab", 0), ("cd", 1)]
    assert finals[0]["start"] < finals[0]["end"] <= finals[1]["start"] < finals[1]["end"]
    assert any(m["type"] == "partial" and m["segment"] == 1 for m in msgs)
    assert not any(isinstance(m, bytes) for m in msgs)  # features were not asked for


def test_page_stats_and_health_over_http(rec) -> None:
    async def go():
        async with running_server(rec) as server:
            base = server.url.replace("ws://", "http://")
            loop = asyncio.get_running_loop()

            def get(path: str) -> tuple[str, bytes]:
                with urllib.request.urlopen(base + path, timeout=5) as r:
                    return r.headers["Content-Type"], r.read()

            page = await loop.run_in_executor(None, get, "/")
            worklet = await loop.run_in_executor(None, get, "/worklet.js")
            stats = await loop.run_in_executor(None, get, "/stats")
            return page, worklet, stats

    page, worklet, stats = run(go())
    assert page[0].startswith("text/html") and b"getUserMedia" in page[1]
    assert worklet[0].startswith("text/javascript") and b"registerProcessor" in worklet[1]
    st = json.loads(stats[1])
    assert st["protocol"] == 1 and st["sessions_active"] == 0 and "batch_sizes" in st
