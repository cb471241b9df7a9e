"""The Vosk, WeNet and sherpa-onnx websocket dialects at /vosk, /wenet, /sherpa of the running server.

Each client follows its project's own client: vosk-server's websocket/test.py (config, then one
message read after each one sent, then '{"eof" : 1}'), WeNet's runtime websocket client (start
signal, server_ready, PCM while results are read concurrently, end signal, speech_end) and
sherpa-onnx's online-websocket-client-decode-file.py (float32 samples while results are read,
'Done', then 'Done!'). Each gets the same text as protocol v1 for the same audio.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from server_harness import run, running_server, silence, synth, toy_recognizer

from wavstream.stream.client import transcribe as v1_transcribe

pytestmark = pytest.mark.timeout(180)

TOKEN = "s3cret"


@pytest.fixture(scope="module")
def rec(tmp_path_factory: pytest.TempPathFactory):
    return toy_recognizer(tmp_path_factory.mktemp("toy") / "bundle")


def two_utterances() -> np.ndarray:
    return np.concatenate([synth("hello vosk"), silence(1.6), synth("and friends", seed=1), silence(0.3)])


def pcm16(wave: np.ndarray) -> bytes:
    return np.clip(np.round(wave * 32768), -32768, 32767).astype("<i2").tobytes()


async def v1_text(url: str, wave: np.ndarray, rate: int = 16000) -> str:
    return " ".join(f.text for f in await v1_transcribe(url, np.frombuffer(pcm16(wave), "<i2"), rate))


# --------------------------------------------------------------------- Vosk
async def vosk_client(url: str, pcm: bytes, rate: int | None, phrases: list[str] | None = None,
                      **kw: Any) -> tuple[list[dict], int, int]:
    """vosk-server's test.py: optional config, 0.2 s messages each followed by one recv, eof, the last result."""
    replies = []
    sent = 0
    async with connect(url, **kw) as ws:
        if rate is not None:
            config: dict = {"sample_rate": rate}
            if phrases is not None:
                config["phrase_list"] = phrases
            await ws.send(json.dumps({"config": config}))
        step = int((rate or 8000) * 0.2) * 2
        for i in range(0, len(pcm), step):
            await ws.send(pcm[i:i + step])
            sent += 1
            replies.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
        await ws.send('{"eof" : 1}')
        replies.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
        try:
            await asyncio.wait_for(ws.recv(), 10)
        except ConnectionClosed:
            pass
        return replies, sent, ws.close_code


def test_vosk_one_reply_per_message_and_the_text_of_v1(rec) -> None:
    wave = two_utterances()

    async def go():
        async with running_server(rec) as server:
            want = await v1_text(server.url, wave)
            got = await vosk_client(server.url + "/vosk", pcm16(wave), 16000)
            return want, got

    want, (replies, sent, code) = run(go())
    assert want == "hello vosk and friends"
    assert len(replies) == sent + 1 and code == 1000  # one per audio message, one after eof
    assert all(set(r) in ({"partial"}, {"text", "result"}) for r in replies), replies
    assert any(r.get("partial") for r in replies)  # partial words while streaming
    texts = [r["text"] for r in replies if r.get("text")]
    assert " ".join(texts) == want and len(texts) == 2  # one result per utterance
    words = [w for r in replies for w in r.get("result", [])]
    assert [w["word"] for w in words] == want.split()
    assert all(set(w) == {"word", "start", "end", "conf"} and w["start"] < w["end"] for w in words)


def test_vosk_defaults_to_8khz_and_takes_eof_as_json(rec) -> None:
    import soxr

    wave = np.concatenate([synth("telephone"), silence(0.3)])
    w8 = soxr.resample(wave, 16000, 8000).astype(np.float32)

    async def go():
        async with running_server(rec) as server:
            want = await v1_text(server.url, w8, 8000)
            replies, _, _ = await vosk_client(server.url + "/vosk", pcm16(w8), None)
            async with connect(server.url + "/vosk") as ws:  # eof at once: an empty result
                await ws.send('{"eof": 1}')
                empty = json.loads(await ws.recv())
            return want, replies, empty

    want, replies, empty = run(go())
    assert want == "telephone"
    assert " ".join(r["text"] for r in replies if r.get("text")) == want
    assert empty == {"result": [], "text": ""}


