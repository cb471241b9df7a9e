"""Wyoming server: speech-to-text for Home Assistant (extra ``[wyoming]``; the only module importing ``wyoming``).

    from wavstream.stream import Recognizer
    from wavstream.stream.server.wyoming import WyomingServer

    async with WyomingServer(Recognizer.default(), "tcp://127.0.0.1:0") as server:
        print(server.uri)              # tcp://127.0.0.1:<port>
        await server.serve_forever()

Each connection gets a ``WyomingConversation`` (wyoming_session.py: the
protocol, no I/O); each utterance (``audio-start`` .. transcript) a Session
decoded by the same ``Batcher`` as the websocket server (batcher.py): one
batched engine call per cycle for every connection, on the Batcher's executor
thread, never on the event loop. A full input buffer stops reading the
connection (TCP flow control slows the client). Wyoming has no
authentication: the default address is loopback, and binding beyond it is the
user's explicit choice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union
from urllib.parse import urlparse

from wyoming.event import Event as WyEvent
from wyoming.event import async_read_event, async_write_event
from wyoming.info import AsrModel, AsrProgram, Attribution, Info
from wyoming.server import AsyncEventHandler, AsyncServer, AsyncStdioServer, AsyncTcpServer

from ..errors import WavstreamError
from ..ctc import StreamingCtcDecoder
from ..hotwords import MAX_HOTWORDS, Hotword, merge_hotwords, parse_hotwords, spellable
from ..protocol import AudioReceived, EndReceived, ErrorCode, ProtocolError, StartReceived
from .batcher import Batcher
from .session import Close, Session
from .wyoming_session import DescribeReceived, WyomingConversation

__all__ = ["WyomingServer", "DEFAULT_URI", "build_info", "describe", "register_zeroconf", "close_zeroconf",
           "transcribe", "WyomingTranscript"]

log = logging.getLogger("wavstream.wyoming")

DEFAULT_URI = "tcp://127.0.0.1:10300"  # 10300: the port Home Assistant's Wyoming STT services use
ATTRIBUTION_URL = "https://pypi.org/project/wavstream/"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("wavstream")
    except PackageNotFoundError:
        return "0"


def build_info(model_name: str, languages: Sequence[str], *, streaming: bool, endpointing: bool) -> Info:
    """What ``describe`` is answered with: one ASR program with the loaded model."""
    attribution = Attribution(name="wavstream", url=ATTRIBUTION_URL)
    version = _version()
    model = AsrModel(name=model_name, attribution=attribution, installed=True, description="wavstream bundle",
                     version=version, languages=list(languages))
    program = AsrProgram(name="wavstream", attribution=attribution, installed=True,
                         description="Streaming speech recognition (wavstream)", version=version, models=[model],
                         supports_transcript_streaming=streaming, requires_external_vad=not endpointing)
    return Info(asr=[program])


class WyomingServer:
    """A Wyoming speech-to-text server over one Recognizer. Use ``async with`` or start()/shutdown().

    Args:
        recognizer: a wavstream.stream.Recognizer (loaded before listening, so ``info`` is immediate).
        uri: ``tcp://HOST:PORT`` (port 0 picks a free one) or ``stdio://``.
        languages: what ``info`` advertises and ``transcribe`` may ask for.
        streaming: send transcript-start/-chunk/-stop (Home Assistant shows text while you speak).
        endpointing: wavstream's endpoint rules end the utterance (the transcript comes at the
            first endpoint; ``requires_external_vad`` is then false).
        max_sessions: utterances decoded at once; more get an ``error`` (server_full).
        max_buffer_s: s of audio buffered per utterance before reading pauses.
        idle_timeout_s: a connection with no event for this long is closed (None: never).
        max_message_bytes: largest audio-chunk payload.
        batcher: share another server's Batcher (one inference loop for both); default: its own.
        hotwords: phrases every conversation is biased towards ('phrase', 'phrase:score' or Hotword);
            Home Assistant's names and terms add to them. Raises HotwordError for one the model cannot spell.
    """

    def __init__(
        self,
        recognizer: Any,
        uri: str = DEFAULT_URI,
        *,
        languages: Sequence[str] = ("en",),
        streaming: bool = True,
        endpointing: bool = False,
        max_sessions: int = 64,
        max_buffer_s: float = 5.0,
        idle_timeout_s: Optional[float] = 30.0,
        max_message_bytes: int = 1 << 20,
        max_batch: int = 32,
        max_wait_ms: float = 10.0,
        batcher: Optional[Batcher] = None,
        hotwords: Optional[Sequence[Union[str, Hotword]]] = None,
    ) -> None:
        if max_sessions < 1:
            raise ValueError(f"max_sessions must be >= 1, got {max_sessions}")
        parsed = urlparse(uri)
        if parsed.scheme not in ("tcp", "stdio"):
            raise ValueError(f"uri must be tcp://HOST:PORT or stdio://, got {uri!r}")
        if parsed.scheme == "tcp" and (parsed.hostname is None or parsed.port is None):
            raise ValueError(f"a tcp:// uri needs a host and a port, got {uri!r}")
        self.rec = recognizer
        self.hotwords: list[Hotword] = parse_hotwords(hotwords or [])
        if self.hotwords and getattr(recognizer, "vocab", None) is not None:
            StreamingCtcDecoder(recognizer.vocab, "beam", 1, hotwords=self.hotwords)  # unspellable: refused now
        self.uri = uri
        self.languages = tuple(languages)
        self.streaming = streaming
        self.endpointing = endpointing
        self.max_sessions = max_sessions
        self.max_buffer_s = max_buffer_s
        self.idle_timeout_s = idle_timeout_s
        self.max_message_bytes = max_message_bytes
        self._own_batcher = batcher is None
        self.batcher = batcher or Batcher(recognizer, max_batch=max_batch, max_wait_s=max_wait_ms / 1000.0)
        self.model_name = Path(str(getattr(recognizer.bundle, "path", "") or "wavstream")).name or "wavstream"
        self.info = build_info(self.model_name, self.languages, streaming=streaming, endpointing=endpointing)
        dec = getattr(recognizer, "decoding", None)
        # Greedy CTC without an LM only ever extends its text: its partials can be sent as deltas.
        self.append_only_partials = dec is None or (dec.method == "greedy" and dec.lm is None)
        self.sessions: dict[int, Session] = {}
        self.sessions_total = 0
        self.errors: dict[str, int] = {}
        self._server: Optional[AsyncServer] = None
        self._stdio_task: Optional[asyncio.Task] = None
        self._stopped = asyncio.Event()

    # ------------------------------------------------------------ lifecycle
    async def start(self) -> "WyomingServer":
        if self._own_batcher:
            self.batcher.start()
        parsed = urlparse(self.uri)
        if parsed.scheme == "stdio":
            self._server = AsyncStdioServer()
            self._stdio_task = asyncio.get_running_loop().create_task(self._server.run(self._make_handler))
        else:
            server = AsyncTcpServer(parsed.hostname or "127.0.0.1", parsed.port or 0)
            await server.start(self._make_handler)
            self._server = server
            sock = next(iter(server._server.sockets))  # type: ignore[union-attr]
            host = parsed.hostname or "127.0.0.1"
            self.uri = f"tcp://{'[' + host + ']' if ':' in host else host}:{sock.getsockname()[1]}"
        log.info("wavstream Wyoming server listening on %s (model %s)", self.uri, self.model_name)
        return self

    @property
    def port(self) -> Optional[int]:
        return urlparse(self.uri).port

    async def __aenter__(self) -> "WyomingServer":
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    async def serve_forever(self) -> None:
        if self._stdio_task is not None:
            await self._stdio_task  # stdin closed: done
            return
        await self._stopped.wait()

    async def shutdown(self) -> None:
        if self._stopped.is_set():
            return
        if self._server is not None:
            await self._server.stop()
        if self._stdio_task is not None:
            self._stdio_task.cancel()
        for s in list(self.sessions.values()):
            self.batcher.remove(s)
        self.sessions.clear()
        if self._own_batcher:
            await self.batcher.stop()
        self._stopped.set()

    def _make_handler(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> "_Handler":
        return _Handler(self, reader, writer)

    def _count_error(self, code: str) -> None:
        self.errors[code] = self.errors.get(code, 0) + 1

    def stats(self) -> dict:
        return {"sessions_active": len(self.sessions), "sessions_total": self.sessions_total,
                "errors": dict(self.errors), **self.batcher.stats.to_dict()}


class _Handler(AsyncEventHandler):
    """One Wyoming connection: events in -> the conversation -> the Batcher; results out."""

    def __init__(self, server: WyomingServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        super().__init__(reader, writer)
        self.server = server
        self.conv = WyomingConversation(
            languages=server.languages, streaming=server.streaming, endpointing=server.endpointing,
            append_only_partials=server.append_only_partials, max_message_bytes=server.max_message_bytes,
        )
        self.session: Optional[Session] = None
        self.sender: Optional[asyncio.Task] = None
        self._write_lock = asyncio.Lock()

    async def run(self) -> None:
        """Read events (each within idle_timeout_s) until the client goes away."""
        try:
            while True:
                timeout = self.server.idle_timeout_s
                try:
                    event = await (asyncio.wait_for(async_read_event(self.reader), timeout) if timeout
                                   else async_read_event(self.reader))
                except asyncio.TimeoutError:
                    log.info("closing an idle Wyoming connection (no event for %g s)", timeout)
                    break
                except (ValueError, UnicodeDecodeError) as exc:  # not Wyoming framing: nothing more can be read
                    log.info("closing a Wyoming connection that sent a malformed event: %s", exc)
                    break
                if event is None or not await self.handle_event(event):
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            await self.disconnect()
            self.writer.close()

    async def handle_event(self, event: WyEvent) -> bool:
        try:
            evs = self.conv.receive(event.type, event.data, event.payload)
        except ProtocolError as exc:
            self.server._count_error(exc.code)
            log.info("Wyoming %s refused: %s", event.type, exc.reason)
            self._end_session()
            await self._write_pending()
            return True  # an error ends the utterance, not the connection
        for ev in evs:
            if isinstance(ev, DescribeReceived):
                await self._write(self.server.info.event())
            elif isinstance(ev, StartReceived):
                self._open_session()
            elif isinstance(ev, AudioReceived) and self.session is not None:
                await self._wait_for_room(self.session)
                if self.session is not None:
                    self.session.push_audio(ev.samples)
                    if self.session.chunk_due:
                        self.server.batcher.notify()
            elif isinstance(ev, EndReceived) and self.session is not None:
                self.session.request_end(ev.reason)
                self.server.batcher.notify()
        if self.session is not None:
            self.session.flush()  # transcript-start goes out in order, through the sender
        await self._write_pending()
        return True

    def _open_session(self) -> None:
        srv = self.server
        self._end_session()
        if len(srv.sessions) >= srv.max_sessions:
            self.conv.fail(ErrorCode.SERVER_FULL, f"server is full ({srv.max_sessions} utterances); try again later")
            srv._count_error(ErrorCode.SERVER_FULL)
            return
        start = self.conv.start
        assert start is not None
        # The endpoint rules run in both modes: without --endpointing they only split a long upload into
        # utterances (joined in the transcript); with it, the first endpoint answers.
        # Home Assistant's entity names and terms bias decoding (those the model can spell).
        asked = self.conv.transcribe
        room = MAX_HOTWORDS - len(srv.hotwords)  # names beyond it are left out, as unspellable ones are
        phrases = spellable([*asked.names, *asked.terms], srv.rec.config.vocab, room) if asked is not None else ()
        stream = srv.rec.create_stream(hotwords=merge_hotwords(srv.hotwords, phrases) or None)
        s = Session(self.conv, stream, max_pending_samples=int(srv.max_buffer_s * start.sample_rate), max_out=1 << 16,
                    max_out_bytes=1 << 30)
        self.session = s
        srv.sessions[s.id] = s
        srv.sessions_total += 1
        self.sender = asyncio.get_running_loop().create_task(self._send(s))
        srv.batcher.add(s)
        self.conv.accepted()

    async def _wait_for_room(self, s: Session) -> None:
        """Backpressure: stop reading this connection until the Batcher has taken the buffered audio."""
        while not s.room.is_set() and self.session is s and not s.is_closed:
            try:
                await asyncio.wait_for(s.room.wait(), 0.5)
            except asyncio.TimeoutError:
                pass

    async def _send(self, s: Session) -> None:
        """The utterance's results, in order; a Close item means its transcript (or error) was sent."""
        while True:
            item = await s.get_out()
            if isinstance(item, Close):
                if self.session is s:
                    self._end_session(cancel_sender=False)
                return
            kind, data = item  # type: ignore[misc]
            try:
                await self._write(WyEvent(kind, data))
            except (ConnectionError, RuntimeError):
                self._end_session(cancel_sender=False)
                return

    def _end_session(self, cancel_sender: bool = True) -> None:
        s, self.session = self.session, None
        if s is None:
            return
        self.server.batcher.remove(s)
        self.server.sessions.pop(s.id, None)
        if cancel_sender and self.sender is not None and not self.sender.done():
            self.sender.cancel()

    async def _write_pending(self) -> None:
        for kind, data in self.conv.data_to_send():
            await self._write(WyEvent(kind, data))

    async def _write(self, event: WyEvent) -> None:
        async with self._write_lock:
            await async_write_event(event, self.writer)

    async def disconnect(self) -> None:
        self._end_session()


