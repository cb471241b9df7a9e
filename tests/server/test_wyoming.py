"""The Wyoming server (Home Assistant) against the real ``wyoming`` client on 127.0.0.1, in Home Assistant's order."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

import numpy as np
import pytest

from server_harness import run, silence, synth, toy_recognizer
from wyoming_client import CHUNK_BYTES, describe, pcm16, transcribe

from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.event import Event

from wavstream.stream.hotwords import HotwordError
from wavstream.stream.server.wyoming import WyomingServer
from wavstream.stream.server.wyoming_session import WyomingConversation

pytestmark = pytest.mark.timeout(180)

WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]


@pytest.fixture(scope="module")
def rec(tmp_path_factory: pytest.TempPathFactory):
    return toy_recognizer(tmp_path_factory.mktemp("toy") / "bundle")


@asynccontextmanager
async def wyoming_server(rec: Any, **options: Any) -> AsyncIterator[WyomingServer]:
    server = WyomingServer(rec, "tcp://127.0.0.1:0", **options)
    await server.start()
    try:
        yield server
    finally:
        await server.shutdown()


def i16(wave: np.ndarray) -> np.ndarray:
    """The int16 samples the client sends (the local Recognizer gets the same)."""
    return np.frombuffer(pcm16(wave), "<i2")


def speech(text: str, seed: int = 0) -> np.ndarray:
    return np.concatenate([synth(text, seed=seed), silence(0.3)])


# ------------------------------------------------------------------ describe
def test_describe_answers_info_at_once_with_the_loaded_model(rec) -> None:
    async def go():
        async with wyoming_server(rec) as server:
            info, dt = await describe(server.port)
            return info, dt, server.model_name

    info, dt, model = run(go())
    assert dt < 1.0, dt
    (asr,) = info["asr"]
    assert asr["name"] == "wavstream" and asr["installed"] is True and asr["version"]
    assert asr["attribution"]["name"] == "wavstream"
    assert [m["name"] for m in asr["models"]] == [model] and asr["models"][0]["languages"] == ["en"]
    assert asr["models"][0]["installed"] is True
    assert asr["supports_transcript_streaming"] is True
    assert asr["requires_external_vad"] is True  # without --endpointing Home Assistant's VAD ends the utterance


# ------------------------------------------------------------------- batch
def test_batch_mode_transcript_after_audio_stop_equals_local_recognizer(rec) -> None:
    wave = np.concatenate([speech("hello there"), silence(1.5), speech("general kenobi", seed=1)])
    want = rec.transcribe(i16(wave), 16000)
    assert want == "hello there general kenobi"

    async def go():
        async with wyoming_server(rec, streaming=False) as server:
            return await transcribe(server.port, pcm16(wave))

    u = run(go())
    assert u.transcript == want
    assert u.types == ["transcript"]  # no streaming events in batch mode
    assert u.events[0].data.get("language") == "en"


def test_streaming_deltas_join_into_the_transcript_then_stop(rec) -> None:
    wave = np.concatenate([speech("streaming works"), silence(1.5), speech("twice", seed=2)])

    async def go():
        async with wyoming_server(rec) as server:
            return await transcribe(server.port, pcm16(wave), realtime=0.002, until=("transcript-stop",))

    u = run(go())
    assert u.transcript == "streaming works twice"
    assert u.types[0] == "transcript-start"
    assert u.types[-2:] == ["transcript", "transcript-stop"]
    assert len(u.chunks) > 2  # partial words arrived while the audio was being sent
    assert "".join(u.chunks) == u.transcript
    assert all(t == "transcript-chunk" for t in u.types[1:-2])


def test_endpointing_mode_answers_at_the_first_endpoint_without_audio_stop(rec) -> None:
    # speech, then silence past the endpoint rule (1.2 s), then more speech Home Assistant never needs
    wave = np.concatenate([speech("turn on the light"), silence(2.0), speech("ignored words", seed=3)])

    async def go():
        async with wyoming_server(rec, endpointing=True) as server:
            info, _ = await describe(server.port)
            u = await transcribe(server.port, pcm16(wave), send_stop=False, realtime=0.001, until=("transcript-stop",))
            return info, u

    info, u = run(go())
    assert info["asr"][0]["requires_external_vad"] is False
    assert u.transcript == "turn on the light"
    assert u.stop_sent_t is None  # the transcript came before any audio-stop
    assert "".join(u.chunks) == u.transcript and u.types[-1] == "transcript-stop"


def test_other_rates_widths_and_channels_are_resampled(rec) -> None:
    import soxr

    wave = speech("resampled fine")
    w8 = soxr.resample(wave, 16000, 8000).astype(np.float32)
    stereo = np.stack([w8, w8], axis=1)
    pcm32 = np.clip(np.round(stereo * 2**31), -2**31, 2**31 - 1).astype("<i4").tobytes()

    async def go():
        async with wyoming_server(rec, streaming=False) as server:
            a = await transcribe(server.port, pcm16(stereo.reshape(-1)), rate=8000, channels=2)
            b = await transcribe(server.port, pcm32, rate=8000, width=4, channels=2)
            return a, b

    a, b = run(go())
    want = rec.transcribe(w8, 8000)
    assert want == "resampled fine"
    assert a.transcript == want and b.transcript == want


# -------------------------------------------------------------- concurrency
def test_eight_concurrent_utterances_batched_equal_local_recognizer(rec) -> None:
    waves = [np.concatenate([silence(0.03 * i), speech(f"{WORDS[i]} {WORDS[(i + 3) % 8]}", seed=i)]) for i in range(8)]
    want = [rec.transcribe(i16(w), 16000) for w in waves]

    async def go():
        async with wyoming_server(rec, max_wait_ms=10) as server:
            got = await asyncio.gather(*(transcribe(server.port, pcm16(w), realtime=0.01, until=("transcript-stop",))
                                         for w in waves))
            return got, server.stats()

    got, stats = run(go(), timeout=120)
    assert [u.transcript for u in got] == want
    assert want == [f"{WORDS[i]} {WORDS[(i + 3) % 8]}" for i in range(8)]
    assert all("".join(u.chunks) == u.transcript for u in got)
    assert stats["sessions_total"] == 8 and stats["sessions_active"] == 0 and stats["errors"] == {}
    assert stats["max_batch_observed"] > 1, stats["batch_sizes"]


# ---------------------------------------------------------------- bad input
async def _exchange(port: int, events: list[Event], n_answers: int) -> list[Event]:
    out = []
    async with AsyncTcpClient("127.0.0.1", port) as client:
        for ev in events:
            await client.write_event(ev)
        for _ in range(n_answers):
            ev = await asyncio.wait_for(client.read_event(), 10)
            assert ev is not None
            out.append(ev)
    return out


def test_bad_events_get_an_error_event_and_the_server_keeps_serving(rec) -> None:
    fmt = dict(rate=16000, width=2, channels=1)
    good = pcm16(speech("still fine"))

    async def go():
        async with wyoming_server(rec, streaming=False) as server:
            p = server.port
            before_start = await _exchange(p, [AudioChunk(audio=b"\0\0" * 100, **fmt).event()], 1)
            stop_first = await _exchange(p, [AudioStop().event()], 1)
            bad_width = await _exchange(p, [AudioStart(rate=16000, width=3, channels=1).event()], 1)
            bad_rate = await _exchange(p, [AudioStart(rate=100, width=2, channels=1).event()], 1)
            width_change = await _exchange(p, [AudioStart(**fmt).event(),
                                               AudioChunk(rate=16000, width=4, channels=1, audio=b"\0" * 8).event()], 1)
            odd_bytes = await _exchange(p, [AudioStart(**fmt).event(), AudioChunk(audio=b"\0" * 3, **fmt).event()], 1)
            language = await _exchange(p, [Event("transcribe", {"language": "fr"})], 1)
            # the same connection carries on after an error: a refused utterance, then a good one
            async with AsyncTcpClient("127.0.0.1", p) as client:
                await client.write_event(AudioStart(rate=16000, width=3, channels=1).event())
                err = await client.read_event()
                await client.write_event(AudioChunk(audio=b"\0\0", **fmt).event())  # ignored: its start was refused
                await client.write_event(AudioStart(**fmt).event())
                for i in range(0, len(good), CHUNK_BYTES):
                    await client.write_event(AudioChunk(audio=good[i:i + CHUNK_BYTES], **fmt).event())
                await client.write_event(AudioStop().event())
                after = await asyncio.wait_for(client.read_event(), 10)
            garbage = await _garbage(p)
            ok = await transcribe(p, good)
            return [before_start, stop_first, bad_width, bad_rate, width_change, odd_bytes, language], err, after, garbage, ok, server.stats()

    answers, err, after, garbage, ok, stats = run(go())
    codes = [a[0].data.get("code") for a in answers]
    assert all(a[0].type == "error" for a in answers), answers
    assert codes == ["not_started", "not_started", "bad_format", "bad_sample_rate", "bad_format", "partial_sample",
                     "unsupported_language"]
    assert "width 3" in answers[2][0].data["text"] and "'fr'" in answers[6][0].data["text"]
    assert err.type == "error" and after.type == "transcript" and after.data["text"] == "still fine"
    assert garbage is None  # a line that is not Wyoming: the connection is closed, nothing crashes
    assert ok.transcript == "still fine" and stats["sessions_active"] == 0


async def _garbage(port: int) -> Any:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"this is not json\n")
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return data or None


def test_conversation_without_io_deltas_and_errors() -> None:
    """The Sans-I/O half on its own: transcript-start at audio-start, deltas only for text that extends."""
    from wavstream.stream import Final, Partial

    c = WyomingConversation()
    c.receive("transcribe", {"language": "en-US"})
    c.receive("audio-start", {"rate": 16000, "width": 2, "channels": 1})
    c.accepted()
    c.send_events([Partial("hel")])
    c.send_events([Partial("hello")])
    c.send_events([Final("hello", 0.0, 1.0)])
    c.send_events([Partial("w")])
    c.receive("audio-stop", {})
    c.send_events([Final("world", 1.0, 2.0, 1)])
    c.send_done("end")
    out = c.data_to_send()
    assert out[0] == ("transcript-start", {"language": "en-US"})
    chunks = [d["text"] for t, d in out if t == "transcript-chunk"]
    assert chunks == ["hel", "lo", " w", "orld"]
    assert out[-2] == ("transcript", {"text": "hello world", "language": "en-US"}) and out[-1][0] == "transcript-stop"
    assert c.close_code == 1000


def test_health_check_command(rec) -> None:
    async def go():
        async with wyoming_server(rec) as server:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "wavstream.cli.main", "wyoming", "--health-check", "--uri", server.uri,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            out, err = await proc.communicate()
            return proc.returncode, out.decode() + err.decode(), server.port

    rc, text, port = run(go(), timeout=60)
    assert rc == 0, text
    assert "answered info" in text
    down = subprocess.run([sys.executable, "-m", "wavstream.cli.main", "wyoming", "--health-check", "--uri",
                           f"tcp://127.0.0.1:{port}", "--timeout", "2"], capture_output=True, text=True, timeout=60)
    assert down.returncode == 1 and "unhealthy" in down.stderr


def test_serve_with_wyoming_shares_one_inference_loop(rec) -> None:
    """`wavstream serve --wyoming URI`: websocket and Wyoming clients in one process, one Batcher; SIGTERM stops both."""
    import re
    import signal
    import time

    from wavstream.stream.client import transcribe as v1_transcribe
    from wavstream.stream.server.wyoming import transcribe as wyoming_transcribe

    proc = subprocess.Popen(
        [sys.executable, "-m", "wavstream.cli.main", "serve", "--model", str(rec.bundle.path), "--port", "0",
         "--threads", "1", "--wyoming", "tcp://127.0.0.1:0"],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
    )
    try:
        ws_url = wy_uri = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (ws_url and wy_uri):
            line = proc.stderr.readline()  # type: ignore[union-attr]
            if not line and proc.poll() is not None:
                break
            m = re.search(r"listening on (ws://\S+)", line) or re.search(r"Wyoming \(Home Assistant\) on (tcp://\S+)", line)
            if m and m.group(1).startswith("ws"):
                ws_url = m.group(1)
            elif m:
                wy_uri = m.group(1)
        assert ws_url and wy_uri, "server did not start"
        wave = speech("one loop")
        assert run(wyoming_transcribe(wy_uri, pcm16(wave))).text == "one loop"
        import json
        import urllib.request

        stats = json.loads(urllib.request.urlopen(ws_url.replace("ws://", "http://") + "/stats", timeout=10).read())
        assert stats["sessions_total"] == 0 and stats["chunks"] > 0  # Wyoming's audio went through the websocket server's Batcher

        async def go():
            a, b = await asyncio.gather(v1_transcribe(ws_url, i16(wave), 16000),
                                        wyoming_transcribe(wy_uri, pcm16(wave), realtime=False))
            return [f.text for f in a], b.text

        assert run(go()) == (["one loop"], "one loop")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_zeroconf_announces_the_service_for_home_assistant() -> None:
    """--zeroconf: the service is found as _wyoming._tcp.local. with its port (mDNS over loopback)."""
    from zeroconf.asyncio import AsyncZeroconf

    from wavstream.stream.server.wyoming import close_zeroconf, register_zeroconf

    async def go():
        reg = await register_zeroconf(10399, "wavstream-test", host="127.0.0.1")
        browser = AsyncZeroconf()
        try:
            info = await browser.async_get_service_info("_wyoming._tcp.local.", "wavstream-test._wyoming._tcp.local.",
                                                        timeout=10000)
        finally:
            await browser.async_close()
            await close_zeroconf(reg)
        return info

    info = run(go(), timeout=60)
    assert info is not None and info.port == 10399 and info.parsed_addresses() == ["127.0.0.1"]


def test_max_sessions_refuses_with_an_error_and_idle_connections_close(rec) -> None:
    fmt = dict(rate=16000, width=2, channels=1)

    async def go():
        async with wyoming_server(rec, max_sessions=1, idle_timeout_s=0.5) as server:
            async with AsyncTcpClient("127.0.0.1", server.port) as first:
                await first.write_event(AudioStart(**fmt).event())
                await asyncio.sleep(0.1)
                refused = await _exchange(server.port, [AudioStart(**fmt).event()], 1)
                # the first connection says nothing more: closed after idle_timeout_s
                closed = []
                while (ev := await asyncio.wait_for(first.read_event(), 5)) is not None:
                    closed.append(ev.type)
            await asyncio.sleep(0.1)
            ok = await transcribe(server.port, pcm16(speech("room again")))
            return refused, closed, ok, server.stats()

    refused, closed, ok, stats = run(go())
    assert refused[0].type == "error" and refused[0].data["code"] == "server_full"
    assert closed == ["transcript-start"]  # then the server closed it
    assert ok.transcript == "room again" and stats["errors"] == {"server_full": 1}


def test_home_assistant_entity_names_bias_the_transcript() -> None:
    """transcript_names (Home Assistant's entity names) become hotwords: a rare name the default model
    misspells comes out right; names the model cannot spell (digits, accents) are left out, not refused."""
    from common import espeak

    from wavstream.stream import Recognizer
    from wavstream.stream.recognizer import DecodingConfig

    audio = pcm16(np.concatenate([espeak("open the quixotic file"), np.zeros(8000, np.float32)]))
    real = Recognizer.default(decoding=DecodingConfig("beam", 8), emit_features=False)

    async def go():
        async with wyoming_server(real, streaming=False) as server:
            plain = await transcribe(server.port, audio)
            biased = await transcribe(server.port, audio, names=["Quixotic", "Kitchen 2", "Café"])
            return plain, biased

    plain, biased = run(go(), timeout=60)
    assert "quixotic" not in plain.transcript.split()
    assert "quixotic" in biased.transcript.split(), biased.transcript

    async def server_list():  # `--hotwords FILE`: the server's own list, which Home Assistant's names add to
        async with wyoming_server(real, streaming=False, hotwords=["quixotic"]) as server:
            return (await transcribe(server.port, audio)), (await transcribe(server.port, audio, names=["Kowalski"]))

    for u in run(server_list(), timeout=60):
        assert "quixotic" in u.transcript.split(), u.transcript
    with pytest.raises(HotwordError, match="cannot spell"):
        WyomingServer(real, "tcp://127.0.0.1:0", hotwords=["caf\u00e9"])
