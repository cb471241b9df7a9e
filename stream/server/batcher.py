"""One inference loop for all sessions: ready chunks -> ONE batched engine call.

Each cycle the Batcher waits until some session has a whole chunk (or an
end) waiting, lets other sessions' chunks join until the oldest of them has
waited ``wait_s()`` (time spent behind the previous cycle counts), then in its
executor (one worker thread, so the event loop never blocks and the
Recognizer stays single-threaded) it

1. moves each eligible session's pending audio into its Stream,
2. picks up to ``max_batch`` ready streams, least recently served first,
3. runs ``Recognizer.decode_streams`` on them (states stacked on the batch axis),

and returns the events. Back on the loop each session turns its events into
wire messages (``Session.deliver``: the protocol module builds them, not the
Batcher). A session with a full ``out`` queue (a slow reader) is skipped,
never waited for. The executor thread is handed a ``_Job`` per session (its
Stream and the audio taken for it on the loop), never the Session, and hands
back an ``_Outcome`` keyed by session id: only the thread touches the streams,
only the loop touches the sessions (phase, buffers, arrival times).

The wait grows with the sessions: ``max_wait_s`` with few, up to ``busy_wait_s``
once there are enough sessions for that wait to gather ``target_batch`` chunks
(their chunks arrive at random phases). Without it a busy server runs batches
of 1-5 chunks, each paying the engine's per-call cost; a larger batch costs
less per stream, and the longer wait is paid in latency only where the load is.
A session's audio is not looked at before a whole chunk of it has arrived
(``Session.chunk_due``): an audio message costs the loop one append, not a cycle.

With ``workers`` > 1 that many cycles run at once, each in its own executor
thread, on disjoint sessions: a session being decoded is not collected again
until its results are delivered, so its chunks still go through the engine in
order, one at a time. On 2 cores two ONNX Runtime workers with one engine
thread each answer sooner than one worker with two (p95 at 80 streams 184 ->
144 ms; a small step keeps one thread busy better than it splits over two),
though they hold about as many streams (docs/bench.md, "Server"). The engine
must run steps concurrently to gain (``Engine.concurrent_steps``).

``measure_engine_cost`` times the engine once at start-up; the server sizes
its default session limit from it.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from ..engines.base import StreamsFailedError
from ..protocol import ErrorCode
from .session import Phase, Session

__all__ = ["Batcher", "BatcherStats", "measure_engine_cost", "warm_engine"]

log = logging.getLogger("wavstream.server")


class BatcherStats:
    """Counters of the inference loop (all read on the event loop)."""

    def __init__(self, keep_latencies: int = 20000) -> None:
        self.cycles = 0  # engine calls (batches)
        self.loop_cycles = 0  # cycles that looked at some session (with or without an engine call)
        self.chunks = 0  # stream-chunks decoded
        self.batch_sizes: collections.Counter[int] = collections.Counter()
        self.engine_s = 0.0  # time inside decode_streams
        self.latencies: collections.deque[float] = collections.deque(maxlen=keep_latencies)  # seconds

    def to_dict(self) -> dict:
        lat = np.array(self.latencies, dtype=np.float64) * 1000.0
        pct = (lambda q: round(float(np.percentile(lat, q)), 2)) if lat.size else (lambda q: None)
        return {
            "batches": self.cycles,
            "cycles": self.loop_cycles,
            "chunks": self.chunks,
            "batch_sizes": {str(k): v for k, v in sorted(self.batch_sizes.items())},
            "max_batch_observed": max(self.batch_sizes, default=0),
            "mean_batch": round(self.chunks / self.cycles, 3) if self.cycles else 0.0,
            "engine_ms_per_batch": round(1000.0 * self.engine_s / self.cycles, 3) if self.cycles else 0.0,
            "latency_ms": {"count": int(lat.size), "p50": pct(50), "p95": pct(95), "max": pct(100)},
        }


@dataclass(eq=False)
class _Job:
    """What the executor thread gets for one session: its Stream and the input taken for it on the loop."""

    sid: int
    stream: Any  # wavstream.stream.Stream
    rate: int  # the session's input sample rate
    audio: list[np.ndarray]  # blocks to accept, in order
    end: bool  # give the stream input_finished() after the audio
    last_served: int  # round-robin order
    rec: Any  # the Recognizer that decodes the stream (one per latency)


@dataclass(eq=False)
class _Outcome:
    """What the executor thread hands back to the loop (by session id; plain values, no Session)."""

    batch: list[int]  # session ids decoded this cycle, in batch order
    events: dict[int, list]  # their events
    backlog: dict[int, int]  # 16 kHz samples still queued in each looked-at stream
    decoded16: dict[int, int]  # 16 kHz samples decoded so far, per decoded session
    done: set[int]  # decoded sessions whose stream is finished
    stepped: int  # streams that ran through the engine (not only finalised)
    engine_s: float
    done_t: float  # monotonic time the results were ready
    more: bool  # another ready chunk is waiting: run again without waiting
    failed: dict[int, str] = field(default_factory=dict)  # sessions whose stream the engine failed: why


class Batcher:
    """The shared inference loop. Start with ``start()``; stop with ``await stop()``."""

    TARGET_BATCH = 16  # where the engine's cost per stream stops falling much (docs/bench.md, efficiency)

    def __init__(self, recognizer: Any, *, max_batch: int = 32, max_wait_s: float = 0.01,
                 busy_wait_s: Optional[float] = None, target_batch: Optional[int] = None,
                 workers: int = 1) -> None:
        """``max_wait_s``: the wait for more chunks with few sessions; ``busy_wait_s`` (default 4 x
        ``max_wait_s``): the longest wait, reached when the sessions' chunks would fill ``target_batch``
        (default ``min(TARGET_BATCH, max_batch)``) in it. ``workers``: cycles that may run at once."""
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if workers > 1 and not getattr(recognizer.engine, "concurrent_steps", False):
            raise ValueError(f"{type(recognizer.engine).__name__} does not run steps concurrently: use workers=1")
        self.workers = int(workers)
        self.rec = recognizer
        engine_max = getattr(recognizer, "max_batch_size", None)
        self.max_batch = min(max_batch, engine_max) if engine_max else max_batch
        self.max_wait_s = max(0.0, float(max_wait_s))
        busy = 4.0 * self.max_wait_s if busy_wait_s is None else float(busy_wait_s)
        if busy < self.max_wait_s:
            raise ValueError(f"busy_wait_s ({busy}) must be >= max_wait_s ({self.max_wait_s})")
        self.busy_wait_s = busy
        self.target_batch = max(1, min(self.max_batch, self.TARGET_BATCH if target_batch is None else int(target_batch)))
        self._chunk_s = recognizer.config.chunk_samples / recognizer.config.sample_rate
        self.sessions: dict[int, Session] = {}
        self.stats = BatcherStats()
        self._stride = recognizer.config.stride  # the same at every latency of one bundle
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="wavstream-infer")
        self._tasks: list[asyncio.Task] = []
        self._in_flight: set[int] = set()  # ids of sessions a worker is decoding now
        # sessions removed while a worker decoded them: their streams are released after that step
        self._release_after: dict[int, Session] = {}
        self._stopping = False
        self._cycle = 0
        self._first_due_t = 0.0  # monotonic time of the first notify() since the loop last collected

    # ------------------------------------------------------------- control
    def start(self) -> None:
        if not self._tasks:
            loop = asyncio.get_running_loop()
            self._tasks = [loop.create_task(self._run(), name=f"wavstream-batcher-{i}") for i in range(self.workers)]

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        for task in self._tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
        self._executor.shutdown(wait=True)

    def add(self, session: Session) -> None:
        self.sessions[session.id] = session

    def remove(self, session: Session) -> None:
        session.close()
        self.sessions.pop(session.id, None)
        if session.id in self._in_flight:  # a worker is stepping its stream: release it after that step
            self._release_after[session.id] = session
        else:
            self._release(session)

    def _release(self, session: Session) -> None:
        # A stream cut off before its end: an engine that keeps its state elsewhere (Triton) frees it now,
        # on an executor thread (streams and the engine are touched there only), never beside a step of
        # that stream (with several workers another thread may be stepping it: remove() defers it).
        try:
            self._executor.submit(_release_unfinished, session.recognizer, session.stream)
        except RuntimeError:  # the executor is shut down: the server is gone, and so are its streams
            pass

    def _step_ended(self, sids: set[int]) -> None:
        """Loop: a worker's step of these sessions is over; release the ones removed meanwhile."""
        self._in_flight -= sids
        for sid in sids & self._release_after.keys():
            self._release(self._release_after.pop(sid))

    def notify(self) -> None:
        """A whole chunk of some session's audio, or an end request, arrived (see ``Session.chunk_due``)."""
        if not self._wake.is_set():
            self._first_due_t = time.monotonic()  # the oldest chunk not yet collected came now
        self._wake.set()

    def wait_s(self) -> float:
        """How long a cycle waits for more chunks before it runs, from the sessions now served.

        Streams at random phases bring ``n / chunk_s`` chunks a second, so a wait of
        ``target_batch * chunk_s / n`` gathers a target batch; the wait rises linearly from
        ``max_wait_s`` (no sessions) to ``busy_wait_s`` at the session count where ``busy_wait_s``
        gathers it, and stays there.
        """
        if self.busy_wait_s <= self.max_wait_s:
            return self.max_wait_s
        full = self.target_batch * self._chunk_s / self.busy_wait_s  # sessions that fill a batch in busy_wait_s
        return self.max_wait_s + (self.busy_wait_s - self.max_wait_s) * min(1.0, len(self.sessions) / full)

    # ---------------------------------------------------------------- loop
    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        backlog = False
        while True:
            if not backlog:
                await self._wake.wait()
                if self._stopping and not self.sessions:
                    return
                # Let other sessions' chunks join this batch: the oldest chunk waits at most wait_s() in
                # all, counting the time it already waited while the previous cycle ran.
                wait = self.wait_s() - (time.monotonic() - self._first_due_t)
                if wait > 0 and not self._any_end_requested():
                    await asyncio.sleep(wait)
            self._wake.clear()
            work = self._collect()
            if not work:
                backlog = False
                if self._stopping and not self.sessions:
                    self._wake.set()  # the other workers' loops end too
                    return
                continue
            sids = {job.sid for job in work}
            self._in_flight |= sids
            try:
                outcome = await loop.run_in_executor(self._executor, self._step, work)
            except Exception as exc:  # an engine failure: end the sessions of this batch, keep serving
                self._step_ended(sids)
                log.exception("inference failed for sessions %s", [job.sid for job in work])
                for job in work:
                    s = self.sessions.get(job.sid)
                    if s is not None:
                        s.fail(ErrorCode.INTERNAL, f"inference failed: {exc}")
                del work, s  # see below
                backlog = False
                continue
            self._step_ended(sids)
            backlog = self._deliver(outcome)
            # Drop this cycle's references before waiting: a session that ends meanwhile must be freed
            # at once, not when the next batch runs (which may be never on an idle server).
            del work, outcome

    def _any_end_requested(self) -> bool:
        return any(s.phase is Phase.ENDING for s in self.sessions.values())

    def _collect(self) -> list[_Job]:
        """Sessions to look at this cycle, least recently served first, with the audio to ingest.

        Runs on the loop; the phase moves to FLUSHING here, before the thread gives the stream its end.
        """
        work = []
        # An open session is looked at only once a whole chunk of it is here (chunk_due); most of those
        # that just got a packet are not, and cost this cycle nothing.
        due = [s for s in self.sessions.values()
               if (s.chunk_due if s.phase is Phase.OPEN else s.phase in (Phase.ENDING, Phase.FLUSHING))
               and not s.output_full and s.id not in self._in_flight]
        due.sort(key=lambda s: s.last_served)
        for s in due:
            chunk = s.stream.chunk_samples
            audio = s.take_pending() if s.backlog < 2 * chunk else []
            end = s.phase is Phase.ENDING and not s.pending
            if end:
                s.phase = Phase.FLUSHING
            if audio or end or s.backlog >= chunk or s.phase is Phase.FLUSHING:
                work.append(_Job(s.id, s.stream, s.start.sample_rate, audio, end, s.last_served, s.recognizer))
        return work

    def _step(self, work: list[_Job]) -> _Outcome:
        """Executor thread: ingest, pick, decode. Touches the jobs' streams only; results are returned.

        Streams of different latencies (recognisers of one bundle at other chunk sizes) are decoded
        in one engine call per recogniser.
        """
        ready: list[_Job] = []
        backlog: dict[int, int] = {}
        for job in work:
            st = job.stream
            for block in job.audio:
                st.accept_waveform(block, job.rate)
            if job.end:
                st.input_finished()
            backlog[job.sid] = st.queued_samples
            if job.rec.is_ready(st):
                ready.append(job)
        # Ending streams first (an end flushes at once), then least recently served.
        ready.sort(key=lambda job: (not job.stream.finished, job.last_served))
        batch = ready[: self.max_batch]
        out = _Outcome(batch=[job.sid for job in batch], events={}, backlog=backlog, decoded16={}, done=set(),
                       stepped=sum(1 for job in batch if job.stream.queued_samples > 0), engine_s=0.0, done_t=0.0,
                       more=False)
        t0 = time.perf_counter()
        groups: dict[int, list[_Job]] = {}
        for job in batch:
            groups.setdefault(id(job.rec), []).append(job)
        for jobs in groups.values():
            rec = jobs[0].rec
            try:
                decoded = rec.decode_streams([job.stream for job in jobs])
            except StreamsFailedError as exc:  # some streams failed (Triton): only their sessions end
                decoded = exc.result
                out.failed.update({jobs[i].sid: why for i, why in exc.failed.items()})
            for job, evs in zip(jobs, decoded):
                if job.sid in out.failed:
                    continue
                st = job.stream
                out.events[job.sid] = evs
                backlog[job.sid] = st.queued_samples
                out.decoded16[job.sid] = st.frames_done * self._stride
                if st.done:
                    out.done.add(job.sid)
        out.engine_s = time.perf_counter() - t0
        out.done_t = time.monotonic()
        out.more = len(ready) > len(batch) or any(job.rec.is_ready(job.stream) for job in batch)
        return out

    def _deliver(self, outcome: _Outcome) -> bool:
        """On the loop: hand each session its results and move its phase on."""
        self._cycle += 1
        self.stats.loop_cycles += 1
        if outcome.stepped:
            self.stats.cycles += 1
            self.stats.chunks += outcome.stepped
            self.stats.batch_sizes[outcome.stepped] += 1
            self.stats.engine_s += outcome.engine_s
        for sid, n in outcome.backlog.items():
            s = self.sessions.get(sid)
            if s is not None:
                s.backlog = n
        for sid in outcome.batch:
            s = self.sessions.get(sid)
            if s is None:
                continue  # removed while its chunk was decoded: nothing to deliver to
            s.last_served = self._cycle
            if sid in outcome.failed:
                log.error("inference failed for session %d: %s", sid, outcome.failed[sid])
                if not s.is_closed:
                    s.fail(ErrorCode.INTERNAL, f"inference failed: {outcome.failed[sid]}")
                continue
            pos16 = outcome.decoded16[sid]
            s.decoded16 = pos16
            if s.phase is Phase.OPEN or s.phase is Phase.ENDING:  # after the end, latency means nothing
                t_arr = s.arrival_time(pos16)
                if t_arr is not None:
                    self.stats.latencies.append(outcome.done_t - t_arr)
            if s.is_closed:
                continue
            s.deliver(outcome.events[sid])
            if sid in outcome.done:
                s.finish()
        for sid, n in outcome.backlog.items():
            s = self.sessions.get(sid)
            if s is not None and not s.pending and n < s.recognizer.config.chunk_samples:
                s.caught_up()  # all its audio so far is decoded (but less than a chunk): a dialect may answer now
        return outcome.more


def _release_unfinished(recognizer: Any, stream: Any) -> None:
    if not stream.done:  # a finished stream was released by decode_streams
        recognizer.engine.release([stream.states])


def warm_engine(recognizer: Any, max_batch: int) -> list[int]:
    """Compile now every batch shape up to ``max_batch`` of an engine that compiles per shape
    (OpenVINO with static shapes); returns the batch sizes compiled ([] for other engines).
    Blocking: call it in the executor that will run the Batcher."""
    engine = recognizer.engine
    engine.warmup(range(1, max(1, max_batch) + 1))  # the engine maps each size to its bucket, compiled once
    return sorted(engine.compiled_batches)


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
    recognizer.engine.release([st.states for st in streams])  # a Triton engine frees these probe streams
    return min(times) / len(streams)
