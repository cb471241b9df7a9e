"""Stuck, vanished and overloaded sessions (issue 13 items 7 and 8).

- a client that stops reading is dropped, and its slot and memory are freed, within the idle
  timeout plus one keepalive round, whether it then resets or just stays silent;
- a session whose results fall behind real time is told (`overloaded`), the server stops admitting
  new sessions and /readyz answers 503 until it catches up;
- the default max_sessions comes from the measured engine cost.
"""

from __future__ import annotations

import asyncio
import gc
import json
import socket
import struct
import time
import weakref

import numpy as np
import pytest

from server_harness import http_request, recv_until_close, run, running_server, silence, synth, toy_recognizer

from wavstream.stream.client import transcribe

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def rec(tmp_path_factory: pytest.TempPathFactory):
    return toy_recognizer(tmp_path_factory.mktemp("toy") / "bundle")


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory):
    """The toy model with 2048-dim features: 64 KiB of float32 features per 80 ms chunk, so a client
    that does not read fills every buffer between it and the server within a second or two."""
    import onnx
    from toy_bundle import build_graph, build_toy_bundle

    from wavstream.stream import Recognizer

    path = build_toy_bundle(tmp_path_factory.mktemp("big") / "bundle", config_overrides={"feature_dim": 2048})
    onnx.save(build_graph(feature_dim=2048), str(path / "model.onnx"))
    return Recognizer.from_bundle(path, intra_op_threads=1, emit_features=True)


IDLE, KEEPALIVE = 1.0, 1.0


async def stuck_client(server, *, reset: bool):
    """Starts a session with features, sends audio (never reading), waits until the server's output for
    it is full, then resets the TCP connection or goes silent. Returns (weakref to the Session, when it stopped)."""
    from websockets.asyncio.client import connect

    ws = await connect(server.url, max_queue=1, max_size=1 << 24)
    await ws.send(json.dumps({"type": "start", "features": True, "feature_dtype": "float32"}))
    pcm = (0.01 * np.random.default_rng(0).standard_normal(1600)).astype("<f4")
    block = np.clip(pcm * 32768, -32768, 32767).astype("<i2").tobytes()
    session = None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            await asyncio.wait_for(ws.send(block), 0.2)
        except asyncio.TimeoutError:
            pass  # our own send buffer is full too: the server stopped reading us
        if session is None and server._sessions:
            session = next(iter(server._sessions.values()))
        if session is not None and session.output_full and not session.room.is_set():
            break
        await asyncio.sleep(0.01)
    assert session is not None and session.output_full, "the server never filled this client's output"
    ref = weakref.ref(session)
    del session
    sock = ws.transport.get_extra_info("socket")
    if reset:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        ws.transport.abort()  # RST
    else:
        ws.transport.pause_reading()  # silent: never reads, never closes
    return ws, ref, time.monotonic()


@pytest.mark.parametrize("reset", [True, False], ids=["then_resets", "stays_silent"])
def test_client_that_stops_reading_is_dropped(big, reset: bool) -> None:
    """Item 7: slot and memory freed within idle timeout + keepalive; others keep being served."""

    async def go():
        async with running_server(big, max_sessions=2, idle_timeout_s=IDLE, keepalive_s=KEEPALIVE, max_wait_ms=0) as server:
            ws, ref, t_stop = await stuck_client(server, reset=reset)
            freed_after = None
            while time.monotonic() - t_stop < 10:
                gc.collect()
                if not server._sessions and server.stats()["connections"] == 0 and ref() is None:
                    freed_after = time.monotonic() - t_stop
                    break
                await asyncio.sleep(0.05)
            other = await transcribe(server.url, np.concatenate([synth("others fine"), silence(0.2)]), 16000)
            ws.transport.abort()
            return freed_after, [f.text for f in other], server.errors

    freed_after, other, errors = run(go(), timeout=60)
    assert freed_after is not None, "the stuck client's session was never freed"
    # The timers fire at IDLE and 2 x KEEPALIVE; the slack is for a loaded machine (5.1 s seen once at load 5).
    # Without the drop the session is never freed (the loop above gives up at 10 s).
    assert freed_after <= IDLE + 2 * KEEPALIVE + 3.0, freed_after
    assert other == ["others fine"]
    assert "internal" not in errors


