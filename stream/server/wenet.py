"""The WeNet websocket dialect (path ``/wenet``), as WeNet's runtime websocket server speaks it. No I/O.

Client -> server
    text   {"signal": "start", "nbest": 1, "continuous_decoding": false}
    binary int16 little-endian mono PCM at 16 kHz
    text   {"signal": "end"}
Server -> client
    {"status": "ok", "type": "server_ready"}                      after start
    {"status": "ok", "type": "partial_result", "nbest": "<json>"}  nbest: a JSON *string* of [{"sentence"}]
    {"status": "ok", "type": "final_result", "nbest": "<json>"}    [{"sentence", "word_pieces": [{"word","start","end"}]}]
    {"status": "ok", "type": "speech_end"}                         then close
    {"status": "failed", "message": "..."}                        an error, then close
Without ``continuous_decoding`` the first endpoint ends the session (final_result,
speech_end, close); with it, each endpoint sends a final_result and decoding
goes on until ``end``. Word-piece times are in milliseconds, as WeNet's.
One hypothesis is sent whatever ``nbest`` asks for. The start has no field for
the chunk size or hotwords (WeNet's server takes both as flags): a session
runs at the server's default latency, biased by the server's hotword list.
"""

from __future__ import annotations

import json
from typing import Any, Sequence, Union

from ..events import Event, Final, Partial
from ..protocol import AudioReceived, ClientEvent, EndReceived, ErrorCode, ProtocolError, StartMessage, StartReceived
from .dialect import Dialect, compact_json, int16_samples

__all__ = ["WenetDialect"]


class WenetDialect(Dialect):
    name = "wenet"

    def __init__(self, *, max_message_bytes: Any = None, sample_rate: int = 16000) -> None:
        super().__init__(max_message_bytes=max_message_bytes)
        self.sample_rate = sample_rate
        self.continuous = False
        self._final_sent = False

    def _parse(self, msg: Union[str, bytes]) -> list[ClientEvent]:
        if isinstance(msg, bytes):
            if self.start is None:
                raise ProtocolError(ErrorCode.NOT_STARTED, "Start signal is expected before binary data")
            return [AudioReceived(int16_samples(msg))]
        try:
            d = json.loads(msg)
        except (ValueError, RecursionError):
            raise ProtocolError(ErrorCode.BAD_JSON, "Wrong protocol") from None
        if not isinstance(d, dict):
            raise ProtocolError(ErrorCode.BAD_JSON, "Wrong protocol")
        if "signal" not in d:
            raise ProtocolError(ErrorCode.UNKNOWN_MESSAGE, "Wrong message header")
        signal = d["signal"]
        if signal == "start":
            if self.start is not None:
                raise ProtocolError(ErrorCode.ALREADY_STARTED, "a second start signal")
            nbest = d.get("nbest", 1)
            if isinstance(nbest, bool) or not isinstance(nbest, int):
                raise ProtocolError(ErrorCode.BAD_START, "integer is expected for nbest option")
            cont = d.get("continuous_decoding", False)
            if not isinstance(cont, bool):
                raise ProtocolError(ErrorCode.BAD_START, "boolean true or false is expected for continuous_decoding option")
            self.continuous = cont
            self._started(StartMessage(sample_rate=self.sample_rate, format="int16"))
            assert self.start is not None
            return [StartReceived(self.start)]
        if signal == "end":
            if self.start is None:
                raise ProtocolError(ErrorCode.NOT_STARTED, "end signal before start")
            return [EndReceived("end")]
        raise ProtocolError(ErrorCode.UNKNOWN_MESSAGE, "Unexpected signal type")

    def send_ready(self, **fields: Any) -> None:
        self._out.append(compact_json({"status": "ok", "type": "server_ready"}))

    def send_events(self, events: Sequence[Event]) -> None:
        if self.close_code is not None:
            return
        for ev in events:
            if isinstance(ev, Final):
                self._out.append(self._final(ev))
                if not self.continuous:  # WeNet stops recognising at the first endpoint
                    self._out.append(compact_json({"status": "ok", "type": "speech_end"}))
                    self._close(1000, "end")
                    return
            elif isinstance(ev, Partial) and ev.text:
                nbest = compact_json([{"sentence": ev.text}])
                self._out.append(compact_json({"status": "ok", "type": "partial_result", "nbest": nbest}))

    def _final(self, f: Final) -> str:
        pieces = [{"word": w.word, "start": int(round(1000 * w.start)), "end": int(round(1000 * w.end))}
                  for w in getattr(f, "words", ())]
        nbest = compact_json([{"sentence": f.text, "word_pieces": pieces}])
        return compact_json({"status": "ok", "type": "final_result", "nbest": nbest})

    def _last_messages(self, reason: str) -> None:
        self._out.append(compact_json({"status": "ok", "type": "speech_end"}))

    def _error_message(self, code: str, reason: str) -> None:
        self._out.append(compact_json({"status": "failed", "message": reason}))
