"""The websocket recognition server (``websockets`` asyncio API).

    from wavstream.stream import Recognizer
    from wavstream.stream.server import Server

    async with Server(Recognizer.from_bundle("bundle"), port=0) as server:
        print(server.url)                # ws://127.0.0.1:<port>
        await server.serve_forever()     # or run_server(...) for signals

One connection = one session (docs/protocol.md). All sessions share one
Batcher (batcher.py): one inference loop that stacks the ready chunks of all
sessions into one engine call, in an executor. The same port serves the
browser demo page at ``/`` (stream/web/), JSON stats at ``/stats``, and
``/healthz`` (liveness) and ``/readyz`` (503 when full, overloaded or draining).

A connection goes through two stages, each with its own bounds:

- *pending*: from TCP accept through the handshake to a valid ``start``. At
  most ``max_pending`` connections (more are closed at once, before a byte is
  read), ``handshake_timeout_s`` for the handshake and ``start_timeout_s`` for
  the start. The token, Host and Origin are checked at the handshake, so an
  unauthenticated client never gets a websocket.
- *session*: after ``start``. At most ``max_sessions`` (by default sized from
  the engine's measured cost), each bounded by ``idle_timeout_s``,
  ``max_session_s``, ``max_buffer_s`` of input and ``max_out_bytes`` of output;
  a client that stops reading is dropped after ``idle_timeout_s``. A session
  whose results fall more than ``max_lag_s`` behind real time gets an
  ``overloaded`` notice, and while any does, new sessions are refused.

Security: binds 127.0.0.1 unless told otherwise; the Host header must name
this server (loopback names, IP literals, the bound name, ``allowed_hosts``),
which stops DNS rebinding; an Origin allow-list (this server's own page, no
Origin, and ``allowed_origins``); an optional bearer token (``Authorization:
Bearer T`` header, or the ``wavstream.auth.*`` subprotocol for browsers),
also required for ``/stats``; optional TLS (``ssl_context``, see tls_context()).
"""

from __future__ import annotations

import asyncio
import email.utils
import errno
import hmac
import http
import ipaddress
import json
import logging
import math
import resource
import signal
import ssl
import time
import urllib.parse
from pathlib import Path
from typing import Any, Awaitable, Mapping, Optional, Sequence, Union

import websockets
from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from ..ctc import StreamingCtcDecoder
from ..endpoint import EndpointConfig
from ..engines.ort import OrtEngine
from ..hotwords import MAX_HOTWORDS, Hotword, HotwordError, merge_hotwords, parse_hotwords, spellable
from .batcher import Batcher, measure_engine_cost, warm_engine
from ..protocol import (
    PROTOCOL_VERSION,
    SUBPROTOCOL,
    AudioReceived,
    EndReceived,
    ErrorCode,
    ProtocolError,
    SessionProtocol,
    token_from_subprotocols,
)
from .dialect import Dialect
from .session import Close, Session
from .sherpa import SherpaDialect
from .vosk import VoskDialect
from .wenet import WenetDialect

__all__ = ["Server", "run_server", "tls_context", "raise_open_file_limit", "WEB_DIR", "ENGINE_SHARE", "engine_share",
           "default_max_sessions"]

log = logging.getLogger("wavstream.server")

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
_PAGES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/worklet.js": ("worklet.js", "text/javascript; charset=utf-8"),
}
# Other projects' websocket protocols, each at its own path (protocol v1 keeps every other path).
DIALECTS: dict[str, type[Dialect]] = {"/vosk": VoskDialect, "/wenet": WenetDialect, "/sherpa": SherpaDialect}
_LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")
_WILDCARD_HOSTS = ("", "0.0.0.0", "::")

# Share of real time the engine may use at the default session limit. Measured knees (2-core
# machine, default model, 320 ms chunks, the cost measured at batch 32 as the server does; the most
# real-time sessions held at p95 < 200 ms): ONNX Runtime fp32 ~2.3 ms per stream-chunk, 96 held
# (~70 % of real time); ONNX Runtime int8 ~1.9 ms, 128 held (~75 %); OpenVINO bf16 ~0.7 ms, 176-192
# held (~41 %). The rest of a session's work (websocket I/O, resampling, CTC decoding) does not
# shrink with a cheaper engine, so the cheaper the engine, the lower the share at which the CPU
# runs out. Each share keeps ~20-30 % below its knee (start-up admitted ONNX Runtime fp32 76
# sessions, int8 88, OpenVINO bf16 143). OpenVINO at every precision, and the engines without a
# measured knee (CUDA, TensorRT, Triton), get the lower share.
ENGINE_SHARE = 0.3
ONNXRUNTIME_CPU_SHARE = 0.5


def engine_share(engine: Any) -> float:
    """The share of real time ``engine`` may use at the default session limit (see ENGINE_SHARE)."""
    if isinstance(engine, OrtEngine) and engine.device == "cpu":
        return ONNXRUNTIME_CPU_SHARE
    return ENGINE_SHARE


