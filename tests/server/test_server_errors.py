"""Bad input ends only the offending session with the right `error` and close code; limits and security.

Every case runs next to a well-behaved session on the same server, which must
still get its own correct text.
"""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from server_harness import raw_session, recv_until_close, run, running_server, silence, synth, toy_recognizer

from wavstream.stream.client import Client, ServerError, transcribe

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def rec(tmp_path_factory: pytest.TempPathFactory):
    return toy_recognizer(tmp_path_factory.mktemp("toy") / "bundle")


GOOD = np.concatenate([synth("still fine"), silence(0.3)])


async def good_session(url: str) -> list[str]:
    """Real-time paced session (about 1.5 s) that runs alongside the bad one."""
    finals = await transcribe(url, GOOD, 16000, block_s=0.08, realtime=True)
    return [f.text for f in finals]


START = {"sample_rate": 16000, "format": "int16"}
F32 = {"sample_rate": 16000, "format": "float32"}
# name -> (messages to send (None = no start), expected code, expected close code)
CASES = {
    "malformed_json": (START, ["{not json"], "bad_json", 1008),
    "json_not_object": (START, ["[1, 2]"], "bad_json", 1008),
    "unknown_type": (START, ['{"type": "reset"}'], "unknown_message", 1008),
    "audio_before_start": (None, [b"\0\0" * 160], "not_started", 1008),
    "end_before_start": (None, ['{"type": "end"}'], "not_started", 1008),
    "second_start": (START, ['{"type": "start"}'], "already_started", 1008),
    "odd_byte_count": (START, [b"\0" * 320, b"\0\0\0"], "partial_sample", 1007),
    "float32_not_whole": (F32, [b"\0" * 6], "partial_sample", 1007),
    "nan_samples": (F32, [np.array([0.1, np.nan, 0.2], "<f4").tobytes()], "non_finite", 1007),
    "inf_samples": (F32, [np.array([np.inf] * 4, "<f4").tobytes()], "non_finite", 1007),
    "rate_too_low": (None, [json.dumps({"type": "start", "sample_rate": 4000})], "bad_sample_rate", 1008),
    "rate_too_high": (None, [json.dumps({"type": "start", "sample_rate": 96000})], "bad_sample_rate", 1008),
    "bad_format": (None, [json.dumps({"type": "start", "format": "mp3"})], "bad_format", 1008),
    "future_protocol": (None, [json.dumps({"type": "start", "protocol": 99})], "unsupported_version", 1008),
    "unknown_layer": (None, [json.dumps({"type": "start", "layer": 7})], "unsupported_layer", 1008),
    "oversized_message": (START, [b"\0\0" * 5000], "message_too_big", 1009),  # 10000 B > max 8192
    # issue 13 item 9: each of these was an unhandled exception (`internal`, a logged traceback) or passed
    "huge_int_sample_rate": (None, [json.dumps({"type": "start", "sample_rate": 10**300})], "bad_sample_rate", 1008),
    "huge_int_endpoint": (None, [json.dumps({"type": "start", "endpoint": {"rule2_silence": -(10**300)}})], "bad_start", 1008),
    "huge_int_channels": (None, [json.dumps({"type": "start", "channels": 10**300})], "bad_format", 1008),
    "format_list": (None, [json.dumps({"type": "start", "format": []})], "bad_format", 1008),
    "format_dict": (None, [json.dumps({"type": "start", "format": {}})], "bad_format", 1008),
    "feature_dtype_dict": (None, [json.dumps({"type": "start", "feature_dtype": {}})], "bad_format", 1008),
    "non_ascii_close_reason": (None, [json.dumps({"type": "start", "format": "ü" * 200})], "bad_format", 1008),
    "text_limit_counts_bytes": (START, ['"' + "€" * 3000 + '"'], "message_too_big", 1009),  # 3002 chars, 9002 B
    "float32_huge_magnitude": (F32, [np.full(1600, 3e38, "<f4").tobytes()], "out_of_range", 1007),
    "float32_int16_scale": (F32, [np.full(1600, 1000.0, "<f4").tobytes()], "out_of_range", 1007),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_ends_only_that_session(rec, case: str, caplog: pytest.LogCaptureFixture) -> None:
    """Bad input: error naming the problem, that session closed, a concurrent session unaffected; server goes on;
    nothing logged with a traceback."""
    import logging

    caplog.set_level(logging.INFO)
    start, messages, code, close_code = CASES[case]

    async def bad(url: str) -> tuple[list, int]:
        await asyncio.sleep(0.3)  # the good session is mid-stream
        ws = await raw_session(url, start)
        for m in messages:
            await ws.send(m)
        return await recv_until_close(ws)

    async def go():
        async with running_server(rec, max_message_bytes=8192) as server:
            good, (msgs, got_close) = await asyncio.gather(good_session(server.url), bad(server.url))
            after = await good_session(server.url)  # the server still serves new sessions
            return good, msgs, got_close, after, server.errors

    good, msgs, got_close, after, errors = run(go())
    assert good == ["still fine"] and after == ["still fine"]
    errs = [m for m in msgs if isinstance(m, dict) and m["type"] == "error"]
    assert len(errs) == 1 and errs[0]["code"] == code, msgs
    assert errs[0]["reason"]
    assert got_close == close_code
    assert errors == {code: 1}
    assert len(errs[0]["reason"]) <= 300  # a reason quotes the bad value, but never all of it
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records if r.exc_info]