# -------------------------------------------------------------------- WeNet
async def wenet_client(url: str, pcm: bytes, continuous: bool) -> tuple[list[dict], int]:
    """WeNet's websocket client: start signal, server_ready, 0.5 s PCM messages, end signal, until speech_end."""
    msgs: list[dict] = []
    async with connect(url) as ws:
        await ws.send(json.dumps({"signal": "start", "nbest": 1, "continuous_decoding": continuous}))
        ready = json.loads(await ws.recv())
        assert ready == {"status": "ok", "type": "server_ready"}

        async def reader() -> None:
            try:
                async for m in ws:
                    msgs.append(json.loads(m))
                    if msgs[-1]["type"] == "speech_end":
                        return
            except ConnectionClosed:
                pass

        task = asyncio.create_task(reader())
        try:
            for i in range(0, len(pcm), 16000):
                await ws.send(pcm[i:i + 16000])
                await asyncio.sleep(0.005)
            await ws.send(json.dumps({"signal": "end"}))
        except ConnectionClosed:
            pass  # without continuous decoding the server stops at the first endpoint
        await asyncio.wait_for(task, 10)
        try:
            await asyncio.wait_for(ws.wait_closed(), 10)
        except asyncio.TimeoutError:
            pass
        return msgs, ws.close_code


def test_wenet_continuous_finals_equal_v1_and_nbest_is_a_json_string(rec) -> None:
    wave = two_utterances()

    async def go():
        async with running_server(rec) as server:
            want = await v1_text(server.url, wave)
            cont = await wenet_client(server.url + "/wenet", pcm16(wave), True)
            first = await wenet_client(server.url + "/wenet", pcm16(wave), False)
            return want, cont, first

    want, (msgs, code), (first, code1) = run(go())
    assert msgs[-1] == {"status": "ok", "type": "speech_end"} and code == 1000
    assert all(m["status"] == "ok" for m in msgs)
    finals = [json.loads(m["nbest"]) for m in msgs if m["type"] == "final_result"]
    assert " ".join(f[0]["sentence"] for f in finals) == want
    assert [p["word"] for f in finals for p in f[0]["word_pieces"]] == want.split()
    partials = [json.loads(m["nbest"])[0]["sentence"] for m in msgs if m["type"] == "partial_result"]
    assert partials and all(isinstance(p, str) for p in partials)
    # without continuous decoding: the first utterance, speech_end, close
    assert [m["type"] for m in first][-2:] == ["final_result", "speech_end"] and code1 == 1000
    assert json.loads(first[-2]["nbest"])[0]["sentence"] == "hello vosk"


def test_wenet_errors_are_failed_status_messages(rec) -> None:
    async def go():
        async with running_server(rec) as server:
            out = []
            for first in (b"\0\0", json.dumps({"signal": "nope"}), json.dumps({"signal": "start", "nbest": "x"})):
                async with connect(server.url + "/wenet") as ws:
                    await ws.send(first)
                    out.append((json.loads(await ws.recv()), ws))
                    try:
                        await asyncio.wait_for(ws.recv(), 5)
                    except ConnectionClosed:
                        pass
                    out[-1] = (out[-1][0], ws.close_code)
            return out

    out = run(go())
    assert [m["status"] for m, _ in out] == ["failed"] * 3
    assert "Start signal is expected" in out[0][0]["message"] and "Unexpected signal" in out[1][0]["message"]
    assert "integer is expected for nbest" in out[2][0]["message"]
    assert [c for _, c in out] == [1008, 1008, 1008]


# -------------------------------------------------------------- sherpa-onnx
async def sherpa_client(url: str, wave: np.ndarray) -> tuple[list[Any], int]:
    """sherpa-onnx's decode-file client: 8000 float32 samples per message, results read concurrently,
    'Done', read until 'Done!'."""
    msgs: list[Any] = []
    async with connect(url) as ws:
        async def reader() -> None:
            async for m in ws:
                if m == "Done!":
                    msgs.append(m)
                    return
                msgs.append(json.loads(m))

        task = asyncio.create_task(reader())
        data = wave.astype(np.float32)
        for i in range(0, len(data), 8000):
            await ws.send(data[i:i + 8000].tobytes())
            await asyncio.sleep(0.005)
        await ws.send("Done")
        await asyncio.wait_for(task, 10)
    return msgs, ws.close_code