def test_output_queue_is_bounded_in_bytes(big) -> None:
    """Item 7: however large the messages, a session's queued output stays under max_out_bytes plus one step."""

    async def go():
        async with running_server(big, max_out_bytes=256 * 1024, idle_timeout_s=2.0, max_wait_ms=0) as server:
            ws, ref, _ = await stuck_client(server, reset=True)
            s = ref()
            peak = s.out_bytes if s is not None else 0
            return peak, server.max_out_bytes

    peak, bound = run(go(), timeout=60)
    one_step = 20 + 8 * 2048 * 4 + 200  # a feature frame of one chunk and a partial
    assert 0 < peak <= bound + 4 * one_step, peak


# ----------------------------------------------------------------- overload
class SlowRecognizer:
    """Wraps a Recognizer; every engine call takes ``delay`` s more (an engine too slow for real time)."""

    def __init__(self, rec, delay: float) -> None:
        self._rec, self.delay = rec, delay

    def decode_streams(self, streams):
        time.sleep(self.delay)
        return self._rec.decode_streams(streams)

    def __getattr__(self, name):
        return getattr(self._rec, name)


def test_overloaded_session_is_told_and_admission_closes(rec) -> None:
    """Item 8: results fall behind real time: the client gets `overloaded`; new sessions are refused
    (server_full, saying overloaded); /readyz is 503 while /healthz stays 200; all recover after."""
    from wavstream.stream.client import Client, ServerError

    slow = SlowRecognizer(rec, delay=0.25)  # each 80 ms chunk costs 250 ms

    async def go():
        async with running_server(slow, max_sessions=4, max_lag_s=0.5, max_wait_ms=0) as server:
            c = await Client.connect(server.url)
            ready0 = (await http_request(server.port, "GET", "/readyz"))[0]
            wave = np.concatenate([synth("lagging"), silence(8.0)])
            told = None
            t0 = time.monotonic()
            i = 0
            while i < len(wave):  # real time, 100 ms blocks
                await c.send_audio(wave[i : i + 1600])
                i += 1600
                await asyncio.sleep(0.1)
                while True:
                    try:
                        m = await asyncio.wait_for(c.ws.recv(), 0.001)
                    except asyncio.TimeoutError:
                        break
                    if isinstance(m, str) and json.loads(m)["type"] == "overloaded":
                        told = json.loads(m)
                if told:
                    break
            told_after = time.monotonic() - t0

            async def keep_sending(i: int) -> None:
                # The session stays behind while the checks below run, however slow the machine: were the
                # audio to stop, its backlog would drain in ~1.5 s and admission would rightly reopen.
                for j in range(i, len(wave), 1600):
                    await c.send_audio(wave[j : j + 1600])
                    await asyncio.sleep(0.1)

            sender = asyncio.ensure_future(keep_sending(i))
            readyz = await http_request(server.port, "GET", "/readyz")
            healthz = (await http_request(server.port, "GET", "/healthz"))[0]
            try:
                await Client.connect(server.url)
                refused = None
            except ServerError as exc:
                refused = exc
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
            await c.close()
            await asyncio.sleep(1.0)  # the lagging session is gone: ready again
            ready1 = (await http_request(server.port, "GET", "/readyz"))[0]
            return ready0, told, told_after, readyz, healthz, refused, ready1

    ready0, told, told_after, readyz, healthz, refused, ready1 = run(go(), timeout=60)
    assert ready0 == 200
    assert told is not None, "the client was never told that it lags"
    assert told["lag_s"] > 0.5 and told["max_lag_s"] == 0.5
    assert told_after < 4.0
    assert readyz[0] == 503 and json.loads(readyz[2])["reason"] == "overloaded" and healthz == 200
    assert refused is not None and refused.code == "server_full" and "overloaded" in refused.reason
    assert ready1 == 200


