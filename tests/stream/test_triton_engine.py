"""TritonEngine against a real Triton Inference Server on CPU (python backend; tests/triton_harness.py).

Triton serves repositories written by `wavstream triton-repo`; front ends are
wavstream servers whose Recognizer runs its steps in that Triton.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from server_harness import run, running_server, silence, start_serve, synth
from toy_bundle import build_toy_bundle
from triton_harness import triton_server

from wavstream.stream import Recognizer
from wavstream.stream.bundle import BundleError, load_bundle
from wavstream.stream.client import transcribe
from wavstream.stream.engines import EngineUnavailableError, create_engine
from wavstream.stream.engines.base import StateShapeError
from wavstream.stream.engines.triton import TritonEngine, TritonEngineError
from wavstream.stream.recognizer import DEFAULT_MODEL_DIR
from wavstream.stream.triton import TritonConfigError, validate_model_config, write_repository

pytestmark = pytest.mark.timeout(600)

SAMPLE = DEFAULT_MODEL_DIR.parent / "samples" / "sample.wav"
WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet", "kilo", "lima"]


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_toy_bundle(tmp_path_factory.mktemp("toy") / "bundle")


@pytest.fixture(scope="module")
def triton(toy: Path, tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("triton")
    repo = work / "repo"
    write_repository(toy, repo, name="toy", onnx=False, queue_delay_us=20000)
    write_repository(DEFAULT_MODEL_DIR, work / "repo2", name="wavstream", onnx=False, intra_op_threads=1)
    (work / "repo2" / "wavstream").rename(repo / "wavstream")
    with triton_server(repo, work, load=("toy", "wavstream")) as server:
        yield server


def test_default_model_through_triton_gives_the_local_text(triton) -> None:
    x, sr = sf.read(SAMPLE, dtype="float32")
    want = Recognizer.from_bundle(DEFAULT_MODEL_DIR, intra_op_threads=1).transcribe(x, sr)
    with create_engine(DEFAULT_MODEL_DIR, "triton", url=triton.grpc_url, model="wavstream") as engine:
        got = Recognizer(engine).transcribe(x, sr)
    assert got == want and len(want.split()) >= 5


def test_twelve_sessions_through_two_front_ends_are_batched_and_exact(toy: Path, triton) -> None:
    """12 concurrent real-time sessions, 6 on each of two front ends sharing one Triton: every text equals
    what a local Recognizer gives, and Triton ran batches of more than one stream."""
    waves = [np.concatenate([silence(0.03 * i), synth(f"{WORDS[i]} {WORDS[(i + 5) % 12]}", seed=i), silence(0.3)])
             for i in range(12)]
    before = _batch_counts(triton.stats("toy"))

    async def go(recs: list[Recognizer]) -> tuple[list, list]:
        async with running_server(recs[0], max_sessions=16) as a, running_server(recs[-1], max_sessions=16) as b:
            urls = [a.url, b.url]
            got = await asyncio.gather(*(transcribe(urls[i % 2], w, 16000, block_s=0.04, realtime=True)
                                         for i, w in enumerate(waves)))
            return [[f.text for f in g] for g in got], [a.stats(), b.stats()]

    local = Recognizer.from_bundle(toy, intra_op_threads=1, emit_features=True)
    want, _ = run(go([local]), timeout=120)
    fronts = [Recognizer(TritonEngine(toy, triton.grpc_url, "toy"), emit_features=True) for _ in range(2)]
    try:
        got, stats = run(go(fronts), timeout=180)
        assert [r.engine._started for r in fronts] == [set(), set()]  # every ended stream was released (END)
    finally:
        for r in fronts:
            r.engine.close()
    assert want == [[f"{WORDS[i]} {WORDS[(i + 5) % 12]}"] for i in range(12)]
    assert got == want
    assert [s["sessions_total"] for s in stats] == [6, 6] and all(s["errors"] == {} for s in stats)
    after = _batch_counts(triton.stats("toy"))
    batches = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    assert max(k for k, v in batches.items() if v > 0) > 1, batches


def _batch_counts(stats: dict) -> dict[int, int]:
    return {int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in stats["model_stats"][0]["batch_stats"]}


def test_ended_streams_are_released_and_unknown_ones_refused(toy: Path, triton) -> None:
    engine = TritonEngine(toy, triton.grpc_url, "toy")
    try:
        rec = Recognizer(engine)
        assert rec.transcribe(synth("kilo"), 16000) == "kilo"
        (ids,) = engine.init_state(2)
        assert ids.shape == (2, 1) and ids.dtype == np.uint64 and ids[0, 0] != ids[1, 0]
        engine._started.add(int(ids[0, 0]))  # pretend it started: Triton has never seen it
        with pytest.raises(TritonEngineError, match="START|unknown"):
            engine.step(np.zeros((1, engine.chunk_samples), np.float32), [ids[:1]])
        with pytest.raises(StateShapeError, match="uint64"):
            engine.step(np.zeros((1, engine.chunk_samples), np.float32), [np.zeros((1, 1), np.int64)])
    finally:
        engine.close()


def test_wrong_bundle_or_server_is_refused_by_name(toy: Path, triton, tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="takes chunks of"):
        TritonEngine(toy, triton.grpc_url, "wavstream")
    other = build_toy_bundle(tmp_path / "other", config_overrides={"family": "toy2"})
    with pytest.raises(BundleError, match="serves another bundle"):
        TritonEngine(other, triton.grpc_url, "toy")
    with pytest.raises(EngineUnavailableError, match="nosuch"):
        TritonEngine(toy, triton.grpc_url, "nosuch")


def test_triton_refuses_a_broken_state_block_with_its_own_error(toy: Path, tmp_path: Path) -> None:
    """Triton's own check, at load; the validator refuses the same config before Triton sees it.

    Triton 2.51 checks states only after it has started the model's instance, and about one load in
    eight here it crashes (SIGSEGV) on its way out instead of answering: up to three tries, each on a
    fresh server with only this model.
    """
    write_repository(toy, tmp_path / "repo", name="broken", onnx=False)
    cfg = tmp_path / "repo" / "broken" / "config.pbtxt"
    text = cfg.read_text().replace("sequence_batching {\n", (
        'sequence_batching {\n  state [ { input_name: "state_x" output_name: "new_state_x" data_type: TYPE_FP32 '
        'dims: [ 4 ] initial_state: { name: "zeros" data_type: TYPE_FP32 dims: [ 5 ] zero_data: true } } ]\n'))
    cfg.write_text(text)
    with pytest.raises(TritonConfigError, match=r"dims \[5\] differ from the state's \[4\]"):
        validate_model_config(text)
    outcomes = []
    for attempt in range(3):
        work = tmp_path / f"try{attempt}"
        work.mkdir()
        with triton_server(tmp_path / "repo", work) as server:
            try:
                outcomes.append(server.load("broken", timeout=30))
            except OSError:  # the load never answered: Triton crashed (checked below)
                assert server.crashed(), server.log.read_text()[-3000:]
                outcomes.append((None, "crashed"))
                continue
        break
    code, message = outcomes[-1]
    assert code == 400 and "doesn't match 'state' dim" in message, outcomes


def test_serve_command_with_a_triton_engine(toy: Path, triton) -> None:
    """`wavstream serve --engine triton://HOST:PORT/MODEL` serves sessions whose steps run in Triton."""
    proc, url = start_serve(["--model", str(toy), "--port", "0", "--no-page", "--max-sessions", "4",
                             "--engine", f"triton://{triton.grpc_url}/toy"])
    try:
        finals = run(transcribe(url, np.concatenate([synth("hotel india"), silence(0.3)]), 16000), timeout=60)
        assert [f.text for f in finals] == ["hotel india"]
    finally:
        proc.terminate()
        proc.wait(30)


def test_transcribe_command_with_backend_triton_exits_by_itself(toy: Path, triton, tmp_path: Path) -> None:
    """The long form of the flags; the command ends without closing the engine itself (the gRPC reader is a daemon)."""
    wav = tmp_path / "a.wav"
    sf.write(wav, synth("kilo lima"), 16000)
    out = subprocess.run([sys.executable, "-m", "wavstream.cli.main", "transcribe", str(wav), "--model", str(toy),
                          "--backend", "triton", "--triton-url", triton.grpc_url, "--triton-model", "toy"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1].strip() == "kilo lima"


def test_a_session_cut_off_midway_is_released(toy: Path, triton) -> None:
    """A client that vanishes mid-utterance: the front end sends END for its stream, Triton forgets it."""
    from server_harness import raw_session

    rec = Recognizer(TritonEngine(toy, triton.grpc_url, "toy"), emit_features=True)

    async def go() -> set:
        async with running_server(rec, max_sessions=4) as server:
            ws = await raw_session(server.url, {"sample_rate": 16000, "format": "float32"})
            await ws.send(synth("november oscar papa").astype(np.float32).tobytes())
            for _ in range(100):  # until a chunk went through Triton
                await asyncio.sleep(0.05)
                if rec.engine._started:
                    break
            started = set(rec.engine._started)
            await ws.close()
            for _ in range(100):
                await asyncio.sleep(0.05)
                if not rec.engine._started:
                    break
            return started

    try:
        started = run(go(), timeout=60)
        assert len(started) == 1 and rec.engine._started == set()
    finally:
        rec.engine.close()
