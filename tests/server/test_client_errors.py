"""The Python client and `wavstream client` against fake servers that misbehave on purpose.

Each fake is a websockets server on 127.0.0.1 port 0 in a thread of the test
(tiny, no model): it answers the way one broken or stopping server would, and
the client must end with a typed error and, from the command line, a non-zero
exit and a clear message, never hang. Timeouts are fractions of a second and
every test is bounded.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pytest
import soundfile as sf

from wavstream.stream import AudioFormatError
from wavstream.stream.client import Client, ServerError, ServerProtocolError, ServerTimeoutError, transcribe

pytestmark = pytest.mark.timeout(60)

READY = {"type": "ready", "protocol": 1, "session": "fake", "sample_rate": 16000, "chunk_ms": 80.0,
         "frame_shift_ms": 10.0, "feature_dim": 16, "feature_layer": 1, "text": True}


class Seen:
    """What the fake server received: the start message, audio bytes, whether `end` came."""

    def __init__(self) -> None:
        self.start: dict = {}
        self.audio = bytearray()
        self.ended = threading.Event()


@contextmanager
def fake_server(behave: Callable[[Any, Seen], None]) -> Iterator[tuple[str, Seen]]:
    """A websockets server on 127.0.0.1:0 running ``behave(ws, seen)`` for each connection."""
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.server import serve

    seen = Seen()

    def handler(ws: Any) -> None:
        try:
            behave(ws, seen)
        except ConnectionClosed:
            pass  # the client left (or timed out and closed): expected in these tests

    with serve(handler, "127.0.0.1", 0) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"ws://127.0.0.1:{server.socket.getsockname()[1]}", seen
        finally:
            server.shutdown()
            thread.join(10)


def take_start(ws: Any, seen: Seen) -> None:
    seen.start = json.loads(ws.recv())


def read_until_end(ws: Any, seen: Seen) -> None:
    """Collect audio until the client's `end` (or until it closes)."""
    for msg in ws:
        if isinstance(msg, bytes):
            seen.audio += msg
        elif json.loads(msg).get("type") == "end":
            seen.ended.set()
            return


def drain(ws: Any) -> None:
    for _ in ws:
        pass


def run(coro: Any, timeout: float = 20.0) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


WAVE = (0.1 * np.sin(np.arange(16000) * 2 * np.pi * 440 / 16000)).astype(np.float32)  # 1 s


# ------------------------------------------------------------------ servers that go silent
def test_ready_then_silence_times_out_after_end() -> None:
    """The server sends ready, reads the audio and the end, then says nothing more."""

    def behave(ws: Any, seen: Seen) -> None:
        take_start(ws, seen)
        ws.send(json.dumps(READY))
        drain(ws)

    with fake_server(behave) as (url, _):
        with pytest.raises(ServerTimeoutError) as err:
            run(transcribe(url, WAVE, 16000, result_timeout=0.5))
    assert err.value.code == "result_timeout" and "0.5 s after end" in err.value.reason
    assert isinstance(err.value, ServerError) and err.value.finals == []


def test_no_ready_times_out() -> None:
    """The server accepts the websocket, reads the start and never answers it."""

    def behave(ws: Any, seen: Seen) -> None:
        take_start(ws, seen)
        drain(ws)

    with fake_server(behave) as (url, _):
        with pytest.raises(ServerTimeoutError) as err:
            run(Client.connect(url, ready_timeout=0.3))
    assert err.value.code == "ready_timeout" and "no ready within 0.3 s" in err.value.reason


