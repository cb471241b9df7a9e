"""The Vosk websocket dialect (path ``/vosk``), as vosk-server's websocket/asr_server.py speaks it. No I/O.

Client -> server
    text   {"config": {"sample_rate": 8000, "words": true, "phrase_list": [...], "max_alternatives": 0}}
           optional, before the audio; no reply
    binary int16 little-endian mono PCM at the configured rate (8000 Hz unless configured)
    text   {"eof" : 1}   the audio is over (clients send exactly this string; any JSON with "eof" works)

Server -> client: exactly one reply per audio message, as vosk-server does
(its clients read one message after each one they send):
    {"partial": "..."}                          the hypothesis of the utterance in progress
    {"text": "...", "result": [{"word", "start", "end", "conf"}]}   an utterance ended (an endpoint)
After ``eof``: one last ``{"text", "result"}`` with what was not yet sent, then close 1000.

A reply is sent once the message's audio is decoded (all but less than one
model chunk of it, which waits for the next audio), so it carries what that
audio gave. Differences from vosk-server: ``phrase_list`` biases decoding
towards its phrases (hotwords, those the model can spell) instead of
restricting it to them, added to the server's own list; the config has no
field for the chunk size (the server's default latency); ``max_alternatives`` > 0 gives Vosk's
``{"alternatives": [{"confidence", "result", "text"}]}`` form, with one
hypothesis. Errors have no Vosk message: the connection closes with the code
and a reason naming the problem.
"""

from __future__ import annotations

import json
from typing import Any, Sequence, Union

from ..events import Event, Final, Partial
from ..protocol import AudioReceived, ClientEvent, EndReceived, ErrorCode, ProtocolError, StartMessage, StartReceived
from .dialect import Dialect, check_rate, compact_json, int16_samples

__all__ = ["VoskDialect", "VOSK_EOF", "VOSK_DEFAULT_RATE"]

VOSK_EOF = '{"eof" : 1}'  # what Vosk clients send, byte for byte (vosk-server compares the string)
VOSK_DEFAULT_RATE = 8000  # vosk-server's default (telephony)


class VoskDialect(Dialect):
    name = "vosk"

    def __init__(self, *, max_message_bytes: Any = None, sample_rate: int = VOSK_DEFAULT_RATE) -> None:
        super().__init__(max_message_bytes=max_message_bytes)
        self.sample_rate = sample_rate
        self.words = True  # vosk-server shows word times by default
        self.phrases: tuple[str, ...] = ()  # phrase_list: biasing, filtered to what the model can spell
        self.max_alternatives = 0  # > 0: results in Vosk's "alternatives" form (with one hypothesis)
        self._partial = ""
        self._finals: list[Final] = []  # ended utterances not yet replied
        self._owed = 0  # audio messages not answered yet

    def _parse(self, msg: Union[str, bytes]) -> list[ClientEvent]:
        if isinstance(msg, bytes):
            events: list[ClientEvent] = self._start_if_needed()
            events.append(AudioReceived(int16_samples(msg)))
            self._owed += 1  # answered by caught_up(), once its audio is decoded
            return events
        if msg == VOSK_EOF:
            return self._start_if_needed() + [EndReceived("end")]
        try:
            d = json.loads(msg)
        except (ValueError, RecursionError):
            raise ProtocolError(ErrorCode.BAD_JSON, f"text message is neither a config nor eof: {msg[:60]!r}") from None
        if isinstance(d, dict) and "eof" in d:
            return self._start_if_needed() + [EndReceived("end")]
        if isinstance(d, dict) and isinstance(d.get("config"), dict):
            if self.start is None:  # after the first audio the recogniser is made: vosk-server ignores it too
                self._configure(d["config"])
            return []
        raise ProtocolError(ErrorCode.UNKNOWN_MESSAGE, f"expected a config, eof or binary audio, got {msg[:60]!r}")

    def _configure(self, cfg: dict) -> None:
        if "sample_rate" in cfg:
            self.sample_rate = check_rate(cfg["sample_rate"])
        if "words" in cfg:
            self.words = bool(cfg["words"])
        if "phrase_list" in cfg:
            phrases = cfg["phrase_list"]
            if not isinstance(phrases, list) or not all(isinstance(p, str) for p in phrases):
                raise ProtocolError(ErrorCode.BAD_START, "phrase_list must be a list of strings")
            self.phrases = tuple(phrases)
        if "max_alternatives" in cfg:
            n = cfg["max_alternatives"]
            if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                raise ProtocolError(ErrorCode.BAD_START, f"max_alternatives must be an integer >= 0, got {n!r}")
            self.max_alternatives = n

    def _start_if_needed(self) -> list[ClientEvent]:
        if self.start is not None:
            return []
        self._started(StartMessage(sample_rate=self.sample_rate, format="int16", hotwords=self.phrases))
        assert self.start is not None
        return [StartReceived(self.start)]

    def caught_up(self) -> None:
        """All audio received so far is decoded as far as whole chunks go: answer every waiting message.

        Answering then, not on receipt, makes each reply say what that message's audio gave, as
        vosk-server's does; and a client that waits for each reply before sending more (vosk-server's
        test.py) is never left waiting, since less than a chunk is never waited for.
        """
        while self._owed:
            self._owed -= 1
            self._reply()

    def _reply(self) -> None:
        if self._finals:
            self._out.append(self._result(self._finals.pop(0)))
        else:
            self._out.append(compact_json({"partial": self._partial}))

    def _result(self, *finals: Final) -> str:
        d: dict[str, Any] = {}
        words = [w for f in finals for w in f.words]
        if self.words:
            d["result"] = [w.to_dict() for w in words]
        d["text"] = " ".join(f.text for f in finals if f.text)
        if self.max_alternatives:  # Vosk's n-best form; wavstream has one hypothesis
            conf = sum(w.confidence for w in words) / len(words) if words else 0.0
            d = {"alternatives": [{"confidence": round(conf, 3), **d}]} if d["text"] else {"alternatives": []}
        return compact_json(d)

    def send_events(self, events: Sequence[Event]) -> None:
        for ev in events:
            if isinstance(ev, Final):
                self._finals.append(ev)
                self._partial = ""
            elif isinstance(ev, Partial):
                self._partial = ev.text

    def _last_messages(self, reason: str) -> None:
        self.caught_up()
        self._out.append(self._result(*self._finals))  # vosk-server's FinalResult: what is left, "" if nothing
        self._finals = []
