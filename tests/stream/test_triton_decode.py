"""Decoding inside Triton: the `--decode` python-backend model and TritonRecognizer, against a real
Triton Inference Server on CPU (tests/triton_harness.py); and a step where Triton fails one stream only."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import numpy as np
import pytest

from server_harness import run, running_server, silence, start_serve, synth
from toy_bundle import build_toy_bundle
from triton_harness import triton_server

from wavstream.stream import Recognizer
from wavstream.stream.bundle import BundleError
from wavstream.stream.client import transcribe
from wavstream.stream.endpoint import EndpointConfig
from wavstream.stream.engines.base import StreamsFailedError
from wavstream.stream.engines.triton import TritonEngine, TritonEngineError
from wavstream.stream.events import Final, Partial
from wavstream.stream.hotwords import HotwordError
from wavstream.stream.triton import write_repository
from wavstream.stream.triton.recognizer import TritonRecognizer, _request

pytestmark = pytest.mark.timeout(600)

WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"]
QUICK = EndpointConfig.with_times(1.0, 0.3, 20.0)  # endpoints after 0.3 s of silence: several per stream


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_toy_bundle(tmp_path_factory.mktemp("toy") / "bundle")


@pytest.fixture(scope="module")
def triton(toy: Path, tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("triton")
    write_repository(toy, work / "repo", name="toy", onnx=False, decode=True, queue_delay_us=20000)
    # A model that forgets streams silent for 1 s (what frees the streams of a front end that died).
    write_repository(toy, work / "quick", name="quick", python=False, onnx=False, decode=True, idle_s=1.0)
    (work / "quick" / "quick_decode").rename(work / "repo" / "quick_decode")
    with triton_server(work / "repo", work, load=("toy", "toy_decode", "quick_decode")) as server:
        yield server


def _wave(i: int) -> np.ndarray:
    return np.concatenate([silence(0.02 * i), synth(WORDS[i], seed=i), silence(0.5),
                           synth(f"{WORDS[(i + 1) % 6]} {WORDS[(i + 2) % 6]}", seed=10 + i), silence(0.45)])


def _exact(events: list[list]) -> list[list]:
    return [[(e.text, e.start, e.end, e.segment, [(w.word, w.start, w.end, round(w.confidence, 9)) for w in e.words])
             if isinstance(e, Final) else e for e in evs] for evs in events]


def _decode_lockstep(rec: Recognizer, waves: list[np.ndarray], block: int = 1000) -> list[list]:
    """Every stream fed ``block`` samples at a time, all decoded together after each block."""
    streams = [rec.create_stream(endpoint=QUICK) for _ in waves]
    events: list[list] = [[] for _ in waves]
    for pos in range(0, max(len(w) for w in waves) + block, block):
        for s, w in zip(streams, waves):
            if not s.finished:
                if pos < len(w):
                    s.accept_waveform(w[pos : pos + block], 16000)
                else:
                    s.input_finished()
        while any(s.is_ready() for s in streams):
            for got, evs in zip(events, rec.decode_streams(streams)):
                got.extend(evs)
    assert all(s.done for s in streams)
    return events


def test_concurrent_streams_decoded_in_triton_equal_the_local_recognizer(toy: Path, triton) -> None:
    """Six streams at once: the same partials and finals (text, times, words) as a local Recognizer,
    endpoints at the same places, and every stream's state freed at its END."""
    waves = [_wave(i) for i in range(6)]
    want = _decode_lockstep(Recognizer.from_bundle(toy, emit_features=False), waves)
    rec = TritonRecognizer(triton.grpc_url, "toy_decode", emit_features=False)
    try:
        got = _decode_lockstep(rec, waves)
        assert rec.engine.started == set()  # each stream ended with END: nothing left held
    finally:
        rec.engine.close()
    finals = [[e for e in evs if isinstance(e, Final)] for evs in want]
    assert [[f.text for f in fs] for fs in finals] == [[WORDS[i], f"{WORDS[(i + 1) % 6]} {WORDS[(i + 2) % 6]}"]
                                                       for i in range(6)]
    # Word confidences may differ in the last bit (the acoustic step ran in other batches): compared to 1e-9.
    assert _exact(got) == _exact(want)
    assert all(f.words for fs in finals for f in fs)
    assert any(isinstance(e, Partial) for evs in got for e in evs)


