"""Engines side by side: RTF per stream of one streaming step at batch 1 / 16 / 64,
for every CPU engine and precision this machine runs, on one bundle.

RTF per stream = wall seconds of one ``Engine.step`` on B stacked streams /
(B x chunk seconds): the engine alone, no decoding, states carried from step
to step, after warm-up. Engines are timed in turn at each batch size, in
many short rounds (8 of >= 0.2 s), the fastest run of each counting (as in
single_stream.py): on a shared machine the fastest of many short runs is the
one least disturbed. Rows name
the engine and precision: ONNX Runtime fp32 / int8 (the bundle's
model.int8.onnx) and OpenVINO fp32 / bf16 / int8 (bf16 and int8 where the CPU
reports them), plus OpenVINO fp32 with a dynamic batch axis, to show why the
engine compiles one static shape per batch size. OpenVINO's compile time per
batch size is recorded too.

When the bundle was exported before the exporter wrote GELU in the order ONNX
Runtime fuses (`wavstream.export.graph_passes`), a row "onnxruntime fp32
gelu-fused" runs a scratch copy of the bundle with that one rewrite: the
before and after of the rewrite, side by side in one run.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Optional

from .common import Settings, foreign_mark, foreign_share, noise, time_loop
from .single_stream import interleaved


def gelu_fused_copy(bundle: Path, work: Path) -> tuple[Optional[Path], int]:
    """A copy of ``bundle`` under ``work`` whose model.onnx has GELU in the
    fusable order (weights inline), and how many GELUs changed; (None, 0) when
    the graph is in that order already."""
    import shutil

    import onnx

    from wavstream.export.graph_passes import gelu_fusable
    from wavstream.stream.bundle import load_bundle

    src = load_bundle(bundle).model_file("onnx")
    model, changed = gelu_fusable(onnx.load(str(src), load_external_data=True))
    if not changed:
        return None, 0
    out = work / f"{Path(bundle).name}_gelu_fused"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for f in Path(bundle).iterdir():
        if f.is_file() and f.suffix in (".json", ".txt"):
            shutil.copy2(f, out / f.name)
    onnx.save_model(model, str(out / src.name), save_as_external_data=False)
    return out, changed


# The engine-and-precision rows of the sections the targets read
# (hf_compare, efficiency): every CPU engine and precision a bundle can run.
CPU_ROWS = ("onnxruntime fp32", "onnxruntime int8", "openvino fp32", "openvino bf16", "openvino int8")


def cpu_engines(bundle: Path, threads: int, names: tuple[str, ...] = CPU_ROWS
                ) -> tuple[dict[str, Callable[[], Any]], dict[str, str]]:
    """name -> engine factory for the rows of ``names`` this machine and bundle
    run ("onnxruntime fp32", "openvino bf16", ...), and those left out (name -> why)."""
    from wavstream.stream import OrtEngine
    from wavstream.stream.bundle import load_bundle
    from wavstream.stream.engines.ort import BACK_TO_BACK_SPIN_US as SPIN  # steps run back to back here

    unknown = set(names) - set(CPU_ROWS)
    if unknown:
        raise ValueError(f"unknown engine rows {sorted(unknown)}; expected some of {CPU_ROWS}")
    b = load_bundle(bundle)
    t = threads
    has_int8 = b.has_model_file("int8")
    make: dict[str, Callable[[], Any]] = {}
    left_out: dict[str, str] = {}
    if "onnxruntime fp32" in names:
        make["onnxruntime fp32"] = lambda: OrtEngine(b, device="cpu", intra_op_threads=t, inter_op_threads=1,
                                                     spin_us=SPIN)
    if "onnxruntime int8" in names:
        if has_int8:
            make["onnxruntime int8"] = lambda: OrtEngine(b, quantized=True, device="cpu", intra_op_threads=t,
                                                         inter_op_threads=1, spin_us=SPIN)
        else:
            left_out["onnxruntime int8"] = "bundle has no model.int8.onnx"
    wanted = [n.split(" ")[1] for n in names if n.startswith("openvino ")]
    if not wanted:
        return make, left_out
    try:
        from wavstream.stream.engines.openvino import OpenVinoEngine, cpu_capabilities

        caps = cpu_capabilities()
    except Exception as exc:  # openvino not installed: the ORT rows still count
        left_out.update({f"openvino {p}": f"{type(exc).__name__}: {exc}" for p in wanted})
        return make, left_out
    for prec in wanted:
        if prec.upper() not in caps:
            left_out[f"openvino {prec}"] = f"CPU reports {caps}"
        elif prec == "int8" and not has_int8:
            left_out["openvino int8"] = "bundle has no model.int8.onnx"
        else:
            make[f"openvino {prec}"] = lambda p=prec: OpenVinoEngine(b, precision=p, intra_op_threads=t)
    return make, left_out


def _engines(bundle: Path, settings: Settings) -> tuple[dict[str, Callable[[], Any]], dict]:
    """name -> engine factory (every CPU row, plus the GELU before/after and
    OpenVINO's dynamic batch), and what was left out (name -> why)."""
    from wavstream.stream.bundle import load_bundle

    make, left_out = cpu_engines(bundle, settings.threads)
    t = settings.threads
    fused, n_gelu = gelu_fused_copy(Path(bundle), settings.work)
    if fused is None:
        left_out["onnxruntime fp32 gelu-fused"] = "the bundle's graph has GELU in the fusable order already"
    else:
        from wavstream.stream import OrtEngine
        from wavstream.stream.engines.ort import BACK_TO_BACK_SPIN_US

        fb = load_bundle(fused)
        make["onnxruntime fp32 gelu-fused"] = lambda: OrtEngine(fb, device="cpu", intra_op_threads=t,
                                                                inter_op_threads=1, spin_us=BACK_TO_BACK_SPIN_US)
    if "openvino fp32" in make:
        from wavstream.stream.engines.openvino import OpenVinoEngine

        b = load_bundle(bundle)
        make["openvino fp32 dynamic-batch"] = lambda: OpenVinoEngine(b, precision="fp32", intra_op_threads=t,
                                                                     shapes="dynamic")
    else:
        left_out["openvino fp32 dynamic-batch"] = left_out.get("openvino fp32", "OpenVINO fp32 not usable")
    return make, left_out


def _runner(engine: Any, batch: int, settings: Settings) -> Callable[[], float]:
    audio = noise(4 * engine.chunk_samples / 16000 + 0.1, seed=7)
    n = engine.chunk_samples
    chunks = [audio[i:i + n][None, :].repeat(batch, 0) for i in range(0, 4 * n, n)]
    st = {"s": engine.init_state(batch), "i": 0}

    def one() -> None:
        st["s"] = engine.step(chunks[st["i"] % 4], st["s"]).states
        st["i"] += 1

    def measure() -> float:
        per, _ = time_loop(one, min_calls=settings.pick(2, 3), min_seconds=settings.pick(0.05, 0.2))
        return per / (batch * n / 16000)

    return measure


def run(settings: Settings, bundle: Path, label: str, batches: Optional[tuple[int, ...]] = None) -> dict:
    batches = batches or settings.pick((1, 4), (1, 16, 64))
    make, left_out = _engines(bundle, settings)
    engines = {k: f() for k, f in make.items()}
    rows: list[dict] = []
    compile_s: dict[str, dict[int, float]] = {}
    for B in batches:
        runners = {}
        for k, e in engines.items():
            t0 = time.perf_counter()
            e.warmup([B])  # compile outside the timed runs; its cost is a row of its own
            if e.compiled_batches:  # an engine that compiles per batch shape
                compile_s.setdefault(k, {})[B] = round(time.perf_counter() - t0, 3)
            runners[k] = _runner(e, B, settings)
        mark = foreign_mark()
        best = interleaved(runners, settings.pick(2, 8))
        share = foreign_share(mark)
        for k, rtf in best.items():
            backend, prec = k.split(" ")[:2]
            rows.append({"engine": backend, "precision": prec, "shapes": "dynamic" if "dynamic" in k else
                         ("static" if backend == "openvino" else "dynamic"), "name": k, "batch": B,
                         "rtf_per_stream": rtf, "foreign_cpu_share": share})
        settings.log("engines", f"{label} batch {B}: " + ", ".join(f"{k} {v:.4f}" for k, v in best.items()))
        del runners
    for e in engines.values():
        e.close()
    try:
        import openvino

        ov_version: Optional[str] = openvino.__version__
    except Exception:
        ov_version = None
    return {"model": label, "threads": settings.threads, "batches": list(batches), "rows": rows,
            "openvino_compile_s": compile_s, "left_out": left_out, "openvino": ov_version}
