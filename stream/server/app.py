"""The websocket recognition server (``websockets`` asyncio API).

    from wavstream.stream import Recognizer
    from wavstream.stream.server import Server

    async with Server(Recognizer.from_bundle("bundle"), port=0) as server:
        print(server.url)                # ws://127.0.0.1:<port>
        await server.serve_forever()     # or run_server(...) for signals

One connection = one session (docs/protocol.md). All sessions share one
Batcher (batcher.py): one inference loop that stacks the ready chunks of all
sessions into one engine call, in an executor. The same port serves the
browser demo page at ``/`` (stream/web/), JSON stats at ``/stats`` and
``/healthz``.

Limits (safe defaults; ``None`` disables a timeout): max_sessions,
max_message_bytes, idle_timeout_s, max_session_s, max_buffer_s. Security:
binds 127.0.0.1 unless told otherwise; an Origin allow-list (by default only
pages served by this server, and clients that send no Origin, e.g. Python);
an optional bearer token (``Authorization: Bearer T`` header, or the start
message's ``token`` for browsers, which cannot set headers).
"""

from __future__ import annotations

import asyncio
import email.utils
import hmac
import json
import logging
import signal
import time
import urllib.parse
from pathlib import Path
from typing import Any, Optional, Sequence

import websockets
from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from ..endpoint import EndpointConfig, Endpointer
from .batcher import Batcher
from .protocol import (
    CLOSE_CODES,
    END_TYPES,
    PROTOCOL_VERSION,
    ErrorCode,
    ProtocolError,
    StartMessage,
    decode_audio,
    error_message,
    json_message,
    parse_client_text,
)
from .session import Done, Session

__all__ = ["Server", "run_server", "WEB_DIR"]

log = logging.getLogger("wavstream.server")

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
_PAGES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/worklet.js": ("worklet.js", "text/javascript; charset=utf-8"),
}
_DONE_CLOSE = {"end": 1000, "idle_timeout": 1000, "session_too_long": 1000, "shutting_down": 1001, "internal": 1011}


