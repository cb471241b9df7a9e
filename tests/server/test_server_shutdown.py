"""Graceful shutdown of `wavstream serve` on SIGTERM/SIGINT: open sessions get their finals, then the process exits 0."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess

import pytest

from server_harness import recv_until_close, run, start_serve, synth, toy_recognizer

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory):
    return toy_recognizer(tmp_path_factory.mktemp("toy") / "bundle").bundle.path


def start_server(bundle) -> tuple[subprocess.Popen, str]:
    return start_serve(["--model", str(bundle), "--port", "0", "--threads", "1"])


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_with_open_sessions_loses_no_final(bundle, sig) -> None:
    """Three sessions mid-utterance (no end, no endpoint yet); the signal flushes each: final, done, close 1001; exit 0."""
    proc, url = start_server(bundle)
    texts = ["first words", "second one", "third"]
    try:

        async def go():
            from websockets.asyncio.client import connect

            conns = []
            for t in texts:
                ws = await connect(url)
                await ws.send(json.dumps({"type": "start", "format": "float32"}))
                assert json.loads(await ws.recv())["type"] == "ready"
                await ws.send(synth(t)[: -160 * 5].astype("<f4").tobytes())  # ends mid-silence: no endpoint yet
                conns.append(ws)
            for ws, t in zip(conns, texts):  # wait until the server has decoded the words
                while True:
                    m = json.loads(await ws.recv())
                    if m["type"] == "partial" and m["text"] == t:
                        break
            proc.send_signal(sig)
            return await asyncio.gather(*(recv_until_close(ws, timeout=20) for ws in conns))

        results = run(go(), timeout=60)
        rc = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert rc == 0, proc.stderr.read()
    for (msgs, code), t in zip(results, texts):
        assert [m["text"] for m in msgs if m["type"] == "final"] == [t]
        assert msgs[-1] == {"type": "done", "reason": "shutting_down"} and code == 1001


def test_in_process_shutdown_refuses_new_sessions(tmp_path) -> None:
    """After shutdown starts no new connection is accepted; sessions that never sent start get `shutting_down`."""
    from wavstream.stream.server import Server
    from websockets.asyncio.client import connect

    rec = toy_recognizer(tmp_path / "b")

    async def go():
        server = Server(rec, "127.0.0.1", 0)
        await server.start()
        idle = await connect(server.url)  # connected, no start yet
        await asyncio.sleep(0.1)
        await server.shutdown()
        msgs, code = await recv_until_close(idle)
        try:
            await connect(server.url, open_timeout=2)
            refused = False
        except OSError:
            refused = True
        return msgs, code, refused

    msgs, code, refused = run(go())
    assert msgs[-1]["code"] == "shutting_down" and code == 1001 and refused