def test_features_come_back_with_the_text(toy: Path, triton) -> None:
    """With features on, a TritonRecognizer's events (Features, Partial, Final) equal a local Recognizer's."""
    x = np.concatenate([synth("golf hotel", seed=3), silence(0.3)])
    local = Recognizer.from_bundle(toy)
    want = list(local.feed(x, 16000)) + list(local.finish())
    rec = TritonRecognizer(triton.grpc_url, "toy_decode")
    try:
        got = list(rec.feed(x, 16000)) + list(rec.finish())
    finally:
        rec.engine.close()
    assert _exact([got]) == _exact([want]) and [e.text for e in got if isinstance(e, Final)] == ["golf hotel"]


def test_hotwords_and_endpoint_rules_travel_with_the_stream(toy: Path, triton) -> None:
    """A stream's hotwords (beam search with a context graph, in Triton) and its endpoint rules give what a
    local stream with the same ones gives; a hotword the model cannot spell is refused here, at creation."""
    x = np.concatenate([synth("kilo", seed=5), silence(0.4), synth("lima", seed=6), silence(0.4)])
    local = Recognizer.from_bundle(toy, emit_features=False)
    rec = TritonRecognizer(triton.grpc_url, "toy_decode", emit_features=False)
    try:
        for kw in ({"hotwords": ["kilo:2", "lima"]}, {"endpoint": QUICK}, {}):
            got, want = [], []
            for r, out in ((rec, got), (local, want)):
                st = r.create_stream(**kw)
                st.accept_waveform(x, 16000)
                st.input_finished()
                while st.is_ready():
                    out.extend(r.decode_stream(st))
            assert _exact([got]) == _exact([want]), kw
            n = len([e for e in got if isinstance(e, Final)])
            assert n == (2 if "endpoint" in kw else 1), (kw, got)
        with pytest.raises(HotwordError):
            rec.create_stream(hotwords=["k1lo"])
    finally:
        rec.engine.close()


def test_ended_stream_is_forgotten_and_one_bad_stream_fails_alone(toy: Path, triton) -> None:
    """END frees the stream in Triton (a chunk after it is refused); in a step where Triton refuses one
    stream, only that one fails (StreamsFailedError names it) and the others get their results."""
    rec = TritonRecognizer(triton.grpc_url, "toy_decode", emit_features=False)
    engine = TritonEngine(toy, triton.grpc_url, "toy")
    try:
        assert rec.transcribe(np.concatenate([synth("kilo"), silence(0.2)]), 16000) == "kilo"
        ended = rec.create_stream()
        ended.accept_waveform(synth("lima"), 16000)
        ended.input_finished()
        while ended.is_ready():
            rec.decode_streams([ended])
        assert ended.done and rec.engine.started == set()
        late = _request(ended.sequence_id, False, False, np.zeros(rec.config.chunk_samples, np.float32), 10, b"")
        assert re.search("START|unknown", rec.sequences.send([late], ["events"]).failed[0])
        good = [rec.create_stream() for _ in range(2)]
        ghost = rec.create_stream()
        rec.engine.started.add(ghost.sequence_id)  # pretend it started: Triton has never seen it
        for s in (*good, ghost):
            s.accept_waveform(synth("mike", seed=1)[: rec.config.chunk_samples], 16000)
        with pytest.raises(StreamsFailedError) as info:
            rec.decode_streams([good[0], ghost, good[1]])
        assert list(info.value.failed) == [1] and re.search("START|unknown", info.value.failed[1])
        assert ghost.done and not good[0].done and info.value.result[0] == info.value.result[2]
        # The same through TritonEngine (the features/logits model): one unknown stream among good ones.
        ids = engine.init_state(3)[0]
        chunk = np.zeros((3, engine.chunk_samples), np.float32)
        engine.step(chunk[:2], [ids[:2]])  # two streams start
        engine._started.add(int(ids[2, 0]))
        with pytest.raises(StreamsFailedError) as info:
            engine.step(chunk, [ids])
        assert list(info.value.failed) == [2] and info.value.result.logits.shape[0] == 3
        assert engine._started == {int(i) for i in ids[:2, 0]}  # the failed one is not held
        engine._started.add(int(ids[2, 0]))
        with pytest.raises(TritonEngineError, match="START|unknown"):
            engine.step(chunk[2:], [ids[2:]])
        engine.release([[ids[:2]]])
    finally:
        rec.engine.close()
        engine.close()


