"""Hotwords per websocket session: the 'hotwords' field of start (validated), and sessions with and
without hotwords decoding side by side."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from server_harness import raw_session, recv_until_close, run, running_server, silence, synth
from toy_bundle import build_toy_bundle

from wavstream.stream import Final, Recognizer
from wavstream.stream.client import Client
from wavstream.stream.hotwords import MAX_HOTWORD_CHARS, MAX_HOTWORDS
from wavstream.stream.protocol import ErrorCode, ProtocolError, StartMessage

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def rec(tmp_path_factory: pytest.TempPathFactory) -> Recognizer:
    path = build_toy_bundle(tmp_path_factory.mktemp("toy") / "b")
    return Recognizer.from_bundle(path, intra_op_threads=1, emit_features=False)


def test_start_reads_hotwords_and_keeps_v1_bytes_without_them() -> None:
    start = StartMessage.from_dict({"type": "start", "hotwords": ["hello world", "again:3"]})
    assert start.hotwords == ("hello world", "again:3")
    assert StartMessage.from_dict(start.to_dict()) == start
    assert "hotwords" not in StartMessage().to_dict()  # a start without hotwords is byte-for-byte as before
    assert StartMessage.from_dict({"type": "start", "hotwords": None}).hotwords == ()


@pytest.mark.parametrize("value,what", [
    ("hello", "must be a list of strings"),
    ([1], r"'hotwords'\[0\] must be a non-empty string"),
    (["ok", ""], r"'hotwords'\[1\] must be a non-empty string"),
    (["x" * (MAX_HOTWORD_CHARS + 20)], "at most"),
    (["w"] * (MAX_HOTWORDS + 1), f"at most {MAX_HOTWORDS}"),
])
def test_bad_hotwords_are_refused_by_name(value, what) -> None:
    with pytest.raises(ProtocolError, match=what) as exc:
        StartMessage.from_dict({"type": "start", "hotwords": value})
    assert exc.value.code == ErrorCode.BAD_START


def test_sessions_with_and_without_hotwords_side_by_side(rec) -> None:
    audio = np.concatenate([synth("hello world"), silence(1.5), synth("again"), silence(0.5)])
    want = rec.transcribe(audio, 16000)

    async def one(url: str, hotwords) -> list[Final]:
        async with await Client.connect(url, hotwords=hotwords) as c:
            for i in range(0, len(audio), 1600):
                await c.send_audio(audio[i : i + 1600])
            await c.end()
            return [ev async for ev in c.events() if isinstance(ev, Final)]

    async def go():
        async with running_server(rec) as server:
            got = await asyncio.gather(*(one(server.url, h) for h in (None, ["again:3"], ["zebra", "quiz"])))
            return got, server.stats()

    got, stats = run(go())
    for finals in got:
        assert " ".join(f.text for f in finals) == want
    assert stats["errors"] == {}


def test_a_hotword_the_model_cannot_spell_is_a_bad_start(rec) -> None:
    async def go():
        async with running_server(rec) as server:
            ws = await raw_session(server.url)
            await ws.send(json.dumps({"type": "start", "hotwords": ["caf\u00e9"]}))
            return await recv_until_close(ws)

    msgs, code = run(go())
    assert code == 1008 and msgs[-1]["code"] == "bad_start"
    assert "hotwords" in msgs[-1]["reason"] and "caf" in msgs[-1]["reason"]


# ------------------------------------------------ the server's own list (`wavstream serve --hotwords FILE`)
def test_the_server_list_biases_every_session_and_a_session_list_adds_to_it() -> None:
    from common import espeak

    rec = Recognizer.default(intra_op_threads=1, emit_features=False)
    audio = np.concatenate([espeak("open the quixotic file"), silence(0.5)])
    assert "quixotic" not in rec.transcribe(audio, 16000)  # the model alone misspells it

    async def text(url: str, hotwords) -> str:
        async with await Client.connect(url, hotwords=hotwords) as c:
            for i in range(0, len(audio), 3200):
                await c.send_audio(audio[i : i + 3200])
            await c.end()
            return " ".join([ev.text async for ev in c.events() if isinstance(ev, Final)])

    async def go():
        async with running_server(rec, hotwords=["quixotic"]) as server:
            return await text(server.url, None), await text(server.url, ["kowalski"]), server.stats()

    alone, added, stats = run(go(), timeout=90)
    assert "quixotic" in alone and "quixotic" in added  # a session's list adds to the server's
    assert stats["errors"] == {}


def test_a_server_list_the_model_cannot_spell_is_refused_at_start_up(rec, tmp_path) -> None:
    import subprocess
    import sys

    from wavstream.stream.hotwords import HotwordError
    from wavstream.stream.server import Server

    with pytest.raises(HotwordError, match="cannot spell"):
        Server(rec, "127.0.0.1", 0, hotwords=["caf\u00e9"])
    bad = tmp_path / "hot.txt"
    bad.write_text("caf\u00e9\n")
    for path in (bad, tmp_path / "missing.txt"):
        out = subprocess.run([sys.executable, "-m", "wavstream.cli.main", "serve", "--model", str(rec.bundle.path),
                              "--port", "0", "--hotwords", str(path)], capture_output=True, text=True, timeout=60)
        assert out.returncode == 2 and "hot" in out.stderr and "Traceback" not in out.stderr, out.stderr
