"""Load test: how many real-time streams a server holds under a latency bound.

    python -m wavstream.bench.loadtest --model BUNDLE            # starts `wavstream serve` itself
    python -m wavstream.bench.loadtest --url ws://host:8765      # an already running server

Each simulated client streams noise in real time, one message per model
chunk (320 ms for the tiny wav2vec2), with features on (float16) so that
every decoded chunk comes back as a feature frame, partial text or not. The
latency of chunk k is the time from sending the message that completes it
(its last sample arriving) to receiving its result. For each stream count N
(ramped up) it reports p50/p95/max latency, the server's batch sizes, and
the largest N whose p95 stays under the bound. The clients run in this
process, the server in another (``--url`` or a subprocess).

``measure(url, streams, ...)`` is the reusable core (the bench helper calls it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import subprocess
import sys
import time
import urllib.request
from typing import Any, Optional

import numpy as np

__all__ = ["measure", "ramp", "main"]


async def _one_stream(url: str, duration_s: float, chunk_samples: int, phase_s: float, seed: int, lat: list, errors: list) -> None:
    from wavstream.stream.client import Client
    from wavstream.stream.protocol import unpack_features

    rng = np.random.default_rng(seed)
    try:
        c = await Client.connect(url, features=True, feature_dtype="float16", endpoint={"enabled": True})
    except Exception as exc:  # refused (server full), connection error
        errors.append(repr(exc))
        return
    frames_per_chunk = int(round(c.ready["chunk_ms"] / c.ready["frame_shift_ms"]))
    n_chunks = max(1, int(duration_s * 16000 / chunk_samples))
    sent_at: dict[int, float] = {}

    async def send() -> None:
        await asyncio.sleep(phase_s)
        t0 = time.monotonic()
        for k in range(n_chunks):
            delay = t0 + k * chunk_samples / 16000.0 - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            block = (0.05 * rng.standard_normal(chunk_samples)).astype(np.float32)
            await c.send_audio(block)
            sent_at[k] = time.monotonic()
        await c.end()

    sender = asyncio.create_task(send())
    try:
        while True:
            msg = await c.ws.recv()
            now = time.monotonic()
            if isinstance(msg, bytes):
                start, frames = unpack_features(msg)
                k = (start + frames.shape[0]) // frames_per_chunk - 1
                if frames.shape[0] == frames_per_chunk and k in sent_at:
                    lat.append(now - sent_at[k])
            elif '"done"' in msg or '"error"' in msg:
                if '"error"' in msg:
                    errors.append(msg)
                break
    except Exception as exc:
        errors.append(repr(exc))
    finally:
        sender.cancel()
        await c.close()


def _server_stats(url: str) -> dict:
    try:
        with urllib.request.urlopen(url.replace("ws://", "http://").rstrip("/") + "/stats", timeout=5) as r:
            return json.loads(r.read())
    except Exception:
        return {}


async def measure(url: str, streams: int, *, duration_s: float = 10.0, chunk_ms: float = 320.0, warmup_s: float = 1.0) -> dict:
    """Run ``streams`` real-time clients for ``duration_s``; latency percentiles in ms (after warm-up)."""
    chunk = int(round(chunk_ms * 16))
    before = _server_stats(url)
    lat_lists: list[list] = [[] for _ in range(streams)]
    errors: list = []
    rng = np.random.default_rng(0)
    t0 = time.monotonic()
    await asyncio.gather(*(
        _one_stream(url, duration_s, chunk, float(rng.uniform(0, chunk_ms / 1000.0)), i, lat_lists[i], errors)
        for i in range(streams)
    ))
    wall = time.monotonic() - t0
    skip = int(warmup_s * 1000.0 / chunk_ms)
    lat = np.array([x for lst in lat_lists for x in lst[skip:]], dtype=np.float64) * 1000.0
    after = _server_stats(url)
    sizes: dict[str, int] = {}
    for k, v in after.get("batch_sizes", {}).items():
        d = v - before.get("batch_sizes", {}).get(k, 0)
        if d:
            sizes[k] = d
    n_b = sum(sizes.values())
    return {
        "streams": streams,
        "chunk_ms": chunk_ms,
        "chunks_measured": int(lat.size),
        "p50_ms": round(float(np.percentile(lat, 50)), 1) if lat.size else None,
        "p95_ms": round(float(np.percentile(lat, 95)), 1) if lat.size else None,
        "max_ms": round(float(lat.max()), 1) if lat.size else None,
        "mean_batch": round(sum(int(k) * v for k, v in sizes.items()) / n_b, 2) if n_b else None,
        "batch_sizes": sizes,
        "errors": errors[:5],
        "wall_s": round(wall, 1),
    }


async def ramp(url: str, counts: list[int], *, bound_ms: float = 200.0, duration_s: float = 10.0, chunk_ms: float = 320.0,
               log: Any = print) -> dict:
    """measure() for each count until p95 exceeds ``bound_ms``; returns {"held": N, "runs": [...]}."""
    runs = []
    held = 0
    for n in counts:
        r = await measure(url, n, duration_s=duration_s, chunk_ms=chunk_ms)
        runs.append(r)
        log(json.dumps(r))
        ok = r["p95_ms"] is not None and r["p95_ms"] < bound_ms and not r["errors"]
        if not ok:
            break
        held = n
        await asyncio.sleep(0.5)
    return {"held": held, "bound_ms": bound_ms, "chunk_ms": chunk_ms, "runs": runs}


def _start_server(model: str, threads: Optional[int], max_batch: int, max_wait_ms: float) -> tuple[subprocess.Popen, str]:
    # No admission limits: finding where latency breaks is the point of the ramp.
    cmd = [sys.executable, "-m", "wavstream.cli.main", "serve", "--model", model, "--port", "0", "--max-sessions", "4096",
           "--max-pending", "4096", "--max-lag", "0",
           "--max-batch", str(max_batch), "--max-wait-ms", str(max_wait_ms)]
    if threads:
        cmd += ["--threads", str(threads)]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    assert proc.stderr is not None
    while True:
        line = proc.stderr.readline()
        m = re.search(r"listening on (ws://\S+)", line)
        if m:
            return proc, m.group(1)
        if not line and proc.poll() is not None:
            raise RuntimeError(f"server did not start (exit {proc.returncode})")


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m wavstream.bench.loadtest", description=__doc__.split("\n\n")[0])
    p.add_argument("--url", help="an already running server (else --model starts one)")
    p.add_argument("--model", default="default", help="bundle for the server started here")
    p.add_argument("--threads", type=int, default=None, help="onnxruntime threads of the started server")
    p.add_argument("--max-batch", type=int, default=64)
    p.add_argument("--max-wait-ms", type=float, default=10.0)
    p.add_argument("--streams", default="1,2,4,8,12,16,24,32,48,64,96,128", help="stream counts to try, in order")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per step")
    p.add_argument("--chunk-ms", type=float, default=320.0, help="audio per message (use the model's chunk)")
    p.add_argument("--bound-ms", type=float, default=200.0, help="p95 latency bound")
    args = p.parse_args(argv)
    proc = None
    url = args.url
    if url is None:
        proc, url = _start_server(args.model, args.threads, args.max_batch, args.max_wait_ms)
    try:
        res = asyncio.run(ramp(url, [int(x) for x in args.streams.split(",")], bound_ms=args.bound_ms,
                               duration_s=args.duration, chunk_ms=args.chunk_ms))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
    print(json.dumps({"held": res["held"], "bound_ms": res["bound_ms"], "chunk_ms": res["chunk_ms"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
