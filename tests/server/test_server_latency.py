"""Latency chosen per websocket session: one server, one bundle serving several chunk sizes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest

from server_harness import raw_session, recv_until_close, run, running_server, silence, synth
from toy_bundle import build_toy_bundle

from wavstream.stream import Final, Recognizer
from wavstream.stream.client import Client

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def recs(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Recognizer]:
    path = build_toy_bundle(tmp_path_factory.mktemp("toy") / "b", latencies_ms=(160, 320))
    return {ms: Recognizer.from_bundle(path, latency_ms=ms, intra_op_threads=1, emit_features=False)
            for ms in (80, 160, 320)}


def test_sessions_at_three_latencies_decode_side_by_side(recs) -> None:
    audio = np.concatenate([synth("hello world"), silence(1.5), synth("again"), silence(0.5)])
    want = recs[80].transcribe(audio, 16000)
    assert want == "hello world again"

    async def one(url: str, ms) -> tuple[float, list[Final]]:
        async with await Client.connect(url, latency_ms=ms) as c:
            for i in range(0, len(audio), 1600):
                await c.send_audio(audio[i : i + 1600])
            await c.end()
            finals = [ev async for ev in c.events() if isinstance(ev, Final)]
            return c.ready["chunk_ms"], finals

    async def go():
        others = {ms: r for ms, r in recs.items() if ms != 80}
        async with running_server(recs[80], latencies=others) as server:
            got = await asyncio.gather(*(one(server.url, ms) for ms in (None, 80, 160, 320, 160)))
            return got, server.stats()

    got, stats = run(go())
    assert [chunk for chunk, _ in got] == [80.0, 80.0, 160.0, 320.0, 160.0]
    for _, finals in got:
        assert " ".join(f.text for f in finals) == want
    assert stats["model"]["latencies_ms"] == [80, 160, 320] and stats["errors"] == {}


def test_a_latency_the_model_does_not_serve_is_refused_by_name(recs) -> None:
    async def go():
        async with running_server(recs[80], latencies={160: recs[160]}) as server:
            ws = await raw_session(server.url)
            await ws.send(json.dumps({"type": "start", "latency_ms": 240}))
            return await recv_until_close(ws)

    msgs, code = run(go())
    assert code == 1008 and msgs[-1]["code"] == "unsupported_latency"
    assert "240" in msgs[-1]["reason"] and "80, 160" in msgs[-1]["reason"]


def test_a_server_refuses_a_latency_table_that_does_not_match(recs) -> None:
    from wavstream.stream.server import Server

    with pytest.raises(ValueError, match="160 ms"):
        Server(recs[80], latencies={240: recs[160]})
