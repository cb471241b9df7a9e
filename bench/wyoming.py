"""The Wyoming figures of docs/home-assistant.md: Describe -> Info time, audio-stop -> transcript latency,
and concurrent utterances against the local Recognizer.

    python -m wavstream.bench.wyoming [--model BUNDLE] [--utterances 20] [--concurrent 8] [--out wyoming.json]

Starts a WyomingServer on 127.0.0.1 (port 0) in this process, sends each test utterance the way Home
Assistant does (16 kHz int16, 1024-byte chunks paced in real time, answers read concurrently) and
prints one JSON object. About 1.5 min with the default model.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

UTTS = Path(__file__).resolve().parents[1] / "tests" / "data" / "eval_utts"


def _load(path: Path) -> np.ndarray:
    import soundfile as sf

    from wavstream.stream.resample import StreamResampler, to_mono_float32

    x, rate = sf.read(str(path), dtype="float32")
    x = to_mono_float32(x)
    if rate != 16000:
        r = StreamResampler(rate, 16000)
        x = np.concatenate([r.process(x), r.flush()])
    return np.clip(np.round(x * 32768), -32768, 32767).astype("<i2")


def _pct(xs: list[float], q: float) -> float:
    return round(1000.0 * float(np.percentile(np.array(xs), q)), 1)


async def measure(rec: Any, waves: list[np.ndarray], utterances: int, concurrent: int) -> dict:
    from wavstream.stream.server.wyoming import WyomingServer, describe, transcribe

    out: dict[str, Any] = {}
    async with WyomingServer(rec, "tcp://127.0.0.1:0") as server:
        infos = [(await describe(server.uri))["_round_trip_s"] for _ in range(5)]
        out["describe_to_info_ms"] = {"first": round(1000 * infos[0], 2), "median": round(1000 * float(np.median(infos)), 2)}
        lat, wrong = [], 0
        for i in range(utterances):
            w = waves[i % len(waves)]
            r = await transcribe(server.uri, w.tobytes(), realtime=True)
            assert r.stop_to_transcript_s is not None
            lat.append(r.stop_to_transcript_s)
            wrong += "".join(r.chunks) != r.text
        out["stop_to_transcript_ms"] = {"n": len(lat), "p50": _pct(lat, 50), "p95": _pct(lat, 95), "max": _pct(lat, 100)}
        out["deltas_not_joining"] = wrong
        local = [rec.transcribe(w, 16000) for w in waves[:concurrent]]
        t0 = time.monotonic()
        got = await asyncio.gather(*(transcribe(server.uri, w.tobytes(), realtime=True) for w in waves[:concurrent]))
        out["concurrent"] = {"n": concurrent, "wall_s": round(time.monotonic() - t0, 2),
                             "equal_to_local_recognizer": [g.text for g in got] == local,
                             "texts": [g.text for g in got],
                             "max_batch_observed": server.stats()["max_batch_observed"]}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="default")
    p.add_argument("--utterances", type=int, default=20)
    p.add_argument("--concurrent", type=int, default=8)
    p.add_argument("--out", default=None, help="also write the JSON here")
    args = p.parse_args(argv)
    from wavstream.stream.recognizer import Recognizer, resolve_model

    rec = Recognizer.from_bundle(resolve_model(args.model), emit_features=False)
    paths = sorted(UTTS.glob("*.wav")) + [Path(__file__).resolve().parents[1] / "stream" / "samples" / "sample.wav"]
    waves = [_load(q) for q in paths]
    while len(waves) < args.concurrent:
        waves = waves + waves
    res = asyncio.run(measure(rec, waves, args.utterances, args.concurrent))
    res["model"] = args.model
    res["audio_s"] = [round(len(w) / 16000, 2) for w in waves]
    text = json.dumps(res, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
