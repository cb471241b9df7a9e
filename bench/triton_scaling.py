"""Front ends sharing one Triton against one `wavstream serve` alone (docs/scaling.md).

    python -m wavstream.bench.triton_scaling --triton-url 127.0.0.1:8001 --triton-model wavstream \
        [--model BUNDLE] [--sessions 12] [--audio FILE] [--triton-decode-model wavstream_decode]

Triton must already serve the bundle (`wavstream triton-repo BUNDLE repo/`;
`tritonserver --model-repository repo/`). Runs, in this process, (1) one
server with the local onnxruntime engine and (2) two servers whose engine is
Triton, each with ``--sessions`` concurrent real-time sessions of the same
audio (staggered by 0.1 s, split evenly between the two front ends in (2));
prints per case the texts' agreement with a local Recognizer, the servers'
chunk -> result latency (p50/p95, measured inside each server from a chunk's
last sample arriving to its results being ready), and Triton's batch sizes.
With ``--triton-decode-model`` (a repository written with ``--decode``), (3)
two front ends without a model (TritonRecognizer: decoding in Triton) too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any, Optional

import numpy as np


def _triton_batches(url: str, model: str) -> dict[int, int]:
    import tritonclient.grpc as grpcclient

    with grpcclient.InferenceServerClient(url) as c:
        st = c.get_inference_statistics(model, as_json=True)["model_stats"][0]
    return {int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in st.get("batch_stats", [])}


def _since(before: dict[int, int], after: dict[int, int]) -> dict[int, int]:
    return {k: after.get(k, 0) - before.get(k, 0) for k in sorted(after) if after.get(k, 0) - before.get(k, 0)}


async def _case(recs: list[Any], wave: np.ndarray, sessions: int, max_sessions: int) -> dict:
    from wavstream.stream.client import transcribe
    from wavstream.stream.server import Server

    servers = [Server(r, "127.0.0.1", 0, max_sessions=max_sessions) for r in recs]
    for s in servers:
        await s.start()
    try:
        async def one(i: int) -> list[str]:
            await asyncio.sleep(0.1 * i)
            finals = await transcribe(servers[i % len(servers)].url, wave, 16000, block_s=0.08, realtime=True)
            return [f.text for f in finals]

        texts = await asyncio.gather(*(one(i) for i in range(sessions)))
        lat = np.concatenate([np.array(s.batcher.stats.latencies, dtype=np.float64) for s in servers]) * 1000.0
        return {"texts": texts, "p50_ms": round(float(np.percentile(lat, 50)), 1),
                "p95_ms": round(float(np.percentile(lat, 95)), 1), "chunks": int(lat.size),
                "errors": [dict(s.errors) for s in servers]}
    finally:
        for s in servers:
            await s.shutdown()


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m wavstream.bench.triton_scaling", description=__doc__.split("\n")[0])
    p.add_argument("--model", default="default")
    p.add_argument("--triton-url", required=True)
    p.add_argument("--triton-model", default="wavstream")
    p.add_argument("--sessions", type=int, default=12)
    p.add_argument("--audio", default=None, help="wav file (default: the packaged sample)")
    p.add_argument("--threads", type=int, default=1, help="onnxruntime threads of the local case")
    p.add_argument("--triton-decode-model", default=None,
                   help="also two front ends without a model, decoding in this Triton model (triton-repo --decode)")
    args = p.parse_args(argv)

    import soundfile as sf

    from wavstream.stream import Recognizer
    from wavstream.stream.engines.triton import TritonEngine
    from wavstream.stream.recognizer import DEFAULT_MODEL_DIR, resolve_model
    from wavstream.stream.triton.recognizer import TritonRecognizer

    bundle = resolve_model(args.model)
    audio = args.audio or str(DEFAULT_MODEL_DIR.parent / "samples" / "sample.wav")
    wave, sr = sf.read(audio, dtype="float32")
    if sr != 16000:
        print(f"{audio}: 16 kHz audio needed, found {sr} Hz", file=sys.stderr)
        return 2
    wave = np.concatenate([wave, np.zeros(16000, np.float32)])  # a pause: the endpoint ends the utterance
    local = Recognizer.from_bundle(bundle, intra_op_threads=args.threads, emit_features=True)
    want = local.transcribe(wave, 16000)

    alone = asyncio.run(_case([local], wave, args.sessions, args.sessions + 4))
    before = _triton_batches(args.triton_url, args.triton_model)
    fronts = [Recognizer(TritonEngine(bundle, args.triton_url, args.triton_model), emit_features=True) for _ in range(2)]
    try:
        shared = asyncio.run(_case(fronts, wave, args.sessions, args.sessions + 4))
    finally:
        for r in fronts:
            r.engine.close()
    hist = _since(before, _triton_batches(args.triton_url, args.triton_model))
    decoding: dict = {}
    if args.triton_decode_model:
        before = _triton_batches(args.triton_url, args.triton_decode_model)
        thin = [TritonRecognizer(args.triton_url, args.triton_decode_model) for _ in range(2)]
        try:
            res = asyncio.run(_case(thin, wave, args.sessions, args.sessions + 4))
        finally:
            for r in thin:
                r.engine.close()
        decoding = {"two_front_ends_decoding_in_triton": {
            **{k: v for k, v in res.items() if k != "texts"},
            "texts_equal_local": all(" ".join(t) == want for t in res["texts"]),
            "triton_batch_sizes": _since(before, _triton_batches(args.triton_url, args.triton_decode_model))}}
    report = {
        "sessions": args.sessions,
        "one_server_local_engine": {**{k: v for k, v in alone.items() if k != "texts"},
                                    "texts_equal_local": all(" ".join(t) == want for t in alone["texts"])},
        "two_front_ends_one_triton": {**{k: v for k, v in shared.items() if k != "texts"},
                                      "texts_equal_local": all(" ".join(t) == want for t in shared["texts"])},
        "triton_batch_sizes": hist,
        **decoding,
        "text": want,
    }
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
