"""One inference loop for all sessions: ready chunks -> ONE batched engine call.

Each cycle the Batcher waits for audio (or an end), waits up to
``max_wait_s`` more so that other sessions' chunks can join, then in its
executor (one worker thread, so the event loop never blocks and the
Recognizer stays single-threaded) it

1. moves each eligible session's pending audio into its Stream,
2. picks up to ``max_batch`` ready streams, least recently served first,
3. runs ``Recognizer.decode_streams`` on them (states stacked on the batch axis),

and returns the events. Back on the loop each session turns its events into
wire messages (``Session.deliver``: the protocol module builds them, not the
Batcher). A session with a full ``out`` queue (a slow reader) is skipped,
never waited for. Only the executor thread touches the streams; only the loop
touches the sessions' other state (phase, buffers, arrival times).

``measure_engine_cost`` times the engine once at start-up; the server sizes
its default session limit from it.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Optional

import numpy as np

from ..protocol import ErrorCode
from .session import Phase, Session

__all__ = ["Batcher", "BatcherStats", "measure_engine_cost"]

log = logging.getLogger("wavstream.server")


class BatcherStats:
    """Counters of the inference loop (all read on the event loop)."""

    def __init__(self, keep_latencies: int = 20000) -> None:
        self.cycles = 0  # engine calls (batches)
        self.chunks = 0  # stream-chunks decoded
        self.batch_sizes: collections.Counter[int] = collections.Counter()
        self.engine_s = 0.0  # time inside decode_streams
        self.latencies: collections.deque[float] = collections.deque(maxlen=keep_latencies)  # seconds

    def to_dict(self) -> dict:
        lat = np.array(self.latencies, dtype=np.float64) * 1000.0
        pct = (lambda q: round(float(np.percentile(lat, q)), 2)) if lat.size else (lambda q: None)
        return {
            "batches": self.cycles,
            "chunks": self.chunks,
            "batch_sizes": {str(k): v for k, v in sorted(self.batch_sizes.items())},
            "max_batch_observed": max(self.batch_sizes, default=0),
            "mean_batch": round(self.chunks / self.cycles, 3) if self.cycles else 0.0,
            "engine_ms_per_batch": round(1000.0 * self.engine_s / self.cycles, 3) if self.cycles else 0.0,
            "latency_ms": {"count": int(lat.size), "p50": pct(50), "p95": pct(95), "max": pct(100)},
        }


class Batcher:
    """The shared inference loop. Start with ``start()``; stop with ``await stop()``."""

    def __init__(self, recognizer: Any, *, max_batch: int = 32, max_wait_s: float = 0.01) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.rec = recognizer
        engine_max = getattr(recognizer, "max_batch_size", None)
        self.max_batch = min(max_batch, engine_max) if engine_max else max_batch
        self.max_wait_s = max(0.0, float(max_wait_s))
        self.sessions: dict[int, Session] = {}
        self.stats = BatcherStats()
        self._chunk = recognizer.config.chunk_samples
        self._stride = recognizer.config.stride
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wavstream-infer")
        self._task: Optional[asyncio.Task] = None
        self._stopping = False
        self._cycle = 0

    # ------------------------------------------------------------- control
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="wavstream-batcher")

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._executor.shutdown(wait=True)

    def add(self, session: Session) -> None:
        self.sessions[session.id] = session

    def remove(self, session: Session) -> None:
        session.close()
        self.sessions.pop(session.id, None)

    def notify(self) -> None:
        """New audio or an end request arrived."""
        self._wake.set()

    # ---------------------------------------------------------------- loop
    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        backlog = False
        while True:
            if not backlog:
                await self._wake.wait()
                if self._stopping and not self.sessions:
                    return
                if self.max_wait_s and not self._any_end_requested():
                    await asyncio.sleep(self.max_wait_s)  # let other sessions' chunks join this batch
            self._wake.clear()
            work = self._collect()
            if not work:
                backlog = False
                if self._stopping and not self.sessions:
                    return
                continue
            try:
                outcome = await loop.run_in_executor(self._executor, self._step, work)
            except Exception as exc:  # an engine failure: end the sessions of this batch, keep serving
                log.exception("inference failed for sessions %s", [s.id for s, _, _ in work])
                for s, _, _ in work:
                    s.fail(ErrorCode.INTERNAL, f"inference failed: {exc}")
                del work  # see below
                backlog = False
                continue
            backlog = self._deliver(outcome)
            # Drop this cycle's references before waiting: a session that ends meanwhile must be freed
            # at once, not when the next batch runs (which may be never on an idle server).
            del work, outcome

    def _any_end_requested(self) -> bool:
        return any(s.phase is Phase.ENDING for s in self.sessions.values())

    def _collect(self) -> list[tuple[Session, list[np.ndarray], bool]]:
        """Sessions to look at this cycle, least recently served first, with the audio to ingest.

        Runs on the loop; the phase moves to FLUSHING here, before the thread gives the stream its end.
        """
        work = []
        for s in sorted(self.sessions.values(), key=lambda s: s.last_served):
            if s.phase in (Phase.FINISHED, Phase.CLOSED) or s.output_full:
                continue
            audio = s.take_pending() if s.backlog < 2 * self._chunk else []
            end = s.phase is Phase.ENDING and not s.pending
            if end:
                s.phase = Phase.FLUSHING
            if audio or end or s.backlog >= self._chunk or s.phase is Phase.FLUSHING:
                work.append((s, audio, end))
        return work

    def _step(self, work: list[tuple[Session, list[np.ndarray], bool]]) -> dict:
        """Executor thread: ingest, pick, decode. Touches the streams only; results are returned."""
        rec = self.rec
        ready: list[tuple[Session, bool]] = []
        backlog: dict[int, int] = {}
        for s, audio, end in work:
            st = s.stream
            for block in audio:
                st.accept_waveform(block, s.start.sample_rate)
            if end:
                st.input_finished()
            backlog[s.id] = st.queued_samples
            if rec.is_ready(st):
                ready.append((s, st.finished))
        # Ending sessions first (an end flushes at once), then least recently served.
        ready.sort(key=lambda r: (not r[1], r[0].last_served))
        batch = [s for s, _ in ready[: self.max_batch]]
        events: dict[int, list] = {}
        decoded16: dict[int, int] = {}
        done: set[int] = set()
        n_stepped = 0
        t0 = time.perf_counter()
        if batch:
            n_stepped = sum(1 for s in batch if s.stream.queued_samples > 0)
            for s, evs in zip(batch, rec.decode_streams([s.stream for s in batch])):
                events[s.id] = evs
                backlog[s.id] = s.stream.queued_samples
                decoded16[s.id] = s.stream.frames_done * self._stride
                if s.stream.done:
                    done.add(s.id)
        engine_s = time.perf_counter() - t0
        more = len(ready) > len(batch) or any(rec.is_ready(s.stream) for s in batch)
        return {"batch": batch, "events": events, "backlog": backlog, "decoded16": decoded16, "done": done,
                "stepped": n_stepped, "engine_s": engine_s, "done_t": time.monotonic(), "more": more}

    def _deliver(self, outcome: dict) -> bool:
        """On the loop: hand each session its results and move its phase on."""
        self._cycle += 1
        if outcome["stepped"]:
            self.stats.cycles += 1
            self.stats.chunks += outcome["stepped"]
            self.stats.batch_sizes[outcome["stepped"]] += 1
            self.stats.engine_s += outcome["engine_s"]
        for sid, n in outcome["backlog"].items():
            s = self.sessions.get(sid)
            if s is not None:
                s.backlog = n
        for s in outcome["batch"]:
            s.last_served = self._cycle
            pos16 = outcome["decoded16"][s.id]
            s.decoded16 = pos16
            if s.phase is Phase.OPEN or s.phase is Phase.ENDING:  # after the end, latency means nothing
                t_arr = s.arrival_time(pos16)
                if t_arr is not None:
                    self.stats.latencies.append(outcome["done_t"] - t_arr)
            if s.is_closed:
                continue
            s.deliver(outcome["events"][s.id])
            if s.id in outcome["done"]:
                s.finish()
        return bool(outcome["more"])


def measure_engine_cost(recognizer: Any, batch: int, steps: int = 5, seed: int = 0) -> float:
    """Seconds of engine time per stream per chunk, decoding ``batch`` streams at once (fastest of ``steps``).

    Runs real chunks (low-level noise) through fresh streams, after one warm-up step; blocking, so
    call it in the executor that will run the Batcher. Used to size the default session limit.
    The fastest step, not the median: other processes on the machine slow some steps down, and the
    limit should not depend on what they did during this second (the server's lag check covers
    a machine that stays busy).
    """
    rng = np.random.default_rng(seed)
    chunk = recognizer.config.chunk_samples
    rate = recognizer.config.sample_rate
    streams = [recognizer.create_stream() for _ in range(max(1, batch))]
    times = []
    for k in range(steps + 1):
        for st in streams:
            st.accept_waveform((0.01 * rng.standard_normal(chunk)).astype(np.float32), rate)
        t0 = time.perf_counter()
        recognizer.decode_streams(streams)
        if k:  # the first call pays one-time costs (allocations, graph warm-up)
            times.append(time.perf_counter() - t0)
    return min(times) / len(streams)
