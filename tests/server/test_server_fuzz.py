"""Bounded, seeded fuzzing of the websocket server (issue 13 item 9).

Random and structured bad frames, a few hundred connections in all, while healthy real-time sessions
run beside them on the same server. Every bad connection must end cleanly (a documented error code,
a websocket-level close, or a normal `done`), no healthy transcript may change, nothing may be
logged with a traceback, and the server must never answer `internal`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import struct
from typing import Any

import numpy as np
import pytest

from server_harness import run, running_server, silence, synth, toy_recognizer

from wavstream.stream import Final
from wavstream.stream.client import Client, transcribe
from wavstream.stream.protocol import CLOSE_CODES, ErrorCode

pytestmark = pytest.mark.timeout(180)

SEED = 13
N_CASES = 240
MAX_MESSAGE = 8192
GOOD = np.concatenate([synth("still fine"), silence(0.3)])
DOCUMENTED = set(CLOSE_CODES) - {ErrorCode.INTERNAL}

BAD_VALUES: list[Any] = [
    10**300, -(10**300), 10**4000, 2**64, -1, 0, 3.5, 1e308, -1e308, float("nan"), float("inf"), -0.0,
    "", "ü" * 300, "€" * 2000, "x" * 5000, "16000", [], {}, [1, 2], {"a": 1}, {"enabled": []}, None, True, False,
]
START_FIELDS = ["protocol", "sample_rate", "format", "channels", "features", "feature_dtype", "layer", "endpoint",
                "endpoint.enabled", "endpoint.rule1_silence", "endpoint.rule2_silence", "endpoint.max_utterance", "type"]


def bad_start(rng: np.random.Generator) -> tuple[str, list]:
    field = START_FIELDS[rng.integers(len(START_FIELDS))]
    value = BAD_VALUES[rng.integers(len(BAD_VALUES))]
    msg: dict[str, Any] = {"type": "start"}
    if field.startswith("endpoint."):
        msg["endpoint"] = {field.split(".", 1)[1]: value}
    else:
        msg[field] = value
    return f"start.{field}", [("text", json.dumps(msg))]


def f32(values: Any) -> bytes:
    return np.asarray(values, dtype="<f4").tobytes()


def audio_phase(rng: np.random.Generator) -> tuple[str, list]:
    """A valid start, some good audio, then one bad frame."""
    fmt = ["int16", "float32"][rng.integers(2)]
    start = ("text", json.dumps({"type": "start", "format": fmt}))
    good = ("bytes", (np.zeros(800, "<i2") if fmt == "int16" else np.zeros(800, "<f4")).tobytes())
    width = 2 if fmt == "int16" else 4
    choices = {
        "partial_sample": ("bytes", bytes(rng.integers(0, 256, width * 10 + 1, dtype=np.uint8))),
        "oversized_binary": ("bytes", bytes(MAX_MESSAGE + width * int(rng.integers(1, 100)))),
        "oversized_text_bytes": ("text", json.dumps({"type": "end", "pad": "€" * (MAX_MESSAGE // 3 + 10)})),
        "second_start": start,
        "unknown_type": ("text", json.dumps({"type": ["end"]})),
        "not_object": ("text", json.dumps([1, {"type": "end"}])),
        "deep_json": ("text", "[" * 5000 + "]" * 5000),
        "random_text": ("text", "".join(chr(int(c)) for c in rng.integers(32, 0x2FFF, int(rng.integers(1, 200))))),
        "invalid_utf8": ("badtext", b"\xff\xfe{" + bytes(rng.integers(128, 256, 20, dtype=np.uint8))),
        "empty_text": ("text", ""),
    }
    if fmt == "float32":
        choices.update({
            "f32_nan": ("bytes", f32([0.1, np.nan, 0.2])),
            "f32_inf": ("bytes", f32([-np.inf] * 4)),
            "f32_huge": ("bytes", f32(rng.choice([3e38, -3e38], 1600))),
            "f32_wrong_scale": ("bytes", f32(rng.uniform(-32768, 32767, 1600))),
            "f32_random_bits": ("bytes", bytes(rng.integers(0, 256, 4 * 400, dtype=np.uint8))),
        })
    names = sorted(choices)
    name = names[rng.integers(len(names))]
    return f"audio.{name}", [start, good, choices[name]]


def random_frames(rng: np.random.Generator) -> tuple[str, list]:
    """Frames of random kind and content, without a start first."""
    acts = []
    for _ in range(int(rng.integers(1, 4))):
        k = int(rng.integers(3))
        n = int(rng.integers(0, 3000))
        if k == 0:
            acts.append(("bytes", bytes(rng.integers(0, 256, n, dtype=np.uint8))))
        elif k == 1:
            points = rng.integers(1, 0x10FFF, n // 10 + 1)
            acts.append(("text", "".join(chr(int(c)) for c in points if not 0xD800 <= c < 0xE000)))  # no lone surrogates
        else:
            acts.append(("badtext", bytes(rng.integers(0, 256, n + 1, dtype=np.uint8))))
    return "random_frames", acts


def disconnects(rng: np.random.Generator) -> tuple[str, list]:
    start = ("text", json.dumps({"type": "start"}))
    audio = ("bytes", np.zeros(1600, "<i2").tobytes())
    kind = ["reset_mid_audio", "close_non_ascii_reason", "reset_before_start", "end_twice", "text_after_end"][rng.integers(5)]
    acts = {
        "reset_mid_audio": [start, audio, ("reset",)],
        "close_non_ascii_reason": [start, audio, ("close", 4000, "é" * 61)],
        "reset_before_start": [("reset",)],
        "end_twice": [start, audio, ("text", '{"type":"end"}'), ("text", '{"type":"end"}')],
        "text_after_end": [start, ("text", '{"type":"end"}'), ("text", "{not json")],
    }[kind]
    return f"disconnect.{kind}", acts


def cases(n: int, seed: int = SEED) -> list[tuple[str, list]]:
    rng = np.random.default_rng(seed)
    makers = [bad_start, audio_phase, random_frames, disconnects]
    return [makers[i % len(makers)](rng) for i in range(n)]


async def play(url: str, actions: list) -> tuple[str, Any]:
    """Run one bad client; returns (outcome, detail): ('error', code) | ('close', code) | ('done', reason) | ('gone', None)."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    ws = await connect(url, max_size=1 << 24, open_timeout=10)
    msgs: list = []
    try:
        for act in actions:
            if act[0] == "text":
                await ws.send(act[1])
            elif act[0] == "bytes":
                await ws.send(act[1])
            elif act[0] == "badtext":
                await ws.send(act[1], text=True)  # bytes in a text frame, not valid UTF-8
            elif act[0] == "close":
                await ws.close(act[1], act[2])
                return "gone", None
            elif act[0] == "reset":
                ws.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                ws.transport.abort()
                return "gone", None
            await asyncio.sleep(0.005)
        if not any(a[0] == "text" and '"end"' in a[1] for a in actions):
            await ws.send('{"type": "end"}')
    except ConnectionClosed:
        pass
    try:
        while True:
            m = await asyncio.wait_for(ws.recv(), 10)
            if isinstance(m, str):
                msgs.append(json.loads(m))
    except ConnectionClosed:
        pass
    errors = [m for m in msgs if m.get("type") == "error"]
    if errors:
        return "error", errors[0]["code"]
    if msgs and msgs[-1].get("type") == "done":
        return "done", msgs[-1]["reason"]
    return "close", ws.close_code


