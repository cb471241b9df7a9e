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
            if not c.complete:                                  # the server ended the session first
                print("incomplete:", c.done_reason)

or in one call: ``finals = await transcribe(url, samples, rate)``.

Any input rate works: rates the protocol refuses (outside 8-48 kHz) are
resampled here to 16 kHz with soxr before sending.

Errors (all ``ServerError``, so one ``except`` catches a server that said
no, broke the protocol or went silent):

    ServerError            the server sent ``error`` (code, reason) or closed without ``done``
      ServerProtocolError  the server sent something protocol v1 does not allow (code "protocol_error")
      ServerTimeoutError   no handshake, no ``ready``, or no answer after ``end()`` in time
                           (code "connect_timeout" / "ready_timeout" / "result_timeout")

``transcribe()`` also raises ServerError (code = the ``done`` reason, e.g.
"shutting_down") when the server ended the session before all the audio was
decoded. Whatever it raises carries the finals received so far (``.finals``).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, AsyncIterator, Optional, Sequence, Union

import numpy as np

from .errors import WavstreamError
from .events import Event, Features, Final, Partial
from .protocol import (
    END_TEXT,
    MAX_SAMPLE_RATE,
    MIN_SAMPLE_RATE,
    Done,
    ErrorMessage,
    Ready,
    ServerMessageError,
    StartMessage,
    parse_server_message,
)
from .resample import AudioFormatError, StreamResampler, check_sample_rate, to_mono_float32

__all__ = ["Client", "ServerError", "ServerProtocolError", "ServerTimeoutError", "transcribe"]

# Rates outside the protocol's MIN_SAMPLE_RATE..MAX_SAMPLE_RATE are resampled
# here to WIRE_RATE, the rate every bundle runs at, so the server does no
# resampling of its own for them.
WIRE_RATE = 16000


class ServerError(WavstreamError, RuntimeError):
    """The server answered with an ``error`` message (``code``, ``reason``) or closed unexpectedly.

    ``finals``: the Final events received before the failure (filled by transcribe()).
    """

    def __init__(self, code: str, reason: str, close_code: Optional[int] = None) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason
        self.close_code = close_code
        self.finals: list[Final] = []


class ServerProtocolError(ServerError):
    """The server sent a message that protocol v1 does not allow (not JSON, a field missing or of the wrong type)."""

    def __init__(self, reason: str, close_code: Optional[int] = None) -> None:
        super().__init__("protocol_error", reason, close_code)


class ServerTimeoutError(ServerError):
    """The server did not answer in time: ``code`` is connect_timeout, ready_timeout, result_timeout or send_timeout."""


