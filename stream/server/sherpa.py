"""The sherpa-onnx websocket dialect (path ``/sherpa``), as sherpa-onnx's online websocket server speaks it. No I/O.

Client -> server
    binary float32 little-endian mono samples in [-1, 1] at the server's rate (16 kHz)
    text   Done          the audio is over
Server -> client
    {"text": "...", "segment": 0, "is_final": false, ...}   the current segment's text, as it grows
    ... "is_final": true at an endpoint (the next segment starts from "")
    Done!                after the last result; then close
No start message: the first audio starts the session, at the server's default
latency and with the server's hotword list (sherpa-onnx's server takes both as flags).
"""

from __future__ import annotations

from typing import Any, Sequence, Union

import numpy as np

from ..events import Event, Final, Partial
from ..protocol import (
    MAX_FLOAT_SAMPLE,
    AudioReceived,
    ClientEvent,
    EndReceived,
    ErrorCode,
    ProtocolError,
    StartMessage,
    StartReceived,
)
from .dialect import Dialect, compact_json

__all__ = ["SherpaDialect", "SHERPA_END", "SHERPA_DONE"]

SHERPA_END = "Done"  # the client's end of audio
SHERPA_DONE = "Done!"  # the server's last message


class SherpaDialect(Dialect):
    name = "sherpa"

    def __init__(self, *, max_message_bytes: Any = None, sample_rate: int = 16000) -> None:
        super().__init__(max_message_bytes=max_message_bytes)
        self.sample_rate = sample_rate

    def _parse(self, msg: Union[str, bytes]) -> list[ClientEvent]:
        events: list[ClientEvent] = []
        if self.start is None:
            self._started(StartMessage(sample_rate=self.sample_rate, format="float32"))
            assert self.start is not None
            events.append(StartReceived(self.start))
        if isinstance(msg, bytes):
            if len(msg) % 4:
                raise ProtocolError(ErrorCode.PARTIAL_SAMPLE, f"binary message of {len(msg)} bytes is not whole float32 samples")
            x = np.frombuffer(msg, dtype="<f4")
            if not np.all(np.isfinite(x)):
                raise ProtocolError(ErrorCode.NON_FINITE, "NaN or infinite float32 samples")
            if x.size and float(np.max(np.abs(x))) > MAX_FLOAT_SAMPLE:
                raise ProtocolError(ErrorCode.OUT_OF_RANGE, "float32 samples far outside [-1, 1]")
            events.append(AudioReceived(np.clip(x, -1.0, 1.0)))
            return events
        if msg == SHERPA_END:
            events.append(EndReceived("end"))
            return events
        raise ProtocolError(ErrorCode.UNKNOWN_MESSAGE, f"expected binary float32 audio or 'Done', got {msg[:60]!r}")

    def send_events(self, events: Sequence[Event]) -> None:
        for ev in events:
            if isinstance(ev, Final):
                self._out.append(self._result(ev.text, ev.segment, True, start=ev.start))
            elif isinstance(ev, Partial):
                self._out.append(self._result(ev.text, ev.segment, False))

    def _result(self, text: str, segment: int, final: bool, start: float = 0.0) -> str:
        return compact_json({"text": text, "segment": segment, "is_final": final, "start_time": round(start, 3)})

    def _last_messages(self, reason: str) -> None:
        self._out.append(SHERPA_DONE)
