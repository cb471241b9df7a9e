"""Server under load: concurrent real-time streams, chunk-to-partial latency,
end-to-end latency from speech end to final text, memory per stream.

The server (``wavstream.stream.server.Server``, default batching settings) runs
in a child process (``python -m wavstream.bench.server_load serve BUNDLE``) so
its resident memory can be read from /proc. The load generator is an asyncio
websocket client in a second, spawned child process (``LoadGenerator``): torch-free
and fresh, as a real client would be. In the benchmark's own process, after the
other sections had filled its heap, a full garbage collection paused the
clients for 0.3-0.5 s, and a pause in the middle of a level failed it. Server
and clients share the machine's cores, so the numbers include the client's
cost (conservative).

Each client speaks protocol v1 (int16 audio, ``features: true``), sends an
utterance looped at real time in 80 ms packets, and records when each packet
left. Every decoded chunk comes back as a feature frame carrying its first
frame index, together with the chunk's partial text when it changed (both
come from the same batched ``decode_streams`` call). Chunk-to-partial latency
= arrival of that chunk's response - the time the packet holding the chunk's
last sample was sent. A level of N streams holds when its p95 is < 200 ms.

The client is made cheap, since it shares the cores: each stream's packets
are cut once before it starts, and a feature frame's header is read without
decoding its values. Each level also records the CPU time the server and
the load generator spent per stream-second of audio: on a busy machine this
says more than the latency does about how many streams the cores could hold.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

PACKET_MS = 80
P95_LIMIT_MS = 200.0


# ------------------------------------------------------------------ server child
def _serve(bundle: str, threads: int, backend: str = "onnxruntime", precision: str = "fp32", workers: int = 1) -> int:
    from wavstream.stream import Recognizer
    from wavstream.stream.server import Server
    from wavstream.stream.server.app import default_max_sessions

    # The engine options of `wavstream serve --backend B --precision P --workers W` (cli/args.py engine_options);
    # ``threads`` is per worker.
    opts: dict[str, Any] = ({"precision": precision} if backend == "openvino"
                            else {"quantized": precision == "int8"})
    rec = Recognizer.from_bundle(bundle, backend=backend, intra_op_threads=threads, emit_features=True, **opts)
    # What `wavstream serve` would admit by default on this machine, beside what it holds below.
    admitted, admission = default_max_sessions(rec)

    async def main() -> None:
        # Measuring capacity: no admission limits (the sessions, pending connections and lag
        # that a production server refuses are what this bench is here to find).
        server = Server(rec, "127.0.0.1", 0, max_sessions=4096, max_pending=4096, max_lag_s=None,
                        serve_pages=False, idle_timeout_s=60.0, workers=workers)
        await server.start()
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()

        def reader() -> None:  # line commands on stdin: "stats"; EOF stops the server
            for line in sys.stdin:
                if line.strip() == "stats":
                    st = server.stats()
                    st["rss_bytes"] = _rss()
                    print(json.dumps(st, default=str), flush=True)
            loop.call_soon_threadsafe(stop.set)

        print(json.dumps({"port": server.port, "pid": os.getpid(), "rss_bytes": _rss(),
                          "engine": f"{type(rec.engine).__name__} {precision}"
                                    + (f", {workers} workers x {threads} thread(s)" if workers > 1 else ""),
                          "batching": server.stats().get("batching"),
                          "default_max_sessions": admitted, "admission": admission}),
              flush=True)
        threading.Thread(target=reader, daemon=True).start()
        await stop.wait()
        await server.shutdown()

    asyncio.run(main())
    return 0


def _rss() -> int:
    from .common import rss_bytes

    return rss_bytes()


class ServerProcess:
    def __init__(self, bundle: Path, threads: int, backend: str = "onnxruntime", precision: str = "fp32",
                 workers: int = 1) -> None:
        cmd = [sys.executable, "-m", "wavstream.bench.server_load", "serve", str(bundle), str(threads), backend,
               precision, str(workers)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line:
            raise RuntimeError(f"benchmark server did not start (exit code {self.proc.poll()})")
        info = json.loads(line)
        self.port, self.pid, self.rss_at_start = info["port"], info["pid"], info["rss_bytes"]
        self.engine, self.batching = info.get("engine"), info.get("batching")
        self.default_max_sessions, self.admission = info.get("default_max_sessions"), info.get("admission")
        self.url = f"ws://127.0.0.1:{self.port}"

    def stats(self) -> dict:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write("stats\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def rss(self) -> int:
        from .common import rss_bytes

        return rss_bytes(self.pid)

    def cpu_s(self) -> Optional[float]:
        """CPU seconds (user + system, all threads) the server has used so far; None off Linux."""
        return _proc_cpu_s(self.pid)

    def close(self) -> None:
        try:
            if self.proc.stdin:
                self.proc.stdin.close()
            self.proc.wait(timeout=20)
        except Exception:
            self.proc.kill()
            self.proc.wait()


def _proc_cpu_s(pid: int) -> Optional[float]:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


# ------------------------------------------------------------------ load client
class ClientResult:
    def __init__(self) -> None:
        self.latencies: list[float] = []  # chunk -> response, seconds
        self.partial_latencies: list[float] = []
        self.finals: list[tuple[float, Any]] = []  # (arrival, Final)
        self.error: Optional[str] = None
        self.speech_end_sent: Optional[float] = None
        self.end_sent: Optional[float] = None
        self.done_at: Optional[float] = None


async def _client(url: str, audio: np.ndarray, seconds: float, start_delay: float, res: ClientResult,
                  stride: int, skip_chunks: int = 1, speech_end: Optional[int] = None,
                  send_end: bool = True, wait_after: float = 5.0) -> None:
    from websockets.asyncio.client import connect

    from wavstream.stream.events import Final, Partial
    from wavstream.stream.protocol import (END_TEXT, FEATURE_HEADER, Done, ErrorMessage, Ready, StartMessage,
                                           parse_server_message)

    pcm = np.clip(audio * 32767.0, -32768, 32767).astype("<i2")
    total = int(seconds * 16000)
    packet = 16000 * PACKET_MS // 1000
    n_packets = -(-total // packet)
    # Every packet cut before the stream starts (the audio looped to length): sending costs one call each.
    reps = -(-n_packets * packet // len(pcm))
    data = np.tile(pcm, reps)[: n_packets * packet].tobytes()
    step = 2 * packet
    packets = [data[k * step:(k + 1) * step] for k in range(n_packets)]
    sent_at = [float("nan")] * n_packets
    await asyncio.sleep(start_delay)
    try:
        async with connect(url, max_size=1 << 24, ping_interval=None) as ws:
            await ws.send(StartMessage(sample_rate=16000, format="int16", features=True).to_json())
            first = await ws.recv()
            if not isinstance(parse_server_message(first), Ready):
                res.error = f"no ready: {first!r:.200}"
                return
            last_chunk_sent: list[Optional[float]] = [None]

            async def receiver() -> None:
                async for msg in ws:
                    now = time.perf_counter()
                    if isinstance(msg, bytes):  # a feature frame: its header is all the latency needs
                        _magic, _code, _flags, _res, start_frame, num_frames, _dim = FEATURE_HEADER.unpack_from(msg)
                        end_sample = (start_frame + num_frames) * stride - 1
                        k = min(end_sample // packet, n_packets - 1)
                        if start_frame // max(1, num_frames) >= skip_chunks and sent_at[k] == sent_at[k]:  # not NaN
                            res.latencies.append(now - sent_at[k])
                            last_chunk_sent[0] = sent_at[k]
                        continue
                    m = parse_server_message(msg)
                    if isinstance(m, Partial) and last_chunk_sent[0] is not None:
                        # a partial follows its chunk's feature frame (same decode call)
                        res.partial_latencies.append(now - last_chunk_sent[0])
                    elif isinstance(m, Final):
                        res.finals.append((now, m))
                    elif isinstance(m, Done):
                        res.done_at = now
                    elif isinstance(m, ErrorMessage):
                        res.error = f"{m.code}: {m.reason}"

            rx = asyncio.create_task(receiver())
            t0 = time.perf_counter()
            for k in range(n_packets):
                target = t0 + k * PACKET_MS / 1000.0
                delay = target - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                await ws.send(packets[k])
                sent_at[k] = time.perf_counter()
                if speech_end is not None and res.speech_end_sent is None and (k + 1) * packet > speech_end:
                    res.speech_end_sent = sent_at[k]
            if send_end:
                await ws.send(END_TEXT)
                res.end_sent = time.perf_counter()
            try:
                await asyncio.wait_for(rx, wait_after)
            except asyncio.TimeoutError:
                rx.cancel()
    except Exception as exc:  # a refused or dropped connection is a result, not a crash
        if res.error is None:
            res.error = f"{type(exc).__name__}: {exc}"


async def _level(url: str, n: int, audio: np.ndarray, seconds: float, chunk_s: float, stride: int,
                 seed: int) -> list[ClientResult]:
    rng = np.random.default_rng(seed)
    results = [ClientResult() for _ in range(n)]
    # Streams start spread over one chunk, as independent users would.
    offsets = rng.uniform(0, chunk_s, size=n)
    audio_offsets = rng.integers(0, len(audio), size=n)
    tasks = [
        _client(url, np.roll(audio, -int(audio_offsets[i])), seconds, float(offsets[i]), results[i], stride,
                wait_after=max(5.0, seconds))
        for i in range(n)
    ]
    await asyncio.gather(*tasks)
    return results


# ------------------------------------------------------------------ load generator child
# These run in the load generator's process and return plain values.
def _child_ready() -> tuple[int, bool]:
    import importlib

    for name in ("websockets.asyncio.client", "wavstream.stream.protocol", "wavstream.stream.events"):
        importlib.import_module(name)  # what a level imports, paid before the first one
    return os.getpid(), "torch" in sys.modules


def _child_level(url: str, n: int, audio: np.ndarray, seconds: float, chunk_s: float, stride: int,
                 seed: int) -> dict:
    c0 = time.process_time()
    results = asyncio.run(_level(url, n, audio, seconds, chunk_s, stride, seed))
    return {
        "latencies": [x for r in results for x in r.latencies],
        "partial_latencies": [x for r in results for x in r.partial_latencies],
        "errors": [r.error for r in results if r.error],
        "cpu_s": time.process_time() - c0,  # every thread of this process: the load generator's whole cost
    }


def _child_end_to_end(url: str, utterance: np.ndarray, speech_end: int, stride: int, tail_s: float) -> dict:
    audio = np.concatenate([utterance[:speech_end], np.zeros(int(tail_s * 16000), np.float32)])
    res = ClientResult()
    asyncio.run(_client(url, audio, len(audio) / 16000, 0.0, res, stride, speech_end=speech_end,
                        send_end=True, wait_after=5.0))
    ep = [t for t, d in res.finals if res.speech_end_sent is not None and t >= res.speech_end_sent]
    endpoint_s = (ep[0] - res.speech_end_sent) if (ep and res.speech_end_sent is not None and res.end_sent
                                                    and ep[0] < res.end_sent) else None
    res2 = ClientResult()
    speech_only = utterance[:speech_end]
    asyncio.run(_client(url, speech_only, len(speech_only) / 16000, 0.0, res2, stride,
                        speech_end=speech_end, send_end=True, wait_after=5.0))
    flush_final = (res2.finals[0][0] - res2.end_sent) if res2.finals and res2.end_sent else None
    flush_done = (res2.done_at - res2.end_sent) if res2.done_at and res2.end_sent else None
    return {
        "speech_end_to_final_s": endpoint_s,
        "final_text": _short(res.finals[0][1].text) if res.finals else None,
        "final_by": "endpoint" if endpoint_s is not None else ("end message" if res.finals else None),
        "end_message_to_final_s": flush_final, "end_message_to_done_s": flush_done,
        "flush_final_text": _short(res2.finals[0][1].text) if res2.finals else None,
        "endpoint_rules": {"rule1_silence_s": 2.4, "rule2_silence_s": 1.2, "max_utterance_s": 20.0},
        "errors": [e for e in (res.error, res2.error) if e],
    }


def _child_loadtest(url: str, n: int, seconds: float, chunk_ms: float) -> dict:
    from wavstream.bench import loadtest

    return asyncio.run(loadtest.measure(url, n, duration_s=seconds, chunk_ms=chunk_ms))


class LoadGenerator:
    """The websocket clients' own process (``common.fresh_process``: it shares no
    heap, threads or allocator state with the benchmark). One process serves
    every level."""

    def __init__(self) -> None:
        from .common import fresh_process

        self._pool = fresh_process()
        self.pid, self.has_torch = self._pool.submit(_child_ready).result()

    def level(self, url: str, n: int, audio: np.ndarray, seconds: float, chunk_s: float, stride: int,
              seed: int) -> dict:
        return self._pool.submit(_child_level, url, n, audio, seconds, chunk_s, stride, seed).result()

    def end_to_end(self, url: str, utterance: np.ndarray, speech_end: int, stride: int, tail_s: float) -> dict:
        return self._pool.submit(_child_end_to_end, url, utterance, speech_end, stride, tail_s).result()

    def loadtest(self, url: str, n: int, seconds: float, chunk_ms: float) -> dict:
        return self._pool.submit(_child_loadtest, url, n, seconds, chunk_ms).result()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> "LoadGenerator":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def load_levels(server: ServerProcess, audio: np.ndarray, levels: list[int], seconds: float,
                chunk_s: float, stride: int, log: Any, clients: Optional[LoadGenerator] = None) -> list[dict]:
    """Each level in turn until one is not held; ``clients`` is the load generator
    (one is started and closed here when not given)."""
    if clients is None:
        with LoadGenerator() as own:
            return load_levels(server, audio, levels, seconds, chunk_s, stride, log, own)
    rows: list[dict] = []
    for n in levels:
        rss_before = server.rss()
        stats0 = server.stats()
        box: dict = {}

        def sample_rss() -> None:  # RSS in the middle of the level, all sessions open
            time.sleep(min(seconds * 0.6, seconds - 0.2))
            box["rss_mid"] = server.rss()

        th = threading.Thread(target=sample_rss, daemon=True)
        th.start()
        from .common import foreign_mark, foreign_share

        mark = foreign_mark()
        t0 = time.perf_counter()
        cpu0 = server.cpu_s()
        got = clients.level(server.url, n, audio, seconds, chunk_s, stride, seed=n)
        cpu1 = server.cpu_s()
        th.join()
        stats1 = server.stats()
        lats, plats, errors = got["latencies"], got["partial_latencies"], got["errors"]
        expected = n * max(0, int(seconds / chunk_s) - 2)
        from .common import percentiles

        pct = {k: (None if v is None else 1000 * v) for k, v in percentiles(lats).items()}
        b0, b1 = stats0.get("batcher", stats0), stats1.get("batcher", stats1)
        chunks = _get(b1, "chunks") - _get(b0, "chunks")
        batches = _get(b1, "batches") - _get(b0, "batches")
        row = {
            "streams": n, "latency_ms": pct, "partial_latency_ms": {k: (None if v is None else 1000 * v)
                                                                   for k, v in percentiles(plats).items()},
            "responses": len(lats), "expected_responses_min": expected, "errors": errors[:3],
            "error_count": len(errors), "mean_batch": (chunks / batches) if batches else None,
            "rss_before_bytes": rss_before, "rss_mid_bytes": box.get("rss_mid"),
            "wall_s": time.perf_counter() - t0, "foreign_cpu_share": foreign_share(mark),
            # CPU per stream-second of audio sent (the level's streams x its seconds); the load
            # generator's is its own process's, every thread
            "server_cpu_ms_per_stream_s": _per_stream_s(cpu0, cpu1, n, seconds),
            "client_cpu_ms_per_stream_s": _per_stream_s(0.0, got["cpu_s"], n, seconds),
        }
        row["held"] = bool(pct["p95"] is not None and pct["p95"] < P95_LIMIT_MS and not errors
                           and len(lats) >= expected)
        rows.append(row)
        log("server", f"{n} streams: p50 {_fmt(pct['p50'])} p95 {_fmt(pct['p95'])} p99 {_fmt(pct['p99'])} ms, "
                      f"mean batch {row['mean_batch'] or 0:.1f}, RSS {(box.get('rss_mid') or 0) / 2**20:.0f} MiB, "
                      f"CPU ms per stream-s: server {_fmt1(row['server_cpu_ms_per_stream_s'])}, "
                      f"load generator {_fmt1(row['client_cpu_ms_per_stream_s'])}"
                      f"{', errors ' + str(len(errors)) if errors else ''} -> {'held' if row['held'] else 'NOT held'}")
        if not row["held"]:
            break
    return rows


def _get(d: Any, key: str) -> float:
    try:
        return float(d.get(key, 0))
    except Exception:
        return 0.0


def _short(text: Optional[str], n: int = 60) -> Optional[str]:
    return text if text is None or len(text) <= n else text[:n] + "..."


def _fmt(x: Optional[float]) -> str:
    return "-" if x is None else f"{x:.0f}"


def _fmt1(x: Optional[float]) -> str:
    return "-" if x is None else f"{x:.1f}"


def _per_stream_s(a: Optional[float], b: Optional[float], streams: int, seconds: float) -> Optional[float]:
    return None if a is None or b is None else round(1000.0 * (b - a) / (streams * seconds), 3)


def end_to_end(server: ServerProcess, utterance: np.ndarray, speech_end: int, stride: int, log: Any,
               clients: "LoadGenerator", tail_s: float = 3.5) -> dict:
    """One stream: speech then ``tail_s`` of silence at real time; time from the
    speech end to the first final (default endpointing). Then a second stream
    that sends ``end`` right after the speech: time to its final (flush)."""
    out = clients.end_to_end(server.url, utterance, speech_end, stride, tail_s)
    endpoint_s, flush_final = out["speech_end_to_final_s"], out["end_message_to_final_s"]
    log("server", f"speech end -> final {_fmt(None if endpoint_s is None else 1000 * endpoint_s)} ms "
                  f"({out['final_text']!r}); end message -> final {_fmt(None if flush_final is None else 1000 * flush_final)} ms")
    return out


def _loadtest_crosscheck(server: ServerProcess, rows: list[dict], seconds: float, chunk_s: float,
                         log: Any, clients: "LoadGenerator") -> Optional[dict]:
    """The server helper's own load generator (wavstream.bench.loadtest:
    noise, one message per chunk) at the largest held stream count, as a check."""
    held = [r["streams"] for r in rows if r["held"]]
    n = max(held) if held else 1
    try:
        r = clients.loadtest(server.url, n, seconds, 1000 * chunk_s)
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    log("server", f"loadtest.measure cross-check at {n} streams: p50 {r.get('p50_ms')} p95 {r.get('p95_ms')} ms")
    return r


def run(settings: Any, bundle: Path, model_label: str) -> dict:
    from wavstream.stream import load_bundle

    from .common import linear_slope, speech, speech_end_sample

    cfg = load_bundle(bundle).config
    chunk_s = cfg.chunk_samples / cfg.sample_rate
    utt, source = speech("the quick brown fox jumps over the lazy dog and then it runs away")
    end = speech_end_sample(utt)
    loop_audio = np.concatenate([utt[:end], np.zeros(int(0.6 * 16000), np.float32)])
    levels = getattr(settings, "server_streams", None) or settings.pick(
        [1, 4], [1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 160, 192, 256])
    seconds = settings.pick(2.0, 7.0)
    backend = getattr(settings, "server_backend", "onnxruntime")
    precision = getattr(settings, "server_precision", "fp32")
    workers = max(1, int(getattr(settings, "server_workers", 1)))
    server = ServerProcess(bundle, max(1, settings.threads // workers), backend, precision, workers)
    chunks = "" if "ms chunks" in model_label else f"{1000 * chunk_s:.0f} ms chunks, "  # labels often say it
    settings.log("server", f"server pid {server.pid} on {server.url} with {model_label} "
                           f"({chunks}engine {server.engine}; `wavstream serve` would admit "
                           f"{server.default_max_sessions} sessions by default); audio: {source}")
    try:
        with LoadGenerator() as clients:
            e2e = end_to_end(server, utt, end, cfg.stride, settings.log, clients)
            rows = load_levels(server, loop_audio, levels, seconds, chunk_s, cfg.stride, settings.log, clients)
            cross = _loadtest_crosscheck(server, rows, seconds, chunk_s, settings.log, clients)
    finally:
        server.close()
    held = [r["streams"] for r in rows if r["held"]]
    xs = [r["streams"] for r in rows if r.get("rss_mid_bytes")]
    ys = [r["rss_mid_bytes"] for r in rows if r.get("rss_mid_bytes")]
    return {
        "model": model_label, "bundle": str(bundle), "chunk_ms": 1000 * chunk_s, "packet_ms": PACKET_MS,
        "p95_limit_ms": P95_LIMIT_MS, "seconds_per_level": seconds, "audio_source": source,
        "engine": server.engine, "backend": backend, "precision": precision, "workers": workers,
        "batching": server.batching,
        # the default --max-sessions of `wavstream serve` with this engine (measured at the child's start)
        "default_max_sessions": server.default_max_sessions, "admission": server.admission,
        "levels": rows, "max_streams_held": max(held) if held else 0,
        "rss_per_stream_bytes": linear_slope(xs, ys), "rss_at_start_bytes": server.rss_at_start,
        "end_to_end": e2e, "loadtest_crosscheck": cross,
        "note": ("levels stop at the first one not held; the load generator runs in its own process, "
                 "on the same cores as the server"),
    }


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "serve":
        sys.exit(_serve(sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 2,
                        sys.argv[4] if len(sys.argv) > 4 else "onnxruntime", sys.argv[5] if len(sys.argv) > 5 else "fp32",
                        int(sys.argv[6]) if len(sys.argv) > 6 else 1))
    print("usage: python -m wavstream.bench.server_load serve BUNDLE [THREADS [BACKEND [PRECISION]]]", file=sys.stderr)
    sys.exit(2)
