"""An engine that fails some streams of a batch and not others (as Triton can): only those sessions end.

The engine here wraps the toy model's and refuses every row whose chunk holds the "poison" level 0.95
(the toy model's speech stays below 0.85), with StreamsFailedError, as TritonEngine does.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Sequence

import numpy as np
import pytest

from server_harness import raw_session, recv_until_close, run, running_server, toy_recognizer, utterance

from wavstream.stream import Final, Recognizer
from wavstream.stream.client import transcribe
from wavstream.stream.engines.base import Engine, StepResult, StreamsFailedError

POISON = 0.95


class _PoisonRows(Engine):
    def __init__(self, inner: Engine) -> None:
        super().__init__(inner.bundle)
        self.inner = inner
        self.batches: list[int] = []

    def init_state(self, batch: int = 1) -> list[np.ndarray]:
        return self.inner.init_state(batch)

    def _run(self, samples: np.ndarray, states: Sequence[np.ndarray]) -> StepResult:
        self.batches.append(samples.shape[0])
        res = self.inner.step(samples, states)
        bad = {b: "row refused" for b in range(samples.shape[0]) if np.any(samples[b] >= POISON - 1e-6)}
        if bad:
            raise StreamsFailedError(bad, res)
        return res


@pytest.fixture()
def rec(tmp_path: Path) -> Recognizer:
    base = toy_recognizer(tmp_path / "toy")
    return Recognizer(_PoisonRows(base.engine), emit_features=True)


def test_recognizer_ends_only_the_failed_stream(rec: Recognizer) -> None:
    good, bad = rec.create_stream(), rec.create_stream()
    good.accept_waveform(utterance("echo"), 16000)
    good.input_finished()
    bad.accept_waveform(np.full(rec.config.chunk_samples, POISON, np.float32), 16000)
    with pytest.raises(StreamsFailedError) as info:
        rec.decode_streams([good, bad])
    assert list(info.value.failed) == [1] and bad.done and not good.done
    texts = []
    while good.is_ready():
        texts += [e.text for e in rec.decode_stream(good) if isinstance(e, Final)]
    assert texts == ["echo"]


def test_server_fails_the_poisoned_session_and_serves_the_others(rec: Recognizer) -> None:
    async def go() -> tuple:
        async with running_server(rec, max_sessions=8, max_wait_ms=50) as server:
            ws = await raw_session(server.url, {"sample_rate": 16000, "format": "float32"})
            goods = [asyncio.create_task(transcribe(server.url, utterance(w, seed=i), 16000, block_s=0.04,
                                                    realtime=True)) for i, w in enumerate(["golf", "hotel", "india"])]
            await asyncio.sleep(0.2)
            await ws.send(np.full(rec.config.chunk_samples, POISON, np.float32).tobytes())
            msgs, code = await recv_until_close(ws, timeout=20)
            return msgs, code, [[f.text for f in g] for g in await asyncio.gather(*goods)], server.stats()

    msgs, code, texts, stats = run(go(), timeout=60)
    errors = [m for m in msgs if isinstance(m, dict) and m.get("type") == "error"]
    assert len(errors) == 1 and errors[0]["code"] == "internal" and "row refused" in errors[0]["reason"], msgs
    assert code == 1011
    assert texts == [["golf"], ["hotel"], ["india"]]
    assert max(rec.engine.batches) > 1  # the poisoned chunk shared a batch with good ones at least once
