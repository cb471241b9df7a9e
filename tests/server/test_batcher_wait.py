"""The batcher's wait grows with the sessions, and audio that completes no chunk costs no cycle."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from server_harness import run, running_server, toy_recognizer, utterance

from wavstream.stream.protocol import SessionProtocol, StartMessage
from wavstream.stream.server.batcher import Batcher
from wavstream.stream.server.session import Session

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def rec(tmp_path_factory: pytest.TempPathFactory):
    return toy_recognizer(tmp_path_factory.mktemp("toy") / "bundle")


def _session(rec, rate: int = 16000) -> Session:
    proto = SessionProtocol()
    proto.receive_text(StartMessage(sample_rate=rate, format="float32").to_json())
    return Session(proto, rec.create_stream(), max_pending_samples=10 * rate, recognizer=rec)


def test_wait_rises_with_sessions_from_max_wait_to_busy_wait(rec) -> None:
    async def go() -> list[float]:
        b = Batcher(rec, max_batch=32, max_wait_s=0.01, busy_wait_s=0.04)
        chunk_s = rec.config.chunk_samples / rec.config.sample_rate
        full = b.target_batch * chunk_s / b.busy_wait_s  # sessions whose chunks fill a batch in 40 ms
        waits = [b.wait_s()]
        for n in (int(full / 2), int(full), int(3 * full)):
            while len(b.sessions) < n:
                b.add(_session(rec))
            waits.append(b.wait_s())
        await b.stop()
        return waits

    w0, w_half, w_full, w_more = run(go())
    assert w0 == pytest.approx(0.01)
    assert 0.01 < w_half < 0.04
    assert w_full == pytest.approx(0.04, abs=2e-3) and w_more == pytest.approx(0.04)


def test_busy_wait_defaults_to_four_times_the_wait_and_zero_stays_zero(rec) -> None:
    async def go() -> tuple[float, float]:
        a, z = Batcher(rec, max_wait_s=0.01), Batcher(rec, max_wait_s=0.0)
        for _ in range(200):
            z.add(_session(rec))
        out = (a.busy_wait_s, z.wait_s())
        await a.stop()
        await z.stop()
        return out

    assert run(go()) == (pytest.approx(0.04), 0.0)
    with pytest.raises(ValueError):
        Batcher(rec, max_wait_s=0.02, busy_wait_s=0.01)


def test_chunk_due_counts_pending_audio_at_the_input_rate(rec) -> None:
    chunk = rec.config.chunk_samples

    async def go() -> list[bool]:
        s16, s8 = _session(rec, 16000), _session(rec, 8000)
        seen = [s16.chunk_due]
        s16.push_audio(np.zeros(chunk - 1, np.float32))
        seen.append(s16.chunk_due)
        s16.push_audio(np.zeros(1, np.float32))
        seen.append(s16.chunk_due)
        s8.push_audio(np.zeros(chunk // 2, np.float32))  # 8 kHz: half the samples make a 16 kHz chunk
        seen.append(s8.chunk_due)
        return seen

    assert run(go()) == [False, False, True, True]


def test_packets_smaller_than_a_chunk_run_one_cycle_per_chunk(rec) -> None:
    """A client sending 10 packets per chunk: the engine runs once per chunk, and the text is unchanged."""
    chunk = rec.config.chunk_samples
    wave = utterance("alpha bravo", seed=3)
    n_chunks = len(wave) // chunk
    wave = wave[: n_chunks * chunk]

    async def go() -> tuple[dict, list]:
        import websockets

        async with running_server(rec, max_wait_ms=0) as server:
            async with websockets.connect(server.url) as ws:
                await ws.send(StartMessage(sample_rate=16000, format="float32").to_json())
                await ws.recv()
                for a in range(0, len(wave), chunk // 10):
                    await ws.send(wave[a : a + chunk // 10].astype("<f4").tobytes())
                    await asyncio.sleep(0)
                await ws.send(json.dumps({"type": "end"}))
                msgs = [m async for m in ws]
            return server.stats(), msgs

    stats, msgs = run(go())
    assert any('"done"' in m for m in msgs if isinstance(m, str))
    # One cycle per chunk (+ the end's flush), not one per packet.
    assert stats["cycles"] <= n_chunks + 2, stats
    assert stats["batching"]["max_wait_ms"] == 0.0


def test_server_refuses_a_busy_wait_below_the_wait(rec) -> None:
    from wavstream.stream.server import Server

    with pytest.raises(ValueError, match="max_wait_busy_ms"):
        Server(rec, max_wait_ms=20, max_wait_busy_ms=10)


def test_a_chunk_waits_for_company_at_most_the_wait_in_all(rec) -> None:
    """The wait counts from the chunk's arrival: a chunk that already waited (behind a running cycle)
    is collected at once, not after a second full wait."""
    chunk = rec.config.chunk_samples

    async def collected_after(waited_s: float) -> float:
        b = Batcher(rec, max_batch=32, max_wait_s=0.3, busy_wait_s=0.3)
        s = _session(rec)
        b.add(s)
        s.push_audio(np.zeros(chunk, np.float32))
        b.notify()
        await asyncio.sleep(waited_s)  # as if the previous cycle had run this long
        t0 = asyncio.get_running_loop().time()
        b.start()
        while b.stats.loop_cycles < 1:
            await asyncio.sleep(0.005)
        took = asyncio.get_running_loop().time() - t0
        s.close()
        b.sessions.clear()
        await b.stop()
        return took

    fresh = run(collected_after(0.0))
    waited = run(collected_after(0.35))
    assert fresh >= 0.25, fresh  # a new chunk waits for company
    assert waited < 0.15, waited  # one that already waited 0.35 s does not wait again
