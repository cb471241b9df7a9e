"""Many sessions, one batched inference loop; a slow reader gets backpressure, not unbounded memory."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from server_harness import recv_until_close, run, running_server, silence, synth, toy_recognizer

from wavstream.stream.client import transcribe

pytestmark = pytest.mark.timeout(180)

WORDS = [
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet",
    "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango",
]


@pytest.fixture(scope="module")
def rec(tmp_path_factory: pytest.TempPathFactory):
    return toy_recognizer(tmp_path_factory.mktemp("toy") / "bundle")


def test_twenty_concurrent_clients_each_get_their_text_and_batches_form(rec) -> None:
    """20 real-time clients at once: every one gets its own words; the engine saw batches > 1."""

    async def one(url: str, i: int) -> list[str]:
        text = f"{WORDS[i]} {WORDS[(i + 7) % 20]}"
        wave = np.concatenate([silence(0.05 * i), synth(text, seed=i), silence(0.2)])
        return [f.text for f in await transcribe(url, wave, 16000, block_s=0.04, realtime=True)]

    async def go():
        async with running_server(rec, max_batch=32, max_wait_ms=10) as server:
            got = await asyncio.gather(*(one(server.url, i) for i in range(20)))
            return got, server.stats()

    got, stats = run(go(), timeout=90)
    assert got == [[f"{WORDS[i]} {WORDS[(i + 7) % 20]}"] for i in range(20)]
    assert stats["sessions_total"] == 20 and stats["errors"] == {}
    assert stats["max_batch_observed"] > 1, stats["batch_sizes"]
    assert stats["mean_batch"] > 1.0
    assert sum(int(k) * v for k, v in stats["batch_sizes"].items()) == stats["chunks"]


def test_max_batch_bounds_the_engine_call(rec) -> None:
    async def go():
        async with running_server(rec, max_batch=3, max_wait_ms=20) as server:
            waves = [np.concatenate([synth(w), silence(0.2)]) for w in WORDS[:8]]
            got = await asyncio.gather(*(transcribe(server.url, w, 16000) for w in waves))
            return got, server.stats()

    got, stats = run(go())
    assert [[f.text for f in g] for g in got] == [[w] for w in WORDS[:8]]
    assert stats["max_batch_observed"] == 3


def test_slow_reader_gets_backpressure_and_others_are_unaffected(tmp_path) -> None:
    """A client that sends fast and never reads: the server's buffers for it stay bounded, the
    server stops reading its socket, a concurrent session is served normally, and once the
    slow client reads it still gets everything (its correct final)."""
    from websockets.asyncio.client import connect

    import onnx
    from toy_bundle import build_graph, build_toy_bundle

    from wavstream.stream import Recognizer

    path = build_toy_bundle(tmp_path / "big", config_overrides={"feature_dim": 2048})
    onnx.save(build_graph(feature_dim=2048), str(path / "model.onnx"))  # 64 KiB of float32 features per chunk
    big = Recognizer.from_bundle(path, intra_op_threads=1)
    text = "backpressure works"
    wave = np.concatenate([synth(text), silence(20.0)])  # 21 s: ~17 MB of float32 features, more than the socket buffers hold
    pcm = np.clip(wave * 32768, -32768, 32767).astype("<i2")

    async def go():
        async with running_server(big, max_buffer_s=1.0, max_wait_ms=0) as server:
            slow = await connect(server.url, max_queue=2, max_size=1 << 24)
            await slow.send(json.dumps({"type": "start", "features": True, "feature_dtype": "float32"}))
            peak_pending = peak_out = 0
            paused_reading = False
            for i in range(0, len(pcm), 3200):
                await asyncio.wait_for(slow.send(pcm[i : i + 3200].tobytes()), 20.0)
                await asyncio.sleep(0.005)
                for s in server._sessions.values():
                    peak_pending = max(peak_pending, s.pending_samples)
                    peak_out = max(peak_out, s.out.qsize())
                    paused_reading |= not s.room.is_set()
            # meanwhile, another session is served normally
            other = await transcribe(server.url, np.concatenate([synth("others fine"), silence(0.2)]), 16000)
            # the slow client finally reads: nothing was lost
            await slow.send(json.dumps({"type": "end"}))
            msgs, code = await recv_until_close(slow, timeout=30)
            finals = [m["text"] for m in msgs if isinstance(m, dict) and m.get("type") == "final"]
            frames = sum((len(m) - 20) // (2048 * 4) for m in msgs if isinstance(m, bytes))
            return paused_reading, peak_pending, peak_out, [f.text for f in other], finals, frames, code

    paused, peak_pending, peak_out, other, finals, frames, code = run(go(), timeout=150)
    assert other == ["others fine"]
    assert paused, "the server should have stopped reading the slow client (its buffer was full)"
    assert peak_pending <= 16000 + 3200  # max_buffer_s (1 s) + one message
    assert peak_out <= 64 + 4  # max_out + one step's messages
    assert finals == [text] and code == 1000
    assert frames == int(np.ceil(len(pcm) / 160))  # every feature frame arrived


def test_openvino_engine_serves_concurrent_clients(tmp_path) -> None:
    """The batched server path on the OpenVINO engine: each client its own text, batches formed."""
    from toy_bundle import build_toy_bundle

    from wavstream.stream import Recognizer

    ov_rec = Recognizer.from_bundle(build_toy_bundle(tmp_path / "toy"), backend="openvino", intra_op_threads=1,
                                    emit_features=True)

    async def go():
        async with running_server(ov_rec, max_batch=32, max_wait_ms=20) as server:
            waves = [np.concatenate([silence(0.03 * i), synth(w, seed=i), silence(0.2)]) for i, w in enumerate(WORDS[:8])]
            got = await asyncio.gather(*(transcribe(server.url, w, 16000, block_s=0.04, realtime=True) for w in waves))
            return got, server.stats()

    got, stats = run(go(), timeout=90)
    assert [[f.text for f in g] for g in got] == [[w] for w in WORDS[:8]]
    assert stats["errors"] == {} and stats["max_batch_observed"] > 1
    assert type(ov_rec.engine).__name__ == "OpenVinoEngine"


def test_two_workers_decode_concurrently_and_every_client_keeps_its_text(tmp_path) -> None:
    """--workers 2: two batches run at once (seen inside the engine), on different sessions, and every
    client still gets its own words (a session's chunks never run in two batches at once)."""
    import threading
    import time

    from server_harness import toy_recognizer

    rec = toy_recognizer(tmp_path / "bundle")
    engine = rec.engine
    run_one = engine._run
    box = {"now": 0, "most": 0, "rows": []}
    lock = threading.Lock()
    overlapped = threading.Event()

    def slow_run(samples, states):
        with lock:
            box["now"] += 1
            box["most"] = max(box["most"], box["now"])
            if box["now"] >= 2:
                overlapped.set()
        try:
            # Until two batches have been inside at once, a step waits (at most 2 s) for the other
            # worker to bring one: with fixed sleeps alone, a loaded machine could let every batch
            # finish before the next began (seen once). A server that serialises steps never
            # overlaps, and the assertion below still fails.
            overlapped.wait(2.0)
            time.sleep(0.03)
            return run_one(samples, states)
        finally:
            with lock:
                box["now"] -= 1

    engine._run = slow_run

    async def one(url: str, i: int) -> list[str]:
        text = f"{WORDS[i]} {WORDS[(i + 3) % 20]}"
        wave = np.concatenate([silence(0.03 * i), synth(text, seed=i), silence(0.2)])
        # Clients start 25 ms apart, so their chunks fall due at different moments: while one
        # worker steps the sessions due at once, others fall due for the second worker.
        await asyncio.sleep(0.025 * i)
        return [f.text for f in await transcribe(url, wave, 16000, block_s=0.04, realtime=True)]

    async def go():
        async with running_server(rec, max_batch=4, max_wait_ms=5, workers=2, max_sessions=32) as server:
            got = await asyncio.gather(*(one(server.url, i) for i in range(10)))
            return got, server.stats()

    got, stats = run(go(), timeout=90)
    assert got == [[f"{WORDS[i]} {WORDS[(i + 3) % 20]}"] for i in range(10)]
    assert stats["errors"] == {} and stats["batching"]["workers"] == 2
    assert box["most"] == 2, box  # two batches were inside the engine at once


def test_a_session_dropped_while_a_worker_steps_it_is_released_after_that_step(tmp_path) -> None:
    """--workers 2: a client that disconnects while its stream is inside the engine has its stream
    released (Engine.release, what frees Triton's sequence slots) only once that step is over, not on
    the idle second worker beside it."""
    import threading
    import time

    from server_harness import raw_session, toy_recognizer

    rec = toy_recognizer(tmp_path / "bundle")
    engine = rec.engine
    run_one = engine._run
    inside = {"n": 0}
    entered = threading.Event()
    released: list[int] = []  # how many steps were inside the engine at each release

    def slow_run(samples, states):
        inside["n"] += 1
        entered.set()
        try:
            time.sleep(0.3)
            return run_one(samples, states)
        finally:
            inside["n"] -= 1

    engine._run = slow_run
    engine.release = lambda per_stream: released.append(inside["n"])

    async def go():
        # max_sessions given: no start-up measurement, whose streams would be released too
        async with running_server(rec, max_batch=4, max_wait_ms=0, workers=2, max_sessions=4) as server:
            ws = await raw_session(server.url, {"sample_rate": 16000, "format": "float32"})
            await ws.send(synth("alpha bravo").astype("<f4").tobytes())
            assert await asyncio.get_running_loop().run_in_executor(None, entered.wait, 10)
            ws.transport.abort()  # gone mid-step
            for _ in range(200):
                if released:
                    break
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.4)  # any later step of the same stream would have shown by now

    run(go(), timeout=60)
    assert released == [0], released


def test_workers_need_an_engine_that_steps_concurrently(tmp_path) -> None:
    from server_harness import toy_recognizer

    from wavstream.stream.server import Server
    from wavstream.stream.server.batcher import Batcher

    rec = toy_recognizer(tmp_path / "bundle")
    assert rec.engine.concurrent_steps  # ONNX Runtime
    rec.engine.concurrent_steps = False  # as OpenVINO, TensorRT and Triton engines say
    with pytest.raises(ValueError, match="does not run steps concurrently"):
        Server(rec, workers=2)
    with pytest.raises(ValueError, match="workers must be >= 1"):
        Batcher(rec, workers=0)
