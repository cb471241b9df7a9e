"""`wavstream bench [--quick] [--out DIR]`: latency, throughput and efficiency benchmarks.

Writes DIR/bench.json and PNG plots and prints a summary table; docs/bench.md
describes every measurement. Only argparse/stdlib are imported at module level.
"""

from __future__ import annotations

import argparse
import os
import sys

SECTION_NAMES = ("single_stream", "offline_ratio", "hf_compare", "efficiency", "engines", "server", "memory",
                 "profile", "training", "endpoint")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true",
                   help="smoke run (< 2 min): tiny models, one chunk size, tiny transformers configs, few iterations")
    p.add_argument("--out", default="bench_out", help="folder for bench.json and the PNG plots (default: bench_out)")
    p.add_argument("--threads", type=int, default=None,
                   help="threads for torch and ONNX Runtime (default: all cores, %d here)" % (os.cpu_count() or 1))
    p.add_argument("--model", default=None,
                   help="bundle for the server, memory, engines and efficiency sections (default: the embedded default model, "
                        "or a tiny random-weight wav2vec2 exported here when none is installed)")
    p.add_argument("--only", default=None,
                   help="comma-separated sections to run (default: all): " + ",".join(SECTION_NAMES))
    p.add_argument("--streams", default=None, metavar="N,N,...",
                   help="server section: the stream counts to try, in order (default: 1,2,4,...,256; --quick: 1,4); "
                        "the levels stop at the first one not held")
    p.add_argument("--server-backend", choices=["onnxruntime", "openvino", "auto"], default="onnxruntime",
                   help="server section: the engine the server runs, as `wavstream serve --backend` (default: onnxruntime)")
    p.add_argument("--server-precision", choices=["fp32", "int8", "bf16"], default="fp32",
                   help="server section: the engine's precision, as `wavstream serve --precision` (bf16: openvino only)")
    p.add_argument("--server-workers", type=int, default=1, metavar="N",
                   help="server section: inference workers, as `wavstream serve --workers` (each with "
                        "--threads / N engine threads, at least 1)")
    p.add_argument("--dev", default=None,
                   help="corpus TSV (path, num_samples, text) for the endpoint section "
                        "(default: data/corpus_v2/dev.tsv when present, else sentences read by espeak-ng)")
    p.add_argument("--work", default=None, help="scratch folder for exported bundles (default: a temporary folder, removed)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--merge", action="store_true",
                   help="with --only: keep the other sections of an existing OUT/bench.json and replace only "
                        "those run now (e.g. re-measure one section that ran beside other work)")


