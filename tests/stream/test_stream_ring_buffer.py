"""RingBuffer: ordering across threads, exact overrun accounting, end of stream."""

from __future__ import annotations

import threading
import tracemalloc

import numpy as np
import pytest

from wavstream.stream.ring_buffer import RingBuffer, RingBufferClosed


def _producer(rb: RingBuffer, data: np.ndarray, seed: int) -> None:
    rng = np.random.default_rng(seed)
    pos = 0
    while pos < data.shape[0]:
        n = int(rng.integers(1, 700))
        rb.push(data[pos : pos + n])
        pos += n
    rb.close()


def test_threaded_producer_consumer_delivers_every_sample_in_order() -> None:
    """Random-sized pushes on one thread, whole chunks read on another: nothing lost or reordered."""
    total = 200_003
    data = np.arange(total, dtype=np.float32)  # exact in float32 (< 2**24)
    rb = RingBuffer(capacity=total)  # cannot overrun: every sample must arrive
    t = threading.Thread(target=_producer, args=(rb, data, 1))
    t.start()
    got = []
    while True:
        chunk = rb.read(160, timeout=1.0)
        if chunk is None:
            if rb.closed:
                got.append(rb.flush())
                break
            continue
        assert chunk.shape == (160,)
        got.append(chunk)
    t.join()
    out = np.concatenate(got)
    assert rb.dropped == 0
    np.testing.assert_array_equal(out, data)


def test_threaded_overrun_drops_exactly_what_it_reports() -> None:
    """Ring buffer overruns under a slow reader: delivered + dropped == pushed, gaps == dropped."""
    total = 100_000
    data = np.arange(total, dtype=np.float32)
    rb = RingBuffer(capacity=1000)
    t = threading.Thread(target=_producer, args=(rb, data, 2))
    got = []
    t.start()
    import time

    while True:
        chunk = rb.read(100, timeout=0.5)
        if chunk is None:
            if rb.closed:
                got.append(rb.flush())
                break
            continue
        got.append(chunk)
        time.sleep(0.0005)  # a slow consumer
    t.join()
    out = np.concatenate(got).astype(np.int64)
    assert out.shape[0] + rb.dropped == total
    assert rb.dropped > 0, "the consumer should have fallen behind"
    # Delivered samples keep their order; the missing ones are exactly the dropped ones.
    assert np.all(np.diff(out) >= 1)
    missing = total - out.shape[0]
    assert missing == rb.dropped
    assert rb.total_read == total
    # Oldest audio is what goes: the very last pushed sample always arrives.
    assert out[-1] == total - 1


def test_overrun_drops_oldest_and_counts() -> None:
    """Ring buffer overruns: the oldest samples go and each is counted once."""
    rb = RingBuffer(10)
    assert rb.push(np.arange(8, dtype=np.float32)) == 0
    assert rb.push(np.arange(8, 13, dtype=np.float32)) == 3
    assert rb.dropped == 3
    assert rb.take_dropped() == 3
    assert rb.take_dropped() == 0
    np.testing.assert_array_equal(rb.read(10), np.arange(3, 13, dtype=np.float32))
    assert rb.read(1) is None


def test_block_larger_than_capacity_keeps_newest() -> None:
    """A single push bigger than the whole buffer keeps only its newest samples."""
    rb = RingBuffer(10)
    rb.push(np.arange(4, dtype=np.float32))
    dropped = rb.push(np.arange(100, 125, dtype=np.float32))
    assert dropped == 4 + 15 and rb.dropped == 19
    np.testing.assert_array_equal(rb.read(10), np.arange(115, 125, dtype=np.float32))
    assert rb.total_written == 29 and rb.total_read == 29


def test_read_whole_chunks_only_then_flush_after_close() -> None:
    rb = RingBuffer(64)
    rb.push(np.ones(7, np.float32))
    assert rb.read(5) is not None
    assert rb.read(5) is None  # only 2 left: never a partial chunk
    rb.close()
    assert rb.read(5, timeout=None) is None  # closed: does not block
    tail = rb.flush()
    assert tail.shape == (2,)
    with pytest.raises(RingBufferClosed):
        rb.push(np.ones(1, np.float32))


def test_read_rejects_impossible_sizes() -> None:
    rb = RingBuffer(16)
    with pytest.raises(ValueError, match="capacity"):
        rb.read(17)
    with pytest.raises(ValueError):
        RingBuffer(0)


def test_push_does_not_allocate() -> None:
    """The audio-callback path copies into the preallocated array only."""
    rb = RingBuffer(48_000)
    block = np.ones((4096, 2), np.float32)  # 16 KiB per channel; a copy would show
    rb.push(block[:, 0])
    tracemalloc.start()
    try:
        for _ in range(200):
            rb.push(block[:, 0])  # strided view, as sounddevice's indata[:, ch]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8_000, f"push allocated {peak} bytes"
