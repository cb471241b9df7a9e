"""The wavstream websocket protocol, version 1: messages, error codes, feature frames.

Shared by the server, the Python client and the tests; docs/protocol.md is
the readable form of this module. No I/O here (websockets-style Sans-I/O):
functions take bytes/dicts and return values or raise ``ProtocolError``.

Client -> server
    (handshake) bearer token, when the server requires one: an ``Authorization: Bearer T``
           header, or, for browsers, the subprotocols ``wavstream.v1`` and ``auth_subprotocol(T)``
    text   {"type": "start", "protocol": 1, "sample_rate": 16000, "format": "int16",
            "channels": 1, "features": false, "feature_dtype": "float16",
            "layer": null, "endpoint": {...}}  (+ optional "words", "latency_ms", "hotwords")
    binary audio: little-endian int16 or float32 samples (interleaved when
           channels > 1), any whole number of sample frames per message
    text   {"type": "end"}  (alias "eof"): decode the rest now, answer, close

Server -> client
    text   {"type": "ready", ...}                  after a valid start
    text   {"type": "partial", "text", "segment"}  hypothesis of the utterance in progress
    text   {"type": "overloaded", "lag_s", "max_lag_s"}  results fell behind real time (a notice)
    text   {"type": "final", "text", "start", "end", "segment"}  (+ "words" if the start asked)
    binary feature frame: FEATURE_HEADER then (frames, dim) float16/float32
    text   {"type": "error", "code", "reason"}     then the server closes
    text   {"type": "done", "reason"}              after the last final; then close 1000

Typed messages both ways: ``StartMessage`` and ``EndMessage`` from the
client; ``Ready``, ``Partial``, ``Final``, ``Features``, ``Overloaded``,
``Done`` and ``ErrorMessage`` from the server (Partial, Final and Features are
the recogniser's own events, stream/events.py). ``encode_server_message`` is
the one place that builds a server message; ``parse_server_message`` reads
one back (the client and the load benchmark use it). ``CLOSE_CODES`` and
``DONE_CLOSE_CODES`` are the one list of close codes.

``SessionProtocol`` is one session's protocol as a state machine with no I/O
(the websockets library's own protocol class is the model): the server feeds
it what came off the socket (``receive_text``, ``receive_bytes``) and gets
typed client events back; it tells it what the recogniser produced
(``send_events``, ``send_ready``, ``send_done``...) and takes the wire
messages to write from ``data_to_send()``. The server (stream/server/app.py)
keeps sockets, HTTP, authentication and limits.

Why here, in ``stream/`` and not ``stream/server/``: the wire format belongs
to both ends. The client (stream/client.py) and the server package each
import it, and neither imports the other; importing the client does not load
the server (app.py, the batcher) and importing this module loads no websockets.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import math
import struct
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence, Union

import numpy as np

from .errors import WavstreamError
from .events import Event, Features, Final, Partial, Word
from .hotwords import MAX_HOTWORD_CHARS, MAX_HOTWORDS

__all__ = [
    "PROTOCOL_VERSION",
    "MIN_SAMPLE_RATE",
    "MAX_SAMPLE_RATE",
    "MAX_CHANNELS",
    "END_TYPES",
    "ErrorCode",
    "CLOSE_CODES",
    "ProtocolError",
    "EndpointSettings",
    "StartMessage",
    "parse_client_text",
    "decode_audio",
    "FEATURE_MAGIC",
    "FEATURE_HEADER",
    "FEATURE_HEADER_SIZE",
    "pack_features",
    "unpack_features",
    "close_reason",
    "short_repr",
    "SUBPROTOCOL",
    "AUTH_SUBPROTOCOL_PREFIX",
    "auth_subprotocol",
    "token_from_subprotocols",
    "MAX_FLOAT_SAMPLE",
    "State",
    "StartReceived",
    "AudioReceived",
    "EndReceived",
    "ClientEvent",
    "SessionProtocol",
    "END_TEXT",
    "DONE_CLOSE_CODES",
    "EndMessage",
    "ClientMessage",
    "Ready",
    "Overloaded",
    "Done",
    "ErrorMessage",
    "ServerMessage",
    "ServerMessageError",
    "encode_server_message",
    "parse_server_message",
]

PROTOCOL_VERSION = 1
MIN_SAMPLE_RATE = 8000  # Hz; rates outside 8-48 kHz are refused (bad_sample_rate)
MAX_SAMPLE_RATE = 48000
MAX_CHANNELS = 8
END_TYPES = ("end", "eof")  # both flush and finish the session
FORMATS = {"int16": np.dtype("<i2"), "float32": np.dtype("<f4")}
# float32 samples are in [-1, 1]. A little beyond (resampling or filter overshoot) is clipped; beyond
# this, the client almost certainly sent the wrong scale (e.g. int16 values as floats), and clipping
# would turn its speech into a square wave and a wrong transcript, so the session is refused instead.
MAX_FLOAT_SAMPLE = 16.0
SUBPROTOCOL = "wavstream.v1"  # what the server answers when a client offers it (browsers need an answer)
AUTH_SUBPROTOCOL_PREFIX = "wavstream.auth."  # + the token, base64url without padding
CLOSE_REASON_BYTES = 123  # RFC 6455: a close frame's payload is at most 125 bytes, 2 of them the code


class ErrorCode:
    """The ``code`` field of an ``error`` message (stable strings; see docs/protocol.md)."""

    BAD_JSON = "bad_json"  # a text message that is not a JSON object
    UNKNOWN_MESSAGE = "unknown_message"  # JSON with a missing or unknown "type"
    BAD_START = "bad_start"  # a start field with a wrong type or value
    UNSUPPORTED_VERSION = "unsupported_version"  # "protocol" newer than the server's
    BAD_SAMPLE_RATE = "bad_sample_rate"  # outside 8000..48000 Hz or not an integer
    BAD_FORMAT = "bad_format"  # "format" not int16/float32, bad channels, or feature dtype
    UNSUPPORTED_LAYER = "unsupported_layer"  # "layer" other than the bundle's feature layer
    UNSUPPORTED_LATENCY = "unsupported_latency"  # "latency_ms" the server's model does not serve
    NOT_STARTED = "not_started"  # audio or end before start
    ALREADY_STARTED = "already_started"  # a second start
    PARTIAL_SAMPLE = "partial_sample"  # binary length not a whole number of sample frames
    NON_FINITE = "non_finite"  # NaN or infinite float32 samples
    OUT_OF_RANGE = "out_of_range"  # float32 samples far outside [-1, 1] (the wrong scale)
    MESSAGE_TOO_BIG = "message_too_big"  # a message over the server's max_message_bytes
    UNAUTHORIZED = "unauthorized"  # bearer token missing or wrong
    SERVER_FULL = "server_full"  # max_sessions reached; try again later
    IDLE_TIMEOUT = "idle_timeout"  # no message for idle_timeout_s
    SESSION_TOO_LONG = "session_too_long"  # max_session_s reached (finals were sent first)
    SHUTTING_DOWN = "shutting_down"  # the server is stopping (finals were sent first)
    INTERNAL = "internal"  # a server bug; logged


# Websocket close code that follows each error (RFC 6455 section 7.4.1).
CLOSE_CODES = {
    ErrorCode.BAD_JSON: 1008,  # policy violation
    ErrorCode.UNKNOWN_MESSAGE: 1008,
    ErrorCode.BAD_START: 1008,
    ErrorCode.UNSUPPORTED_VERSION: 1008,
    ErrorCode.BAD_SAMPLE_RATE: 1008,
    ErrorCode.BAD_FORMAT: 1008,
    ErrorCode.UNSUPPORTED_LAYER: 1008,
    ErrorCode.UNSUPPORTED_LATENCY: 1008,
    ErrorCode.NOT_STARTED: 1008,
    ErrorCode.ALREADY_STARTED: 1008,
    ErrorCode.PARTIAL_SAMPLE: 1007,  # invalid frame payload data
    ErrorCode.NON_FINITE: 1007,
    ErrorCode.OUT_OF_RANGE: 1007,
    ErrorCode.MESSAGE_TOO_BIG: 1009,  # message too big
    ErrorCode.UNAUTHORIZED: 1008,
    ErrorCode.SERVER_FULL: 1013,  # try again later
    ErrorCode.IDLE_TIMEOUT: 1000,
    ErrorCode.SESSION_TOO_LONG: 1000,
    ErrorCode.SHUTTING_DOWN: 1001,  # going away
    ErrorCode.INTERNAL: 1011,  # internal error
}


class ProtocolError(WavstreamError, ValueError):
    """A client broke the protocol: ``code`` (an ErrorCode) and a ``reason`` naming the problem."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason

    @property
    def close_code(self) -> int:
        return CLOSE_CODES.get(self.code, 1008)


