"""Helpers for the tests/test_server_*.py modules: a toy recogniser, a server on port 0, raw clients."""

from __future__ import annotations

import asyncio
import json
import sys
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Optional

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from toy_bundle import build_toy_bundle, silence, synth  # noqa: E402

from wavstream.stream import Final, Recognizer  # noqa: E402
from wavstream.stream.server import Server  # noqa: E402

__all__ = ["toy_recognizer", "running_server", "run", "raw_session", "recv_until_close", "synth", "silence", "utterance"]


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