def test_sherpa_segments_equal_v1_then_done(rec) -> None:
    wave = two_utterances()

    async def go():
        async with running_server(rec) as server:
            want = await v1_text(server.url, wave)
            return want, await sherpa_client(server.url + "/sherpa", wave)

    want, (msgs, code) = run(go())
    assert msgs[-1] == "Done!" and code == 1000
    results = msgs[:-1]
    finals = [r for r in results if r["is_final"]]
    assert " ".join(r["text"] for r in finals) == want
    assert [r["segment"] for r in finals] == [0, 1]
    assert any(not r["is_final"] and r["text"] for r in results)


# ------------------------------------------------------- the server's rules
def test_token_origin_and_size_limits_apply_to_every_dialect(rec) -> None:
    async def refused(url: str, **kw: Any) -> int:
        try:
            async with connect(url, **kw):
                return 101
        except InvalidStatus as exc:
            return exc.response.status_code

    async def go():
        async with running_server(rec, token=TOKEN, max_message_bytes=8000) as server:
            auth = {"additional_headers": {"Authorization": f"Bearer {TOKEN}"}}
            statuses = {p: (await refused(server.url + p), await refused(server.url + p, origin="http://evil.example", **auth))
                        for p in ("/vosk", "/wenet", "/sherpa")}
            codes = {}
            for path, first in (("/vosk", b"\0" * 12000), ("/sherpa", b"\0" * 12000)):
                async with connect(server.url + path, **auth) as ws:
                    await ws.send(first)
                    try:
                        while True:
                            await asyncio.wait_for(ws.recv(), 5)
                    except ConnectionClosed:
                        pass
                    codes[path] = (ws.close_code, ws.close_reason)
            replies, _, _ = await vosk_client(server.url + "/vosk", pcm16(np.concatenate([synth("ok"), silence(0.3)])),
                                              16000, **auth)
            return statuses, codes, replies

    statuses, codes, replies = run(go())
    assert statuses == {p: (401, 403) for p in ("/vosk", "/wenet", "/sherpa")}
    assert all(c == 1009 and "exceeds the limit" in r for c, r in codes.values()), codes
    assert " ".join(r["text"] for r in replies if r.get("text")) == "ok"


# ------------------------------------------------------- real speech, real model
def test_real_speech_with_the_default_model_same_text_everywhere() -> None:
    """The embedded model on recorded-style test utterances: v1, /vosk, /wenet, /sherpa and Wyoming agree."""
    from pathlib import Path

    import soundfile as sf

    from wavstream.stream import Recognizer
    from wavstream.stream.recognizer import resolve_model
    from wavstream.stream.server.wyoming import WyomingServer
    from wavstream.stream.server.wyoming import transcribe as wyoming_transcribe

    root = Path(__file__).resolve().parents[2]
    paths = [root / "stream" / "samples" / "sample.wav"] + sorted((root / "tests" / "data" / "eval_utts").glob("*.wav"))[:3]
    waves = []
    for p in paths:
        x, rate = sf.read(str(p), dtype="float32")
        assert rate == 16000 and x.ndim == 1
        waves.append(np.concatenate([x, silence(0.3)]))
    rec = Recognizer.from_bundle(resolve_model("default"), intra_op_threads=1, emit_features=False)

    async def go():
        out = []
        async with running_server(rec) as server, WyomingServer(rec, "tcp://127.0.0.1:0", batcher=server.batcher) as wy:
            for w in waves:
                pcm = pcm16(w)
                v1 = await v1_text(server.url, w)
                vosk, _, _ = await vosk_client(server.url + "/vosk", pcm, 16000)
                wenet, _ = await wenet_client(server.url + "/wenet", pcm, True)
                sherpa, _ = await sherpa_client(server.url + "/sherpa", np.frombuffer(pcm, "<i2") / 32768.0)
                wyo = await wyoming_transcribe(wy.uri, pcm)
                out.append({
                    "v1": v1,
                    "vosk": " ".join(r["text"] for r in vosk if r.get("text")),
                    "wenet": " ".join(json.loads(m["nbest"])[0]["sentence"] for m in wenet if m["type"] == "final_result"),
                    "sherpa": " ".join(r["text"] for r in sherpa[:-1] if r["is_final"]),
                    "wyoming": wyo.text,
                })
        return out

    for got in run(go(), timeout=150):
        assert got["v1"], got
        assert set(got.values()) == {got["v1"]}, got


