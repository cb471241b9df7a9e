"""Output buffers that an engine writes into and reuses once nobody holds them.

An engine step returns its outputs (features, logits, the next states) as
arrays the caller keeps: a stream holds its state until its next step, a
server holds a batch's rows until each session steps again and its feature
frames until they are sent. Fresh arrays every step cost page faults on
megabytes of new memory; an engine that copies its own buffers out costs a
copy (OpenVINO's, in ``infer``: about 15 % of a batch-32 step on the default
model; docs/bench.md).

A ``BufferPool`` hands out preallocated arrays of one shape for the engine to
write into directly. The caller gets views; a buffer goes back into use only
when no view or other reference to it is alive (Python's reference count),
so an output the caller still holds is never overwritten: the guarantee
fresh arrays gave, buffer by buffer as fresh arrays gave it (a feature
frame waiting to be sent pins its features buffer, not the batch's states).
"""

from __future__ import annotations

import itertools
import sys
from typing import Sequence

import numpy as np

__all__ = ["Buffer", "BufferPool"]


class Buffer:
    """One array of a pool; ``serial`` never repeats within a process (unlike ``id``)."""

    __slots__ = ("array", "serial")
    _serials = itertools.count(1)

    def __init__(self, array: np.ndarray) -> None:
        self.array = array
        self.serial = next(Buffer._serials)


def _refs(buf: Buffer) -> int:
    return sys.getrefcount(buf.array)


# The count of an array referenced by nothing but its Buffer, taken through
# the same function (the call's argument adds its own).
_FREE_REFS = _refs(Buffer(np.empty(1)))


class BufferPool:
    """Arrays of one shape and dtype: ``take`` returns one no outside reference holds.

    Args:
        shape, dtype: of every array.
        keep_free: free arrays kept for later steps beyond the one taken; more
            are dropped (a burst of held outputs does not pin its memory).
    """

    def __init__(self, shape: Sequence[int], dtype: "np.typing.DTypeLike", keep_free: int = 2) -> None:
        if keep_free < 0:
            raise ValueError(f"keep_free must be >= 0, got {keep_free}")
        self.shape = tuple(int(d) for d in shape)
        self.dtype = np.dtype(dtype)
        self.keep_free = int(keep_free)
        self._bufs: list[Buffer] = []

    @staticmethod
    def in_use(buf: Buffer) -> bool:
        """True while ``buf.array`` is referenced outside the pool (a view, an alias, a name)."""
        return _refs(buf) > _FREE_REFS

    def take(self) -> Buffer:
        """A buffer to write the next output into: a free one, else a new one."""
        chosen = None
        spare = 0
        for buf in list(self._bufs):
            if self.in_use(buf):
                continue
            if chosen is None:
                chosen = buf
            elif spare < self.keep_free:
                spare += 1
            else:
                self._bufs.remove(buf)
        if chosen is None:
            chosen = Buffer(np.empty(self.shape, self.dtype))
            self._bufs.append(chosen)
        return chosen

    def __len__(self) -> int:
        return len(self._bufs)

    @property
    def nbytes(self) -> int:
        """Memory of the arrays the pool holds (in use or free)."""
        return len(self._bufs) * int(np.prod(self.shape)) * self.dtype.itemsize
