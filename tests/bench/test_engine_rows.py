"""The engine rows of the sections the issue-18 targets read (hf_compare, efficiency)
and the summary rows built from them: every CPU engine and precision named,
the best engine beside the ONNX Runtime fp32 baseline.

Structure and sanity only (finite, positive, consistent), never speed.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from wavstream.bench import efficiency, report
from wavstream.bench.engines import CPU_ROWS, cpu_engines


def _pos(x: object) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def _eff_row(name: str, batch: int, per_call: float, model: str = "m") -> dict:
    return {"model": model, "name": name, "engine": name.split()[0], "precision": name.split()[1], "batch": batch,
            "seconds_per_call": per_call, "seconds_per_stream": per_call / batch,
            "audio_seconds_per_second": 0.32 * batch / per_call, "gflops_achieved": 10.0 * batch / per_call}


def test_per_stream_gain_and_peaks_from_rows() -> None:
    rows = [_eff_row("onnxruntime fp32", 1, 0.01), _eff_row("onnxruntime fp32", 16, 0.08),
            _eff_row("openvino bf16", 1, 0.01), _eff_row("openvino bf16", 16, 0.04),
            _eff_row("openvino fp32", 1, 0.01)]  # no batch 16: no gain row
    efficiency.set_peak(rows, {"gflops": 1000.0, "bf16_gflops": 4000.0})
    for r in rows:
        assert r["efficiency"] == pytest.approx(r["gflops_achieved"] / 1000.0)
        assert ("efficiency_bf16_peak" in r) == (r["precision"] == "bf16")
    gains = {g["name"]: g["gain"] for g in efficiency.per_stream_gain(rows)}
    assert gains == {"onnxruntime fp32": pytest.approx(2.0), "openvino bf16": pytest.approx(4.0)}


def _result() -> dict:
    rows = [_eff_row(n, b, t) for n, b, t in (("onnxruntime fp32", 1, 0.01), ("onnxruntime fp32", 16, 0.08),
                                              ("openvino bf16", 1, 0.008), ("openvino bf16", 16, 0.03))]
    peak = {"gflops": 300.0, "bf16_gflops": 1500.0}
    sec = efficiency.summarise(rows, peak, {})
    engines = [{"name": n, "engine": n.split()[0], "precision": n.split()[1], "s_per_audio_s": s, "ratio": s / 0.05}
               for n, s in (("onnxruntime fp32", 0.09), ("openvino bf16", 0.04), ("openvino fp32", 0.08))]
    hf = {"family": "wav2vec2", "size": "base", "chunk_ms": 320, "hf_offline_torch_s_per_audio_s": 0.05,
          "engines": engines, "best_engine": "openvino bf16", "hf_offline_gflops": 150.0}
    return {"efficiency": sec, "hf_compare": {"rows": [hf]}}


def test_summary_names_the_best_engine_and_the_baseline() -> None:
    rows = report.summary_rows(_result())
    hf = next(r for r in rows if "HF offline" in r[0])
    assert hf[1].startswith("openvino bf16 0.80; baseline onnxruntime fp32 1.80") and "openvino fp32 1.60" in hf[1]
    assert "<= 0.5" in hf[2]
    eff = next(r for r in rows if "share of the fp32 peak" in r[0])
    assert eff[1].startswith("openvino bf16 batch 16:") and "baseline onnxruntime fp32 batch 16:" in eff[1]
    assert "of the bf16 peak" in eff[1] and ">= 50 %" in eff[2] and "HF wav2vec2-base offline" in eff[2]
    gain = next(r for r in rows if r[0].startswith("per-stream cost"))
    assert gain[1] == ("openvino bf16 4.3x (8.00 -> 1.88 ms per stream); "
                       "baseline onnxruntime fp32 2.0x (10.00 -> 5.00 ms per stream)") and ">= 3x" in gain[2]


def test_summary_reads_a_bench_json_without_engine_rows() -> None:
    """A bench.json from before the engine rows (e.g. kept by --merge) still makes a table."""
    old = {"hf_compare": {"rows": [{"family": "hubert", "size": "base", "ratio_fp32": 1.8, "ratio_int8": 1.0,
                                    "wavstream_stream_ort_fp32_s_per_audio_s": 0.1,
                                    "hf_offline_torch_s_per_audio_s": 0.055}]},
           "efficiency": {"peak": {"gflops": 300.0}, "rows": [
               {"model": "m", "batch": 1, "efficiency": 0.1, "gflops_achieved": 30.0, "audio_seconds_per_second": 90.0}]}}
    table = report.summary_table(old)
    assert "1.80 onnxruntime fp32" in table and "onnxruntime fp32 batch 1: 10 %" in table


def test_the_summary_flags_sections_measured_beside_other_work() -> None:
    """A section whose run met > 10 % foreign CPU is named under the table with the command that re-runs it."""
    r = {"hf_compare": {"rows": [{"family": "hubert", "size": "base", "ratio_fp32": 1.8, "ratio_int8": 1.0,
                                  "wavstream_stream_ort_fp32_s_per_audio_s": 0.1,
                                  "hf_offline_torch_s_per_audio_s": 0.055}], "foreign_cpu_share": 0.34},
         "engines": {"rows": [], "foreign_cpu_share": 0.0}, "memory": {"foreign_cpu_share": 0.05}}
    assert report.disturbed_sections(r) == {"hf_compare": 0.34}
    table = report.summary_table(r)
    assert "hf_compare 34 %" in table and "--only hf_compare --merge" in table
    r["hf_compare"]["foreign_cpu_share"] = 0.02
    assert "beside other work" not in report.summary_table(r)


def test_cpu_engines_names_every_row_or_why_not(tiny_bundle: Path) -> None:
    make, left_out = cpu_engines(tiny_bundle, 1)
    assert set(make) | set(left_out) == set(CPU_ROWS) and not set(make) & set(left_out)
    assert "onnxruntime fp32" in make and all(isinstance(v, str) and v for v in left_out.values())
    with pytest.raises(ValueError, match="unknown engine rows"):
        cpu_engines(tiny_bundle, 1, ("openvino fp16",))


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight (seed 0) wav2vec2 at 320 ms, with model.int8.onnx."""
    from wavstream.bench.common import Progress, chunk_frames_for, export
    from wavstream.bench.single_stream import tiny_model

    m = tiny_model("wav2vec2")
    m = m.with_chunking(*chunk_frames_for(m.config, 320))
    out = tmp_path_factory.mktemp("eff") / "tiny"
    export(m, out, True, Progress(quiet=True), "test")
    return out