def test_float32_slightly_over_full_scale_is_clipped(rec) -> None:
    """Float samples a little past +-1 (resampling overshoot) are clipped, not refused."""

    async def go():
        async with running_server(rec) as server:
            ws = await raw_session(server.url, F32)
            wave = GOOD * 1.0
            wave[:800] = 1.5  # over full scale, but clearly the right scale
            await ws.send(wave.astype("<f4").tobytes())
            await ws.send('{"type": "end"}')
            return await recv_until_close(ws)

    msgs, code = run(go())
    assert msgs[-1] == {"type": "done", "reason": "end"} and code == 1000


def test_max_sessions_refuses_with_error_and_1013(rec) -> None:
    async def go():
        async with running_server(rec, max_sessions=2) as server:
            a = await Client.connect(server.url)
            b = await Client.connect(server.url)
            with pytest.raises(ServerError) as exc:
                await Client.connect(server.url)
            await a.send_audio(GOOD)
            await a.end()
            texts = [ev.text async for ev in a.events() if hasattr(ev, "start")]
            await b.close()
            await a.close()
            await asyncio.sleep(0.2)
            third = await good_session(server.url)  # room again
            return exc.value, texts, third

    err, texts, third = run(go())
    assert err.code == "server_full" and err.close_code == 1013 and "2 sessions" in err.reason
    assert texts == ["still fine"] and third == ["still fine"]


def test_bearer_token_at_the_handshake(rec) -> None:
    """The token is checked at the handshake: a missing or wrong one is HTTP 401, no websocket, no slot."""
    from websockets.exceptions import InvalidStatus

    async def go():
        async with running_server(rec, token="s3cret") as server:
            ok_header = await transcribe(server.url, GOOD, 16000, token="s3cret")
            refused = []
            for headers in (None, {"Authorization": "Bearer nope"}):  # raw connects: what the server answers
                with pytest.raises(InvalidStatus) as exc:
                    await raw_session(server.url, additional_headers=headers)
                refused.append(exc.value.response.status_code)
            return ok_header, refused, server.errors

    ok, refused, errors = run(go())
    assert [f.text for f in ok] == ["still fine"]
    assert refused == [401, 401] and errors == {"unauthorized": 2}


def test_origin_allow_list(rec) -> None:
    """Browsers: only this server's own page by default; --allow-origin adds others; no Origin (Python) is fine."""
    from websockets.exceptions import InvalidStatus

    async def go(allowed):
        async with running_server(rec, allowed_origins=allowed) as server:
            own = f"http://127.0.0.1:{server.port}"
            results = {}
            for origin in (None, own, "http://evil.example"):
                try:
                    ws = await raw_session(server.url, START, origin=origin)
                    await ws.close()
                    results[origin or "none"] = "ok"
                except InvalidStatus as exc:
                    results[origin or "none"] = exc.response.status_code
            return own, results

    own, default = run(go(None))
    assert default == {"none": "ok", own: "ok", "http://evil.example": 403}
    own2, listed = run(go(["http://evil.example"]))
    assert listed == {"none": "ok", own2: "ok", "http://evil.example": "ok"}  # --allow-origin adds


def test_idle_timeout_flushes_then_closes(rec) -> None:
    async def go():
        async with running_server(rec, idle_timeout_s=0.5) as server:
            ws = await raw_session(server.url, START)
            await ws.send(np.clip(synth("idle") * 32768, -32768, 32767).astype("<i2").tobytes())  # no end, no endpoint
            return await recv_until_close(ws)

    msgs, code = run(go())
    assert [m["text"] for m in msgs if m["type"] == "final"] == ["idle"]
    assert msgs[-1] == {"type": "done", "reason": "idle_timeout"} and code == 1000


def test_max_session_length_flushes_then_closes(rec) -> None:
    async def go():
        async with running_server(rec, max_session_s=1.0) as server:
            c = await Client.connect(server.url)

            async def keep_sending():
                for _ in range(40):  # 4 s of audio, real time
                    await c.send_audio(np.concatenate([synth("ab"), silence(0.04)])[:1600])
                    await asyncio.sleep(0.1)

            sender = asyncio.create_task(keep_sending())
            finals = [ev async for ev in c.events()]
            sender.cancel()
            return c.done_reason, finals

    reason, _ = run(go())
    assert reason == "session_too_long"