@dataclass(frozen=True)
class EndpointSettings:
    enabled: bool = True
    rule1_silence: float = 2.4  # s of silence ending an utterance with nothing decoded
    rule2_silence: float = 1.2  # s of silence ending an utterance after speech
    max_utterance: float = 20.0  # s; longer utterances are cut


@dataclass(frozen=True)
class StartMessage:
    protocol: int = PROTOCOL_VERSION
    sample_rate: int = 16000
    format: str = "int16"  # int16 | float32 (little-endian)
    channels: int = 1  # interleaved; mixed down to mono
    features: bool = False  # send binary feature frames
    feature_dtype: str = "float16"  # float16 | float32
    layer: Optional[int] = None  # None = the bundle's feature layer
    words: bool = False  # finals carry their words' times and confidences
    latency_ms: Optional[int] = None  # chunk size to decode with (None = the server's default)
    hotwords: tuple[str, ...] = ()  # phrases to bias decoding towards ('phrase' or 'phrase:score')
    endpoint: EndpointSettings = field(default_factory=EndpointSettings)
    # Not read by servers since the token moved to the handshake (Authorization header or
    # subprotocol); still parsed so that old clients that send it are not refused for it.
    token: Optional[str] = None

    @property
    def sample_dtype(self) -> np.dtype:
        return FORMATS[self.format]

    @property
    def frame_bytes(self) -> int:
        """Bytes of one sample frame (all channels)."""
        return self.sample_dtype.itemsize * self.channels

    def to_json(self) -> str:
        """The start message as the client sends it."""
        return json.dumps(self.to_dict())

    def to_dict(self) -> dict:
        d: dict[str, Any] = {
            "type": "start",
            "protocol": self.protocol,
            "sample_rate": self.sample_rate,
            "format": self.format,
            "channels": self.channels,
            "features": self.features,
            "feature_dtype": self.feature_dtype,
            "layer": self.layer,
            "endpoint": {
                "enabled": self.endpoint.enabled,
                "rule1_silence": self.endpoint.rule1_silence,
                "rule2_silence": self.endpoint.rule2_silence,
                "max_utterance": self.endpoint.max_utterance,
            },
        }
        # Newer optional fields only when set: a start that uses none keeps its original v1 bytes.
        if self.words:
            d["words"] = True
        if self.latency_ms is not None:
            d["latency_ms"] = self.latency_ms
        if self.hotwords:
            d["hotwords"] = list(self.hotwords)
        if self.token is not None:
            d["token"] = self.token
        return d

    @classmethod
    def from_dict(cls, msg: dict) -> "StartMessage":
        """Validate a start message. Unknown fields are ignored (forward compatibility).

        Raises:
            ProtocolError: a field with a wrong type or an unusable value, naming it.
        """
        version = msg.get("protocol", PROTOCOL_VERSION)
        if not _is_int(version) or version < 1:
            raise ProtocolError(ErrorCode.BAD_START, f"'protocol' must be a positive integer, got {short_repr(version)}")
        if version > PROTOCOL_VERSION:
            raise ProtocolError(
                ErrorCode.UNSUPPORTED_VERSION, f"protocol version {version} is newer than this server's {PROTOCOL_VERSION}"
            )
        rate = msg.get("sample_rate", 16000)
        # Range checks come before any int()/float() conversion: a JSON integer may have hundreds of
        # digits, and float() of it raises OverflowError.
        if not _is_number(rate) or not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE or rate != int(rate):
            raise ProtocolError(
                ErrorCode.BAD_SAMPLE_RATE,
                f"sample_rate {short_repr(rate)} is not an integer in {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz",
            )
        fmt = msg.get("format", "int16")
        if not isinstance(fmt, str) or fmt not in FORMATS:  # a list or object is unhashable: check the type first
            raise ProtocolError(ErrorCode.BAD_FORMAT, f"format {short_repr(fmt)} is not one of {sorted(FORMATS)}")
        channels = msg.get("channels", 1)
        if not _is_int(channels) or not 1 <= channels <= MAX_CHANNELS:
            raise ProtocolError(ErrorCode.BAD_FORMAT, f"channels {short_repr(channels)} is not an integer in 1..{MAX_CHANNELS}")
        features = msg.get("features", False)
        if not isinstance(features, bool):
            raise ProtocolError(ErrorCode.BAD_START, f"'features' must be true or false, got {short_repr(features)}")
        fdt = msg.get("feature_dtype", "float16")
        if not isinstance(fdt, str) or fdt not in ("float16", "float32"):
            raise ProtocolError(ErrorCode.BAD_FORMAT, f"feature_dtype {short_repr(fdt)} is not float16 or float32")
        layer = msg.get("layer")
        if layer is not None and not _is_int(layer):
            raise ProtocolError(ErrorCode.BAD_START, f"'layer' must be an integer or null, got {short_repr(layer)}")
        latency = msg.get("latency_ms")
        if latency is not None and (not _is_int(latency) or not 1 <= latency <= 60_000):
            raise ProtocolError(ErrorCode.BAD_START, f"'latency_ms' must be an integer number of ms or null, got {short_repr(latency)}")
        words = msg.get("words", False)
        if not isinstance(words, bool):
            raise ProtocolError(ErrorCode.BAD_START, f"'words' must be true or false, got {short_repr(words)}")
        hotwords = _parse_hotwords(msg.get("hotwords"))
        token = msg.get("token")
        if token is not None and not isinstance(token, str):
            raise ProtocolError(ErrorCode.BAD_START, "'token' must be a string")
        return cls(
            protocol=int(version),
            sample_rate=int(rate),
            format=fmt,
            channels=int(channels),
            features=features,
            feature_dtype=fdt,
            layer=None if layer is None else int(layer),
            words=words,
            latency_ms=latency,
            hotwords=hotwords,
            endpoint=_parse_endpoint(msg.get("endpoint")),
            token=token,
        )