def test_fuzz_bad_frames_beside_healthy_sessions(tmp_path, caplog: pytest.LogCaptureFixture) -> None:
    rec = toy_recognizer(tmp_path / "bundle")
    all_cases = cases(N_CASES)
    caplog.set_level(logging.INFO)

    async def go():
        async with running_server(rec, max_message_bytes=MAX_MESSAGE) as server:
            stop = asyncio.Event()
            healthy: list = []
            streaming = asyncio.Event()  # set while a healthy session is mid-stream

            async def healthy_loop():
                while not stop.is_set() or len(healthy) < 2:
                    c = await Client.connect(server.url)
                    streaming.set()
                    for i in range(0, len(GOOD), 1280):  # real time, 80 ms blocks
                        await c.send_audio(GOOD[i : i + 1280])
                        await asyncio.sleep(0.08)
                    streaming.clear()
                    await c.end()
                    healthy.append([ev.text async for ev in c.events() if isinstance(ev, Final)])
                    await c.close()

            keeper = asyncio.create_task(healthy_loop())
            outcomes = []
            for i in range(0, len(all_cases), 8):
                await asyncio.wait_for(streaming.wait(), 10)  # every group runs beside a healthy stream
                group = all_cases[i : i + 8]
                outcomes += await asyncio.gather(*(play(server.url, acts) for _, acts in group))
            stop.set()
            await keeper
            after = await transcribe(server.url, GOOD, 16000)
            return outcomes, healthy, [f.text for f in after], dict(server.errors)

    outcomes, healthy, after, errors = run(go(), timeout=150)
    kinds = sorted({k for k, _ in all_cases})
    clean = []
    for (kind, _), (outcome, detail) in zip(all_cases, outcomes):
        refused = (outcome == "error" and detail in DOCUMENTED) or (outcome == "close" and detail in (1002, 1007, 1009))
        if kind.startswith("audio."):  # every one of these frames is wrong: it must be refused by name
            assert refused, (kind, outcome, detail)
        ok = (
            (outcome == "error" and detail in DOCUMENTED)
            or (outcome == "close" and detail in (1000, 1002, 1007, 1008, 1009))  # websocket-level refusals
            or (outcome == "done" and detail == "end")
            or outcome == "gone"
        )
        clean.append(ok)
        assert ok, (kind, outcome, detail)
    tracebacks = [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]
    assert not tracebacks, [(r.name, r.getMessage()) for r in tracebacks[:5]]
    assert "internal" not in errors, errors
    assert len(healthy) >= 2 and all(h == ["still fine"] for h in healthy), healthy
    assert after == ["still fine"]
    print(f"fuzz: {len(kinds)} kinds, {sum(clean)}/{len(clean)} handled cleanly, healthy sessions beside: {len(healthy)}")
