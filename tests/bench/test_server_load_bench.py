"""The server load bench on a toy bundle: a level measures latency and CPU per stream-second,
its clients in a process of their own."""

from __future__ import annotations

import os

import numpy as np
import pytest

from toy_bundle import build_toy_bundle, synth

from wavstream.bench import server_load

pytestmark = pytest.mark.timeout(120)


def test_levels_measure_latency_and_cpu(tmp_path) -> None:
    bundle = build_toy_bundle(tmp_path / "toy")
    server = server_load.ServerProcess(bundle, 1)
    try:
        assert server.engine and server.batching["max_batch"] >= 1
        audio = np.concatenate([synth("alpha bravo", seed=1), np.zeros(3200, np.float32)])
        logged: list[str] = []
        with server_load.LoadGenerator() as clients:
            # the clients run in a fresh torch-free process of their own, not in the caller's
            assert clients.pid not in (os.getpid(), server.pid) and not clients.has_torch
            rows = server_load.load_levels(server, audio, [1, 3], 1.5, 0.08, 160,
                                           lambda _s, m: logged.append(m), clients)
    finally:
        server.close()
    assert [r["streams"] for r in rows] == [1, 3]
    for r in rows:
        assert r["error_count"] == 0 and r["responses"] > 0 and r["latency_ms"]["p95"] is not None
        assert r["server_cpu_ms_per_stream_s"] > 0 and r["client_cpu_ms_per_stream_s"] > 0
    assert "CPU ms per stream-s" in logged[-1]


def test_bench_rejects_bad_stream_counts(capsys) -> None:
    import argparse

    from wavstream.cli import bench

    p = argparse.ArgumentParser()
    bench.add_arguments(p)
    assert bench.run(p.parse_args(["--only", "server", "--streams", "0,4"])) == 2
    assert "--streams" in capsys.readouterr().err
