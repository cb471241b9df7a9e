"""Helpers for the tests/server/ and tests/cli/ modules: a toy recogniser, a server on port 0, raw clients."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Optional

import numpy as np

from toy_bundle import build_toy_bundle, silence, synth  # noqa: E402

from wavstream.stream import Final, Recognizer  # noqa: E402
from wavstream.stream.server import Server  # noqa: E402

__all__ = [
    "toy_recognizer", "running_server", "run", "raw_session", "recv_until_close", "synth", "silence", "utterance",
    "http_request", "upgrade_headers", "make_certificate", "start_serve",
]


def toy_recognizer(path: Path, **bundle_kw: Any) -> Recognizer:
    return Recognizer.from_bundle(build_toy_bundle(path, **bundle_kw), intra_op_threads=1, emit_features=True)


def utterance(text: str, seed: int = 0) -> np.ndarray:
    """Toy-model audio for ``text`` with enough trailing silence for an endpoint (rule2: 1.2 s)."""
    return np.concatenate([synth(text, seed=seed), silence(0.3)])


@asynccontextmanager
async def running_server(rec: Recognizer, **options: Any) -> AsyncIterator[Server]:
    server = Server(rec, "127.0.0.1", 0, **options)
    await server.start()
    try:
        yield server
    finally:
        await server.shutdown()


def run(coro: Any, timeout: float = 30.0) -> Any:
    """asyncio.run with a hard time bound (every server test is bounded)."""

    async def bounded() -> Any:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


async def raw_session(url: str, start: Optional[dict] = None, **connect_kw: Any) -> Any:
    """A plain websockets connection, optionally after sending a start and reading `ready`."""
    from websockets.asyncio.client import connect

    ws = await connect(url, **connect_kw)
    if start is not None:
        await ws.send(json.dumps({"type": "start", **start}))
        ready = json.loads(await ws.recv())
        assert ready["type"] == "ready", ready
    return ws


async def recv_until_close(ws: Any, timeout: float = 10.0) -> tuple[list, Optional[int]]:
    """All messages (text parsed as JSON, binary as bytes) until the server closes; and the close code."""
    from websockets.exceptions import ConnectionClosed

    msgs: list = []
    try:
        while True:
            m = await asyncio.wait_for(ws.recv(), timeout)
            msgs.append(m if isinstance(m, bytes) else json.loads(m))
    except ConnectionClosed:
        pass
    return msgs, ws.close_code


def finals_text(finals: list[Final]) -> str:
    return " ".join(f.text for f in finals)


async def http_request(
    port: int, method: str = "GET", path: str = "/", headers: Optional[dict] = None, *, host: Optional[str] = None, ssl: Any = None
) -> tuple[int, dict, bytes]:
    """One raw HTTP/1.1 request to 127.0.0.1:port (any method, any Host header); returns (status, headers, body).

    Raw on purpose: urllib and the websockets client fix the Host header and the method.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ssl, server_hostname="127.0.0.1" if ssl else None)
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host or f'127.0.0.1:{port}'}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    hdrs = {}
    for h in header_lines:
        if ":" in h:
            k, v = h.split(":", 1)
            hdrs[k.strip().lower()] = v.strip()
    body = b""
    if method != "HEAD" and "content-length" in hdrs:
        body = await reader.readexactly(int(hdrs["content-length"]))
    elif method != "HEAD" and "upgrade" not in hdrs:
        try:
            body = await asyncio.wait_for(reader.read(), 2.0)
        except asyncio.TimeoutError:
            pass
    writer.close()
    return int(status_line.split()[1]), hdrs, body


def upgrade_headers(**extra: str) -> dict:
    """Headers of a websocket upgrade request (for http_request)."""
    import base64
    import os

    return {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
        "Sec-WebSocket-Version": "13",
        **{k.replace("_", "-"): v for k, v in extra.items()},
    }


def make_certificate(folder: Path, names: tuple[str, ...] = ("localhost",)) -> tuple[Path, Path]:
    """A throwaway self-signed certificate (openssl CLI) valid for ``names`` and 127.0.0.1: (certfile, keyfile)."""
    import subprocess

    cert, key = folder / "cert.pem", folder / "key.pem"
    san = ",".join([f"DNS:{n}" for n in names] + ["IP:127.0.0.1"])
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
         "-subj", f"/CN={names[0]}", "-addext", f"subjectAltName={san}", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    return cert, key


def start_serve(args: list[str], timeout: float = 60.0, **popen_kw: Any) -> tuple[subprocess.Popen, str]:
    """`wavstream serve ARGS` in a child process: (the process, its ws:// or wss:// URL) once it listens."""
    popen_kw.setdefault("stdout", subprocess.DEVNULL)
    proc = subprocess.Popen([sys.executable, "-m", "wavstream.cli.main", "serve", *args],
                            stderr=subprocess.PIPE, text=True, **popen_kw)
    deadline = time.monotonic() + timeout
    line = ""
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        m = re.search(r"listening on (wss?://\S+)", line)
        if m:
            return proc, m.group(1)
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError(f"server did not start: {line!r}{proc.stderr.read()}")
