"""The engine interface: one streaming step of a bundle's graph.

An engine runs ``step(samples, states) -> StepResult`` for a batch of B
independent streams. ``samples`` is (B, chunk_samples) float32 at 16 kHz;
``states`` is the list of state tensors in ``config.states`` order, each
(B, ...). Rows are independent, so a server stacks the states of several
sessions along axis 0 (``stack_states``) and splits them after the call
(``unstack_states``).

``Engine.step`` validates its inputs and raises ``ChunkSizeError`` /
``StateShapeError`` (both ``ValueError``) with expected vs found numbers: a
mis-sized chunk is never truncated or padded silently.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from ..bundle import Bundle, BundleConfig
from ..errors import WavstreamError

__all__ = [
    "Engine",
    "StepResult",
    "ChunkSizeError",
    "StateShapeError",
    "EngineUnavailableError",
    "EngineOptionError",
    "StreamsFailedError",
    "stack_states",
    "unstack_states",
    "StateStacker",
]


class ChunkSizeError(WavstreamError, ValueError):
    """samples passed to step() are not (B, chunk_samples)."""


class StateShapeError(WavstreamError, ValueError):
    """states passed to step() don't match the bundle's state specs."""


class EngineUnavailableError(WavstreamError, RuntimeError):
    """The requested backend or device is not available on this machine."""


class EngineOptionError(WavstreamError, ValueError):
    """An engine was asked for with an option it does not have (backend, precision, shapes...)."""


class StreamsFailedError(WavstreamError, RuntimeError):
    """Some streams of one batched call failed and the others did not (an engine that serves each stream
    on its own, like Triton, can tell which). ``failed``: row (or stream index) -> why; ``result``: what
    the others got (a StepResult from an engine; per-stream events from ``Recognizer.decode_streams``)."""

    def __init__(self, failed: dict[int, str], result: object) -> None:
        super().__init__(f"{len(failed)} stream(s) failed: {next(iter(failed.values()), '')}")
        self.failed = failed
        self.result = result


@dataclass
class StepResult:
    features: np.ndarray  # (B, chunk_frames, feature_dim) float32
    logits: Optional[np.ndarray]  # (B, chunk_frames, vocab) float32, None without a vocabulary
    codes: Optional[np.ndarray]  # (B, chunk_frames, groups) int64, vq-wav2vec only
    states: list[np.ndarray]  # new states, same order/shapes as the inputs


class Engine(ABC):
    """Base class: validation, state init; subclasses implement ``_run``."""

    # True when ``step`` may be called from several threads at once (on different states):
    # a server then runs several batches concurrently (``Batcher(workers=N)``).
    concurrent_steps: bool = False

    def __init__(self, bundle: Bundle) -> None:
        self.bundle = bundle
        self.config: BundleConfig = bundle.config

    @property
    def chunk_samples(self) -> int:
        return self.config.chunk_samples

    @property
    def chunk_frames(self) -> int:
        return self.config.chunk_frames

    def state_dtypes(self) -> list[np.dtype]:
        """The dtype of each state as this engine carries it (the bundle's, unless an engine
        keeps a state in a narrower form: OpenVINO's bf16 keeps float states as bfloat16 bits)."""
        return [np.dtype(spec.np_dtype) for spec in self.config.states]

    def init_state(self, batch: int = 1) -> list[np.ndarray]:
        """Fresh states for ``batch`` streams (all zeros, per docs/bundle.md)."""
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        return [np.zeros(spec.batch_shape(batch), dt) for spec, dt in zip(self.config.states, self.state_dtypes())]

    def validate(self, samples: np.ndarray, states: Sequence[np.ndarray]) -> np.ndarray:
        """Check shapes/dtypes; returns samples as contiguous float32.

        Raises ChunkSizeError or StateShapeError (ValueErrors) on mismatch.
        """
        samples = self.validate_samples(samples)
        self._validate_states(samples.shape[0], states)
        return samples

    def validate_samples(self, samples: np.ndarray) -> np.ndarray:
        """Check that samples are (B, chunk_samples) floats; returns them as contiguous float32."""
        samples = np.asarray(samples)
        if samples.ndim != 2:
            raise ChunkSizeError(
                f"samples must be (batch, {self.chunk_samples}), found shape {samples.shape} (ndim {samples.ndim})"
            )
        B, n = samples.shape
        if n != self.chunk_samples:
            raise ChunkSizeError(
                f"expected chunks of {self.chunk_samples} samples ({self.chunk_frames} frames x {self.config.stride}), "
                f"found {n}; zero-pad the last chunk of a stream"
            )
        if B < 1:
            raise ChunkSizeError("batch of 0 streams")
        if not np.issubdtype(samples.dtype, np.floating):
            raise ChunkSizeError(f"samples must be float (float32 in [-1, 1]), found dtype {samples.dtype}")
        return np.ascontiguousarray(samples, dtype=np.float32)

    def _validate_states(self, B: int, states: Sequence[np.ndarray]) -> None:
        specs = self.config.states
        if len(states) != len(specs):
            raise StateShapeError(
                f"expected {len(specs)} state tensors {[s.name for s in specs]}, found {len(states)}"
            )
        for spec, st, want_dt in zip(specs, states, self.state_dtypes()):
            want = spec.batch_shape(B)
            shape = tuple(getattr(st, "shape", ()))
            if shape != want:
                raise StateShapeError(f"state {spec.name!r}: expected shape {want} for batch {B}, found {shape}")
            dt = getattr(st, "dtype", None)
            if dt is not None and np.dtype(dt) != want_dt:
                raise StateShapeError(f"state {spec.name!r}: expected dtype {want_dt} (this engine's; from its "
                                      f"init_state), found {dt}")

    def step(self, samples: np.ndarray, states: Sequence[np.ndarray]) -> StepResult:
        """Process one chunk for a batch of streams. Inputs are not modified."""
        samples = self.validate(samples, states)
        return self._run(samples, states)

    @abstractmethod
    def _run(self, samples: np.ndarray, states: Sequence[np.ndarray]) -> StepResult: ...

    def warmup(self, batches: Sequence[int]) -> None:
        """Prepare these batch sizes now rather than at their first step: an engine that compiles
        per batch shape (OpenVINO, static shapes) compiles them here; the others have nothing to do."""

    @property
    def compiled_batches(self) -> list[int]:
        """Batch sizes compiled per shape so far ([] for an engine that does not compile per shape)."""
        return []

    def release(self, per_stream: Sequence[Sequence[np.ndarray]]) -> None:
        """These streams (each its own state list) are over: an engine that keeps state elsewhere frees theirs."""

    def close(self) -> None:
        """Release backend resources (optional)."""

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def stack_states(per_stream: Sequence[Sequence[np.ndarray]]) -> list[np.ndarray]:
    """[[s0, s1, ...] of stream 0, ...] (each (b_i, ...)) -> [S0, S1, ...] (sum b_i, ...)."""
    if not per_stream:
        raise ValueError("stack_states needs at least one stream")
    n = len(per_stream[0])
    if any(len(s) != n for s in per_stream):
        raise StateShapeError(f"streams have different numbers of state tensors: {[len(s) for s in per_stream]}")
    return [np.concatenate([np.asarray(s[i]) for s in per_stream], axis=0) for i in range(n)]


class StateStacker:
    """``stack_states`` into buffers kept from call to call.

    A batch's states are stacked every step; into fresh arrays that costs
    the page faults of megabytes of new memory each time (24 streams of the
    default model, 1.1 MB of state each: 9.6 ms a step, 2.2 ms into kept
    buffers, beside a 54 ms engine step). The arrays returned are views of
    the buffers and are overwritten by the next ``stack``: use them for one
    engine step, from one thread, and copy any output that is one of them
    (``Recognizer.decode_streams`` does: Triton's engine hands its inputs back).
    """

    def __init__(self) -> None:
        self._bufs: list[Optional[np.ndarray]] = []

    def stack(self, per_stream: Sequence[Sequence[np.ndarray]]) -> list[np.ndarray]:
        if not per_stream:
            raise ValueError("stack_states needs at least one stream")
        n = len(per_stream[0])
        if any(len(s) != n for s in per_stream):
            return stack_states(per_stream)  # raises, naming the mismatch
        self._bufs += [None] * (n - len(self._bufs))
        out: list[np.ndarray] = []
        for i in range(n):
            parts = [np.asarray(s[i]) for s in per_stream]
            first = parts[0]
            rows = sum(int(p.shape[0]) for p in parts)
            buf = self._bufs[i]
            if buf is None or buf.shape[1:] != first.shape[1:] or buf.dtype != first.dtype or buf.shape[0] < rows:
                grown = 0 if buf is None or buf.shape[1:] != first.shape[1:] else buf.shape[0] * 3 // 2
                buf = np.empty((max(rows, grown),) + first.shape[1:], first.dtype)
                self._bufs[i] = buf
            view = buf[:rows]
            try:  # casting="no": a stream whose state differs in dtype is not silently converted
                np.concatenate(parts, axis=0, out=view, casting="no")
            except (ValueError, TypeError):  # mismatched streams: the plain path says how
                return stack_states(per_stream)
            out.append(view)
        return out


def unstack_states(states: Sequence[np.ndarray], batch: Optional[int] = None) -> list[list[np.ndarray]]:
    """Inverse of stack_states for batch-1 streams: [S_i (B, ...)] -> B lists of (1, ...) arrays."""
    B = int(states[0].shape[0]) if batch is None else batch
    for i, s in enumerate(states):
        if s.shape[0] != B:
            raise StateShapeError(f"state {i} has batch {s.shape[0]}, expected {B}")
    # Slices are views into the engine's output arrays; rows are independent
    # and the engine never writes into outputs it returned, so no copy needed.
    return [[s[b : b + 1] for s in states] for b in range(B)]
