"""A preallocated, lossy-on-overrun float32 ring buffer.

One writer thread (an audio callback or a socket handler) pushes blocks of any
size; one reader thread (the inference loop) takes whole chunks of ``n``
samples. The writer never blocks and never allocates: a push is at most two
``np.copyto`` into the preallocated array under a short lock. When the reader
falls behind past ``capacity`` the OLDEST audio is dropped (the newest is what
a live recogniser needs) and every dropped sample is counted, so nothing is
lost silently.

End of stream: the writer calls ``close()``; the reader then drains whole
chunks with ``read(n)`` and takes the final partial chunk with ``flush()``.

Example (reader side)::

    rb = RingBuffer(capacity=16000 * 10)
    while True:
        chunk = rb.read(5120, timeout=0.5)
        if chunk is None:
            if rb.closed:
                tail = rb.flush()   # < 5120 samples, maybe empty
                break
            continue
        ...
        lost = rb.take_dropped()    # samples dropped since the last call
"""

from __future__ import annotations

import threading
from typing import Optional

import numpy as np

from .errors import WavstreamError

__all__ = ["RingBuffer", "RingBufferClosed"]


class RingBufferClosed(WavstreamError, RuntimeError):
    """push() after close()."""


class RingBuffer:
    def __init__(self, capacity: int) -> None:
        if int(capacity) <= 0:
            raise ValueError(f"capacity must be a positive number of samples, got {capacity}")
        self._cap = int(capacity)
        self._buf = np.zeros(self._cap, dtype=np.float32)
        # Monotonic sample counters (Python ints never overflow); the index in
        # _buf is counter % capacity. available = _write - _read.
        self._write = 0
        self._read = 0
        self._dropped_total = 0
        self._dropped_unreported = 0
        self._closed = False
        self._cond = threading.Condition(threading.Lock())

    # ----------------------------------------------------------------- writer
    def push(self, samples: np.ndarray) -> int:
        """Append samples (1-D, any float dtype, may be a strided view).

        Returns the number of samples dropped by this push (0 normally).
        Never blocks on the reader and allocates nothing for float32 input.
        """
        x = samples if samples.ndim == 1 else samples.reshape(-1)
        n = int(x.shape[0])
        if n == 0:
            return 0
        with self._cond:
            if self._closed:
                raise RingBufferClosed("push() on a closed RingBuffer")
            dropped = 0
            if n > self._cap:
                # The block alone exceeds capacity: everything queued and the
                # block's oldest part go; keep its newest `capacity` samples.
                skip = n - self._cap
                dropped += (self._write - self._read) + skip
                self._write += skip
                self._read = self._write
                x = x[skip:]
                n = self._cap
            avail = self._write - self._read
            overflow = avail + n - self._cap
            if overflow > 0:
                self._read += overflow  # drop the oldest queued audio
                dropped += overflow
            start = self._write % self._cap
            first = min(n, self._cap - start)
            np.copyto(self._buf[start : start + first], x[:first], casting="same_kind")
            if first < n:
                np.copyto(self._buf[: n - first], x[first:], casting="same_kind")
            self._write += n
            if dropped:
                self._dropped_total += dropped
                self._dropped_unreported += dropped
            self._cond.notify()
            return dropped

    def close(self) -> None:
        """Mark end of stream; wakes a reader blocked in read()."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    # ----------------------------------------------------------------- reader
    def read(self, n: int, timeout: Optional[float] = 0.0, out: Optional[np.ndarray] = None) -> Optional[np.ndarray]:
        """Take exactly ``n`` samples, or return None.

        timeout: 0 returns at once; a positive number waits up to that many
        seconds for ``n`` samples; None waits until they arrive or the buffer
        is closed. Returns None if fewer than ``n`` are available (a partial
        chunk is never returned here: use ``flush()`` after close).
        ``out``: optional preallocated (n,) float32 array to fill.
        """
        if n <= 0 or n > self._cap:
            raise ValueError(f"read size must be in 1..{self._cap} (the capacity), got {n}")
        with self._cond:
            if timeout != 0.0:
                self._cond.wait_for(lambda: self._write - self._read >= n or self._closed, timeout)
            if self._write - self._read < n:
                return None
            return self._take(n, out)

    def flush(self) -> np.ndarray:
        """Take everything queued (possibly fewer than a chunk, possibly 0).

        Meant for end of stream, after ``close()``; the reader zero-pads it to
        a chunk if the model needs whole chunks.
        """
        with self._cond:
            return self._take(self._write - self._read, None)

    def _take(self, n: int, out: Optional[np.ndarray]) -> np.ndarray:
        # Caller holds the lock.
        res = np.empty(n, dtype=np.float32) if out is None else out[:n]
        start = self._read % self._cap
        first = min(n, self._cap - start)
        res[:first] = self._buf[start : start + first]
        if first < n:
            res[first:] = self._buf[: n - first]
        self._read += n
        return res

    # ------------------------------------------------------------- accounting
    @property
    def capacity(self) -> int:
        return self._cap

    @property
    def available(self) -> int:
        """Samples queued and not yet read."""
        with self._cond:
            return self._write - self._read

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def dropped(self) -> int:
        """Total samples dropped by overruns since creation."""
        return self._dropped_total

    @property
    def total_written(self) -> int:
        """Samples ever pushed (including later-dropped ones)."""
        return self._write

    @property
    def total_read(self) -> int:
        """Stream position of the reader: samples read plus samples dropped."""
        return self._read

    def take_dropped(self) -> int:
        """Samples dropped since the previous call (for periodic warnings)."""
        with self._cond:
            d = self._dropped_unreported
            self._dropped_unreported = 0
            return d

    def __len__(self) -> int:
        return self.available

    def __repr__(self) -> str:
        return (
            f"RingBuffer(capacity={self._cap}, available={self.available}, "
            f"dropped={self._dropped_total}, closed={self._closed})"
        )
