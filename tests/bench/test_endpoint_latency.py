"""End of speech -> Final latency (bench/endpoint_latency.py) on the toy model, whose timing is exact."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from toy_bundle import build_toy_bundle, silence, synth

from wavstream.bench.endpoint_latency import measure_rule, speech_end_s
from wavstream.stream import Recognizer
from wavstream.stream.endpoint import PRESETS, EndpointConfig


@pytest.fixture(scope="module")
def rec(tmp_path_factory: pytest.TempPathFactory) -> Recognizer:
    return Recognizer.from_bundle(build_toy_bundle(tmp_path_factory.mktemp("toy") / "b"), intra_op_threads=1)


def test_latency_follows_the_rule_and_a_long_pause_splits(rec: Recognizer) -> None:
    plain = [(synth("hello world", seed=i, tail_frames=0), 16000) for i in range(3)]
    # "hello", a 0.7 s pause, "world": one utterance for a 1.2 s rule, two for a 0.5 s rule.
    paused = [(np.concatenate([synth("hello", tail_frames=0), silence(0.7), synth("world", tail_frames=0)]), 16000)]
    slow = measure_rule(rec, "default", EndpointConfig.preset("default"), plain + paused)
    fast = measure_rule(rec, "command", EndpointConfig.preset("command"), plain + paused)
    assert slow.lost == fast.lost == 0 and slow.split == 0 and fast.split == 1
    chunk = rec.config.chunk_s
    for result, wait in ((slow, PRESETS["default"]), (fast, PRESETS["command"])):
        lat = np.array(result.latencies_s)
        # The rule's wait, plus at most one chunk (the endpoint is seen when its chunk is decoded), plus compute.
        assert np.all(lat >= wait - 0.05) and np.all(lat <= wait + chunk + 0.25), (result.rule, lat)
    assert np.mean(fast.latencies_s) < np.mean(slow.latencies_s) - 0.5
    assert fast.summary()["split_rate"] == 0.25


def test_speech_end_ignores_trailing_silence() -> None:
    x = np.concatenate([np.zeros(1600), 0.5 * np.ones(8000), np.zeros(16000)])
    assert speech_end_s(x, 16000) == pytest.approx(0.6)


def test_presets_are_named_and_checked() -> None:
    assert EndpointConfig.preset("fast").rule2.min_trailing_silence_s == 0.8
    with pytest.raises(ValueError, match="preset"):
        EndpointConfig.preset("instant")