def run(args: argparse.Namespace) -> int:
    import gc
    import shutil
    import tempfile
    import time
    import traceback
    from pathlib import Path

    from wavstream.bench import common, report
    from wavstream.bench.common import ForeignCpu, Progress, Settings, environment

    log = Progress()
    threads = args.threads or os.cpu_count() or 1
    only = set(SECTION_NAMES if not args.only else [s.strip() for s in args.only.split(",") if s.strip()])
    try:
        streams = None if not args.streams else [int(x) for x in args.streams.split(",") if x.strip()]
        if streams is not None and (not streams or min(streams) < 1):
            raise ValueError
    except ValueError:
        print(f"wavstream bench: --streams wants positive stream counts like 64,96,128, got {args.streams!r}",
              file=sys.stderr)
        return 2
    bad = only - set(SECTION_NAMES)
    if bad:
        print(f"wavstream bench: unknown section(s) {sorted(bad)}; choose from {', '.join(SECTION_NAMES)}", file=sys.stderr)
        return 2
    try:
        import torch  # noqa: F401
        import onnxruntime  # noqa: F401
        if only - {"training"}:
            import transformers  # noqa: F401
    except ImportError as exc:
        print(f"wavstream bench needs torch, onnxruntime and transformers (pip install 'wavstream[export]'): {exc}",
              file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="wavstream-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    settings = Settings(quick=args.quick, threads=threads, work=work, log=log,
                        server_streams=streams, server_backend=args.server_backend,
                        server_precision=args.server_precision, server_workers=max(1, args.server_workers))
    result: dict = {
        "schema_version": report.SCHEMA_VERSION,
        "quick": bool(args.quick),
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "environment": environment(threads),
        "errors": {},
    }
    for name in SECTION_NAMES:
        result[name] = {"skipped": True} if name not in only else {}
    old_path = out / "bench.json"
    if args.merge and old_path.is_file():
        import json

        old = json.loads(old_path.read_text())
        for name in SECTION_NAMES:
            if name not in only and name in old:
                result[name] = old[name]
        result["errors"] = {k: v for k, v in old.get("errors", {}).items() if k not in only}
        result["merged_from"] = old.get("merged_from", []) + [
            {k: old.get(k) for k in ("started_utc", "total_s", "foreign_cpu_share_total")}
            | {"sections": [n for n in SECTION_NAMES if n not in only and not old.get(n, {}).get("skipped")]}]
        for k in ("matmul_peak", "matmul_peak_end"):
            if k in old:
                result[f"{k}_previous"] = old[k]
    log("bench", f"{'quick' if args.quick else 'full'} run, {threads} threads, sections {','.join(s for s in SECTION_NAMES if s in only)}")

    common.MONITOR = ForeignCpu()

    def section(name: str, fn):  # run one section; a failure is recorded, the run goes on
        if name not in only:
            return None
        t0 = time.perf_counter()
        mark = common.foreign_mark()
        try:
            val = fn()
            val["section_s"] = round(time.perf_counter() - t0, 1)
            val["foreign_cpu_share"] = common.foreign_share(mark)
            result[name] = val
            log(name, f"done in {time.perf_counter() - t0:.1f} s"
                      f" (other processes used {100 * (val['foreign_cpu_share'] or 0):.0f} % of the CPU meanwhile"
                      + (": its figures may be off" if (val["foreign_cpu_share"] or 0) > report.FOREIGN_LIMIT else "")
                      + ")")
            return val
        except Exception as exc:
            tb = traceback.format_exc()
            result[name] = {"error": f"{type(exc).__name__}: {exc}"}
            result["errors"][name] = tb[-3000:]
            log(name, f"FAILED: {type(exc).__name__}: {exc}")
            return None

    from wavstream.bench import (efficiency, endpoint_latency, engines, hf_compare, memory, offline_ratio, profile,
                                 server_load, single_stream, training)
    from wavstream.bench.common import set_torch_threads

    set_torch_threads(threads)
    try:
        peak = efficiency.matmul_peak(threads, n=1024 if args.quick else 2048, seconds=0.5 if args.quick else 2.0)
        log("bench", f"matmul peak {peak['gflops']:.0f} GFLOP/s fp32, {peak['bf16_gflops'] or 0:.0f} bf16 "
                     f"({threads} threads)")
        result["matmul_peak"] = peak
        keep: dict = {}
        size = "hf-tiny" if args.quick else "base"
        section("training", lambda: training.run(settings))
        published: dict = {}
        if only & {"single_stream", "offline_ratio", "hf_compare"}:
            published["wav2vec2"] = single_stream.published_from_hf(single_stream.hf_model("wav2vec2", args.quick))

        section("single_stream", lambda: single_stream.run(settings, keep, published.get("wav2vec2")))
        section("offline_ratio", lambda: offline_ratio.run(settings, published.get("wav2vec2"), keep))
        section("hf_compare", lambda: hf_compare.run(settings, keep, published))
        published.clear()
        gc.collect()

        # The model the server, memory and efficiency sections use.
        need_service = bool(only & {"efficiency", "engines", "profile", "memory", "server", "endpoint"})
        model_bundle, model_label = _service_model(args.model, keep, settings) if need_service else (None, "")
        base_key = (f"wav2vec2-{size}", 320)
        if only & {"efficiency", "profile"} and base_key not in keep:
            m = single_stream.streaming_from_published(
                single_stream.published_from_hf(single_stream.hf_model("wav2vec2", args.quick)), 320)
            from wavstream.bench.common import export

            keep[base_key] = (export(m, work / f"wav2vec2-{size}_320ms", False, log, "efficiency")[0], m.config)
            del m

        def eff() -> dict:
            # Every CPU engine row on the server's model (batch 16 is in both sets: the
            # per-stream gain is batch 1 / batch 16); BASE with the fp32 baseline and OpenVINO.
            targets = {
                model_label: (model_bundle, _model_config(model_bundle),
                              (1, 4, 16) if args.quick else (1, 4, 16, 32, 64, 128)),
                f"wav2vec2-{size}": (keep[base_key][0], keep[base_key][1], (1, 4) if args.quick else (1, 2, 4, 8),
                                     ("onnxruntime fp32", "openvino fp32", "openvino bf16")),
            }
            return efficiency.run(settings, targets, peak)

        section("efficiency", eff)
        section("engines", lambda: engines.run(settings, model_bundle, model_label))
        section("profile", lambda: profile.run(settings, [(f"wav2vec2-{size}", keep[base_key][0], 1),
                                                          (model_label, model_bundle, 1),
                                                          (model_label, model_bundle, 32)]))
        section("memory", lambda: memory.run(settings, model_bundle, model_label))
        section("server", lambda: server_load.run(settings, model_bundle, model_label))
        dev = args.dev or ("data/corpus_v2/dev.tsv" if Path("data/corpus_v2/dev.tsv").is_file() else None)
        section("endpoint", lambda: endpoint_latency.run(settings, model_bundle, model_label, dev))
        if not args.quick:  # the peak again at the end: the larger of the two counts
            peak2 = efficiency.matmul_peak(threads, n=2048, seconds=2.0)
            result["matmul_peak_end"] = peak2
            log("bench", f"matmul peak at the end {peak2['gflops']:.0f} GFLOP/s fp32, "
                         f"{peak2['bf16_gflops'] or 0:.0f} bf16")
            best_peak = max(peak["gflops"], peak2["gflops"])
            best_bf16 = max(peak.get("bf16_gflops") or 0.0, peak2.get("bf16_gflops") or 0.0) or None
            eff_rows = result["efficiency"].get("rows", []) if isinstance(result["efficiency"], dict) else []
            if eff_rows and (best_peak > peak["gflops"] or (best_bf16 or 0.0) > (peak.get("bf16_gflops") or 0.0)):
                new_peak = dict(peak2, gflops=best_peak, bf16_gflops=best_bf16)
                efficiency.set_peak(eff_rows, new_peak)
                result["efficiency"]["peak"] = new_peak
                result["efficiency"]["best"] = max(eff_rows, key=lambda r: r["efficiency"])
    finally:
        result["total_s"] = round(log.elapsed(), 1)
        if common.MONITOR is not None:
            result["foreign_cpu_share_total"] = common.MONITOR.share((log.t0, 0.0))
            common.MONITOR.stop()
        path = report.write_json(result, out)
        pngs = [] if args.no_plots else report.plots(result, out)
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    table = report.summary_table(result)
    print(table)
    print(f"\nwrote {path}" + (f" and {', '.join(pngs)}" if pngs else "") + f" in {result['total_s']:.0f} s")
    if result["errors"]:
        print(f"wavstream bench: {len(result['errors'])} section(s) failed: {', '.join(result['errors'])} "
              f"(tracebacks in bench.json 'errors')", file=sys.stderr)
        return 1
    return 0