def default_max_sessions(recognizer: Any, max_batch: int = 32, limit: int = 256) -> tuple[int, dict[str, Any]]:
    """The default session limit: the real-time sessions whose chunks fit ``engine_share`` of real time
    in the engine, from its cost per stream-chunk measured at the batch it will run (at most 32).

    Blocking (it runs the engine): call it in the executor that runs the Batcher.
    Returns (sessions, the admission record that /stats shows).
    """
    cfg = recognizer.config
    chunk_s = cfg.chunk_samples / cfg.sample_rate
    share = engine_share(recognizer.engine)
    batch = min(max_batch, 32)
    cost = measure_engine_cost(recognizer, batch)
    n = int(share * chunk_s / cost) if cost > 0 else limit
    if n < batch:  # small batches cost more per stream: measure at the size that will run
        cost = measure_engine_cost(recognizer, max(1, n))
        n = int(share * chunk_s / cost) if cost > 0 else limit
    return max(1, min(limit, n)), {"source": "measured", "engine_ms_per_stream_chunk": round(1000.0 * cost, 4),
                                   "engine_share": share, "chunk_ms": round(1000.0 * chunk_s, 3)}


class _Connection(ServerConnection):
    """A ServerConnection that counts itself as *pending* until it starts a session or goes away.

    The count is kept on connection objects (a set of them), never on ``id()`` values, and every
    connection leaves it in connection_lost, which asyncio always calls.
    """

    owner: "Server"

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        srv = self.owner
        if len(srv._pending) >= srv.max_pending:
            # Refuse before reading a byte: half-open or idle sockets must not pile up until the
            # process runs out of file descriptors.
            srv.refused_pending += 1
            srv._warn_rate_limited("pending", "refusing connections: %d connections have not started a session (max_pending)",
                                   len(srv._pending))
            transport.abort()
            return
        srv._pending.add(self)

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self.owner._pending.discard(self)
        super().connection_lost(exc)