def _parse_hotwords(value: Any) -> tuple[str, ...]:
    """'hotwords': null or a list of at most MAX_HOTWORDS non-empty strings of at most MAX_HOTWORD_CHARS."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ProtocolError(ErrorCode.BAD_START, f"'hotwords' must be a list of strings, got {short_repr(value)}")
    if len(value) > MAX_HOTWORDS:
        raise ProtocolError(ErrorCode.BAD_START, f"'hotwords' lists {len(value)} phrases; at most {MAX_HOTWORDS}")
    for i, h in enumerate(value):
        # The limit allows a ':score' suffix after a phrase of the longest length.
        if not isinstance(h, str) or not h.strip() or len(h) > MAX_HOTWORD_CHARS + 8:
            raise ProtocolError(
                ErrorCode.BAD_START,
                f"'hotwords'[{i}] must be a non-empty string of at most {MAX_HOTWORD_CHARS} characters, got {short_repr(h)}",
            )
    return tuple(value)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: Any) -> bool:
    if _is_int(x):
        return True  # math.isfinite() would convert it to float: OverflowError for huge integers
    return isinstance(x, float) and math.isfinite(x)


def short_repr(x: Any, limit: int = 60) -> str:
    """repr() for error reasons: bounded, whatever the client sent (a 10**300 or a 1 MB string)."""
    if _is_int(x) and abs(x) >= 10**limit:
        return f"an integer of {len(str(abs(x)))} digits"  # huge ints: never build their whole repr
    try:
        r = repr(x)
    except ValueError:  # int-to-str digit limit
        return f"a value of type {type(x).__name__}"
    if len(r) <= limit:
        return r
    return r[: limit - 5] + "...'" if isinstance(x, str) else r[: limit - 3] + "..."


def close_reason(text: str) -> str:
    """``text`` cut to fit a close frame (123 bytes of UTF-8), on a character boundary.

    Reasons quote client input, so they may be non-ASCII: cutting by characters can overflow.
    """
    data = text.encode("utf-8")
    if len(data) <= CLOSE_REASON_BYTES:
        return text
    return data[:CLOSE_REASON_BYTES].decode("utf-8", errors="ignore")


def auth_subprotocol(token: str) -> str:
    """The websocket subprotocol that carries ``token`` (browsers cannot set an Authorization header).

    Offer it together with ``SUBPROTOCOL``; the server answers ``SUBPROTOCOL``, never this one.
    """
    return AUTH_SUBPROTOCOL_PREFIX + base64.urlsafe_b64encode(token.encode("utf-8")).decode("ascii").rstrip("=")


def token_from_subprotocols(offered: Sequence[str]) -> Optional[str]:
    """The token in an offered ``auth_subprotocol``, or None (none offered, or not valid base64url)."""
    for p in offered:
        if p.startswith(AUTH_SUBPROTOCOL_PREFIX):
            b64 = p[len(AUTH_SUBPROTOCOL_PREFIX) :]
            try:
                return base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4)).decode("utf-8")
            except (binascii.Error, ValueError):
                return None
    return None


def _parse_endpoint(ep: Any) -> EndpointSettings:
    if ep is None:
        return EndpointSettings()
    if isinstance(ep, bool):
        return EndpointSettings(enabled=ep)
    if not isinstance(ep, dict):
        raise ProtocolError(ErrorCode.BAD_START, f"'endpoint' must be an object, true/false or null, got {short_repr(ep)}")
    d = EndpointSettings()
    enabled = ep.get("enabled", d.enabled)
    if not isinstance(enabled, bool):
        raise ProtocolError(ErrorCode.BAD_START, f"endpoint.enabled must be true or false, got {short_repr(enabled)}")
    vals = {}
    for name, lo, hi in (("rule1_silence", 0.01, 600.0), ("rule2_silence", 0.01, 600.0), ("max_utterance", 0.1, 3600.0)):
        v = ep.get(name, getattr(d, name))
        if not _is_number(v) or not lo <= v <= hi:
            raise ProtocolError(
                ErrorCode.BAD_START, f"endpoint.{name} must be a number of seconds in {lo}..{hi}, got {short_repr(v)}"
            )
        vals[name] = float(v)
    return EndpointSettings(enabled=enabled, **vals)


def parse_client_text(text: str) -> dict:
    """A client text message -> dict with a known "type".

    Raises:
        ProtocolError: bad_json (not a JSON object) or unknown_message (no or unknown type).
    """
    try:
        msg = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(ErrorCode.BAD_JSON, f"text message is not valid JSON ({exc})") from None
    if not isinstance(msg, dict):
        raise ProtocolError(ErrorCode.BAD_JSON, f"text message must be a JSON object, got {type(msg).__name__}")
    kind = msg.get("type")
    if not isinstance(kind, str) or kind not in ("start",) + END_TYPES:
        raise ProtocolError(
            ErrorCode.UNKNOWN_MESSAGE, f"unknown message type {short_repr(kind)} (expected 'start', 'end' or 'eof')"
        )
    return msg


def decode_audio(data: bytes, start: StartMessage) -> np.ndarray:
    """One binary audio message -> (n,) or (n, channels) array (int16 or float32).

    Checks the length before ``np.frombuffer`` and, for float32, that every
    sample is finite and on the right scale; samples a little beyond [-1, 1] are clipped.
    (A finite 3e38 would otherwise overflow inside the model and turn the session's state to NaN.)
    Raises:
        ProtocolError: partial_sample, non_finite or out_of_range.
    """
    fb = start.frame_bytes
    if len(data) % fb:
        raise ProtocolError(
            ErrorCode.PARTIAL_SAMPLE,
            f"binary message of {len(data)} bytes is not a whole number of {start.format} sample frames "
            f"({fb} bytes each for {start.channels} channel(s))",
        )
    x = np.frombuffer(data, dtype=start.sample_dtype)
    if start.format == "float32":
        finite = np.isfinite(x)
        if not finite.all():
            bad = int(np.size(finite) - np.count_nonzero(finite))
            raise ProtocolError(ErrorCode.NON_FINITE, f"{bad} of {x.size} float32 samples are NaN or infinite")
        peak = float(np.max(np.abs(x))) if x.size else 0.0
        if peak > MAX_FLOAT_SAMPLE:
            raise ProtocolError(
                ErrorCode.OUT_OF_RANGE,
                f"float32 samples must be in [-1, 1]; this message has |sample| up to {peak:.3g} "
                "(int16 values sent as float32?)",
            )
        if peak > 1.0:
            x = np.clip(x, -1.0, 1.0)
    if start.channels > 1:
        x = x.reshape(-1, start.channels)
    return x


# ----------------------------------------------------------- feature frames
# Little-endian header, 20 bytes (a multiple of 4, so float32 data stays aligned):
#   magic    4s  b"WSF1"
#   dtype    B   1 = float16, 2 = float32
#   flags    B   reserved, 0
#   reserved H   0
#   start    I   stream index of the first frame
#   frames   I   number of frames T
#   dim      I   feature dimension D
# then T*D values, row-major (frame by frame).
FEATURE_MAGIC = b"WSF1"
FEATURE_HEADER = struct.Struct("<4sBBHIII")
FEATURE_HEADER_SIZE = FEATURE_HEADER.size
_DTYPE_CODES = {"float16": 1, "float32": 2}
_CODE_DTYPES = {1: np.dtype("<f2"), 2: np.dtype("<f4")}


def pack_features(start_frame: int, frames: np.ndarray, dtype: str = "float16") -> bytes:
    """(T, D) features of a stream starting at frame ``start_frame`` -> one binary message."""
    if dtype not in _DTYPE_CODES:
        raise ValueError(f"feature dtype {dtype!r} is not float16 or float32")
    f = np.asarray(frames)
    if f.ndim != 2:
        raise ValueError(f"features must be (frames, dim), got shape {f.shape}")
    header = FEATURE_HEADER.pack(FEATURE_MAGIC, _DTYPE_CODES[dtype], 0, 0, int(start_frame), f.shape[0], f.shape[1])
    return header + np.ascontiguousarray(f, dtype=_CODE_DTYPES[_DTYPE_CODES[dtype]]).tobytes()


def unpack_features(data: bytes) -> tuple[int, np.ndarray]:
    """One binary feature message -> (start_frame, (T, D) float32 array).

    Raises:
        ValueError: not a feature frame, or a length that disagrees with its header.
    """
    if len(data) < FEATURE_HEADER_SIZE:
        raise ValueError(f"feature frame of {len(data)} bytes is shorter than its {FEATURE_HEADER_SIZE}-byte header")
    magic, code, _flags, _res, start, t, d = FEATURE_HEADER.unpack_from(data)
    if magic != FEATURE_MAGIC or code not in _CODE_DTYPES:
        raise ValueError(f"not a wavstream feature frame (magic {magic!r}, dtype code {code})")
    dt = _CODE_DTYPES[code]
    need = FEATURE_HEADER_SIZE + t * d * dt.itemsize
    if len(data) != need:
        raise ValueError(f"feature frame is {len(data)} bytes; its header ({t} frames x {d} {dt.name}) needs {need}")
    arr = np.frombuffer(data, dtype=dt, offset=FEATURE_HEADER_SIZE).reshape(t, d).astype(np.float32)
    return int(start), arr


def _json(**fields: Any) -> str:
    # Compact separators and raw UTF-8: protocol v1's bytes on the wire (tests compare them).
    return json.dumps(fields, separators=(",", ":"), ensure_ascii=False)


# ----------------------------------------------------------- client messages
@dataclass(frozen=True)
class EndMessage:
    """The client's audio is over: the server decodes the rest, answers, closes (``eof`` is an alias)."""

    def to_json(self) -> str:
        return _json(type="end")


END_TEXT = EndMessage().to_json()  # what a client sends when its audio is over

ClientMessage = Union[StartMessage, EndMessage]


# ----------------------------------------------------------- server messages
# Partial, Final and Features (stream/events.py) travel as they are; these are the rest.
@dataclass(frozen=True)
class Ready:
    """The answer to a valid start. Parsed from the wire, a field of the wrong type reads as None."""

    session: Optional[int]
    sample_rate: Optional[int]
    chunk_ms: Optional[float]
    frame_shift_ms: Optional[float]
    feature_dim: Optional[int]
    feature_layer: Optional[int]
    text: Optional[bool]  # whether partial/final text will come (the bundle has a CTC head)
    protocol: int = PROTOCOL_VERSION


@dataclass(frozen=True)
class Overloaded:
    """A notice: results are ``lag_s`` behind real time, more than the server's ``max_lag_s``."""

    lag_s: Optional[float]
    max_lag_s: Optional[float]


@dataclass(frozen=True)
class Done:
    """After the last final: why the session ended; then the server closes with ``close_code``."""

    reason: str = "end"

    @property
    def close_code(self) -> int:
        return DONE_CLOSE_CODES.get(self.reason, 1000)


@dataclass(frozen=True)
class ErrorMessage:
    """The session is refused or ended (``code``: an ErrorCode); then the server closes with ``close_code``."""

    code: str
    reason: str

    @property
    def close_code(self) -> int:
        return CLOSE_CODES.get(self.code, 1008)


ServerMessage = Union[Ready, Partial, Final, Features, Overloaded, Done, ErrorMessage]

# Close code after ``done``, by the reason the session ended (the error codes' close codes are CLOSE_CODES).
DONE_CLOSE_CODES = {"end": 1000, "idle_timeout": 1000, "session_too_long": 1000, "shutting_down": 1001, "internal": 1011}


def encode_server_message(msg: ServerMessage, feature_dtype: str = "float16", words: bool = False) -> Union[str, bytes]:
    """A server message -> what goes on the wire (text JSON; a binary frame for Features).

    The one place that builds server messages: field names, order and rounding are protocol v1.
    ``words``: a final carries its words (the session asked for them in its start message).
    """
    if isinstance(msg, Partial):
        return _json(type="partial", text=msg.text, segment=msg.segment)
    if isinstance(msg, Final):
        if words:
            return _json(type="final", text=msg.text, start=round(msg.start, 3), end=round(msg.end, 3),
                         segment=msg.segment, words=[w.to_dict() for w in msg.words])
        return _json(type="final", text=msg.text, start=round(msg.start, 3), end=round(msg.end, 3), segment=msg.segment)
    if isinstance(msg, Features):
        return pack_features(msg.start_frame, msg.frames, feature_dtype)
    if isinstance(msg, Ready):
        return _json(type="ready", protocol=msg.protocol, session=msg.session, sample_rate=msg.sample_rate,
                     chunk_ms=msg.chunk_ms, frame_shift_ms=msg.frame_shift_ms, feature_dim=msg.feature_dim,
                     feature_layer=msg.feature_layer, text=msg.text)
    if isinstance(msg, Overloaded):
        lag = None if msg.lag_s is None else round(msg.lag_s, 3)
        return _json(type="overloaded", lag_s=lag, max_lag_s=msg.max_lag_s)
    if isinstance(msg, Done):
        return _json(type="done", reason=msg.reason)
    if isinstance(msg, ErrorMessage):
        return _json(type="error", code=msg.code, reason=msg.reason)
    raise TypeError(f"not a server message: {type(msg).__name__}")


class ServerMessageError(WavstreamError, ValueError):
    """A server sent something protocol v1 does not allow (not JSON, no type, a result field missing)."""


def parse_server_message(msg: Union[str, bytes]) -> Optional[ServerMessage]:
    """What came from a server -> a typed message; None for a type this version does not know.

    Newer servers may add message types (docs/protocol.md, Versioning), so those are not errors.
    Fields that carry results are checked; ``segment`` reads as 0 when a server leaves it out.
    Raises:
        ServerMessageError: not a feature frame, not a JSON object, no type, or a result field
            missing or of the wrong type.
    """
    if isinstance(msg, (bytes, bytearray, memoryview)):
        try:
            start, frames = unpack_features(bytes(msg))
        except ValueError as exc:
            raise ServerMessageError(f"a binary message that is not a feature frame: {exc}") from None
        return Features(frames, start)
    try:
        d = json.loads(msg)
    except (ValueError, RecursionError):
        raise ServerMessageError(f"a text message that is not JSON: {_show(msg)}") from None
    if not isinstance(d, dict):
        raise ServerMessageError(f"a JSON message that is not an object: {_show(msg)}")
    kind = d.get("type")
    if not isinstance(kind, str):
        raise ServerMessageError(f"a message without a type: {_show(msg)}")
    if kind == "partial":
        return Partial(_field(d, "text", str), _segment(d))
    if kind == "final":
        return Final(_field(d, "text", str), _seconds(d, "start"), _seconds(d, "end"), _segment(d), _words(d))
    if kind == "done":
        reason = d.get("reason", "end")
        return Done(reason if isinstance(reason, str) else str(reason))
    if kind == "error":
        code, reason = d.get("code", "?"), d.get("reason", "")
        return ErrorMessage(code if isinstance(code, str) else json.dumps(code),
                            reason if isinstance(reason, str) else json.dumps(reason))
    if kind == "ready":
        version = d.get("protocol", PROTOCOL_VERSION)
        return Ready(
            session=_opt(d, "session", int), sample_rate=_opt(d, "sample_rate", int), chunk_ms=_opt(d, "chunk_ms", float),
            frame_shift_ms=_opt(d, "frame_shift_ms", float), feature_dim=_opt(d, "feature_dim", int),
            feature_layer=_opt(d, "feature_layer", int), text=_opt(d, "text", bool),
            protocol=version if _is_int(version) else PROTOCOL_VERSION,
        )
    if kind == "overloaded":
        return Overloaded(_opt(d, "lag_s", float), _opt(d, "max_lag_s", float))
    return None


def _show(msg: Any) -> str:
    """A message, cut short for an error text."""
    return f"{msg!r:.200}"


def _field(d: dict, name: str, kind: type) -> Any:
    v = d.get(name)
    if not isinstance(v, kind):
        raise ServerMessageError(f"{d.get('type')} message without a {kind.__name__} {name!r}: {_show(json.dumps(d))}")
    return v


def _segment(d: dict) -> int:
    """The utterance index of a partial/final (0 when a server leaves it out)."""
    v = d.get("segment", 0)
    return v if _is_int(v) and v >= 0 else 0


def _words(d: dict) -> tuple[Word, ...]:
    """A final's optional ``words``: [{"word", "start", "end", "conf"}] -> Words (() when absent)."""
    ws = d.get("words")
    if ws is None:
        return ()
    if not isinstance(ws, list) or not all(isinstance(w, dict) for w in ws):
        raise ServerMessageError(f"final message whose 'words' is not a list of objects: {_show(json.dumps(d))}")
    out = []
    for w in ws:
        word, start, end, conf = w.get("word"), w.get("start"), w.get("end"), w.get("conf", 1.0)
        if not (isinstance(word, str) and _is_number(start) and _is_number(end) and _is_number(conf)):
            raise ServerMessageError(f"final message with a malformed word {_show(json.dumps(w))}")
        out.append(Word(word, float(start), float(end), float(conf)))
    return tuple(out)


def _seconds(d: dict, name: str) -> float:
    v = d.get(name)
    if _is_number(v) and abs(v) < 1e300:  # a 400-digit JSON integer has no float
        return float(v)
    raise ServerMessageError(f"{d.get('type')} message without a number {name!r}: {_show(json.dumps(d))}")


def _opt(d: dict, name: str, kind: type) -> Any:
    """An informational field: its value if of type ``kind`` (an int counts as a float), else None."""
    v = d.get(name)
    if kind is bool:
        return v if isinstance(v, bool) else None
    if kind is int:
        return v if _is_int(v) else None
    return float(v) if _is_number(v) and abs(v) < 1e300 else None

# ------------------------------------------------------------ the session
class State(enum.Enum):
    """Where one session is. Transitions only go down this list."""

    AWAITING_START = "awaiting_start"  # connected; the first message must be a start
    STREAMING = "streaming"  # started: audio, or an end
    ENDING = "ending"  # an end was received or the server ends it: results are still sent, input is not read
    CLOSED = "closed"  # ``done`` or an ``error`` was queued; the connection closes with ``close_code``


@dataclass(frozen=True)
class StartReceived:
    start: StartMessage


@dataclass(frozen=True, eq=False)
class AudioReceived:
    samples: np.ndarray  # (n,) or (n, channels), int16 or float32, at ``start.sample_rate``


@dataclass(frozen=True)
class EndReceived:
    reason: str = "end"


ClientEvent = Union[StartReceived, AudioReceived, EndReceived]
Outgoing = Union[str, bytes]


class SessionProtocol:
    """Protocol v1 for one session, without I/O (the model is the websockets library's own protocol class).

    Incoming: ``receive_text``/``receive_bytes`` return the client's events; a
    message that breaks the protocol queues an ``error``, moves to CLOSED and
    raises ``ProtocolError`` (code, reason, close_code). Outgoing: ``send_*``
    queue wire messages; ``data_to_send()`` takes them. ``close_code`` and
    ``close_reason`` say how to close once CLOSED.
    """

    def __init__(self, *, max_message_bytes: Optional[int] = None, feature_layer: Optional[int] = None,
                 latencies_ms: Optional[Sequence[int]] = None) -> None:
        self.state = State.AWAITING_START
        self.start: Optional[StartMessage] = None
        self.max_message_bytes = max_message_bytes
        self.feature_layer = feature_layer  # the only layer a start may ask for (None: any)
        self.latencies_ms = tuple(latencies_ms) if latencies_ms is not None else None  # None: any
        self.close_code: Optional[int] = None
        self.close_reason = ""
        self.error_code: Optional[str] = None  # the ErrorCode that closed the session, if one did
        self._out: list[Outgoing] = []

    # ------------------------------------------------------------- incoming
    def receive_text(self, text: str) -> list[ClientEvent]:
        return self._receive(text)

    def receive_bytes(self, data: bytes) -> list[ClientEvent]:
        return self._receive(data)

    def _receive(self, msg: Union[str, bytes]) -> list[ClientEvent]:
        if self.state is State.CLOSED or self.state is State.ENDING:
            return []  # after an end (or an error), further input is not used
        try:
            self._check_size(msg)
            return self._parse(msg)
        except ProtocolError as exc:
            self.fail(exc.code, exc.reason)
            raise

    def _parse(self, msg: Union[str, bytes]) -> list[ClientEvent]:
        if isinstance(msg, bytes):
            if self.start is None:
                raise ProtocolError(ErrorCode.NOT_STARTED, "audio before the start message")
            return [AudioReceived(decode_audio(msg, self.start))]
        d = parse_client_text(msg)
        if d["type"] == "start":
            if self.start is not None:
                raise ProtocolError(ErrorCode.ALREADY_STARTED, "a second start message in one session")
            start = StartMessage.from_dict(d)
            if start.layer is not None and self.feature_layer is not None and start.layer != self.feature_layer:
                raise ProtocolError(
                    ErrorCode.UNSUPPORTED_LAYER,
                    f"layer {start.layer} is not available; this model exports features of layer {self.feature_layer}",
                )
            if start.latency_ms is not None and self.latencies_ms is not None and start.latency_ms not in self.latencies_ms:
                raise ProtocolError(
                    ErrorCode.UNSUPPORTED_LATENCY,
                    f"latency_ms {start.latency_ms} is not served; this model serves "
                    f"{', '.join(str(x) for x in self.latencies_ms)} ms",
                )
            self.start = start
            self.state = State.STREAMING
            return [StartReceived(start)]
        if self.start is None:
            raise ProtocolError(ErrorCode.NOT_STARTED, f"{d['type']!r} before the start message")
        self.state = State.ENDING
        return [EndReceived("end")]

    def _check_size(self, msg: Union[str, bytes]) -> None:
        if self.max_message_bytes is None:
            return
        # Text arrives decoded: count its UTF-8 bytes, not its characters (a 1 MiB limit must not pass 3 MB of '€').
        n = len(msg) if isinstance(msg, bytes) or msg.isascii() else len(msg.encode("utf-8"))
        if n > self.max_message_bytes:
            raise ProtocolError(
                ErrorCode.MESSAGE_TOO_BIG, f"message of {n} bytes exceeds the limit of {self.max_message_bytes} bytes"
            )

    # ------------------------------------------------------------- outgoing
    def send_ready(self, **fields: Any) -> None:
        """``ready`` after a valid start; ``fields`` are those of ``Ready``."""
        self._out.append(encode_server_message(Ready(**fields)))

    def send_events(self, events: Sequence[Event]) -> None:
        """The recogniser's events of one decoded chunk, as wire messages (features only if asked for)."""
        if self.state is State.CLOSED:
            return
        start = self.start
        for ev in events:
            if isinstance(ev, Features):
                if start is not None and start.features and ev.num_frames:
                    self._out.append(encode_server_message(ev, start.feature_dtype))
            elif isinstance(ev, Final):
                self._out.append(encode_server_message(ev, words=start is not None and start.words))
            elif isinstance(ev, Partial):
                self._out.append(encode_server_message(ev))

    def send_overloaded(self, lag_s: float, max_lag_s: float) -> None:
        if self.state is not State.CLOSED:
            self._out.append(encode_server_message(Overloaded(lag_s, max_lag_s)))

    def end(self) -> None:
        """The server ends the session (timeout, shutdown): results are still sent, input is not read."""
        if self.state in (State.AWAITING_START, State.STREAMING):
            self.state = State.ENDING

    def send_done(self, reason: str) -> None:
        """``done`` after the last final; then close."""
        if self.state is State.CLOSED:
            return
        done = Done(reason)
        self._out.append(encode_server_message(done))
        self._close(done.close_code, reason)

    def fail(self, code: str, reason: str) -> None:
        """``error`` (an ErrorCode and a reason naming the problem); then close with that code's close code."""
        if self.state is State.CLOSED:
            return
        err = ErrorMessage(code, reason)
        self.error_code = code
        self._out.append(encode_server_message(err))
        self._close(err.close_code, close_reason(reason))

    def _close(self, code: int, reason: str) -> None:
        self.state = State.CLOSED
        self.close_code = code
        self.close_reason = reason

    def data_to_send(self) -> list[Outgoing]:
        """The wire messages queued since the last call, in order."""
        out, self._out = self._out, []
        return out