def test_fast_sender_on_an_idle_server_is_not_overloaded(rec) -> None:
    """A file sent as fast as possible is ahead of real time, not behind it: no `overloaded`."""
    from wavstream.stream.client import Client

    async def go():
        async with running_server(rec, max_lag_s=0.5, max_buffer_s=5.0) as server:
            c = await Client.connect(server.url)
            wave = np.concatenate([synth("quick words here"), silence(12.0)])
            await c.send_audio(wave)
            await c.end()
            msgs, _ = await recv_until_close(c.ws, timeout=20)
            return [m["type"] for m in msgs if isinstance(m, dict)]

    types = run(go())
    assert "overloaded" not in types and types[-1] == "done"


def test_readyz_when_full_or_draining(rec) -> None:
    from websockets.asyncio.client import connect

    async def go():
        server_cm = running_server(rec, max_sessions=1)
        server = await server_cm.__aenter__()
        p = server.port
        first = (await http_request(p, "GET", "/readyz"))[0]
        ws = await connect(server.url)
        await ws.send(json.dumps({"type": "start"}))
        await ws.recv()
        full = await http_request(p, "GET", "/readyz")
        await ws.close()
        await asyncio.sleep(0.2)
        again = (await http_request(p, "GET", "/readyz"))[0]
        server._closing = True  # what shutdown() sets first; the listener is still up for this probe
        draining = await http_request(p, "GET", "/readyz")
        server._closing = False
        await server_cm.__aexit__(None, None, None)
        return first, full, again, draining

    first, full, again, draining = run(go())
    assert first == 200 and again == 200
    assert full[0] == 503 and json.loads(full[2])["reason"] == "full"
    assert draining[0] == 503 and json.loads(draining[2])["reason"] == "draining"


def test_default_max_sessions_is_sized_from_engine_cost(rec) -> None:
    """Item 8: with no max_sessions the server measures its engine at start-up and admits what fits
    an engine share of real time; a slower engine gets fewer sessions."""
    from wavstream.stream.server import Server
    from wavstream.stream.server.app import ONNXRUNTIME_CPU_SHARE

    async def sized(r) -> tuple[int, dict]:
        async with running_server(r) as server:
            return server.max_sessions, server.stats()["admission"]

    fast_n, fast = run(sized(rec))
    slow_n, slow = run(sized(SlowRecognizer(rec, delay=0.02)))  # >= 20 ms per engine call
    chunk_s = rec.config.chunk_samples / rec.config.sample_rate
    assert fast["source"] == "measured" and slow["source"] == "measured"
    assert fast["engine_share"] == slow["engine_share"] == ONNXRUNTIME_CPU_SHARE  # an OrtEngine on the CPU
    assert 1 <= slow_n < fast_n <= Server.MAX_AUTO_SESSIONS
    # 20 ms per call at batch <= 32 costs at least 20/32 ms per stream-chunk
    assert slow_n <= ONNXRUNTIME_CPU_SHARE * chunk_s / (0.02 / 32) + 1
    assert slow["engine_ms_per_stream_chunk"] > 0
    # admitted = the share of real time over the measured cost per stream-chunk
    assert slow_n == max(1, int(ONNXRUNTIME_CPU_SHARE * chunk_s / (slow["engine_ms_per_stream_chunk"] / 1000)))


def test_the_engine_share_is_higher_for_onnxruntime_on_the_cpu_than_for_openvino(rec, tmp_path) -> None:
    """ONNX Runtime's steps are the dearer part of a session, so the CPU runs out at a higher share
    of real time in its engine than with OpenVINO's cheaper steps (docs/protocol.md, admission)."""
    from wavstream.stream.engines.openvino import OpenVinoEngine
    from wavstream.stream.server.app import ENGINE_SHARE, ONNXRUNTIME_CPU_SHARE, engine_share

    assert engine_share(rec.engine) == ONNXRUNTIME_CPU_SHARE
    assert engine_share(OpenVinoEngine(rec.bundle, intra_op_threads=1)) == ENGINE_SHARE < ONNXRUNTIME_CPU_SHARE
