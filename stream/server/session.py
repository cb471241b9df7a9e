"""One client session's server-side state (no websocket I/O here).

The event-loop side (the connection handler) pushes decoded audio into
``pending`` and reads outgoing messages from ``out``; the inference side
(the Batcher, on its executor thread) is the only one that touches
``stream`` (the Recognizer's Stream is single-threaded by contract).

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
import itertools
import time
from dataclasses import dataclass
from typing import Any, Deque, Optional, Union

import numpy as np

from .protocol import StartMessage

__all__ = ["Session", "Done"]

_ids = itertools.count(1)


@dataclass(frozen=True)
class Done:
    """Marker in ``Session.out``: the stream is flushed; send ``done`` and close."""

    reason: str  # "end" | "idle_timeout" | "session_too_long" | "shutting_down"


OutItem = Union[str, bytes, Done]


class Session:
    def __init__(
        self, start: StartMessage, stream: Any, *, max_pending_samples: int, max_out: int = 64, max_out_bytes: int = 1 << 20
    ) -> None:
        self.id = next(_ids)
        self.start = start
        self.stream = stream  # wavstream.stream.Stream; touched only by the Batcher's worker thread
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
        self.end_reason: Optional[str] = None  # set when the stream must be flushed and closed
        self.closed = False  # the connection is gone or the session was ended by an error
        # Batcher bookkeeping
        self.end_sent = False  # input_finished() was called on the stream
        self.finished = False  # Done was queued
        self.backlog = 0  # 16 kHz samples queued inside the Stream (as of the last step)
        self.last_served = 0  # batch cycle that last decoded this session (round-robin order)
        self.segment = 0  # utterance index for partial/final messages
        # arrival times for latency: (cumulative 16 kHz sample position, monotonic time)
        self.arrivals: Deque[tuple[float, float]] = collections.deque()
        self._in_samples = 0  # input-rate sample frames received
        self.lat: Optional[float] = None  # seconds from the last decoded chunk's last sample arriving to its events
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

    def take_pending(self) -> list[np.ndarray]:
        blocks, self.pending, self.pending_samples = self.pending, [], 0
        self.room.set()
        return blocks

    def request_end(self, reason: str = "end") -> None:
        if self.end_reason is None:
            self.end_reason = reason

    def put_out(self, item: OutItem) -> None:
        """Queue one outgoing message (the loop thread only)."""
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
        try:
            arrivals = tuple(self.arrivals)  # one C call under the GIL: a consistent snapshot
        except RuntimeError:  # mutated meanwhile by the other thread; next look will do
            return 0.0
        for pos16, t in arrivals:
            if pos16 >= target:
                return max(0.0, now - t)
        return 0.0

    @property
    def age_s(self) -> float:
        return time.monotonic() - self.created

    def arrival_time(self, pos16: float) -> Optional[float]:
        """Monotonic time at which the sample at 16 kHz position ``pos16`` arrived (drops older entries)."""
        try:  # the loop thread appends meanwhile; an IndexError only loses one measurement
            while self.arrivals and self.arrivals[0][0] < pos16 - 1e-6:
                if len(self.arrivals) == 1:
                    return self.arrivals[0][1]  # resampler delay: the newest message holds it
                self.arrivals.popleft()
            return self.arrivals[0][1] if self.arrivals else None
        except IndexError:
            return None


def _size(item: OutItem) -> int:
    if isinstance(item, bytes):
        return len(item)
    if isinstance(item, str):
        return len(item) if item.isascii() else len(item.encode("utf-8"))
    return 0
