"""BufferPool: an output buffer is reused only once nothing outside the pool refers to it."""

from __future__ import annotations

import gc

import numpy as np
import pytest

from wavstream.stream.engines.buffers import BufferPool


def test_a_held_view_keeps_its_buffer_out_of_use_and_a_released_one_is_reused() -> None:
    pool = BufferPool((4, 3), np.float32)
    a = pool.take()
    a.array[:] = 1.0
    held = a.array[1:2]  # a caller keeps a row, as a stream keeps its state
    b = pool.take()
    assert b is not a and not np.shares_memory(b.array, a.array)
    b.array[:] = 2.0
    np.testing.assert_array_equal(held, 1.0)  # never overwritten while held
    del held
    assert pool.take() is a  # nothing holds it now: reused, not a new allocation
    assert len(pool) == 2 and pool.nbytes == 2 * 4 * 3 * 4


@pytest.mark.parametrize("hold", ["view of a view", "name", "memoryview", "list"])
def test_every_kind_of_reference_counts(hold: str) -> None:
    pool = BufferPool((2, 2), np.int64)
    a = pool.take()
    keep = {"view of a view": lambda x: x[:1][0:1], "name": lambda x: x, "memoryview": memoryview,
            "list": lambda x: [x]}[hold](a.array)
    assert pool.in_use(a)
    assert pool.take() is not a
    del keep
    gc.collect()
    assert not pool.in_use(a)


def test_free_buffers_beyond_keep_free_are_dropped_and_serials_never_repeat() -> None:
    pool = BufferPool((8,), np.float32, keep_free=1)
    held = [pool.take().array[:] for _ in range(5)]  # five in use at once: five buffers
    assert len(pool) == 5
    del held
    pool.take()
    assert len(pool) == 2  # the one taken and one spare
    serials = {pool.take().serial for _ in range(3)} | {BufferPool((1,), np.float32).take().serial}
    assert len(serials) >= 2
    with pytest.raises(ValueError):
        BufferPool((1,), np.float32, keep_free=-1)