def test_efficiency_times_every_engine_at_each_batch(tiny_bundle: Path, tmp_path: Path) -> None:
    from wavstream.bench.common import Progress, Settings
    from wavstream.cli.bench import _model_config

    settings = Settings(quick=True, threads=1, work=tmp_path, log=Progress(quiet=True))
    peak = {"gflops": 100.0, "bf16_gflops": 400.0}
    sec = efficiency.run(settings, {"tiny": (tiny_bundle, _model_config(tiny_bundle), (1, 16))}, peak)
    names = {r["name"] for r in sec["rows"]}
    assert names | set(sec["left_out"].get("tiny", {})) == set(CPU_ROWS)
    assert len(sec["rows"]) == 2 * len(names)
    for r in sec["rows"]:
        assert r["name"] == f"{r['engine']} {r['precision']}" and r["batch"] in (1, 16)
        for k in ("seconds_per_call", "seconds_per_stream", "gflops_achieved", "efficiency", "audio_seconds_per_second"):
            assert _pos(r[k]), (k, r)
        assert r["efficiency"] == pytest.approx(r["gflops_achieved"] / 100.0)
        if r["precision"] == "bf16":
            assert r["efficiency_bf16_peak"] == pytest.approx(r["gflops_achieved"] / 400.0)
    gains = {g["name"]: g for g in sec["per_stream_gain"]}
    assert set(gains) == names
    assert all(_pos(g["gain"]) and (g["small_batch"], g["big_batch"]) == (1, 16) for g in gains.values())
    assert sec["best"] == max(sec["rows"], key=lambda r: r["efficiency"])


def test_matmul_peak_has_fp32_and_bf16() -> None:
    peak = efficiency.matmul_peak(1, n=256, seconds=0.1)
    assert _pos(peak["gflops"]) and peak["gflops"] >= peak["torch_gflops"]
    assert _pos(peak["bf16_gflops"])  # torch runs bf16 matmul on every x86-64 CPU (AMX or not)
