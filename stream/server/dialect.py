"""What the websocket dialects share: a Sans-I/O protocol with the same face as protocol v1's SessionProtocol.

A dialect speaks another project's websocket protocol (Vosk, WeNet,
sherpa-onnx) at its own path of the same server (app.py picks it by path;
protocol v1 keeps every other path). The server and the Session use a dialect
exactly like ``SessionProtocol``: ``receive_text``/``receive_bytes`` return
``StartReceived``/``AudioReceived``/``EndReceived`` (or raise ``ProtocolError``
with the error already queued), ``send_events``/``send_done``/``fail`` queue
wire messages, ``data_to_send()`` takes them, and ``close_code`` says how to
close. A dialect may answer on receiving (Vosk replies to every message), and
may end the session at an event (``close_code`` set in ``send_events``: WeNet
without continuous decoding). Limits, token and origin rules are the server's,
so they apply to every dialect.
"""

from __future__ import annotations

import json
from typing import Any, Optional, Sequence, Union

import numpy as np

from ..events import Event
from ..protocol import (
    CLOSE_CODES,
    DONE_CLOSE_CODES,
    MAX_SAMPLE_RATE,
    MIN_SAMPLE_RATE,
    ClientEvent,
    ErrorCode,
    ProtocolError,
    SessionProtocol,
    StartMessage,
    State,
    close_reason,
    short_repr,
)

__all__ = ["Dialect", "Outgoing", "compact_json", "int16_samples", "check_rate"]

Outgoing = Union[str, bytes]


def compact_json(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


class Dialect(SessionProtocol):
    """Base of the dialects: protocol v1's state, size limit, outgoing queue and close (inherited);
    subclasses parse (``_parse``) and answer (``send_events``, ``_last_messages``, ``_error_message``)."""

    name = ""

    def __init__(self, *, max_message_bytes: Optional[int] = None) -> None:
        super().__init__(max_message_bytes=max_message_bytes)

    def _parse(self, msg: Union[str, bytes]) -> list[ClientEvent]:
        raise NotImplementedError

    def _started(self, start: StartMessage) -> None:
        self.start = start
        self.state = State.STREAMING

    # ------------------------------------------------------------- outgoing
    def send_ready(self, **fields: Any) -> None:
        """After the session is admitted (v1's ``ready``); most dialects have no such message."""

    def send_events(self, events: Sequence[Event]) -> None:
        raise NotImplementedError

    def send_overloaded(self, lag_s: float, max_lag_s: float) -> None:
        """The dialects' clients know no such notice: nothing is sent (the server logs it)."""

    def send_done(self, reason: str) -> None:
        """All audio is decoded: the dialect's last messages, then close."""
        if self.state is State.CLOSED:
            return
        self._last_messages(reason)
        self._close(DONE_CLOSE_CODES.get(reason, 1000), reason)

    def _last_messages(self, reason: str) -> None:
        """What the dialect sends after the last audio is decoded."""

    def fail(self, code: str, reason: str) -> None:
        """The dialect's error message (none by default: the close code and reason say it), then close."""
        if self.state is State.CLOSED:
            return
        self.error_code = code
        self._error_message(code, reason)
        self._close(CLOSE_CODES.get(code, 1008), close_reason(reason))

    def _error_message(self, code: str, reason: str) -> None:
        pass


def check_rate(rate: Any) -> int:
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE \
            or rate != int(rate):
        raise ProtocolError(ErrorCode.BAD_SAMPLE_RATE,
                            f"sample_rate {short_repr(rate)} is not a whole number in {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz")
    return int(rate)


def int16_samples(data: bytes) -> np.ndarray:
    """Little-endian int16 PCM (mono) -> (n,) int16."""
    if len(data) % 2:
        raise ProtocolError(ErrorCode.PARTIAL_SAMPLE, f"binary message of {len(data)} bytes is not whole int16 samples")
    return np.frombuffer(data, dtype="<i2")