async def describe(uri: str, timeout_s: float = 5.0) -> dict:
    """A Describe -> Info round trip to a running server (the health check); returns the info data.

    Raises:
        WavstreamError: no answer within ``timeout_s``, or the server is not a Wyoming ASR service.
    """
    from wyoming.client import AsyncClient

    async def round_trip() -> dict:
        async with AsyncClient.from_uri(uri) as client:
            await client.write_event(WyEvent("describe"))
            while True:
                ev = await client.read_event()
                if ev is None:
                    raise WavstreamError(f"{uri} closed the connection without answering describe")
                if ev.type == "info":
                    return dict(ev.data)

    t0 = time.monotonic()
    try:
        data = await asyncio.wait_for(round_trip(), timeout_s)
    except asyncio.TimeoutError:
        raise WavstreamError(f"{uri} did not answer describe within {timeout_s:g} s") from None
    except OSError as exc:
        raise WavstreamError(f"cannot reach {uri}: {exc}") from None
    if not data.get("asr"):
        raise WavstreamError(f"{uri} answered describe without an ASR program")
    data["_round_trip_s"] = time.monotonic() - t0
    return data


async def register_zeroconf(port: int, name: Optional[str] = None, host: Optional[str] = None) -> Any:
    """Announce the server as ``_wyoming._tcp.local.`` so Home Assistant discovers it (needs ``zeroconf``).

    ``host``: the address to announce (default: the one that routes to the mDNS group). Returns the
    registration; keep it for the server's lifetime.
    """
    from wyoming.zeroconf import HomeAssistantZeroconf

    zc = HomeAssistantZeroconf(port=port, name=name, host=host)
    await zc.register_server()
    return zc


