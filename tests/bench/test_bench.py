"""`wavstream bench --quick` runs end to end and writes bench.json with the documented schema.

Checks structure and sanity (finite, positive numbers), never speed: speed
depends on the machine and on what else runs on it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

import torch  # noqa: F401
import onnxruntime  # noqa: F401
import transformers  # noqa: F401
import websockets  # noqa: F401

from wavstream.bench import report  # noqa: E402
from wavstream.bench.engines import CPU_ROWS  # noqa: E402
from wavstream.cli.main import main  # noqa: E402


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, dict, Path]:
    out = tmp_path_factory.mktemp("bench")
    rc = main(["bench", "--quick", "--out", str(out)])
    data = json.loads((out / "bench.json").read_text())
    return rc, data, out


def _pos(x: object) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_quick_run_succeeds_and_writes_every_section(quick_run: tuple[int, dict, Path]) -> None:
    rc, data, out = quick_run
    assert data["errors"] == {}, data["errors"]
    assert rc == 0
    assert data["schema_version"] == report.SCHEMA_VERSION and data["quick"] is True
    for name in report.SECTIONS:
        assert name in data and "error" not in data[name] and not data[name].get("skipped"), name
    assert _pos(data["matmul_peak"]["gflops"])
    assert {"threads", "cpu_count", "onnxruntime", "torch"} <= set(data["environment"])
    for png in ("rtf.png", "latency.png", "efficiency.png"):
        assert (out / png).stat().st_size > 1000


def test_single_stream_rows(quick_run: tuple[int, dict, Path]) -> None:
    rows = quick_run[1]["single_stream"]["rows"]
    assert {r["size"] for r in rows} >= {"tiny"} and len({r["family"] for r in rows}) >= 2
    for r in rows:
        assert r["chunk_ms"] in (160, 320, 640)
        for k in ("rtf_ort_fp32", "rtf_ort_int8", "rtf_torch", "gflops_per_audio_s"):
            assert _pos(r[k]), (k, r)
        # the analytic FLOP count agrees with torch's counter within 15 %
        assert 0.85 < r["flop_counter_ratio"] < 1.15, r


def test_offline_and_hf_sections(quick_run: tuple[int, dict, Path]) -> None:
    data = quick_run[1]
    off = data["offline_ratio"]
    assert off["goal"] == 1.2 and off["rows"]
    for r in off["rows"]:
        assert _pos(r["ratio"]) and _pos(r["flops_ratio"])
    for r in off["ort_rows"]:
        assert _pos(r["ratio"]) and _pos(r["cpu_ratio"]), r
        # one ratio per alternated repeat; the headline (best of each side) always lies within their range
        reps = r["ratio_repeats"]
        assert reps and all(_pos(x) for x in reps), r
        assert min(reps) * (1 - 1e-9) <= r["ratio"] <= max(reps) * (1 + 1e-9), r
        # what ONNX Runtime runs per step, after its fusions (GELU is one node: export/graph_passes.py)
        assert isinstance(r["step_nodes"], int) and r["step_nodes"] > 0 and r["offline_nodes"] > 0
        # the same pair on one intra-op thread: there only when the run has more than one
        if data["environment"]["threads"] > 1:
            assert _pos(r["ratio_one_thread"]) and _pos(r["streaming_s_per_audio_s_one_thread"]), r
        else:
            assert "ratio_one_thread" not in r
    assert all(r["chunk_ms"] == 320 for r in off["ort_rows"])
    # the all-convolution model at another chunk length (quick runs: 640 ms), timed as the 320 ms rows are
    chunk_rows = off["chunk_rows"]
    assert [(r["model"], r["chunk_ms"], r["chunk_frames"]) for r in chunk_rows] == [("wav2vec-tiny", 640, 64)]
    for r in chunk_rows:
        assert _pos(r["ratio"]) and _pos(r["cpu_ratio"]) and r["ratio_repeats"], r
    summary = dict((name, text) for name, text, _ in report.summary_rows(data))
    by_chunk = [t for n, t in summary.items() if "by chunk length" in n]
    assert by_chunk and by_chunk[0].startswith("wav2vec-tiny 640 ms "), summary
    hf = data["hf_compare"]["rows"]
    assert hf and {"wav2vec2"} <= {r["family"] for r in hf}
    for r in hf:
        assert _pos(r["ratio_fp32"]) and _pos(r["hf_offline_torch_s_per_audio_s"])
        assert r["import_max_abs_diff"] < 1e-3  # identical weights through the importer
        # every CPU engine and precision has a row, or says why not; the fastest is named
        names = {e["name"] for e in r["engines"]}
        assert names | set(r["left_out"]) == set(CPU_ROWS) and "onnxruntime fp32" in names
        for e in r["engines"]:
            assert e["name"] == f"{e['engine']} {e['precision']}" and _pos(e["s_per_audio_s"]) and _pos(e["ratio"])
        assert r["ratio_best"] == min(e["ratio"] for e in r["engines"])


def test_efficiency_server_memory_profile(quick_run: tuple[int, dict, Path]) -> None:
    data = quick_run[1]
    eff = data["efficiency"]
    assert eff["rows"] and all(_pos(r["efficiency"]) and _pos(r["gflops_achieved"]) for r in eff["rows"])
    assert _pos(eff["peak"]["bf16_gflops"])
    server_model = eff["rows"][0]["model"]
    names = {r["name"] for r in eff["rows"] if r["model"] == server_model}
    assert names | set(eff["left_out"].get(server_model, {})) == set(CPU_ROWS)
    assert all("efficiency_bf16_peak" in r for r in eff["rows"] if r["precision"] == "bf16")
    gains = {g["name"]: g["gain"] for g in eff["per_stream_gain"] if g["model"] == server_model}
    assert set(gains) == names and all(_pos(g) for g in gains.values())
    sv = data["server"]
    assert sv["levels"] and sv["levels"][0]["streams"] == 1
    for lv in sv["levels"]:
        assert set(lv["latency_ms"]) == {"p50", "p95", "p99"}
        assert lv["responses"] > 0 and lv["error_count"] == 0
        assert _pos(lv["server_cpu_ms_per_stream_s"]) and lv["client_cpu_ms_per_stream_s"] is not None
    assert sv["batching"]["max_batch"] >= 1 and sv["engine"]
    assert isinstance(sv["max_streams_held"], int)
    # what `wavstream serve` would admit by default with this engine, measured as the server does
    assert sv["default_max_sessions"] >= 1 and sv["admission"]["source"] == "measured"
    assert sv["admission"]["engine_share"] == 0.5  # the quick run's server: ONNX Runtime on the CPU
    assert {"speech_end_to_final_s", "end_message_to_final_s"} <= set(sv["end_to_end"])
    mem = data["memory"]
    assert _pos(mem["state_bytes_per_stream"]) and len(mem["streams"]) == len(mem["rss_bytes"])
    prof = data["profile"]["rows"]
    assert prof and all("error" not in p and p["top_ops"] for p in prof)


def test_engines_side_by_side(quick_run: tuple[int, dict, Path]) -> None:
    """ONNX Runtime and OpenVINO rows, named by engine and precision, at every batch size."""
    en = quick_run[1]["engines"]
    names = {r["name"] for r in en["rows"]}
    assert {"onnxruntime fp32", "openvino fp32", "openvino fp32 dynamic-batch"} <= names, names
    for r in en["rows"]:
        assert r["engine"] in ("onnxruntime", "openvino") and r["precision"] in ("fp32", "bf16", "int8")
        assert r["batch"] in en["batches"] and _pos(r["rtf_per_stream"]), r
    assert len(en["rows"]) == len(names) * len(en["batches"])
    # a precision left out says why (e.g. no BF16 on this CPU)
    assert names | set(en["left_out"]) >= {"openvino bf16", "onnxruntime fp32 gelu-fused"}
    assert all(_pos(s) for per_b in en["openvino_compile_s"].values() for s in per_b.values())


def test_summary_table_lists_the_headline_numbers(quick_run: tuple[int, dict, Path]) -> None:
    table = report.summary_table(quick_run[1])
    for needle in ("RTF 1 stream", "streaming / offline", "HF offline", "efficiency", "p95 <", "speech end", "per added stream",
                   "RTF per stream", "openvino fp32", "share of the fp32 peak", "per-stream cost", "<= 0.5"):
        assert needle in table, needle