class Server:
    """A wavstream websocket server over one Recognizer. Use ``async with`` or start()/shutdown().

    Args:
        recognizer: a wavstream.stream.Recognizer (emit_features=True if clients may ask for features).
        host, port: where to listen; port 0 picks a free port (read ``server.port``).
        max_sessions: started sessions at once; None = sized at start() from the measured engine cost
            (``engine_share`` of real time, at most ``MAX_AUTO_SESSIONS``).
        max_pending: connections that have not started a session yet (handshake or waiting for start).
        start_timeout_s: time from the handshake to a valid start message.
        idle_timeout_s: a started session with no message for this long is flushed and closed; a client
            whose output has not drained for this long is dropped. None: no input timeout (output: 30 s).
        max_out_bytes: queued output per session before the batcher stops decoding it.
        max_lag_s: results this far behind real time: the session is told (`overloaded`) and new
            sessions are refused until it catches up. None: never.
        keepalive_s: websocket ping interval, and how long a pong may take.
        allowed_hosts: extra Host names (``name``, ``.domain`` for subdomains, ``*`` for any).
        allowed_origins: extra browser origins (``*`` for any); this server's own page is always allowed.
        token: bearer token required at the handshake (and for /stats).
        ssl_context: serve wss:// and https:// (see tls_context()).
        hotwords: phrases every session is biased towards ('phrase', 'phrase:score' or Hotword); a session's
            own ``hotwords`` in its start add to them (a phrase in both takes the session's score).
            Raises HotwordError (a ValueError) for a phrase the model cannot spell.
    """

    MAX_AUTO_SESSIONS = 256

    def __init__(
        self,
        recognizer: Any,
        host: str = "127.0.0.1",
        port: int = 8765,
        *,
        # Limits
        max_sessions: Optional[int] = None,
        max_pending: int = 128,
        max_message_bytes: int = 1 << 20,
        idle_timeout_s: Optional[float] = 30.0,
        start_timeout_s: float = 5.0,
        max_session_s: Optional[float] = 3600.0,
        max_buffer_s: float = 5.0,
        max_out_bytes: int = 1 << 20,
        max_lag_s: Optional[float] = 2.0,
        keepalive_s: float = 20.0,
        handshake_timeout_s: float = 5.0,
        shutdown_timeout_s: float = 10.0,
        # Security
        allowed_origins: Optional[Sequence[str]] = None,
        allowed_hosts: Optional[Sequence[str]] = None,
        token: Optional[str] = None,
        ssl_context: Optional[ssl.SSLContext] = None,
        # Batching
        max_batch: int = 32,
        max_wait_ms: float = 10.0,
        max_wait_busy_ms: Optional[float] = None,
        workers: int = 1,
        # Pages
        serve_pages: bool = True,
        # Other latencies of the same bundle, chosen per session ("latency_ms" in start)
        latencies: Optional[Mapping[int, Any]] = None,
        # Hotwords of every session (a session's own add to them)
        hotwords: Optional[Sequence[Union[str, Hotword]]] = None,
    ) -> None:
        if max_sessions is not None and max_sessions < 1:
            raise ValueError(f"max_sessions must be >= 1, got {max_sessions}")
        if max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, got {max_pending}")
        if max_message_bytes < 1024:
            raise ValueError(f"max_message_bytes must be >= 1024, got {max_message_bytes}")
        if max_out_bytes < 1024:
            raise ValueError(f"max_out_bytes must be >= 1024, got {max_out_bytes}")
        if max_wait_busy_ms is not None and max_wait_busy_ms < max_wait_ms:
            raise ValueError(f"max_wait_busy_ms ({max_wait_busy_ms:g}) must be >= max_wait_ms ({max_wait_ms:g})")
        for name, v in (("start_timeout_s", start_timeout_s), ("keepalive_s", keepalive_s),
                        ("handshake_timeout_s", handshake_timeout_s)):
            if not v > 0:
                raise ValueError(f"{name} must be > 0, got {v}")
        self.rec = recognizer
        # chunk ms -> recogniser; sessions pick one in their start message (the default: self.rec's).
        self.default_latency_ms = _chunk_ms(recognizer)
        self.recognizers: dict[int, Any] = {**dict(latencies or {}), self.default_latency_ms: recognizer}
        for ms, r in self.recognizers.items():
            if _chunk_ms(r) != ms or r.config.stride != recognizer.config.stride:
                raise ValueError(f"latencies[{ms}] runs {_chunk_ms(r)} ms chunks (stride {r.config.stride}); "
                                 f"expected {ms} ms at stride {recognizer.config.stride}")
        self.hotwords: list[Hotword] = parse_hotwords(hotwords or [])
        if self.hotwords and getattr(recognizer, "vocab", None) is not None:
            # Refuse an unspellable list now, not at every session's start.
            StreamingCtcDecoder(recognizer.vocab, "beam", 1, hotwords=self.hotwords)
        self.host = host
        self.port = port
        self.max_sessions: Optional[int] = max_sessions
        self.admission: dict[str, Any] = {"source": "configured"} if max_sessions is not None else {"source": "measured"}
        self.max_pending = max_pending
        self.max_message_bytes = max_message_bytes
        self.idle_timeout_s = idle_timeout_s
        self.start_timeout_s = start_timeout_s
        self.max_session_s = max_session_s
        self.max_buffer_s = max_buffer_s
        self.max_out_bytes = max_out_bytes
        self.max_lag_s = max_lag_s
        self.keepalive_s = keepalive_s
        self.handshake_timeout_s = handshake_timeout_s
        self.shutdown_timeout_s = shutdown_timeout_s
        # A client that reads nothing while its output waits is dropped after this long.
        self.stall_timeout_s = idle_timeout_s if idle_timeout_s else 30.0
        self.allowed_origins = list(allowed_origins) if allowed_origins else []
        self.allowed_hosts = [h.lower().rstrip(".") for h in (allowed_hosts or [])]
        self.token = token or None
        self.ssl_context = ssl_context
        self.serve_pages = serve_pages
        self.batcher = Batcher(recognizer, max_batch=max_batch, max_wait_s=max_wait_ms / 1000.0,
                               busy_wait_s=None if max_wait_busy_ms is None else max_wait_busy_ms / 1000.0,
                               workers=workers)
        self.started_at = time.time()
        self._ws: Any = None
        self._closing = False
        self._pending: set[ServerConnection] = set()  # TCP accepted, no session yet (see _Connection)
        self._connections: set[ServerConnection] = set()  # past the handshake
        self._sessions: dict[int, Session] = {}
        self._started: set[ServerConnection] = set()  # connections with a session
        self._monitor: Optional[asyncio.Task] = None
        self._warned: dict[str, float] = {}
        self.sessions_total = 0
        self.errors: dict[str, int] = {}
        self.refused_pending = 0  # connections closed at accept (max_pending)
        self.dropped_stalled = 0  # clients dropped because they stopped reading
        self.overload_notices = 0
        self._stopped = asyncio.Event()

    # ------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'wss' if self.ssl_context else 'ws'}://{host}:{self.port}"

    async def start(self) -> "Server":
        # An engine that compiles per batch shape (OpenVINO's static buckets) compiles every shape the
        # Batcher can run before the first client: else the first busy seconds pay 1-2 s per new shape.
        loop = asyncio.get_running_loop()
        for r in self.recognizers.values():
            await loop.run_in_executor(self.batcher._executor, warm_engine, r, self.batcher.max_batch)
        if self.max_sessions is None:
            await self._size_sessions()
        self.batcher.start()
        self._ws = await websockets.serve(
            self._handler,
            self.host,
            self.port,
            process_request=self._process_request,
            select_subprotocol=_select_subprotocol,
            create_connection=self._make_connection,
            server_header="wavstream",
            open_timeout=self.handshake_timeout_s,
            ssl=self.ssl_context,
            # No permessage-deflate: audio does not compress, and each connection would hold about
            # 300 KiB of zlib state and let a small upload inflate to a large message.
            compression=None,
            # Our own size check answers with an `error`; the library's hard cap (2x) closes with 1009
            # before a larger message is buffered. At most max_queue frames wait per connection before
            # the library stops reading its socket: input memory <= 2 x 2 x max_message_bytes.
            max_size=2 * self.max_message_bytes,
            max_queue=2,
            write_limit=1 << 16,
            ping_interval=self.keepalive_s,
            ping_timeout=self.keepalive_s,
            close_timeout=5,
        )
        sock = next(iter(self._ws.sockets))
        self.port = sock.getsockname()[1]
        if self.max_lag_s is not None:
            self._monitor = asyncio.get_running_loop().create_task(self._watch_lag(), name="wavstream-lag")
        log.info("wavstream server listening on %s (protocol %d, max_sessions %d)", self.url, PROTOCOL_VERSION, self.max_sessions)
        return self

    async def _size_sessions(self) -> None:
        """max_sessions from the engine's measured cost (``default_max_sessions``)."""
        loop = asyncio.get_running_loop()
        self.max_sessions, self.admission = await loop.run_in_executor(
            self.batcher._executor, default_max_sessions, self.rec, self.batcher.max_batch, self.MAX_AUTO_SESSIONS)

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
        if self._monitor is not None:
            self._monitor.cancel()
        if self._ws is not None:
            self._ws.close(close_connections=False)  # stop listening; keep open connections
        for s in list(self._sessions.values()):
            s.request_end("shutting_down")
        self.batcher.notify()
        for conn in list(self._connections):  # connected but no start yet: nothing to flush
            if conn not in self._started:
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
    def readiness(self) -> tuple[bool, str]:
        """(ready, reason): reason is "draining", "full", "overloaded" or "ok" (what /readyz answers)."""
        if self._closing:
            return False, "draining"
        if self.max_sessions is not None and len(self._sessions) >= self.max_sessions:
            return False, "full"
        if self._lagging():
            return False, "overloaded"
        return True, "ok"

    def stats(self) -> dict:
        cfg = self.rec.config
        d = {
            "protocol": PROTOCOL_VERSION,
            "uptime_s": round(time.time() - self.started_at, 3),
            "connections": len(self._connections),
            "pending": len(self._pending),
            "sessions_active": len(self._sessions),
            "sessions_total": self.sessions_total,
            "max_sessions": self.max_sessions,
            "admission": {**self.admission, "max_sessions": self.max_sessions, "max_lag_s": self.max_lag_s,
                          "lagging_sessions": len(self._lagging()), "overload_notices": self.overload_notices},
            "refused_pending": self.refused_pending,
            "dropped_stalled": self.dropped_stalled,
            "errors": dict(self.errors),
            "model": {
                # The folder name only: an absolute path tells a caller about the host's file system.
                "name": Path(str(getattr(self.rec.bundle, "path", "") or "")).name,
                "chunk_ms": round(1000.0 * cfg.chunk_samples / cfg.sample_rate, 3),
                "latencies_ms": sorted(self.recognizers),
                "feature_dim": cfg.feature_dim,
            },
        }
        d.update(self.batcher.stats.to_dict())
        b = self.batcher
        d["batching"] = {"max_batch": b.max_batch, "max_wait_ms": round(1000.0 * b.max_wait_s, 3),
                         "max_wait_busy_ms": round(1000.0 * b.busy_wait_s, 3), "target_batch": b.target_batch,
                         "workers": b.workers,
                         "wait_ms_now": round(1000.0 * b.wait_s(), 3)}
        return d

    # ------------------------------------------------------------ overload
    def _lagging(self) -> list[Session]:
        """Sessions whose results are more than max_lag_s behind (slow readers excluded: their lag is their own)."""
        if self.max_lag_s is None:
            return []
        now = time.monotonic()
        return [s for s in self._sessions.values()
                if s.is_open and not s.output_full and s.lag_s(now, s.stream.chunk_samples) > self.max_lag_s]

    async def _watch_lag(self) -> None:
        """Every fraction of max_lag_s: tell sessions that fell behind (see _tell_lagging)."""
        assert self.max_lag_s is not None
        interval = min(0.25, self.max_lag_s / 2)
        while True:
            await asyncio.sleep(interval)
            self._tell_lagging()  # a separate frame: no session stays referenced while this task sleeps

    def _tell_lagging(self) -> None:
        """Queue `overloaded` once per episode for each session behind by max_lag_s (the episode ends below half)."""
        assert self.max_lag_s is not None
        now = time.monotonic()
        for s in list(self._sessions.values()):
            if not s.is_open or s.output_full:
                continue
            lag = s.lag_s(now, s.stream.chunk_samples)
            if lag > self.max_lag_s and not s.overload_told:
                s.overload_told = True
                self.overload_notices += 1
                s.notify_overloaded(lag, self.max_lag_s)
                log.warning("session %d: results %.1f s behind real time (max_lag %.1f s)", s.id, lag, self.max_lag_s)
            elif lag < self.max_lag_s / 2:
                s.overload_told = False

    # ----------------------------------------------------- HTTP / handshake
    def _make_connection(self, *args: Any, **kwargs: Any) -> ServerConnection:
        conn = _Connection(*args, **kwargs)
        conn.owner = self
        return conn

    def _warn_rate_limited(self, key: str, msg: str, *args: Any, every_s: float = 10.0) -> None:
        now = time.monotonic()
        if now - self._warned.get(key, -math.inf) >= every_s:
            self._warned[key] = now
            log.warning(msg, *args)

    def _host_ok(self, host_header: Optional[str]) -> bool:
        """The Host header names this server. A DNS-rebinding page has its own name here, so this is checked
        before the Origin (which such a page sets equal to Host)."""
        name = _host_name(host_header)
        if name is None:
            return False
        if "*" in self.allowed_hosts or name in _LOOPBACK_NAMES or name.endswith(".localhost"):
            return True
        try:
            ipaddress.ip_address(name)
            return True  # an IP literal cannot be rebound to another address
        except ValueError:
            pass
        if self.host.lower() not in _WILDCARD_HOSTS and name == self.host.lower().rstrip("."):
            return True
        return any(name == h or (h.startswith(".") and (name.endswith(h) or name == h[1:])) for h in self.allowed_hosts)

    def _origin_ok(self, request: Request) -> bool:
        origin = request.headers.get("Origin")
        if origin is None or "*" in self.allowed_origins or origin in self.allowed_origins:
            return True  # non-browser clients send no Origin
        # This server's own page. Host was checked first, so it really is this server.
        parsed = urllib.parse.urlsplit(origin)
        scheme = "https" if self.ssl_context else "http"
        return parsed.scheme == scheme and parsed.netloc.lower() == request.headers.get("Host", "").lower()

    def _token_ok(self, request: Request, *, subprotocol: bool) -> bool:
        if self.token is None:
            return True
        auth = request.headers.get("Authorization")
        given: Optional[str] = None
        if auth is not None:
            scheme, _, value = auth.partition(" ")
            given = value.strip() if scheme.lower() == "bearer" else None
        elif subprotocol:
            given = token_from_subprotocols(_offered_subprotocols(request.headers))
        return given is not None and hmac.compare_digest(given.encode("utf-8"), self.token.encode("utf-8"))

    def _process_request(self, connection: ServerConnection, request: Request) -> Optional[Response]:
        if not self._host_ok(request.headers.get("Host")):
            self._warn_rate_limited("host", "refused a request for Host %r (not this server; see --allow-host)",
                                    request.headers.get("Host"))
            return _response(403, "text/plain; charset=utf-8", b"this Host is not served here\n")
        path = urllib.parse.urlsplit(request.path).path
        if "websocket" not in request.headers.get("Upgrade", "").lower():
            return self._http(request, path)
        if not self._origin_ok(request):
            self._warn_rate_limited("origin", "refused websocket from origin %r", request.headers.get("Origin"))
            return _response(403, "text/plain; charset=utf-8", b"this Origin is not allowed\n")
        if not self._token_ok(request, subprotocol=True):
            self._count_error(ErrorCode.UNAUTHORIZED)
            log.info("refused websocket from %s: missing or wrong bearer token", connection.remote_address)
            resp = _response(401, "text/plain; charset=utf-8",
                             b"a bearer token is required: Authorization header or the wavstream.auth subprotocol\n")
            resp.headers["WWW-Authenticate"] = 'Bearer realm="wavstream"'
            return resp
        return None

    def _http(self, request: Request, path: str) -> Response:
        if request.method not in ("GET", "HEAD"):
            resp = _response(405, "text/plain; charset=utf-8", b"only GET and HEAD\n")
            resp.headers["Allow"] = "GET, HEAD"
            return resp
        resp = self._page(request, path)
        if request.method == "HEAD":  # the same headers (Content-Length included), no body
            resp = Response(resp.status_code, resp.reason_phrase, resp.headers, b"")
        return resp

    def _page(self, request: Request, path: str) -> Response:
        if path == "/healthz":  # liveness: the process answers
            return _json_response(200, {"ok": True, "draining": self._closing})
        if path == "/readyz":  # readiness, for load balancers: room for one more session now
            ready, reason = self.readiness()
            return _json_response(200 if ready else 503, {"ready": ready, "reason": reason})
        if path == "/stats":
            if not self._token_ok(request, subprotocol=False):
                resp = _response(401, "text/plain; charset=utf-8", b"a bearer token is required\n")
                resp.headers["WWW-Authenticate"] = 'Bearer realm="wavstream"'
                return resp
            return _json_response(200, self.stats())
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

    async def _reject(self, ws: ServerConnection, code: str, reason: str, proto: Optional[SessionProtocol] = None) -> None:
        """Send ``error`` and close. ``proto``: the connection's protocol, if it already holds the error."""
        if proto is None or proto.error_code is None:
            proto = self._protocol(_path(ws))  # the error in the client's own dialect
            proto.fail(code, reason)
        self._count_error(code)
        try:
            # Bounded: a client that reads nothing must not keep this connection (and its slot) open.
            for msg in proto.data_to_send():
                await asyncio.wait_for(ws.send(msg), self.stall_timeout_s)
            await asyncio.wait_for(ws.close(proto.close_code or 1008, proto.close_reason), self.stall_timeout_s)
        except (ConnectionClosed, OSError):
            pass
        except asyncio.TimeoutError:
            ws.transport.abort()

    def _protocol(self, path: str = "/") -> Any:
        """The connection's protocol: a dialect at its path (``DIALECTS``), protocol v1 everywhere else."""
        dialect = DIALECTS.get(path.rstrip("/"))
        if dialect is not None:
            return dialect(max_message_bytes=self.max_message_bytes)
        return SessionProtocol(max_message_bytes=self.max_message_bytes, feature_layer=self.rec.config.feature_layer,
                               latencies_ms=sorted(self.recognizers))

    async def _handler(self, ws: ServerConnection) -> None:
        peer = ws.remote_address
        self._connections.add(ws)
        session: Optional[Session] = None
        proto = self._protocol(_path(ws))
        try:
            if self._closing:
                await self._reject(ws, ErrorCode.SHUTTING_DOWN, "server is shutting down")
                return
            session = await self._open(ws, proto)
            if session is not None:
                await self._serve_session(ws, session)
        except ProtocolError as exc:
            log.info("session %s from %s ended: %s", session.id if session else "-", peer, exc)
            if session is not None:
                self.batcher.remove(session)
            await self._reject(ws, exc.code, exc.reason, proto)
        except ConnectionClosed:
            pass
        except Exception:
            log.exception("session handler crashed (%s)", peer)
            await self._reject(ws, ErrorCode.INTERNAL, "internal server error")
        finally:
            self._connections.discard(ws)
            self._pending.discard(ws)
            self._started.discard(ws)
            if session is not None:
                self.batcher.remove(session)
                self._sessions.pop(session.id, None)
                if session.sender is not None and not session.sender.done():
                    session.sender.cancel()

    async def _recv(self, ws: ServerConnection, timeout: Optional[float]) -> Any:
        if timeout is None:
            return await ws.recv()
        return await _within(ws.recv(), max(0.0, timeout))

    async def _open(self, ws: ServerConnection, proto: SessionProtocol) -> Optional[Session]:
        """Wait for a valid start message; returns the new Session."""
        # v1: the first message must be a valid start (the protocol raises otherwise). A dialect may
        # start with its first audio (Vosk, sherpa-onnx), after optional configuration messages.
        deadline = time.monotonic() + self.start_timeout_s
        first: list = []
        while proto.start is None:
            try:
                msg = await self._recv(ws, deadline - time.monotonic())
            except asyncio.TimeoutError:
                await self._reject(ws, ErrorCode.IDLE_TIMEOUT, f"no start message within {self.start_timeout_s} s")
                return None
            first = proto.receive_bytes(msg) if isinstance(msg, bytes) else proto.receive_text(msg)
        start = proto.start
        assert start is not None
        rec = self.recognizers[start.latency_ms if start.latency_ms is not None else self.default_latency_ms]
        cfg = rec.config
        if self._closing:
            raise ProtocolError(ErrorCode.SHUTTING_DOWN, "server is shutting down")
        assert self.max_sessions is not None  # set by start()
        if len(self._sessions) >= self.max_sessions:
            self._warn_rate_limited("full", "refusing sessions: %d open (max_sessions)", len(self._sessions), every_s=5.0)
            raise ProtocolError(ErrorCode.SERVER_FULL, f"server is full ({self.max_sessions} sessions); try again later")
        lagging = self._lagging()
        if lagging:
            raise ProtocolError(
                ErrorCode.SERVER_FULL,
                f"server is overloaded ({len(lagging)} session(s) more than {self.max_lag_s} s behind real time); try again later",
            )
        # No await between the checks above and registering the session: no other start can slip in.
        ep = start.endpoint
        try:
            stream = rec.create_stream(
                endpoint=EndpointConfig.with_times(ep.rule1_silence, ep.rule2_silence, ep.max_utterance, enabled=ep.enabled),
                # A dialect's lists were made for another engine: unspellable phrases are left out, not refused.
                hotwords=merge_hotwords(
                    self.hotwords,
                    spellable(start.hotwords, cfg.vocab, MAX_HOTWORDS - len(self.hotwords)) if isinstance(proto, Dialect)
                    else start.hotwords)
                or None,
            )
        except HotwordError as exc:  # e.g. a letter the model cannot spell, a bad ':score'
            raise ProtocolError(ErrorCode.BAD_START, f"'hotwords': {exc}") from None
        session = Session(proto, stream, max_pending_samples=int(self.max_buffer_s * start.sample_rate),
                          max_out_bytes=self.max_out_bytes, recognizer=rec)
        self._sessions[session.id] = session
        self._started.add(ws)
        self._pending.discard(ws)
        self.sessions_total += 1
        proto.send_ready(
            session=session.id,
            sample_rate=cfg.sample_rate,
            chunk_ms=round(1000.0 * cfg.chunk_samples / cfg.sample_rate, 3),
            frame_shift_ms=round(1000.0 * cfg.frame_shift_s, 3),
            feature_dim=cfg.feature_dim,
            feature_layer=cfg.feature_layer,
            text=bool(rec.decode_text),
        )
        for ev in first:  # what came with the message that started a dialect's session
            if isinstance(ev, AudioReceived):
                session.push_audio(ev.samples)
            elif isinstance(ev, EndReceived):
                session.request_end(ev.reason)
        for m in proto.data_to_send():
            await ws.send(m)
        log.info("session %d from %s: %s Hz %s x%d", session.id, ws.remote_address, start.sample_rate, start.format, start.channels)
        return session

    def _drop(self, ws: ServerConnection, s: Session, why: str) -> None:
        """Close a client that stopped reading, without waiting for it (a close handshake would wait too)."""
        if not s.is_closed:
            s.close()
            self.dropped_stalled += 1
            log.info("session %d: dropped, %s", s.id, why)
        ws.transport.abort()

    async def _serve_session(self, ws: ServerConnection, s: Session) -> None:
        s.sender = sender = asyncio.create_task(self._sender(ws, s))
        self.batcher.add(s)
        if s.pending or not s.is_open:
            self.batcher.notify()  # a dialect's first message carried audio (or the end)
        closed = asyncio.ensure_future(ws.wait_closed())
        deadline = None if self.max_session_s is None else s.created + self.max_session_s
        try:
            while s.is_open:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    s.request_end("session_too_long")
                    break
                if not s.room.is_set():  # backpressure: stop reading until the batcher drains the buffer
                    if not await self._wait_for_room(ws, s, closed, left):
                        return  # the connection or its sender is gone: nothing to flush to
                    continue
                timeout = self.idle_timeout_s if left is None else (left if self.idle_timeout_s is None else min(left, self.idle_timeout_s))
                try:
                    msg = await self._recv(ws, timeout)
                except asyncio.TimeoutError:
                    if s.is_open:
                        gone = deadline is not None and time.monotonic() >= deadline
                        s.request_end("session_too_long" if gone else "idle_timeout")
                    break
                if not s.is_open:
                    break  # shutting down: audio after the flush started is not used
                events = s.protocol.receive_bytes(msg) if isinstance(msg, bytes) else s.protocol.receive_text(msg)
                s.flush()  # a dialect's reply to this message (Vosk answers every one)
                for ev in events:
                    if isinstance(ev, AudioReceived):
                        s.push_audio(ev.samples)
                        if s.chunk_due:  # a packet that completes no chunk wakes nothing
                            self.batcher.notify()
                    elif isinstance(ev, EndReceived):
                        s.request_end(ev.reason)
            self.batcher.notify()
            await sender  # it sends the finals, `done`, and closes
        except ConnectionClosed:
            s.close()  # the client went away; nothing to flush to
            raise
        finally:
            closed.cancel()

    async def _wait_for_room(self, ws: ServerConnection, s: Session, closed: asyncio.Future, left: Optional[float]) -> bool:
        """Wait until the input buffer has room again; False if the connection or the sender ended first.

        A client whose output stays full (it does not read) for idle_timeout_s is dropped here too.
        """
        t0 = time.monotonic()
        room = asyncio.ensure_future(s.room.wait())
        assert s.sender is not None
        try:
            while True:
                timeout = 0.5 if left is None else max(0.0, min(0.5, left - (time.monotonic() - t0)))
                await asyncio.wait({room, closed, s.sender}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                if closed.done() or s.sender.done():
                    s.close()
                    return False
                if room.done():
                    return True
                if left is not None and time.monotonic() - t0 >= left:
                    return True  # the caller ends the session (max_session_s)
                if s.output_full and time.monotonic() - t0 >= self.stall_timeout_s:
                    self._drop(ws, s, f"its output stayed full for {self.stall_timeout_s:g} s (it does not read)")
                    return False
        finally:
            room.cancel()

    async def _sender(self, ws: ServerConnection, s: Session) -> None:
        while True:
            item = await s.get_out()
            try:
                if isinstance(item, Close):
                    await asyncio.wait_for(ws.close(item.code, item.reason), self.stall_timeout_s)
                    return
                # A send waits while the socket's buffers are full; one that waits this long means the client
                # stopped reading (keepalive pings wait behind the same buffer, so they cannot tell).
                await _within(ws.send(item), self.stall_timeout_s)
            except asyncio.TimeoutError:
                self._drop(ws, s, f"nothing it was sent was read for {self.stall_timeout_s:g} s")
                return
            except ConnectionClosed:
                return  # the client went away; the handler cleans up
            if s.chunk_due and not s.output_full:
                self.batcher.notify()  # it may have skipped this session while its queue was full


if hasattr(asyncio, "timeout"):  # Python 3.11+
    async def _within(aw: Awaitable[Any], timeout: float) -> Any:
        """``asyncio.wait_for`` without its task per call: every message in and out goes through here."""
        async with asyncio.timeout(timeout):
            return await aw
else:  # pragma: no cover  (Python 3.10)
    async def _within(aw: Awaitable[Any], timeout: float) -> Any:
        return await asyncio.wait_for(aw, timeout)


def _chunk_ms(rec: Any) -> int:
    return int(round(1000.0 * rec.config.chunk_samples / rec.config.sample_rate))


def _path(ws: ServerConnection) -> str:
    request = getattr(ws, "request", None)
    return urllib.parse.urlsplit(request.path).path if request is not None else "/"


def _select_subprotocol(connection: ServerConnection, offered: Sequence[str]) -> Optional[str]:
    # Answer wavstream.v1 when offered (a browser that offers subprotocols fails on no answer);
    # never echo the auth subprotocol: the token would come back in a response header.
    return SUBPROTOCOL if SUBPROTOCOL in offered else None


def _offered_subprotocols(headers: Headers) -> list[str]:
    return [p.strip() for v in headers.get_all("Sec-WebSocket-Protocol") for p in v.split(",") if p.strip()]


def _host_name(host_header: Optional[str]) -> Optional[str]:
    """'Name:port', '[v6]:port' or 'name' -> lower-case name without port, brackets or trailing dot; None if unusable."""
    if not host_header:
        return None
    h = host_header.strip().lower()
    if h.startswith("["):
        end = h.find("]")
        return h[1:end] if end > 1 else None
    if h.count(":") > 1:  # a bare IPv6 address (not valid in Host, but unambiguous)
        return h
    return h.partition(":")[0].rstrip(".") or None


def _response(status: int, ctype: str, body: bytes) -> Response:
    st = http.HTTPStatus(status)
    headers = Headers(
        [
            ("Date", email.utils.formatdate(usegmt=True)),
            ("Connection", "close"),
            ("Content-Length", str(len(body))),
            ("Content-Type", ctype),
            ("Cache-Control", "no-store"),
            ("X-Content-Type-Options", "nosniff"),
        ]
    )
    return Response(st.value, st.phrase, headers, body)


def _json_response(status: int, obj: Any) -> Response:
    return _response(status, "application/json", json.dumps(obj).encode())


def tls_context(certfile: Union[str, Path], keyfile: Optional[Union[str, Path]] = None) -> ssl.SSLContext:
    """A server-side TLS context from a PEM certificate (chain) and its private key.

    Raises:
        OSError / ssl.SSLError: a file is missing or is not a matching certificate and key.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(certfile), None if keyfile is None else str(keyfile))
    return ctx


def raise_open_file_limit() -> tuple[int, int]:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit (each connection is a file); returns (soft, hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):  # e.g. an unlimited hard limit the kernel caps lower
            pass
    return soft, hard


_ACCEPT_ERRNOS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


def _quiet_accept_errors(loop: asyncio.AbstractEventLoop, warned: dict) -> Any:
    """A loop exception handler: out of file descriptors at accept() gets one warning line per 10 s, not a
    traceback per refused connection (asyncio retries the accept by itself)."""

    def handler(lp: asyncio.AbstractEventLoop, context: dict) -> None:
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in _ACCEPT_ERRNOS and "accept" in str(context.get("message", "")):
            now = time.monotonic()
            if now - warned.get("accept", -math.inf) >= 10.0:
                warned["accept"] = now
                log.warning("cannot accept connections: %s (open file limit %d)", exc.strerror,
                            resource.getrlimit(resource.RLIMIT_NOFILE)[0])
            return
        lp.default_exception_handler(context)

    return handler


async def run_server(recognizer: Any, host: str = "127.0.0.1", port: int = 8765, *, ready: Any = None,
                     attach: Any = None, **options: Any) -> int:
    """Run a Server until SIGINT/SIGTERM, then shut down gracefully; returns 0.

    As the process's main program it also raises the open-file limit to its hard limit and
    turns accept() failures into rate-limited warnings. ``ready``: optional callable(server)
    called once listening (e.g. to print the URL). ``attach``: optional async callable(server)
    that starts a companion on the same Batcher (the Wyoming server) and returns an async
    callable that stops it, before the server shuts down.
    """
    raise_open_file_limit()
    loop = asyncio.get_running_loop()
    previous_handler = loop.get_exception_handler()
    loop.set_exception_handler(_quiet_accept_errors(loop, {}))
    server = Server(recognizer, host, port, **options)
    await server.start()
    detach = None
    if attach is not None:
        try:
            detach = await attach(server)
        except BaseException:
            await server.shutdown()
            loop.set_exception_handler(previous_handler)
            raise
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread / not supported
            pass
    if ready is not None:
        ready(server)
    await stop.wait()
    if detach is not None:
        await detach()
    await server.shutdown()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.remove_signal_handler(sig)
        except (NotImplementedError, RuntimeError):
            pass
    loop.set_exception_handler(previous_handler)
    return 0