async def close_zeroconf(registration: Any) -> None:
    """Withdraw the announcement made by ``register_zeroconf``."""
    await registration._aiozc.async_close()


@dataclass(frozen=True)
class WyomingTranscript:
    """What ``transcribe`` got back from a Wyoming ASR server."""

    text: str
    chunks: tuple[str, ...]  # transcript-chunk texts, in order (empty without streaming)
    stop_to_transcript_s: Optional[float]  # from writing audio-stop to reading the transcript (None: it came first)


async def transcribe(uri: str, audio: bytes, rate: int = 16000, *, width: int = 2, channels: int = 1,
                     language: Optional[str] = "en", chunk_bytes: int = 1024, realtime: bool = False,
                     timeout_s: float = 60.0) -> WyomingTranscript:
    """Send one utterance the way Home Assistant does (transcribe, audio-start, chunks, audio-stop) and
    read the answer concurrently; ``realtime`` paces the chunks like a microphone.

    Raises:
        WavstreamError: the server answered ``error``, closed early, or took longer than ``timeout_s``.
    """
    from wyoming.asr import Transcribe
    from wyoming.audio import AudioChunk, AudioStart, AudioStop
    from wyoming.client import AsyncClient

    chunks: list[str] = []
    result: dict[str, Any] = {}
    frame_s = chunk_bytes / (width * channels * rate)

    async def go() -> WyomingTranscript:
        async with AsyncClient.from_uri(uri) as client:
            answered = asyncio.Event()

            async def reader() -> None:
                while True:
                    ev = await client.read_event()
                    if ev is None or ev.type in ("transcript", "error"):
                        result["event"], result["t"] = ev, time.monotonic()
                        answered.set()
                        return
                    if ev.type == "transcript-chunk":
                        chunks.append(ev.data["text"])

            task = asyncio.create_task(reader())
            await client.write_event(Transcribe(language=language).event())
            await client.write_event(AudioStart(rate=rate, width=width, channels=channels).event())
            t_next = time.monotonic()
            for i in range(0, len(audio), chunk_bytes):
                if answered.is_set():
                    break
                await client.write_event(AudioChunk(rate=rate, width=width, channels=channels,
                                                    audio=audio[i:i + chunk_bytes]).event())
                if realtime:
                    t_next += frame_s
                    await asyncio.sleep(max(0.0, t_next - time.monotonic()))
            t_stop = None
            if not answered.is_set():
                t_stop = time.monotonic()
                await client.write_event(AudioStop().event())
            await answered.wait()
            await task
        ev = result["event"]
        if ev is None:
            raise WavstreamError(f"{uri} closed the connection before the transcript")
        if ev.type == "error":
            raise WavstreamError(f"{uri} answered error: {ev.data.get('text')}")
        return WyomingTranscript(ev.data["text"], tuple(chunks), None if t_stop is None else result["t"] - t_stop)

    try:
        return await asyncio.wait_for(go(), timeout_s)
    except asyncio.TimeoutError:
        raise WavstreamError(f"{uri} gave no transcript within {timeout_s:g} s") from None
