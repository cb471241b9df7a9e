"""One client session's server-side state (no websocket I/O here).

Ownership, so that no state is shared between threads: everything here but
``stream`` belongs to the event loop (the connection handler pushes decoded
audio into ``pending``; the Batcher's loop side moves the phase on and turns
the recogniser's events into wire messages through ``protocol``, the
session's Sans-I/O ``SessionProtocol``). ``stream`` (the Recognizer's Stream,
single-threaded by contract) is touched only by the Batcher's executor thread,
which hands its results back to the loop as return values.

The lifecycle is one ``Phase``: OPEN -> ENDING -> FLUSHING -> FINISHED, or
CLOSED from any phase. It says where the decoding is; the protocol's own
``State`` (stream/protocol.py) says what the wire still allows, and the Stream's
``StreamState`` where the audio is. They move together: OPEN is the protocol's
STREAMING; ENDING and FLUSHING (the Stream was given its end) are the
protocol's ENDING; FINISHED is the protocol's CLOSED (``done`` or ``error``
queued); CLOSED means the connection is gone, whatever the protocol says.

Backpressure, bounded at every step:
- ``pending`` holds at most ``max_pending_samples`` (+ one message); when it
  is full the handler stops reading the websocket (``room`` is cleared), so
  TCP flow control slows the client;
- the Batcher moves pending audio into the Stream only while the Stream has
  less than two chunks queued;
- the Batcher skips a session whose ``out`` queue holds ``max_out`` messages
  or ``max_out_bytes`` bytes (a slow reader), so its audio waits in ``pending``;
  the server drops a client whose output stays full (app.py).

Lag: ``lag_s()`` is how long the oldest whole chunk of received audio has been
waiting to be decoded; the server tells the client (`overloaded`) when it
passes ``max_lag_s``.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import itertools
import time
from dataclasses import dataclass
from typing import Any, Deque, Optional, Union

import numpy as np

from ..events import Event
from ..protocol import StartMessage

__all__ = ["Session", "Phase", "Close"]

_ids = itertools.count(1)


class Phase(enum.Enum):
    OPEN = 1  # reading the client's audio
    ENDING = 2  # an end was asked for (``end_reason``): queued audio is still decoded, then the stream is flushed
    FLUSHING = 3  # input_finished() is given to the stream; its last results are on their way
    FINISHED = 4  # ``done`` (or an ``error``) is queued: the sender sends it and closes
    CLOSED = 5  # the connection is gone or an error ended the session: nothing more is decoded or sent


@dataclass(frozen=True)
class Close:
    """Last item of ``Session.out``: close the connection with this code and reason."""

    code: int
    reason: str


OutItem = Union[str, bytes, Close]


class Session:
    def __init__(
        self, protocol: Any, stream: Any, *, max_pending_samples: int, max_out: int = 64,
        max_out_bytes: int = 1 << 20, recognizer: Any = None
    ) -> None:
        # ``protocol``: a SessionProtocol (v1), or a dialect's translator with the same methods
        # (stream/server/dialect.py, wyoming_session.py).
        if protocol.start is None:
            raise ValueError("a Session needs a started protocol (a valid start message was received)")
        self.id = next(_ids)
        self.protocol = protocol
        self.start: StartMessage = protocol.start
        self.stream = stream  # wavstream.stream.Stream; touched only by the Batcher's worker thread
        # What decodes the stream (the server's recogniser at the session's latency).
        self.recognizer = recognizer if recognizer is not None else stream.recognizer
        self.phase = Phase.OPEN
        self.end_reason: Optional[str] = None  # why the session ends: "end", "idle_timeout", "session_too_long"...
        self.sender: Optional[asyncio.Task] = None  # the task writing ``out`` to the socket (app.py)
        self.created = time.monotonic()
        self.max_pending_samples = max(1, int(max_pending_samples))
        self.max_out = max_out
        self.max_out_bytes = max_out_bytes
        # event-loop side
        self.pending: list[np.ndarray] = []
        self.pending_samples = 0
        self.room = asyncio.Event()
        self.room.set()
        self.out: asyncio.Queue[OutItem] = asyncio.Queue()  # bounded by output_full, not by the Queue
        self.out_bytes = 0  # bytes of the messages in ``out``
        # Batcher bookkeeping
        self.backlog = 0  # 16 kHz samples queued inside the Stream (as of the last step)
        self._chunk16 = int(self.recognizer.config.chunk_samples)
        self._to16 = float(self.recognizer.config.sample_rate) / float(self.start.sample_rate)
        # A dialect that answers every message once its audio is decoded (Vosk) needs each message
        # ingested as it comes; protocol v1 answers per chunk, so its audio waits here until a chunk is whole.
        self.answers_each_message = callable(getattr(protocol, "caught_up", None))
        self.last_served = 0  # batch cycle that last decoded this session (round-robin order)
        # arrival times for latency: (cumulative 16 kHz sample position, monotonic time)
        self.arrivals: Deque[tuple[float, float]] = collections.deque()
        self._in_samples = 0  # input-rate sample frames received
        self.decoded16 = 0  # 16 kHz samples decoded so far (written by the Batcher after each step)
        self.overload_told = False  # an `overloaded` notice was queued and the lag has not recovered since

    # ------------------------------------------------------------ loop side
    def push_audio(self, samples: np.ndarray) -> None:
        """Queue one message's samples (input rate); clears ``room`` when the buffer is full."""
        n = int(samples.shape[0])
        if n == 0:
            return
        self.pending.append(samples)
        self.pending_samples += n
        self._in_samples += n
        pos16 = self._in_samples * 16000.0 / self.start.sample_rate
        self.arrivals.append((pos16, time.monotonic()))
        if len(self.arrivals) > 4096:  # a client sending tiny messages: keep the newest
            self.arrivals.popleft()
        if self.pending_samples >= self.max_pending_samples:
            self.room.clear()

    @property
    def chunk_due(self) -> bool:
        """A batch cycle has work here: a whole chunk waits (in the Stream and ``pending`` together), or a
        message of a dialect that answers each one. Until then the Batcher neither wakes for this session
        nor moves its audio: per-packet work on the loop is one append."""
        if not self.pending:
            return self.backlog >= self._chunk16
        if self.answers_each_message:
            return True
        # (resampling delays a few samples: at worst one cycle finds the chunk not quite whole)
        return self.backlog + self.pending_samples * self._to16 >= self._chunk16

    def take_pending(self) -> list[np.ndarray]:
        blocks, self.pending, self.pending_samples = self.pending, [], 0
        self.room.set()
        return blocks

    def request_end(self, reason: str = "end") -> None:
        """Flush and finish: queued audio is still decoded, no more is read."""
        if self.phase is Phase.OPEN:
            self.phase = Phase.ENDING
            self.end_reason = reason
            self.protocol.end()

    @property
    def is_open(self) -> bool:
        return self.phase is Phase.OPEN

    @property
    def is_closed(self) -> bool:
        return self.phase is Phase.CLOSED

    def close(self) -> None:
        """The connection is gone (or the session was ended by an error): stop decoding and sending."""
        self.phase = Phase.CLOSED

    def deliver(self, events: list[Event]) -> None:
        """The recogniser's events of one decoded chunk -> wire messages in ``out`` (the loop thread only)."""
        if self.phase is Phase.CLOSED:
            return
        self.protocol.send_events(events)
        if self.protocol.close_code is not None and self.phase is not Phase.FINISHED:
            # A dialect whose protocol ends at an event (WeNet without continuous decoding, Wyoming with
            # endpointing): nothing more is decoded; its last messages and the close are queued.
            self.phase = Phase.FINISHED
            self._flush_protocol(close=True)
            return
        self._flush_protocol()

    def caught_up(self) -> None:
        """Every whole chunk of the audio received so far is decoded (the Batcher says so after a cycle).

        A dialect that answers each message once its audio is decoded (Vosk) answers here; protocol v1
        has nothing to say.
        """
        hook = getattr(self.protocol, "caught_up", None)
        if hook is not None and self.phase is not Phase.CLOSED:
            hook()
            self._flush_protocol()

    def flush(self) -> None:
        """Queue what the protocol answered on receiving (a dialect that replies to every message)."""
        if self.phase is not Phase.CLOSED:
            self._flush_protocol()

    def notify_overloaded(self, lag_s: float, max_lag_s: float) -> None:
        self.protocol.send_overloaded(lag_s, max_lag_s)
        self._flush_protocol()

    def finish(self) -> None:
        """The stream is flushed: queue ``done`` and the close."""
        if self.phase in (Phase.FINISHED, Phase.CLOSED):
            return
        self.phase = Phase.FINISHED
        self.protocol.send_done(self.end_reason or "end")
        self._flush_protocol(close=True)

    def fail(self, code: str, reason: str) -> None:
        """End the session with an ``error`` (an ErrorCode) and the close that follows it."""
        if self.phase in (Phase.FINISHED, Phase.CLOSED):
            return
        self.phase = Phase.FINISHED
        self.protocol.fail(code, reason)
        self._flush_protocol(close=True)

    def _flush_protocol(self, close: bool = False) -> None:
        for item in self.protocol.data_to_send():
            self._put(item)
        if close and self.protocol.close_code is not None:
            self._put(Close(self.protocol.close_code, self.protocol.close_reason))

    def _put(self, item: OutItem) -> None:
        self.out.put_nowait(item)
        self.out_bytes += _size(item)

    async def get_out(self) -> OutItem:
        item = await self.out.get()
        self.out_bytes -= _size(item)
        return item

    @property
    def output_full(self) -> bool:
        return self.out.qsize() >= self.max_out or self.out_bytes >= self.max_out_bytes

    def lag_s(self, now: float, chunk16: int) -> float:
        """Seconds the oldest whole undecoded chunk has waited since its last sample arrived (0: none waits).

        Measured from arrival, not from the session's start, so a client that sends faster than real
        time is not lagging (its audio simply waits its turn in a bounded buffer), and one that pauses
        is not either.
        """
        target = self.decoded16 + chunk16 - 1e-6
        for pos16, t in self.arrivals:
            if pos16 >= target:
                return max(0.0, now - t)
        return 0.0

    @property
    def age_s(self) -> float:
        return time.monotonic() - self.created

    def arrival_time(self, pos16: float) -> Optional[float]:
        """Monotonic time at which the sample at 16 kHz position ``pos16`` arrived (drops older entries)."""
        while self.arrivals and self.arrivals[0][0] < pos16 - 1e-6:
            if len(self.arrivals) == 1:
                return self.arrivals[0][1]  # resampler delay: the newest message holds it
            self.arrivals.popleft()
        return self.arrivals[0][1] if self.arrivals else None


def _size(item: OutItem) -> int:
    if isinstance(item, bytes):
        return len(item)
    if isinstance(item, str):
        return len(item) if item.isascii() else len(item.encode("utf-8"))
    return 0