class Server:
    """A wavstream websocket server over one Recognizer. Use ``async with`` or start()/shutdown().

    Args:
        recognizer: a wavstream.stream.Recognizer (emit_features=True if clients may ask for features).
        host, port: where to listen; port 0 picks a free port (read ``server.port``).
    """

    def __init__(
        self,
        recognizer: Any,
        host: str = "127.0.0.1",
        port: int = 8765,
        *,
        # Limits
        max_sessions: int = 64,
        max_message_bytes: int = 1 << 20,
        idle_timeout_s: Optional[float] = 30.0,
        max_session_s: Optional[float] = 3600.0,
        max_buffer_s: float = 5.0,
        handshake_timeout_s: float = 10.0,
        shutdown_timeout_s: float = 10.0,
        # Security
        allowed_origins: Optional[Sequence[str]] = None,
        token: Optional[str] = None,
        # Batching
        max_batch: int = 32,
        max_wait_ms: float = 10.0,
        # Pages
        serve_pages: bool = True,
    ) -> None:
        if max_sessions < 1:
            raise ValueError(f"max_sessions must be >= 1, got {max_sessions}")
        if max_message_bytes < 1024:
            raise ValueError(f"max_message_bytes must be >= 1024, got {max_message_bytes}")
        self.rec = recognizer
        self.host = host
        self.port = port
        self.max_sessions = max_sessions
        self.max_message_bytes = max_message_bytes
        self.idle_timeout_s = idle_timeout_s
        self.max_session_s = max_session_s
        self.max_buffer_s = max_buffer_s
        self.handshake_timeout_s = handshake_timeout_s
        self.shutdown_timeout_s = shutdown_timeout_s
        self.allowed_origins = list(allowed_origins) if allowed_origins else []
        self.token = token or None
        self.serve_pages = serve_pages
        self.batcher = Batcher(recognizer, max_batch=max_batch, max_wait_s=max_wait_ms / 1000.0)
        self.started_at = time.time()
        self._ws: Any = None
        self._closing = False
        self._connections: set[ServerConnection] = set()  # counted after the handshake
        self._sessions: dict[int, Session] = {}
        self._authed: set[int] = set()  # id(connection) whose Authorization header matched
        self.sessions_total = 0
        self.errors: dict[str, int] = {}
        self._stopped = asyncio.Event()

    # ------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ws://{host}:{self.port}"

    async def start(self) -> "Server":
        self.batcher.start()
        self._ws = await websockets.serve(
            self._handler,
            self.host,
            self.port,
            process_request=self._process_request,
            server_header="wavstream",
            open_timeout=self.handshake_timeout_s,
            # Our own size check answers with an `error`; the library's hard cap
            # (4x) closes with 1009 before a huge message is even buffered.
            max_size=4 * self.max_message_bytes,
            max_queue=16,
            write_limit=1 << 16,
            ping_interval=20,
            ping_timeout=20,
            close_timeout=5,
        )
        sock = next(iter(self._ws.sockets))
        self.port = sock.getsockname()[1]
        log.info("wavstream server listening on %s (protocol %d)", self.url, PROTOCOL_VERSION)
        return self

    async def __aenter__(self) -> "Server":
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    async def serve_forever(self) -> None:
        """Wait until shutdown() completes."""
        await self._stopped.wait()

    async def shutdown(self) -> None:
        """Graceful stop: refuse new connections, flush every session (finals, then `done`), close, stop."""
        if self._closing:
            await self._stopped.wait()
            return
        self._closing = True
        log.info("shutting down: %d session(s) open", len(self._sessions))
        if self._ws is not None:
            self._ws.close(close_connections=False)  # stop listening; keep open connections
        for s in list(self._sessions.values()):
            s.request_end("shutting_down")
        self.batcher.notify()
        for conn in list(self._connections):  # connected but no start yet: nothing to flush
            if not any(s for s in self._sessions.values() if getattr(s, "conn", None) is conn):
                asyncio.create_task(self._reject(conn, ErrorCode.SHUTTING_DOWN, "server is shutting down"))
        if self._ws is not None:
            try:
                await asyncio.wait_for(self._ws.wait_closed(), self.shutdown_timeout_s)
            except asyncio.TimeoutError:
                log.warning("sessions did not finish within %.1f s; closing them", self.shutdown_timeout_s)
                self._ws.close(close_connections=True)
                await self._ws.wait_closed()
        await self.batcher.stop()
        self._stopped.set()
        log.info("server stopped")

    # ---------------------------------------------------------------- stats
    def stats(self) -> dict:
        d = {
            "protocol": PROTOCOL_VERSION,
            "uptime_s": round(time.time() - self.started_at, 3),
            "connections": len(self._connections),
            "sessions_active": len(self._sessions),
            "sessions_total": self.sessions_total,
            "max_sessions": self.max_sessions,
            "errors": dict(self.errors),
            "model": {
                "path": str(getattr(self.rec.bundle, "path", "")),
                "chunk_ms": round(1000.0 * self.rec.config.chunk_samples / self.rec.config.sample_rate, 3),
                "feature_dim": self.rec.config.feature_dim,
            },
        }
        d.update(self.batcher.stats.to_dict())
        return d

    # ----------------------------------------------------- HTTP / handshake
    def _origin_ok(self, request: Request) -> bool:
        origin = request.headers.get("Origin")
        if origin is None or "*" in self.allowed_origins:
            return True  # non-browser clients send no Origin
        if origin in self.allowed_origins:
            return True
        host = request.headers.get("Host", "")
        parsed = urllib.parse.urlsplit(origin)
        return bool(host) and parsed.netloc == host and not self.allowed_origins  # same origin as this server

    def _process_request(self, connection: ServerConnection, request: Request) -> Optional[Response]:
        path = urllib.parse.urlsplit(request.path).path
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return self._http(path)
        if not self._origin_ok(request):
            log.warning("refused websocket from origin %r", request.headers.get("Origin"))
            return connection.respond(403, f"origin {request.headers.get('Origin')!r} is not allowed\n")
        auth = request.headers.get("Authorization")
        if self.token is not None and auth is not None:
            scheme, _, value = auth.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), self.token.encode()):
                return connection.respond(401, "bad bearer token\n")
            self._authed.add(id(connection))
        return None

    def _http(self, path: str) -> Response:
        if path in ("/stats", "/healthz"):
            body = json.dumps(self.stats() if path == "/stats" else {"ok": not self._closing}).encode()
            return _response(200, "application/json", body)
        if self.serve_pages and path in _PAGES:
            name, ctype = _PAGES[path]
            try:
                return _response(200, ctype, (WEB_DIR / name).read_bytes())
            except OSError:
                return _response(404, "text/plain; charset=utf-8", f"{name} is not installed\n".encode())
        return _response(404, "text/plain; charset=utf-8", b"not found\n")

    # ------------------------------------------------------------- sessions
    def _count_error(self, code: str) -> None:
        self.errors[code] = self.errors.get(code, 0) + 1

    async def _reject(self, ws: ServerConnection, code: str, reason: str) -> None:
        self._count_error(code)
        try:
            await ws.send(error_message(code, reason))
            await ws.close(CLOSE_CODES.get(code, 1008), reason[:120])
        except ConnectionClosed:
            pass

    async def _handler(self, ws: ServerConnection) -> None:
        peer = ws.remote_address
        if self._closing:
            await self._reject(ws, ErrorCode.SHUTTING_DOWN, "server is shutting down")
            return
        if len(self._connections) >= self.max_sessions:
            log.warning("refused %s: %d sessions open (max_sessions)", peer, len(self._connections))
            await self._reject(ws, ErrorCode.SERVER_FULL, f"server is full ({self.max_sessions} sessions); try again later")
            return
        self._connections.add(ws)
        session: Optional[Session] = None
        try:
            session = await self._open(ws)
            if session is not None:
                await self._serve_session(ws, session)
        except ProtocolError as exc:
            log.info("session %s from %s ended: %s", session.id if session else "-", peer, exc)
            if session is not None:
                self.batcher.remove(session)
            await self._reject(ws, exc.code, exc.reason)
        except ConnectionClosed:
            pass
        except Exception:
            log.exception("session handler crashed (%s)", peer)
            await self._reject(ws, ErrorCode.INTERNAL, "internal server error")
        finally:
            self._connections.discard(ws)
            self._authed.discard(id(ws))
            if session is not None:
                self.batcher.remove(session)
                self._sessions.pop(session.id, None)
                if getattr(session, "sender", None) is not None and not session.sender.done():
                    session.sender.cancel()

    def _check_size(self, msg: Any) -> None:
        if len(msg) > self.max_message_bytes:
            raise ProtocolError(
                ErrorCode.MESSAGE_TOO_BIG, f"message of {len(msg)} bytes exceeds the limit of {self.max_message_bytes} bytes"
            )

    async def _recv(self, ws: ServerConnection, timeout: Optional[float]) -> Any:
        if timeout is None:
            return await ws.recv()
        return await asyncio.wait_for(ws.recv(), max(0.0, timeout))

    async def _open(self, ws: ServerConnection) -> Optional[Session]:
        """Wait for a valid start message; returns the new Session."""
        try:
            msg = await self._recv(ws, self.idle_timeout_s)
        except asyncio.TimeoutError:
            await self._reject(ws, ErrorCode.IDLE_TIMEOUT, f"no start message within {self.idle_timeout_s} s")
            return None
        self._check_size(msg)
        if isinstance(msg, bytes):
            raise ProtocolError(ErrorCode.NOT_STARTED, "audio before the start message")
        d = parse_client_text(msg)
        if d["type"] != "start":
            raise ProtocolError(ErrorCode.NOT_STARTED, f"{d['type']!r} before the start message")
        start = StartMessage.from_dict(d)
        if self.token is not None and id(ws) not in self._authed:
            given = (start.token or "").encode()
            if not start.token or not hmac.compare_digest(given, self.token.encode()):
                raise ProtocolError(ErrorCode.UNAUTHORIZED, "a bearer token is required (Authorization header or start.token)" if not start.token else "wrong bearer token")
        cfg = self.rec.config
        if start.layer is not None and start.layer != cfg.feature_layer:
            raise ProtocolError(
                ErrorCode.UNSUPPORTED_LAYER,
                f"layer {start.layer} is not available; this model exports features of layer {cfg.feature_layer}",
            )
        if self._closing:
            raise ProtocolError(ErrorCode.SHUTTING_DOWN, "server is shutting down")
        stream = self.rec.create_stream()
        ep = start.endpoint
        stream.endpointer = Endpointer(
            EndpointConfig.with_times(ep.rule1_silence, ep.rule2_silence, ep.max_utterance, enabled=ep.enabled),
            cfg.frame_shift_s,
        )
        session = Session(start, stream, max_pending_samples=int(self.max_buffer_s * start.sample_rate))
        session.conn = ws  # type: ignore[attr-defined]
        self._sessions[session.id] = session
        self.sessions_total += 1
        await ws.send(
            json_message(
                type="ready",
                protocol=PROTOCOL_VERSION,
                session=session.id,
                sample_rate=cfg.sample_rate,
                chunk_ms=round(1000.0 * cfg.chunk_samples / cfg.sample_rate, 3),
                frame_shift_ms=round(1000.0 * cfg.frame_shift_s, 3),
                feature_dim=cfg.feature_dim,
                feature_layer=cfg.feature_layer,
                text=bool(self.rec.decode_text),
            )
        )
        log.info("session %d from %s: %s Hz %s x%d", session.id, ws.remote_address, start.sample_rate, start.format, start.channels)
        return session

    async def _serve_session(self, ws: ServerConnection, s: Session) -> None:
        s.sender = asyncio.create_task(self._sender(ws, s))  # type: ignore[attr-defined]
        self.batcher.add(s)
        deadline = None if self.max_session_s is None else s.created + self.max_session_s
        try:
            while s.end_reason is None:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    s.request_end("session_too_long")
                    break
                if not s.room.is_set():  # backpressure: stop reading until the batcher drains it
                    try:
                        await asyncio.wait_for(s.room.wait(), 0.5 if left is None else min(0.5, left))
                    except asyncio.TimeoutError:
                        pass
                    continue
                timeout = self.idle_timeout_s if left is None else (left if self.idle_timeout_s is None else min(left, self.idle_timeout_s))
                try:
                    msg = await self._recv(ws, timeout)
                except asyncio.TimeoutError:
                    if s.end_reason is None:
                        gone = deadline is not None and time.monotonic() >= deadline
                        s.request_end("session_too_long" if gone else "idle_timeout")
                    break
                if s.end_reason is not None:
                    break  # shutting down: audio after the flush started is not used
                self._check_size(msg)
                if isinstance(msg, bytes):
                    s.push_audio(decode_audio(msg, s.start))
                    self.batcher.notify()
                    continue
                d = parse_client_text(msg)
                if d["type"] == "start":
                    raise ProtocolError(ErrorCode.ALREADY_STARTED, "a second start message in one session")
                if d["type"] in END_TYPES:
                    s.request_end("end")
        except ConnectionClosed:
            s.closed = True  # the client went away; nothing to flush to
            raise
        self.batcher.notify()
        await s.sender  # type: ignore[attr-defined]   (it sends the finals, `done`, and closes)

    async def _sender(self, ws: ServerConnection, s: Session) -> None:
        while True:
            item = await s.out.get()
            if isinstance(item, Done):
                try:
                    await ws.send(json_message(type="done", reason=item.reason))
                    await ws.close(_DONE_CLOSE.get(item.reason, 1000), item.reason)
                except ConnectionClosed:
                    pass
                return
            try:
                await ws.send(item)
            except ConnectionClosed:
                return  # the client went away; the handler cleans up
            if s.pending and s.out.qsize() < s.max_out:
                self.batcher.notify()  # it may have skipped this session while its queue was full


def _response(status: int, ctype: str, body: bytes) -> Response:
    import http

    st = http.HTTPStatus(status)
    headers = Headers(
        [
            ("Date", email.utils.formatdate(usegmt=True)),
            ("Connection", "close"),
            ("Content-Length", str(len(body))),
            ("Content-Type", ctype),
            ("Cache-Control", "no-store"),
        ]
    )
    return Response(st.value, st.phrase, headers, body)


async def run_server(recognizer: Any, host: str = "127.0.0.1", port: int = 8765, *, ready: Any = None, **options: Any) -> int:
    """Run a Server until SIGINT/SIGTERM, then shut down gracefully; returns 0.

    ``ready``: optional callable(server) called once listening (e.g. to print the URL).
    """
    server = Server(recognizer, host, port, **options)
    await server.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread / not supported
            pass
    if ready is not None:
        ready(server)
    await stop.wait()
    await server.shutdown()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.remove_signal_handler(sig)
        except (NotImplementedError, RuntimeError):
            pass
    return 0
