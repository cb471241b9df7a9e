"""Two wavstream servers behind HAProxy (Debian's package) with docs/haproxy.cfg, on loopback.

One server is filled to its --max-sessions; its /readyz turns 503, HAProxy's
health check takes it out, and every new session goes to the other, with the
right text. The full server's open sessions go on undisturbed.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
from pathlib import Path

import numpy as np
import pytest

from server_harness import http_request, raw_session, run, running_server, silence, synth, toy_recognizer

from websockets.exceptions import ConnectionClosed

from wavstream.stream.client import transcribe

pytestmark = pytest.mark.timeout(180)

CONFIG = Path(__file__).resolve().parents[2] / "docs" / "haproxy.cfg"
HAPROXY = shutil.which("haproxy") or ("/usr/sbin/haproxy" if os.path.exists("/usr/sbin/haproxy") else None)
if HAPROXY is None:  # a missing system component is a failure, not a skip (scripts/test.sh installs it)
    raise RuntimeError("haproxy is not installed: apt-get install haproxy (or run bash scripts/test.sh)")

START = {"sample_rate": 16000, "format": "float32"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_full_server_gets_no_new_sessions(tmp_path: Path) -> None:
    rec_a = toy_recognizer(tmp_path / "a")
    rec_b = toy_recognizer(tmp_path / "b")
    lb_port = _free_port()

    async def go() -> tuple[list, dict, dict, list]:
        async with running_server(rec_a, max_sessions=2) as a, running_server(rec_b, max_sessions=8) as b:
            env = {**os.environ, "WAVSTREAM_LB": f"127.0.0.1:{lb_port}",
                   "WAVSTREAM_A": f"127.0.0.1:{a.port}", "WAVSTREAM_B": f"127.0.0.1:{b.port}"}
            proc = subprocess.Popen([HAPROXY, "-db", "-f", str(CONFIG)], env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            try:
                lb = f"ws://127.0.0.1:{lb_port}"
                # HAProxy up and both servers healthy: one session each way.
                await asyncio.sleep(1.5)
                assert proc.poll() is None, proc.stderr.read().decode()
                warm = await asyncio.gather(*(transcribe(lb, np.concatenate([synth(w), silence(0.3)]), 16000)
                                              for w in ("alpha", "bravo")))
                assert [[f.text for f in g] for g in warm] == [["alpha"], ["bravo"]]
                # Fill server a directly; wait for HAProxy's next check to see its 503.
                held = [await raw_session(a.url, START) for _ in range(2)]
                status, _, body = await http_request(a.port, "GET", "/readyz")
                assert status == 503 and b'"full"' in body
                await asyncio.sleep(2.5)
                a_before, b_before = a.stats()["sessions_total"], b.stats()["sessions_total"]
                words = ["charlie", "delta", "echo", "foxtrot", "golf", "hotel"]
                got = await asyncio.gather(*(transcribe(lb, np.concatenate([synth(w), silence(0.3)]), 16000)
                                             for w in words))
                sa, sb = a.stats(), b.stats()
                # The held sessions on the full server still work.
                for ws in held:
                    await ws.send(np.concatenate([synth("india"), silence(0.3)]).astype(np.float32).tobytes())
                    await ws.send('{"type": "end"}')
                held_msgs = [await _finals(ws) for ws in held]
                return ([[f.text for f in g] for g in got], {"a": sa["sessions_total"] - a_before},
                        {"b": sb["sessions_total"] - b_before, "errors": sb["errors"]}, held_msgs)
            finally:
                proc.terminate()
                proc.wait(10)

    got, a_new, b_new, held = run(go(), timeout=120)
    assert got == [[w] for w in ["charlie", "delta", "echo", "foxtrot", "golf", "hotel"]]
    assert a_new == {"a": 0}
    assert b_new == {"b": 6, "errors": {}}
    assert held == [["india"], ["india"]]


async def _finals(ws) -> list[str]:
    texts = []
    try:
        while True:
            m = await asyncio.wait_for(ws.recv(), 10)
            if isinstance(m, str):
                msg = json.loads(m)
                if msg.get("type") == "final":
                    texts.append(msg["text"])
    except ConnectionClosed:
        pass
    return texts