def _model_config(bundle):
    import json

    from wavstream.training.models.config import ModelConfig

    d = json.loads((bundle / "config.json").read_text())
    return ModelConfig.from_dict(d["model"])


def _service_model(model_arg, keep: dict, settings):
    """(bundle folder, label) for the server/memory/efficiency sections."""
    from pathlib import Path

    from wavstream.stream.recognizer import DEFAULT_MODEL_DIR

    if model_arg and model_arg != "default":
        p = Path(model_arg)
        return p, f"{p.name} ({_family(p)})"
    if (DEFAULT_MODEL_DIR / "config.json").is_file():
        try:  # an embedded model that is being (re)written must not sink the run
            from wavstream.stream import OrtEngine

            OrtEngine(DEFAULT_MODEL_DIR, device="cpu", intra_op_threads=1)
            return DEFAULT_MODEL_DIR, f"default model ({_family(DEFAULT_MODEL_DIR)})"
        except Exception as exc:
            settings.log("bench", f"embedded default model not usable ({type(exc).__name__}: {exc}); using a tiny one")
    if model_arg == "default":
        raise SystemExit("wavstream bench: --model default, but no embedded default model is installed")
    key = ("wav2vec2-tiny", 320)
    if key not in keep:
        from wavstream.bench.common import chunk_frames_for, export
        from wavstream.bench.single_stream import tiny_model

        m = tiny_model("wav2vec2")
        m = m.with_chunking(*chunk_frames_for(m.config, 320))
        keep[key] = (export(m, settings.work / "wav2vec2-tiny_320ms", True, settings.log, "bench")[0], m.config)
    return keep[key][0], "wav2vec2-tiny (random weights; no default model installed)"


def _family(p) -> str:
    import json

    try:
        d = json.loads((p / "config.json").read_text())
        return f"{d.get('family')}, {d.get('chunk_samples', 0) / 16:.0f} ms chunks"
    except Exception:
        return "?"
