"""Async Python client for a wavstream server (docs/protocol.md).

    import asyncio
    from wavstream.stream.client import Client

    async def main(samples, rate):
        async with await Client.connect("ws://127.0.0.1:8765", sample_rate=rate) as c:
            async def send():
                for i in range(0, len(samples), rate // 10):    # any block size
                    await c.send_audio(samples[i : i + rate // 10])
                await c.end()                                   # flush: finals come, then `done`
            sender = asyncio.create_task(send())
            async for ev in c.events():                         # Partial / Final / Features
                print(ev)
            await sender

or in one call: ``finals = await transcribe(url, samples, rate)``.
An ``error`` from the server raises ``ServerError(code, reason)`` from ``events()``.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, AsyncIterator, Optional

import numpy as np

from .events import Event, Features, Final, Partial

__all__ = ["Client", "ServerError", "transcribe"]


class ServerError(RuntimeError):
    """The server answered with an ``error`` message (``code``, ``reason``) or closed unexpectedly."""

    def __init__(self, code: str, reason: str, close_code: Optional[int] = None) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason
        self.close_code = close_code


class Client:
    """One session with a wavstream server. Create with ``await Client.connect(url, ...)``."""

    def __init__(self, ws: Any, start: dict, ready: dict) -> None:
        self.ws = ws
        self.start = start
        self.ready = ready  # the server's ready message (chunk_ms, feature_dim, ...)
        self.done_reason: Optional[str] = None  # "end", "shutting_down", ... once `done` arrived
        self.segments: dict[int, int] = {}
        self._ended = False

    @classmethod
    async def connect(
        cls,
        url: str = "ws://127.0.0.1:8765",
        *,
        sample_rate: int = 16000,
        format: str = "int16",
        channels: int = 1,
        features: bool = False,
        feature_dtype: str = "float16",
        layer: Optional[int] = None,
        endpoint: Optional[dict] = None,
        token: Optional[str] = None,
        open_timeout: float = 10.0,
    ) -> "Client":
        """Open a session: connect, send ``start``, wait for ``ready``.

        Raises:
            ServerError: the server refused the start (bad field, full, unauthorized...).
            OSError / websockets.exceptions.InvalidStatus: could not connect (403 origin, 401 token).
        """
        from websockets.asyncio.client import connect

        headers = {"Authorization": f"Bearer {token}"} if token else None
        ws = await connect(url, additional_headers=headers, open_timeout=open_timeout, max_size=1 << 24)
        start: dict[str, Any] = {
            "type": "start",
            "protocol": 1,
            "sample_rate": sample_rate,
            "format": format,
            "channels": channels,
            "features": features,
            "feature_dtype": feature_dtype,
            "layer": layer,
        }
        if endpoint is not None:
            start["endpoint"] = endpoint
        from websockets.exceptions import ConnectionClosed

        try:
            try:
                await ws.send(json.dumps(start))
            except ConnectionClosed:
                pass  # refused before the start (server full): its error message is still to be read
            try:
                msg = await asyncio.wait_for(ws.recv(), open_timeout)
            except ConnectionClosed as exc:
                raise ServerError("closed", f"server closed the connection at start ({exc})", ws.close_code) from None
        except BaseException:
            await ws.close()
            raise
        ready = _parse(msg)
        if ready.get("type") == "error":
            await ws.close()
            raise ServerError(ready.get("code", "?"), ready.get("reason", ""), ws.close_code)
        if ready.get("type") != "ready":
            await ws.close()
            raise ServerError("unexpected", f"expected a ready message, got {msg!r:.200}")
        return cls(ws, start, ready)

    async def __aenter__(self) -> "Client":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ---------------------------------------------------------------- send
    def encode(self, samples: Any) -> bytes:
        """Samples ((n,) or (n, channels), float in [-1, 1] or int16) -> bytes in the session format."""
        x = np.asarray(samples)
        if self.start["format"] == "int16":
            if x.dtype != np.int16:
                x = np.clip(np.nan_to_num(x.astype(np.float32)) * 32768.0, -32768, 32767).astype("<i2")
        else:
            x = x.astype(np.float32) / 32768.0 if x.dtype == np.int16 else x.astype("<f4")
        return np.ascontiguousarray(x).tobytes()

    async def send_audio(self, samples: Any) -> None:
        await self.ws.send(self.encode(samples))

    async def send_bytes(self, data: bytes) -> None:
        """Raw audio bytes, already in the session format."""
        await self.ws.send(data)

    async def end(self) -> None:
        """No more audio: the server decodes the rest, sends the finals and `done`, then closes."""
        if not self._ended:
            self._ended = True
            await self.ws.send(json.dumps({"type": "end"}))

    async def close(self) -> None:
        await self.ws.close()

    # ------------------------------------------------------------- receive
    async def events(self) -> AsyncIterator[Event]:
        """Partial / Final / Features events until the server's ``done`` (then the iterator ends).

        Raises:
            ServerError: an ``error`` message, or the connection closed without ``done``.
        """
        from websockets.exceptions import ConnectionClosed

        from .server.protocol import unpack_features

        while True:
            try:
                msg = await self.ws.recv()
            except ConnectionClosed as exc:
                if self.done_reason is not None:
                    return
                raise ServerError("closed", f"connection closed before done ({exc})", self.ws.close_code) from None
            if isinstance(msg, bytes):
                start, frames = unpack_features(msg)
                yield Features(frames, start)
                continue
            d = _parse(msg)
            kind = d.get("type")
            if kind == "partial":
                yield Partial(d["text"])
            elif kind == "final":
                yield Final(d["text"], float(d["start"]), float(d["end"]))
            elif kind == "done":
                self.done_reason = d.get("reason", "end")
                return
            elif kind == "error":
                raise ServerError(d.get("code", "?"), d.get("reason", ""), self.ws.close_code)


def _parse(msg: Any) -> dict:
    if isinstance(msg, bytes):
        return {"type": "binary"}
    try:
        d = json.loads(msg)
    except ValueError:
        return {"type": "invalid", "text": msg}
    return d if isinstance(d, dict) else {"type": "invalid"}


async def transcribe(
    url: str,
    samples: Any,
    sample_rate: int,
    *,
    block_s: float = 0.1,
    realtime: bool = False,
    on_event: Any = None,
    **connect_options: Any,
) -> list[Final]:
    """Stream an array to the server (paced in real time if ``realtime``); returns the finals.

    ``on_event(event)`` is called for every event as it arrives.
    """
    x = np.asarray(samples)
    c = await Client.connect(url, sample_rate=sample_rate, **connect_options)
    async with c:
        block = max(1, int(round(block_s * sample_rate)))

        async def send() -> None:
            t0 = time.monotonic()
            for k, i in enumerate(range(0, x.shape[0], block)):
                if realtime:
                    delay = t0 + k * block_s - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                await c.send_audio(x[i : i + block])
            await c.end()

        sender = asyncio.create_task(send())
        finals: list[Final] = []
        try:
            async for ev in c.events():
                if on_event is not None:
                    on_event(ev)
                if isinstance(ev, Final):
                    finals.append(ev)
        finally:
            if not sender.done():
                sender.cancel()
        try:
            await sender
        except (Exception, asyncio.CancelledError):
            pass
        return finals
