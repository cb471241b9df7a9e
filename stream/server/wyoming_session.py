"""One Wyoming connection's speech-to-text conversation, without I/O (no ``wyoming`` import here).

Wyoming (Home Assistant's voice protocol) sends events: a type, a JSON data
object and an optional binary payload. The edge (stream/server/wyoming.py)
reads them off the socket and gives them to ``WyomingConversation.receive``;
it gets typed client events back (the same ``StartReceived``/``AudioReceived``/
``EndReceived`` as protocol v1, plus ``DescribeReceived``) and takes the
events to write from ``data_to_send()`` as ``(type, data)`` pairs.

The conversation is also the *protocol* of the current utterance's Session
(stream/server/session.py): the Batcher gives it the recogniser's events
(``send_events``), then ``send_done`` at the end of the audio; it answers with
``transcript-start``/``transcript-chunk``/``transcript``/``transcript-stop``.

The order Home Assistant uses, one utterance per connection:
``transcribe`` -> ``audio-start`` -> ``audio-chunk``... -> ``audio-stop`` ->
(``transcript-start``, ``transcript-chunk``...) ``transcript`` (``transcript-stop``).
``describe`` may come at any time and is answered with ``info`` by the edge.

Streaming: ``transcript-chunk`` texts are append-only deltas; joined, they are
the ``transcript``. Partials are sent as deltas only when the decoder's text
only ever grows (greedy CTC without an LM: ``append_only_partials``); otherwise
only finished utterances are. Endpointing: the transcript is sent at the first
endpoint (Home Assistant then ends the request and stops sending audio); the
rest of that utterance's audio, and its ``audio-stop``, are ignored.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

from ..events import Event, Final, Partial
from ..protocol import (
    MAX_CHANNELS,
    MAX_SAMPLE_RATE,
    MIN_SAMPLE_RATE,
    AudioReceived,
    EndReceived,
    ErrorCode,
    ProtocolError,
    StartMessage,
    StartReceived,
    short_repr,
)

__all__ = ["WyomingConversation", "DescribeReceived", "TranscribeReceived", "WyomingEvent", "SAMPLE_WIDTHS"]

SAMPLE_WIDTHS = (1, 2, 4)  # bytes per sample: unsigned 8-bit, signed 16-bit, signed 32-bit PCM
UNSUPPORTED_LANGUAGE = "unsupported_language"

WyomingEvent = tuple[str, dict]  # (type, data); no server event of ours has a payload


@dataclass(frozen=True)
class DescribeReceived:
    """The client asks what this server offers (the edge answers ``info``)."""


@dataclass(frozen=True)
class TranscribeReceived:
    language: Optional[str]
    name: Optional[str]
    names: tuple[str, ...] = ()  # transcript_names: entity names to favour (hotwords, where spellable)
    terms: tuple[str, ...] = ()  # transcript_terms


class _Phase(enum.Enum):
    IDLE = 1  # between utterances
    AUDIO = 2  # audio-start received: chunks go to the Session
    STOPPING = 3  # audio-stop received: the rest is decoded, then the transcript
    ANSWERED = 4  # answered at an endpoint, or refused: the utterance's remaining audio events are ignored


class WyomingConversation:
    """Wyoming ASR for one connection, Sans-I/O. See the module docstring.

    Args:
        languages: languages a ``transcribe`` may ask for (None / empty asks for the default).
        streaming: send ``transcript-start``/``-chunk``/``-stop`` around the transcript.
        endpointing: the transcript is sent at the first endpoint, not at ``audio-stop``.
        append_only_partials: the decoder's partial text only grows (greedy CTC, no LM).
        max_message_bytes: largest audio payload accepted.
    """

    def __init__(
        self,
        *,
        languages: Sequence[str] = ("en",),
        streaming: bool = True,
        endpointing: bool = False,
        append_only_partials: bool = True,
        max_message_bytes: int = 1 << 20,
    ) -> None:
        self.languages = tuple(languages)
        self.streaming = streaming
        self.endpointing = endpointing
        self.append_only_partials = append_only_partials
        self.max_message_bytes = max_message_bytes
        self.transcribe: Optional[TranscribeReceived] = None
        self.start: Optional[StartMessage] = None  # the current utterance's audio format (Session reads it)
        self.close_code: Optional[int] = None  # set when the utterance is over (Session then queues a Close)
        self.close_reason = ""
        self.error_code: Optional[str] = None
        self._phase = _Phase.IDLE
        self._width = 2
        self._out: list[WyomingEvent] = []
        self._reset_text()

    def _reset_text(self) -> None:
        self._finals: list[str] = []  # this utterance's finished texts
        self._partial = ""
        self._sent = ""  # what the transcript-chunk deltas have said so far

    # ------------------------------------------------------------- incoming
    def receive(self, kind: str, data: Optional[dict], payload: Optional[bytes] = None) -> list[Any]:
        """One event from the client -> typed events. Unknown event types are ignored (Wyoming's rule).

        Raises:
            ProtocolError: a bad event; an ``error`` event is queued and the utterance (if any) is over.
        """
        try:
            return self._receive(kind, data if isinstance(data, dict) else {}, payload or b"")
        except ProtocolError as exc:
            self.fail(exc.code, exc.reason)
            raise

    def _receive(self, kind: str, data: dict, payload: bytes) -> list[Any]:
        if kind == "describe":
            return [DescribeReceived()]
        if kind == "ping":
            self._out.append(("pong", {"text": data.get("text")} if data.get("text") is not None else {}))
            return []
        if kind == "transcribe":
            if self._phase in (_Phase.AUDIO, _Phase.STOPPING):
                raise ProtocolError(ErrorCode.ALREADY_STARTED, "transcribe during an utterance (before its transcript)")
            self.transcribe = _parse_transcribe(data, self.languages)
            self._phase = _Phase.IDLE
            return [self.transcribe]
        if kind == "audio-start":
            if self._phase in (_Phase.AUDIO, _Phase.STOPPING):
                raise ProtocolError(ErrorCode.ALREADY_STARTED, "a second audio-start before the transcript")
            self._phase = _Phase.ANSWERED  # a refused audio-start: the rest of its audio is ignored
            rate, width, channels = _audio_format(data)
            self.start = StartMessage(sample_rate=rate, channels=channels,
                                      format="int16" if width == 2 else "float32")
            self._width = width
            self.close_code, self.close_reason, self.error_code = None, "", None
            self._reset_text()
            self._phase = _Phase.AUDIO
            return [StartReceived(self.start)]  # the edge admits it, then calls accepted()
        if kind == "audio-chunk":
            if self._phase is _Phase.ANSWERED:
                return []  # after an endpoint's transcript the client may still be sending
            if self._phase is not _Phase.AUDIO or self.start is None:
                raise ProtocolError(ErrorCode.NOT_STARTED, "audio-chunk before audio-start")
            return [AudioReceived(self._decode(data, payload))]
        if kind == "audio-stop":
            if self._phase is _Phase.ANSWERED:
                self._phase = _Phase.IDLE
                return []
            if self._phase is not _Phase.AUDIO:
                raise ProtocolError(ErrorCode.NOT_STARTED, "audio-stop before audio-start")
            self._phase = _Phase.STOPPING
            return [EndReceived("end")]
        return []

    def _decode(self, data: dict, payload: bytes) -> np.ndarray:
        assert self.start is not None
        rate, width, channels = _audio_format(data)
        if (rate, width, channels) != (self.start.sample_rate, self._width, self.start.channels):
            raise ProtocolError(
                ErrorCode.BAD_FORMAT,
                f"audio-chunk is {rate} Hz, {width} bytes x {channels} channel(s); audio-start said "
                f"{self.start.sample_rate} Hz, {self._width} bytes x {self.start.channels}",
            )
        if len(payload) > self.max_message_bytes:
            raise ProtocolError(ErrorCode.MESSAGE_TOO_BIG,
                                f"audio-chunk of {len(payload)} bytes exceeds the limit of {self.max_message_bytes} bytes")
        frame = width * channels
        if len(payload) % frame:
            raise ProtocolError(ErrorCode.PARTIAL_SAMPLE,
                                f"audio-chunk of {len(payload)} bytes is not a whole number of {frame}-byte sample frames")
        return pcm_to_array(payload, width, channels)

    # ------------------------------------------------------------- outgoing
    def accepted(self) -> None:
        """The utterance was admitted (a refused one gets only its ``error``): ``transcript-start`` if streaming."""
        if self.streaming and self._phase is _Phase.AUDIO:
            self._out.append(("transcript-start", self._language_data()))

    def send_events(self, events: Sequence[Event]) -> None:
        """The recogniser's events of one decoded chunk (the Batcher calls this through the Session)."""
        if self._phase not in (_Phase.AUDIO, _Phase.STOPPING):
            return
        for ev in events:
            if isinstance(ev, Final):
                self._partial = ""
                if ev.text:
                    self._finals.append(ev.text)
                if self.endpointing and self._phase is _Phase.AUDIO:
                    self._answer()
                    self._phase = _Phase.ANSWERED
                    return
            elif isinstance(ev, Partial):
                self._partial = ev.text
        if self.streaming:
            self._send_delta(self._text(with_partial=self.append_only_partials))

    def _text(self, with_partial: bool) -> str:
        parts = self._finals + ([self._partial] if with_partial and self._partial else [])
        return " ".join(parts)

    def _send_delta(self, text: str) -> None:
        # Only text that extends what was said: the deltas must join into the transcript.
        if len(text) > len(self._sent) and text.startswith(self._sent):
            self._out.append(("transcript-chunk", {"text": text[len(self._sent):]}))
            self._sent = text

    def _answer(self) -> None:
        text = self._text(with_partial=False)
        if self.streaming:
            self._send_delta(text)  # the transcript is ``text`` even if a revision broke the deltas (beam/LM)
        self._out.append(("transcript", {"text": text, **self._language_data()}))
        if self.streaming:
            self._out.append(("transcript-stop", {}))
        self.close_code, self.close_reason = 1000, "end"

    def send_overloaded(self, lag_s: float, max_lag_s: float) -> None:
        """Wyoming has no such notice: nothing is sent (the server logs it)."""

    def end(self) -> None:
        """The server ends the utterance (timeout, shutdown): what was decoded is still answered."""
        if self._phase is _Phase.AUDIO:
            self._phase = _Phase.STOPPING

    def send_done(self, reason: str) -> None:
        """All audio is decoded: the transcript (unless one was sent at an endpoint)."""
        if self._phase not in (_Phase.AUDIO, _Phase.STOPPING):
            return
        self._answer()
        self._phase = _Phase.IDLE

    def fail(self, code: str, reason: str) -> None:
        """An ``error`` event; the current utterance (if any) is over."""
        self.error_code = code
        self._out.append(("error", {"text": reason, "code": code}))
        self.close_code, self.close_reason = 1008, reason
        if self._phase is not _Phase.IDLE:
            self._phase = _Phase.ANSWERED  # the rest of this utterance's audio is ignored, not refused chunk by chunk

    def data_to_send(self) -> list[WyomingEvent]:
        out, self._out = self._out, []
        return out

    @property
    def in_utterance(self) -> bool:
        return self._phase in (_Phase.AUDIO, _Phase.STOPPING)

    def _language_data(self) -> dict:
        lang = (self.transcribe.language if self.transcribe else None) or (self.languages[0] if self.languages else None)
        return {"language": lang} if lang else {}


def _parse_transcribe(data: dict, languages: tuple[str, ...]) -> TranscribeReceived:
    lang, name = data.get("language"), data.get("name")
    if lang is not None and not isinstance(lang, str):
        raise ProtocolError(UNSUPPORTED_LANGUAGE, f"language must be a string, got {short_repr(lang)}")
    if lang and languages and _base_language(lang) not in {_base_language(x) for x in languages}:
        raise ProtocolError(UNSUPPORTED_LANGUAGE, f"language {lang!r} is not supported (this model: {', '.join(languages)})")
    names = data.get("transcript_names") or ()
    terms = data.get("transcript_terms") or ()
    return TranscribeReceived(
        language=lang or None,
        name=name if isinstance(name, str) else None,
        names=tuple(str(x) for x in names) if isinstance(names, list) else (),
        terms=tuple(str(x) for x in terms) if isinstance(terms, list) else (),
    )


def _base_language(tag: str) -> str:
    """'en-US' / 'en_GB' -> 'en' (Home Assistant sends regional tags)."""
    return tag.replace("_", "-").split("-")[0].lower()


def _audio_format(data: dict) -> tuple[int, int, int]:
    rate, width, channels = data.get("rate"), data.get("width"), data.get("channels")
    if not _is_int(rate) or not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise ProtocolError(ErrorCode.BAD_SAMPLE_RATE,
                            f"rate {short_repr(rate)} is not an integer in {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz")
    if not _is_int(width) or width not in SAMPLE_WIDTHS:
        raise ProtocolError(ErrorCode.BAD_FORMAT, f"width {short_repr(width)} is not one of {list(SAMPLE_WIDTHS)} bytes")
    if not _is_int(channels) or not 1 <= channels <= MAX_CHANNELS:
        raise ProtocolError(ErrorCode.BAD_FORMAT, f"channels {short_repr(channels)} is not an integer in 1..{MAX_CHANNELS}")
    return rate, width, channels


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def pcm_to_array(payload: bytes, width: int, channels: int) -> np.ndarray:
    """Interleaved little-endian PCM -> (n, channels): int16 for width 2, float32 in [-1, 1] otherwise."""
    if width == 2:
        x = np.frombuffer(payload, dtype="<i2")
    elif width == 1:  # 8-bit PCM is unsigned (WAV convention)
        x = (np.frombuffer(payload, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    else:
        x = (np.frombuffer(payload, dtype="<i4").astype(np.float64) / 2147483648.0).astype(np.float32)
    return x.reshape(-1, channels)