class Client:
    """One session with a wavstream server. Create with ``await Client.connect(url, ...)``."""

    def __init__(
        self,
        ws: Any,
        start: dict,
        ready: dict,
        *,
        input_rate: Optional[int] = None,
        channels: int = 1,
        result_timeout: Optional[float] = 30.0,
        send_timeout: Optional[float] = 30.0,
    ) -> None:
        self.ws = ws
        self.start = start
        self.ready = ready  # the server's ready message (chunk_ms, feature_dim, ...)
        self.done_reason: Optional[str] = None  # "end", "shutting_down", ... once `done` arrived
        self.segments: dict[int, int] = {}
        self.input_rate = input_rate or int(start["sample_rate"])  # rate of the arrays given to send_audio
        self.channels = channels  # channels of the arrays given to send_audio
        self.result_timeout = result_timeout
        self.send_timeout = send_timeout  # a send that waits longer: the server stopped reading
        # Rates the protocol refuses are resampled (mono) to WIRE_RATE before sending.
        self._resampler: Optional[StreamResampler] = (
            StreamResampler(self.input_rate, int(start["sample_rate"])) if self.input_rate != start["sample_rate"] else None
        )
        self._ended = False
        self._end_sent = asyncio.Event()
        self._pending: Optional[asyncio.Future] = None  # a recv() in flight, kept across calls

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
        words: bool = False,
        latency_ms: Optional[int] = None,
        hotwords: Optional[Sequence[str]] = None,
        open_timeout: Optional[float] = 10.0,
        ready_timeout: Optional[float] = 10.0,
        result_timeout: Optional[float] = 30.0,
        send_timeout: Optional[float] = 30.0,
    ) -> "Client":
        """Open a session: connect, send ``start``, wait for ``ready``.

        ``sample_rate`` is the rate of the audio you will send, 1000 to 768000
        Hz; outside the protocol's 8000..48000 Hz it is resampled to 16 kHz
        here (and mixed down to mono). ``words``: finals carry their words' times and
        confidences (``Final.words``). ``latency_ms``: a chunk size the server's model
        serves (``ready["chunk_ms"]`` confirms it). ``hotwords``: phrases ('phrase' or
        'phrase:score') the server biases this session's decoding towards. Timeouts are seconds, None for none:
        ``open_timeout`` for TCP and the websocket handshake, ``ready_timeout``
        for the answer to ``start``, ``result_timeout`` for each message after
        ``end()`` (the server then owes only finals and ``done``), ``send_timeout``
        for each send (a server that stops reading fills the socket's buffers).
        Raises:
            ServerError: the server refused the start (bad field, full, unauthorized...).
            ServerTimeoutError: no handshake within open_timeout, or no ready within ready_timeout.
            ServerProtocolError: the answer to start is not a ready or error message.
            ValueError: a sample rate that is not audio.
            OSError / websockets.exceptions.InvalidStatus: could not connect (403 origin, 401 token).
        """
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed

        input_rate = check_sample_rate(sample_rate, "sample_rate")
        wire_rate = input_rate if MIN_SAMPLE_RATE <= input_rate <= MAX_SAMPLE_RATE else WIRE_RATE
        headers = {"Authorization": f"Bearer {token}"} if token else None
        try:
            ws = await connect(url, additional_headers=headers, open_timeout=open_timeout, max_size=1 << 24)
        except (asyncio.TimeoutError, TimeoutError):
            raise ServerTimeoutError("connect_timeout", f"no websocket handshake from {url} within {open_timeout:g} s") from None
        start = StartMessage(
            sample_rate=wire_rate,
            format=format,
            # Resampling here mixes down to mono first (the server would mix down anyway).
            channels=channels if wire_rate == input_rate else 1,
            features=features,
            feature_dtype=feature_dtype,
            layer=layer,
            words=words,
            latency_ms=latency_ms,
            hotwords=tuple(hotwords or ()),
        ).to_dict()
        if endpoint is not None:
            start["endpoint"] = endpoint  # as given: the server validates it and names a bad field
        try:
            try:
                await ws.send(json.dumps(start))
            except ConnectionClosed:
                pass  # refused before the start (server full): its error message is still to be read
            try:
                msg = await asyncio.wait_for(ws.recv(), ready_timeout)
            except ConnectionClosed as exc:
                raise ServerError("closed", f"server closed the connection at start ({exc})", ws.close_code) from None
            except (asyncio.TimeoutError, TimeoutError):
                raise ServerTimeoutError(
                    "ready_timeout", f"the server accepted the connection but sent no ready within {ready_timeout:g} s"
                ) from None
            if isinstance(msg, bytes):
                raise ServerProtocolError(f"a binary message where a JSON text message was due ({len(msg)} bytes)")
            answer = _parse(msg)
            if isinstance(answer, ErrorMessage):
                raise ServerError(answer.code, answer.reason, ws.close_code)
            if not isinstance(answer, Ready):
                raise ServerProtocolError(f"expected a ready message after start, got {_show(msg)}")
            ready = json.loads(msg)  # kept as sent: newer servers may add fields
        except BaseException as exc:
            if isinstance(exc, ServerError) and exc.close_code is None:
                # The server closes after its error message: let its close frame (and code) arrive
                # before closing ourselves, or a busy server would echo our 1000 instead.
                try:
                    await asyncio.wait_for(ws.wait_closed(), 1.0)
                except (asyncio.TimeoutError, TimeoutError):
                    pass
            await ws.close()
            if isinstance(exc, ServerError) and exc.close_code is None:
                exc.close_code = ws.close_code  # known once the close handshake is done
            raise
        return cls(ws, start, ready, input_rate=input_rate, channels=channels, result_timeout=result_timeout,
                   send_timeout=send_timeout)

    async def __aenter__(self) -> "Client":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def complete(self) -> bool:
        """True once ``done`` arrived with reason "end": every sample sent before end() was decoded.

        Any other reason (shutting_down, idle_timeout, session_too_long) means
        the server stopped the session itself, so the transcript may be cut off.
        """
        return self.done_reason == "end"

    # ---------------------------------------------------------------- send
    def _frames(self, samples: Any) -> np.ndarray:
        return _as_frames(samples, self.channels)

    def encode(self, samples: Any) -> bytes:
        """Samples ((n,), (n, channels) or (channels, n), float in [-1, 1] or int PCM) -> bytes in the session format.

        Raises:
            AudioFormatError: a shape that does not match the session's channels, a dtype
                that is not audio, or NaN/infinite samples (refused, nothing is sent).
        """
        x = self._frames(samples)
        if self._resampler is not None:
            # to_mono_float32 also checks dtype and finiteness.
            x = self._resampler.process(to_mono_float32(x, channels_first=False))
        return self._pack(x)

    def _pack(self, x: np.ndarray) -> bytes:
        if self.start["format"] == "int16" and x.dtype == np.int16:
            return np.ascontiguousarray(x, dtype="<i2").tobytes()
        f = _float_frames(x)
        if self.start["format"] == "int16":
            return np.clip(f * 32768.0, -32768, 32767).astype("<i2").tobytes()
        return np.ascontiguousarray(f, dtype="<f4").tobytes()

    async def send_audio(self, samples: Any) -> None:
        """Send a block of audio at the rate and channels given to connect(). Raises AudioFormatError as encode()."""
        data = self.encode(samples)
        if data:
            await self._send(data)

    async def send_bytes(self, data: bytes) -> None:
        """Raw audio bytes, already in the session format (and at its wire rate, ``start['sample_rate']``)."""
        await self._send(data)

    async def _send(self, data: Union[bytes, str]) -> None:
        """One message; ServerTimeoutError("send_timeout") when the server has read nothing for send_timeout s."""
        try:
            await asyncio.wait_for(self.ws.send(data), self.send_timeout)
        except (asyncio.TimeoutError, TimeoutError):
            # A half-written frame cannot be taken back: the connection is unusable now.
            self.ws.transport.abort()
            raise ServerTimeoutError(
                "send_timeout", f"the server read nothing for {self.send_timeout:g} s (its buffers are full)"
            ) from None

    async def end(self) -> None:
        """No more audio: the server decodes the rest, sends the finals and `done`, then closes.

        From here on each message must come within ``result_timeout`` s.
        """
        if not self._ended:
            self._ended = True
            if self._resampler is not None:
                tail = self._resampler.flush()
                if tail.size:
                    await self._send(self._pack(tail))
            await self._send(END_TEXT)
            self._end_sent.set()

    async def close(self) -> None:
        if self._pending is not None and not self._pending.done():
            self._pending.cancel()  # cancelling a websockets recv() loses nothing
        self._pending = None
        await self.ws.close()

    # ------------------------------------------------------------- receive
    async def _recv(self) -> Any:
        """The next message. Before end() it may take any time (speech may be silent);
        after end() each message must come within result_timeout."""
        if self._pending is None:
            self._pending = asyncio.ensure_future(self.ws.recv())
        while not self._pending.done():
            if self._end_sent.is_set():
                done, _ = await asyncio.wait({self._pending}, timeout=self.result_timeout)
                if not done:
                    raise ServerTimeoutError(
                        "result_timeout",
                        f"the server sent nothing for {self.result_timeout:g} s after end (finals and done were due)",
                        self.ws.close_code,
                    )
            else:
                # Wait for a message, or for end() to be sent meanwhile (then the timeout applies).
                ended = asyncio.ensure_future(self._end_sent.wait())
                try:
                    await asyncio.wait({self._pending, ended}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    ended.cancel()
        task, self._pending = self._pending, None
        return task.result()

    async def events(self) -> AsyncIterator[Event]:
        """Partial / Final / Features events until the server's ``done`` (then the iterator ends).

        After it ends, ``complete`` says whether the server decoded everything
        (``done`` reason "end") or stopped the session itself (``done_reason``).
        Message types this client does not know are skipped (newer servers
        may add some; docs/protocol.md, Versioning).
        Raises:
            ServerError: an ``error`` message, or the connection closed without ``done``.
            ServerProtocolError: a message protocol v1 does not allow.
            ServerTimeoutError: nothing for ``result_timeout`` s after end().
        """
        from websockets.exceptions import ConnectionClosed

        while True:
            try:
                msg = await self._recv()
            except ConnectionClosed as exc:
                if self.done_reason is not None:
                    return
                raise ServerError("closed", f"connection closed before done ({exc})", self.ws.close_code) from None
            m = _parse(msg)
            if isinstance(m, (Partial, Final, Features)):
                yield m
            elif isinstance(m, Done):
                self.done_reason = m.reason
                return
            elif isinstance(m, ErrorMessage):
                # The server closes right after an error; its close code completes the picture.
                try:
                    await asyncio.wait_for(self.ws.wait_closed(), 1.0)
                except (asyncio.TimeoutError, TimeoutError):
                    pass
                raise ServerError(m.code, m.reason, self.ws.close_code)
            # anything else (ready, overloaded, a type from a newer server) carries no result


def _as_frames(samples: Any, channels: int) -> np.ndarray:
    """Samples -> (n,) or (n, channels): the session's channel count tells which axis is which."""
    x = np.asarray(samples)
    ch = channels
    if x.ndim == 1 and ch == 1:
        return x
    if x.ndim == 2:
        if x.shape[1] == ch:
            return x if ch > 1 else x[:, 0]
        if x.shape[0] == ch:
            return x.T if ch > 1 else x[0]  # (channels, n), as torchaudio and librosa give
    raise AudioFormatError(
        f"audio of shape {x.shape} does not match the session's {ch} channel(s): expected "
        + ("(samples,), (samples, 1) or (1, samples)" if ch == 1 else f"(samples, {ch}) or ({ch}, samples)")
    )


def _float_frames(x: np.ndarray) -> np.ndarray:
    """Int PCM or float frames -> float32 in [-1, 1]. Raises AudioFormatError for other dtypes or NaN/inf."""
    if np.issubdtype(x.dtype, np.integer):
        return x.astype(np.float32) / np.float32(float(np.iinfo(x.dtype).max) + 1.0)
    if not np.issubdtype(x.dtype, np.floating):
        raise AudioFormatError(f"audio must be float or integer PCM, found dtype {x.dtype}")
    with np.errstate(over="ignore"):  # huge values become inf, refused just below
        f = x.astype(np.float32)
    if f.size == 0:
        return f  # the resampler may hold a whole small block back
    finite = np.isfinite(f).reshape(f.shape[0], -1).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise AudioFormatError(
            f"audio has {bad.size} sample frame(s) with NaN or infinity (the first at frame {int(bad[0])}); "
            "nothing was sent: replace them (e.g. np.nan_to_num) or drop the block"
        )
    return f


def _show(msg: Any) -> str:
    """A message, cut short for an error text."""
    return f"{msg!r:.200}"


def _parse(msg: Any) -> Any:
    """A server message -> its typed form (None: a type this client does not know). Raises ServerProtocolError."""
    try:
        return parse_server_message(msg)
    except ServerMessageError as exc:
        raise ServerProtocolError(str(exc)) from None


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
    Raises:
        AudioFormatError: samples that are not audio (checked before connecting).
        ServerError (and its subclasses, see Client.connect / Client.events): the
            exception's ``finals`` holds the finals received before it. Also when
            the server ended the session before decoding all the audio (code =
            the ``done`` reason, e.g. "shutting_down").
    """
    if not block_s > 0:
        raise ValueError(f"block_s must be > 0, got {block_s}")
    # All of it is checked before connecting: a bad sample found halfway would leave a cut-off session.
    x = _as_frames(samples, int(connect_options.get("channels", 1)))
    if not (x.dtype == np.int16 and connect_options.get("format", "int16") == "int16"):
        _float_frames(x)
    c = await Client.connect(url, sample_rate=sample_rate, **connect_options)
    finals: list[Final] = []
    async with c:
        block = max(1, int(round(block_s * c.input_rate)))

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
        try:
            async for ev in c.events():
                if on_event is not None:
                    on_event(ev)
                if isinstance(ev, Final):
                    finals.append(ev)
        except ServerError as exc:
            exc.finals = finals
            raise
        finally:
            if not sender.done():
                sender.cancel()
            try:
                await sender
            except (Exception, asyncio.CancelledError):
                pass  # a connection that went away is reported by events()
        if not c.complete:
            err = ServerError(
                c.done_reason or "closed",
                f"the server ended the session ({c.done_reason}) before all the audio was decoded; "
                f"{len(finals)} final(s) received",
                c.ws.close_code,
            )
            err.finals = finals
            raise err
        return finals