def test_no_handshake_times_out() -> None:
    """A TCP port that accepts connections but never answers the websocket handshake."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        url = f"ws://127.0.0.1:{listener.getsockname()[1]}"
        with pytest.raises(ServerTimeoutError) as err:
            run(Client.connect(url, open_timeout=0.3))
    assert err.value.code == "connect_timeout"


def well_behaved(ws: Any, seen: Seen) -> None:
    take_start(ws, seen)
    ws.send(json.dumps(READY))
    read_until_end(ws, seen)
    ws.send(json.dumps({"type": "final", "text": "ok", "start": 0.0, "end": 1.0, "segment": 0}))
    ws.send(json.dumps({"type": "done", "reason": "end"}))
    ws.close()


def test_silence_before_end_is_not_a_timeout() -> None:
    """result_timeout counts only after end(): a long stretch without messages while audio still flows is normal."""

    with fake_server(well_behaved) as (url, _):
        # 1 s of audio paced in real time: 1 s with no message, twice the result timeout.
        finals = run(transcribe(url, WAVE, 16000, block_s=0.1, realtime=True, result_timeout=0.5))
    assert [f.text for f in finals] == ["ok"]


# ------------------------------------------------------------------ malformed server messages
BAD_MESSAGES = {
    "not_json": "this is not json",
    "json_array": "[1, 2]",
    "no_type": '{"text": "hello"}',
    "final_without_text": '{"type": "final", "start": 0.1, "end": 0.2}',
    "final_with_text_start": '{"type": "final", "text": "a", "start": "soon", "end": 0.2}',
    "partial_text_not_string": '{"type": "partial", "text": 5}',
    "binary_not_features": b"\x00\x01\x02 not a feature frame",
}


@pytest.mark.parametrize("case", sorted(BAD_MESSAGES))
def test_malformed_message_is_a_protocol_error(case: str) -> None:
    """After ready the server sends one message that protocol v1 does not allow."""
    bad = BAD_MESSAGES[case]

    def behave(ws: Any, seen: Seen) -> None:
        take_start(ws, seen)
        ws.send(json.dumps(READY))
        ws.send(json.dumps({"type": "final", "text": "first", "start": 0.1, "end": 0.2, "segment": 0}))
        ws.send(bad)
        drain(ws)

    with fake_server(behave) as (url, _):
        with pytest.raises(ServerProtocolError) as err:
            run(transcribe(url, WAVE, 16000, result_timeout=5))
    assert err.value.code == "protocol_error" and isinstance(err.value, ServerError)
    assert [f.text for f in err.value.finals] == ["first"]  # what came before is kept


def test_malformed_ready_is_a_protocol_error() -> None:
    """The answer to start is not JSON (e.g. some other websocket service)."""

    def behave(ws: Any, seen: Seen) -> None:
        take_start(ws, seen)
        ws.send("welcome to the echo service")
        drain(ws)

    with fake_server(behave) as (url, _):
        with pytest.raises(ServerProtocolError, match="not JSON"):
            run(Client.connect(url))


def test_unknown_message_type_is_skipped() -> None:
    """A message type from a newer server is ignored (docs/protocol.md, Versioning)."""

    def behave(ws: Any, seen: Seen) -> None:
        take_start(ws, seen)
        ws.send(json.dumps(READY))
        read_until_end(ws, seen)
        ws.send(json.dumps({"type": "overloaded", "lag_s": 1.5}))
        ws.send(json.dumps({"type": "final", "text": "fine", "start": 0.0, "end": 0.5, "segment": 0}))
        ws.send(json.dumps({"type": "done", "reason": "end"}))
        ws.close()

    with fake_server(behave) as (url, _):
        assert [f.text for f in run(transcribe(url, WAVE, 16000))] == ["fine"]


# ------------------------------------------------------------------ a server that stops mid-stream
def shutting_down(ws: Any, seen: Seen) -> None:
    """Reads some audio, then flushes like a stopping server: a final, done(shutting_down), close 1001."""
    take_start(ws, seen)
    ws.send(json.dumps(READY))
    got = 0
    for msg in ws:
        if isinstance(msg, bytes):
            got += len(msg)
            if got >= 3200:
                break
    ws.send(json.dumps({"type": "final", "text": "cut", "start": 0.0, "end": 0.1, "segment": 0}))
    ws.send(json.dumps({"type": "done", "reason": "shutting_down"}))
    ws.close(1001, "shutting_down")


def test_server_shutting_down_mid_stream_raises_with_the_finals() -> None:
    with fake_server(shutting_down) as (url, _):
        with pytest.raises(ServerError) as err:
            run(transcribe(url, WAVE, 16000, block_s=0.05, realtime=True))
    assert err.value.code == "shutting_down" and "before all the audio was decoded" in err.value.reason
    assert [f.text for f in err.value.finals] == ["cut"]


def test_server_error_message_carries_code_and_reason() -> None:
    def behave(ws: Any, seen: Seen) -> None:
        take_start(ws, seen)
        ws.send(json.dumps({"type": "error", "code": "server_full", "reason": "64 sessions open"}))
        ws.close(1013, "server_full")

    with fake_server(behave) as (url, _):
        with pytest.raises(ServerError) as err:
            run(Client.connect(url))
    assert (err.value.code, err.value.reason, err.value.close_code) == ("server_full", "64 sessions open", 1013)


# ------------------------------------------------------------------ the command line
def _wav(tmp_path: Path, wave: np.ndarray, rate: int, name: str = "a.wav") -> Path:
    path = tmp_path / name
    sf.write(path, wave, rate, subtype="FLOAT")
    return path


def test_cli_exits_1_when_the_server_stops_mid_stream(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from wavstream.cli.main import main

    path = _wav(tmp_path, WAVE, 16000)
    with fake_server(shutting_down) as (url, _):
        rc = main(["client", str(path), "--url", url, "--realtime", "--chunk-ms", "50"])
    out, err = capsys.readouterr()
    assert rc == 1, err
    assert out.splitlines() == ["cut"]  # the finals that did come are printed
    assert "ended the session before the end of the audio (reason: shutting_down)" in err and "incomplete" in err


def test_cli_exits_1_on_silent_server(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from wavstream.cli.main import main

    def behave(ws: Any, seen: Seen) -> None:
        take_start(ws, seen)
        ws.send(json.dumps(READY))
        drain(ws)

    path = _wav(tmp_path, WAVE, 16000)
    with fake_server(behave) as (url, _):
        rc = main(["client", str(path), "--url", url, "--result-timeout", "0.5"])
    err = capsys.readouterr().err
    assert rc == 1 and "sent nothing for 0.5 s after end" in err and "Traceback" not in err


def test_cli_exits_1_on_malformed_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from wavstream.cli.main import main

    def behave(ws: Any, seen: Seen) -> None:
        take_start(ws, seen)
        ws.send(json.dumps(READY))
        ws.send('{"type": "final", "text": "x"}')
        drain(ws)

    path = _wav(tmp_path, WAVE, 16000)
    with fake_server(behave) as (url, _):
        rc = main(["client", str(path), "--url", url])
    err = capsys.readouterr().err
    assert rc == 1 and "the server broke the protocol" in err and "'start'" in err


@pytest.mark.parametrize("flag", ["--chunk-ms=0", "--result-timeout=-1", "--rate=5"])
def test_cli_client_refuses_bad_numbers(flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    from wavstream.cli.main import main

    with pytest.raises(SystemExit) as exit_:
        main(["client", "x.wav", flag])
    assert exit_.value.code == 2 and f"argument {flag.split('=')[0]}" in capsys.readouterr().err


# ------------------------------------------------------------------ any input rate, any layout
@pytest.mark.parametrize("rate", [96000, 6000])
def test_cli_client_resamples_rates_the_protocol_refuses(rate: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A 96 kHz or 6 kHz file (which `transcribe` handles) is sent as 16 kHz, not refused."""
    import soxr

    from wavstream.cli.main import main

    t = np.arange(rate) / rate  # 1 s
    wave = (0.2 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
    path = _wav(tmp_path, wave, rate)
    with fake_server(well_behaved) as (url, seen):
        rc = main(["client", str(path), "--url", url])
    assert rc == 0, capsys.readouterr().err
    assert seen.start["sample_rate"] == 16000 and seen.start["channels"] == 1
    got = np.frombuffer(bytes(seen.audio), "<i2").astype(np.float32) / 32768
    want = soxr.resample(wave, rate, 16000)
    assert abs(got.shape[0] - want.shape[0]) <= 2
    n = min(got.shape[0], want.shape[0])
    assert np.abs(got[100 : n - 100] - want[100 : n - 100]).max() < 2e-3


def test_client_sends_channels_first_arrays_interleaved() -> None:
    """(channels, n) is accepted when the session says how many channels; a shape that fits neither is refused."""
    left = np.linspace(-0.5, 0.5, 800, dtype=np.float32)
    right = -left

    async def go(url: str) -> None:
        async with await Client.connect(url, channels=2, format="float32") as c:
            await c.send_audio(np.stack([left, right]))  # (2, n)
            await c.send_audio(np.stack([left, right], axis=1))  # (n, 2)
            with pytest.raises(AudioFormatError, match="2 channel"):
                await c.send_audio(np.zeros((3, 100), np.float32))
            with pytest.raises(AudioFormatError, match="NaN or infinity"):
                await c.send_audio(np.array([[0.1, np.nan]], np.float32))
            await c.end()
            assert [ev async for ev in c.events()]
            assert c.complete

    with fake_server(well_behaved) as (url, seen):
        run(go(url))
    got = np.frombuffer(bytes(seen.audio), "<f4").reshape(-1, 2)
    np.testing.assert_array_equal(got, np.concatenate([np.stack([left, right], 1)] * 2))


def test_a_server_that_stops_reading_times_the_send_out() -> None:
    """The server sends ready and then reads nothing: sends fill the socket buffers, then time out."""
    import time

    def behave(ws: Any, seen: Seen) -> None:
        take_start(ws, seen)
        ws.send(json.dumps(READY))
        time.sleep(4.0)  # reads nothing

    # 4 s of noise (zeros would compress to nothing under permessage-deflate): 128 KB a message
    big = np.random.default_rng(0).uniform(-0.5, 0.5, 16000 * 4).astype(np.float32)

    async def go() -> float:
        c = await Client.connect(url, send_timeout=0.5)
        t0 = asyncio.get_running_loop().time()
        with pytest.raises(ServerTimeoutError) as err:
            for _ in range(2000):  # far more than loopback buffers hold
                await c.send_audio(big)
        assert err.value.code == "send_timeout" and "read nothing" in err.value.reason
        return asyncio.get_running_loop().time() - t0

    with fake_server(behave) as (url, _):
        took = run(go(), timeout=15)
    assert took < 3.5  # the timeout fired, not the server's sleep ending