def test_vosk_dialect_without_io_alternatives_and_words_off() -> None:
    from wavstream.stream import Final, Partial
    from wavstream.stream.events import Word
    from wavstream.stream.protocol import ProtocolError
    from wavstream.stream.server.vosk import VoskDialect

    f = Final("hi there", 0.1, 0.9, 0, (Word("hi", 0.1, 0.3, 0.9), Word("there", 0.4, 0.9, 0.7)))
    d = VoskDialect()
    assert d.receive_text(json.dumps({"config": {"sample_rate": 16000, "max_alternatives": 2}})) == []
    d.receive_bytes(b"\0\0" * 10)
    d.send_events([Partial("hi")])
    d.caught_up()
    d.receive_bytes(b"\0\0" * 10)
    d.send_events([f])
    d.caught_up()
    d.receive_text('{"eof" : 1}')
    d.send_done("end")
    out = [json.loads(m) for m in d.data_to_send()]
    assert out[0] == {"partial": "hi"}
    assert out[1] == {"alternatives": [{"confidence": 0.8, "result": [w.to_dict() for w in f.words], "text": "hi there"}]}
    assert out[2] == {"alternatives": []} and d.close_code == 1000
    plain = VoskDialect()
    plain.receive_text(json.dumps({"config": {"words": False}}))
    plain.receive_bytes(b"\0\0")
    plain.send_events([f])
    plain.caught_up()
    assert json.loads(plain.data_to_send()[0]) == {"text": "hi there"}
    with pytest.raises(ProtocolError):
        VoskDialect().receive_text(json.dumps({"config": {"sample_rate": 100}}))


def test_vosk_phrase_list_biases_towards_its_phrases() -> None:
    """phrase_list becomes hotwords (those the model can spell; Vosk's "[unk]" is left out, not refused)."""
    from common import espeak

    from wavstream.stream import Recognizer
    from wavstream.stream.recognizer import DecodingConfig

    pcm = pcm16(np.concatenate([espeak("open the quixotic file"), np.zeros(8000, np.float32)]))
    real = Recognizer.default(decoding=DecodingConfig("beam", 8), emit_features=False)

    async def go():
        async with running_server(real) as server:
            plain = await vosk_client(server.url + "/vosk", pcm, 16000)
            biased = await vosk_client(server.url + "/vosk", pcm, 16000, phrases=["quixotic", "[unk]"])
            return plain, biased

    (plain, _, _), (biased, _, code) = run(go(), timeout=60)
    text = lambda replies: " ".join(r["text"] for r in replies if r.get("text"))  # noqa: E731
    assert "quixotic" not in text(plain).split()
    assert "quixotic" in text(biased).split() and code == 1000


def test_the_server_hotword_list_reaches_every_dialect() -> None:
    """WeNet's and sherpa-onnx's protocols have no field for hotwords (their servers take them as a flag): the
    server's own list (`serve --hotwords`) is what biases them; Vosk's phrase_list adds to it."""
    from common import espeak

    from wavstream.stream import Recognizer

    wave = np.concatenate([espeak("open the quixotic file"), np.zeros(8000, np.float32)])
    pcm = pcm16(wave)
    real = Recognizer.default(emit_features=False)

    async def go():
        async with running_server(real, hotwords=["quixotic"]) as server:
            sherpa, _ = await sherpa_client(server.url + "/sherpa", wave)
            wenet, _ = await wenet_client(server.url + "/wenet", pcm, True)
            vosk, _, _ = await vosk_client(server.url + "/vosk", pcm, 16000, phrases=["kowalski"])
            return sherpa, wenet, vosk

    sherpa, wenet, vosk = run(go(), timeout=90)
    assert "quixotic" in " ".join(r["text"] for r in sherpa[:-1] if r["is_final"]).split()
    assert "quixotic" in " ".join(json.loads(m["nbest"])[0]["sentence"] for m in wenet
                                  if m.get("type") == "final_result").split()
    assert "quixotic" in " ".join(r["text"] for r in vosk if r.get("text")).split()