def test_a_stream_silent_longer_than_idle_s_is_forgotten_and_fails_alone(triton) -> None:
    """Triton frees a silent stream only after max_sequence_idle_microseconds (--idle-s); closing the gRPC
    connection does not. The stream's next chunk then fails that stream alone, by name."""
    rec = TritonRecognizer(triton.grpc_url, "quick_decode", emit_features=False)
    try:
        assert rec.sequences.idle_s == 1.0
        quiet, busy = rec.create_stream(), rec.create_stream()
        chunk = rec.config.chunk_samples
        for s in (quiet, busy):
            s.accept_waveform(synth("papa")[:chunk], 16000)
        rec.decode_streams([quiet, busy])
        for _ in range(8):  # 1.6 s: busy keeps sending, quiet does not
            busy.accept_waveform(silence(chunk / 16000), 16000)
            rec.decode_streams([busy])
            time.sleep(0.2)
        quiet.accept_waveform(silence(chunk / 16000), 16000)
        busy.accept_waveform(silence(chunk / 16000), 16000)
        with pytest.raises(StreamsFailedError) as info:
            rec.decode_streams([quiet, busy])
        assert list(info.value.failed) == [0] and re.search("START|unknown", info.value.failed[0])
        assert quiet.done and not busy.done
    finally:
        rec.engine.close()


def test_a_broken_grpc_stream_is_reopened_and_its_sequences_go_on(toy: Path, triton) -> None:
    """The front end's gRPC stream breaks (here: closed under it) between two chunks: the next step opens a
    new one, and the streams Triton holds go on (sequences are keyed by id, not by connection)."""
    x = np.concatenate([synth("oscar papa", seed=7), silence(0.3)])
    local = Recognizer.from_bundle(toy, emit_features=False)
    want = list(local.feed(x, 16000)) + list(local.finish())
    rec = TritonRecognizer(triton.grpc_url, "toy_decode", emit_features=False)
    try:
        half = len(x) // 2
        got = list(rec.feed(x[:half], 16000))
        rec.sequences.client.stop_stream()
        got += list(rec.feed(x[half:], 16000)) + list(rec.finish())
    finally:
        rec.engine.close()
    assert _exact([got]) == _exact([want])


def test_a_model_that_does_not_decode_is_refused_by_name(triton) -> None:
    with pytest.raises(BundleError, match="not a decoding model"):
        TritonRecognizer(triton.grpc_url, "toy")


def test_front_ends_without_a_model_serve_text(toy: Path, triton) -> None:
    """Two servers on TritonRecognizers (no bundle), sessions at once: the local Recognizer's texts."""
    waves = [_wave(i) for i in range(6)]

    async def go(recs: list) -> list:
        async with running_server(recs[0], max_sessions=8) as a, running_server(recs[-1], max_sessions=8) as b:
            urls = [a.url, b.url]
            got = await asyncio.gather(*(transcribe(urls[i % 2], w, 16000, block_s=0.04, realtime=True)
                                         for i, w in enumerate(waves)))
            return [[(f.text, round(f.start, 3), round(f.end, 3)) for f in g] for g in got]

    want = run(go([Recognizer.from_bundle(toy, emit_features=True)]), timeout=120)
    fronts = [TritonRecognizer(triton.grpc_url, "toy_decode") for _ in range(2)]
    try:
        got = run(go(fronts), timeout=180)
        assert [r.engine.started for r in fronts] == [set(), set()]
    finally:
        for r in fronts:
            r.engine.close()
    assert got == want and all(len(g) == 1 for g in want)


def test_serve_command_decoding_in_triton_needs_no_model(triton, tmp_path: Path) -> None:
    """`wavstream serve --engine triton://HOST:PORT/MODEL_decode --decode-in-triton`, --model pointing nowhere."""
    proc, url = start_serve(["--model", str(tmp_path / "absent"), "--port", "0", "--no-page", "--max-sessions", "4",
                             "--engine", f"triton://{triton.grpc_url}/toy_decode", "--decode-in-triton"])
    try:
        finals = run(transcribe(url, np.concatenate([synth("hotel india"), silence(0.3)]), 16000), timeout=60)
        assert [f.text for f in finals] == ["hotel india"]
    finally:
        proc.terminate()
        proc.wait(30)
