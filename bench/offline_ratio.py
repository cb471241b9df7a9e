"""Streaming vs offline compute per second of audio, same model, same runtime.

For each model (streaming form, chunk C and left chunks L): torch seconds per
audio second of feeding a 30 s utterance chunk by chunk through ``step``,
divided by torch seconds per audio second of the offline form
``model(wave)`` (the same chunk mask, one call over the utterance). Goal:
<= 1.2. Both run in torch on the same threads, batch 1, alternately, 3 times
each; the best run of each counts. The same comparison runs in ONNX Runtime ("ort_rows"): the exported
streaming step chunk by chunk against the exported offline graph
(``export_offline``, whole utterance, same chunk mask), both sessions with the
same settings, in a fresh child process, seven alternated pairs per pass in
full runs (``ORT_REPEATS``), twice: as OrtEngine runs steps back to back (pool
threads spin up to ``BACK_TO_BACK_SPIN_US``; the headline ``ratio``) and as it runs a live
stream (no spinning; ``ratio_no_spin``), and a third time with one intra-op
thread each (``ratio_one_thread``): a 32-frame step gains less from a second
thread than a 30 s pass does, and this figure shows how much of the ratio
that is. Each ONNX Runtime row also gives the ratio of each alternated
repeat on its own (``ratio_repeats``: the spread a single run's headline
carries), the ratio of process CPU seconds (less sensitive to other
processes than wall time) and the number of nodes ONNX Runtime runs per step
and per offline call after its own fusions. The counted-FLOP ratio is reported beside it: the streaming step
multiplies a fixed (L+1)*C-key window while the offline form multiplies the
full T x T score matrix (masked), so for long utterances streaming does
*less* arithmetic, and what remains is per-call overhead. Full runs add wav2vec
and vq-wav2vec at their published ("large") size, made streaming, to the ONNX
Runtime rows: the tiny models' 256-channel, 32-row ops are the smallest any
family runs, and these rows show the same comparison with 512-channel ones.
The two all-convolution families are also timed in ONNX Runtime at the chunk
lengths either side of 320 ms (``chunk_rows``: 160 and 640 ms; 640 ms only in
quick runs): a step's fixed cost is paid once per chunk, so this shows what a
shorter chunk costs and a longer one saves, next to the goal's 320 ms.
"""

from __future__ import annotations

import shutil
import time
from typing import Any, Callable

from .common import Settings, foreign_mark, foreign_share, fresh_process, noise


def _alternate_pairs(a: Any, b: Any, repeats: int,
                     clock: Callable[[], float] = time.perf_counter) -> list[tuple[float, float]]:
    """Times of ``a`` and ``b`` on ``clock`` (wall by default), run alternately: one (a, b) pair per repeat."""
    pairs = []
    for _ in range(repeats):
        t = []
        for fn in (a, b):
            t0 = clock()
            fn()
            t.append(clock() - t0)
        pairs.append((t[0], t[1]))
    return pairs


def _best(pairs: list[tuple[float, float]]) -> tuple[float, float]:
    """The best (smallest) time of each side of ``_alternate_pairs``' pairs."""
    return min(p[0] for p in pairs), min(p[1] for p in pairs)


def _alternate(a: Any, b: Any, repeats: int, clock: Callable[[], float] = time.perf_counter) -> tuple[float, float]:
    """Best time of ``a`` and of ``b`` on ``clock`` (wall by default), run alternately ``repeats`` times each."""
    return _best(_alternate_pairs(a, b, repeats, clock))


def measure(label: str, model: Any, seconds: float, settings: Settings) -> dict:
    import torch

    from wavstream.training.models import stream_chunks

    from .efficiency import flops_per_audio_second

    audio = noise(seconds, seed=7)
    n = model.chunk_samples
    usable = len(audio) // n * n
    audio = audio[:usable]
    wave = torch.from_numpy(audio)[None, :]

    def offline() -> None:
        with torch.inference_mode():
            model(wave)

    def streaming() -> None:
        with torch.inference_mode():
            stream_chunks(model, wave)

    with torch.inference_mode():  # warm-up (allocator, first-call costs)
        model(wave[:, : 4 * n])
        stream_chunks(model, wave[:, : 3 * n])
    mark = foreign_mark()
    t_off, t_str = _alternate(offline, streaming, settings.pick(1, 3))
    dur = usable / 16000
    cfg = model.config
    f_str = flops_per_audio_second(cfg, "stream")["total"]
    f_off = flops_per_audio_second(cfg, "offline", utterance_s=dur)["total"]
    row = {
        "model": label, "utterance_s": dur, "chunk_frames": cfg.chunk_frames, "left_chunks": cfg.left_chunks,
        "offline_s_per_audio_s": t_off / dur, "streaming_s_per_audio_s": t_str / dur,
        "ratio": t_str / t_off, "flops_ratio": f_str / f_off, "runtime": "torch",
        "foreign_cpu_share": foreign_share(mark),
    }
    settings.log("offline_ratio", f"{label}: streaming/offline = {row['ratio']:.2f} "
                                  f"(counted FLOPs {row['flops_ratio']:.2f})")
    return row


# Alternated (offline, streaming) pairs per ONNX Runtime pass in full runs: one pair of these 0.1-3 s
# calls moves by 10-30 % on an idle machine. (More pairs alone did not steady the headline between
# runs; timing in a fresh process did: see measure_ort.)
ORT_REPEATS = 7

# The chunk lengths besides the headline's 320 ms at which the all-convolution families are timed.
CHUNK_LENGTHS_MS = (160, 640)


def measure_ort(label: str, model: Any, stream_bundle: Any, seconds: float, settings: Settings,
                chunk_ms: int = 320) -> dict:
    """The same comparison in ONNX Runtime: the bundle's streaming step, chunk by
    chunk, against the offline graph (``export_offline``: whole utterance, same chunk mask).
    ``chunk_ms`` is the bundle's chunk length, recorded in the row.

    The timing runs in a fresh child process (``time_ort``), as a deployed
    engine runs: in the bench's own process, after the single-stream section,
    the same vq-wav2vec step measured 5 % slower (ratio 1.12 → 1.19-1.21)
    while the offline pass did not move."""
    from wavstream.export.graph_passes import optimized_node_count
    from wavstream.export.onnx_export import export_offline
    from wavstream.stream.bundle import load_bundle
    from wavstream.stream.engines.ort import BACK_TO_BACK_SPIN_US

    path = settings.work / f"{label}_{chunk_ms}ms_offline.onnx"
    t0 = time.perf_counter()
    export_offline(model, path)
    settings.log("offline_ratio", f"exported {path.name} in {time.perf_counter() - t0:.1f} s")
    row: dict = {"model": label, "chunk_ms": chunk_ms, "chunk_frames": model.config.chunk_frames,
                 "left_chunks": model.config.left_chunks, "runtime": "onnxruntime", "spin_us": BACK_TO_BACK_SPIN_US}
    mark = foreign_mark()
    with fresh_process() as child:
        row.update(child.submit(time_ort, str(stream_bundle), str(path), seconds, settings.threads,
                                settings.pick(1, ORT_REPEATS), settings.pick(1, 3)).result())
    row["foreign_cpu_share"] = foreign_share(mark)
    row["step_nodes"] = optimized_node_count(str(load_bundle(stream_bundle).model_file("onnx")))
    row["offline_nodes"] = optimized_node_count(str(path))
    settings.log("offline_ratio", f"{label} (ORT, {chunk_ms} ms): streaming/offline = {row['ratio']:.2f} with threads spinning "
                                  f"up to {BACK_TO_BACK_SPIN_US} us, {row['ratio_no_spin']:.2f} without "
                                  f"(CPU time {row['cpu_ratio']:.2f} / {row['cpu_ratio_no_spin']:.2f}; "
                                  f"{row['step_nodes']} nodes per step)"
                                  + (f"; on one thread {row['ratio_one_thread']:.2f}" if "ratio_one_thread" in row else ""))
    path.unlink(missing_ok=True)
    return row


def time_ort(stream_bundle: str, offline_path: str, seconds: float, threads: int, repeats: int,
             cpu_repeats: int) -> dict:
    """The ONNX Runtime timings of ``measure_ort`` (torch-free; run in a child process):
    (threads, spin) as the headline runs, as a live stream runs, and on one thread."""
    import onnxruntime as ort

    from wavstream.stream import OrtEngine
    from wavstream.stream.engines.ort import BACK_TO_BACK_SPIN_US, session_options

    audio = noise(seconds, seed=7)
    row: dict = {}
    passes = [(threads, BACK_TO_BACK_SPIN_US), (threads, 0)]
    if threads != 1:
        passes.append((1, BACK_TO_BACK_SPIN_US))
    for n_threads, spin in passes:
        sess = ort.InferenceSession(offline_path, sess_options=session_options(n_threads, 1, spin),
                                    providers=["CPUExecutionProvider"])
        eng = OrtEngine(stream_bundle, device="cpu", intra_op_threads=n_threads, inter_op_threads=1,
                        spin_us=spin)
        n = eng.chunk_samples
        usable = len(audio) // n * n
        chunks = [audio[None, i:i + n] for i in range(0, usable, n)]
        out0 = sess.get_outputs()[0].name

        def offline() -> None:
            sess.run([out0], {"wave": audio[None, :usable]})

        def streaming() -> None:
            st = eng.init_state(1)
            for x in chunks:
                st = eng.step(x, st).states

        sess.run([out0], {"wave": audio[None, : 4 * n]})
        st = eng.init_state(1)
        for x in chunks[:3]:
            st = eng.step(x, st).states
        pairs = _alternate_pairs(offline, streaming, repeats)
        t_off, t_str = _best(pairs)
        dur = usable / 16000
        if n_threads == 1 and threads != 1:  # wall time only: on one thread it is the CPU time
            row.update({"ratio_one_thread": t_str / t_off, "streaming_s_per_audio_s_one_thread": t_str / dur,
                        "offline_s_per_audio_s_one_thread": t_off / dur})
            continue
        c_off, c_str = _alternate(offline, streaming, cpu_repeats, clock=time.process_time)
        if spin:
            row.update({"utterance_s": dur, "offline_s_per_audio_s": t_off / dur,
                        "streaming_s_per_audio_s": t_str / dur, "ratio": t_str / t_off, "cpu_ratio": c_str / c_off,
                        # each repeat's own streaming / offline: how far one run's headline can move on noise
                        "ratio_repeats": [s / o for o, s in pairs]})
        else:
            row.update({"ratio_no_spin": t_str / t_off, "cpu_ratio_no_spin": c_str / c_off,
                        "streaming_s_per_audio_s_no_spin": t_str / dur, "offline_s_per_audio_s_no_spin": t_off / dur})
    return row


def published_w2v1_streaming(family: str, chunk_ms: int) -> Any:
    """wav2vec 1 / vq-wav2vec at the published ("large") architecture, random weights (seed 0),
    made streaming by ``to_streaming`` (per-frame norms, causal padding) at ``chunk_ms``."""
    import torch

    from wavstream.training.models import CTC_VOCAB, build_model

    from .single_stream import streaming_from_published

    torch.manual_seed(0)
    return streaming_from_published(build_model(family, "large", vocab=list(CTC_VOCAB)).eval(), chunk_ms)


def _measure_exported(label: str, model: Any, seconds: float, settings: Settings, chunk_ms: int) -> dict:
    """``measure_ort`` for ``model`` (chunked for ``chunk_ms``), exported for it; the bundle is
    removed afterwards (the published sizes' are ~120 MB each)."""
    from .common import export

    bundle, _ = export(model, settings.work / f"{label}_{chunk_ms}ms", False, settings.log, "offline_ratio")
    try:
        return measure_ort(label, model, bundle, seconds, settings, chunk_ms=chunk_ms)
    finally:
        shutil.rmtree(bundle, ignore_errors=True)


def _ort_row(label: str, measure_row: Callable[[], dict], settings: Settings, chunk_ms: int = 320) -> dict:
    """``measure_row()``, or an error row when it fails: the other rows stand on their own."""
    try:
        return measure_row()
    except Exception as exc:
        settings.log("offline_ratio", f"{label} (ORT, {chunk_ms} ms) failed: {type(exc).__name__}: {exc}")
        return {"model": label, "chunk_ms": chunk_ms, "runtime": "onnxruntime", "error": f"{type(exc).__name__}: {exc}"}


def run(settings: Settings, base_published: Any, keep: Any = None) -> dict:
    from wavstream.training.models import FAMILIES

    from .common import chunk_frames_for, set_torch_threads
    from .single_stream import streaming_from_published, tiny_model

    set_torch_threads(settings.threads)
    seconds = settings.pick(6.0, 30.0)
    keep = keep or {}
    rows: list[dict] = []
    ort_rows: list[dict] = []
    models = []
    for fam in settings.pick(("wav2vec2", "wav2vec"), FAMILIES):
        m = tiny_model(fam)
        C, L = chunk_frames_for(m.config, 320)
        m = m.with_chunking(C, L)
        models.append((f"{fam}-tiny", m))
    if base_published is not None:
        models.append((f"wav2vec2-{settings.pick('hf-tiny', 'base')}", streaming_from_published(base_published, 320)))
    for label, m in models:
        rows.append(measure(label, m, seconds, settings))
        if (label, 320) in keep and not (settings.quick and ort_rows):  # quick: one ORT model
            ort_rows.append(_ort_row(label, lambda: measure_ort(label, m, keep[(label, 320)][0], seconds, settings),
                                     settings))
    if not settings.quick:
        # The two all-convolution families at their published size too (in ONNX Runtime only): the
        # tiny rows' products are 32 x 256 wide, the published ones 512 wide with up to 13 taps, so
        # these rows show how much of the tiny models' ratio is the size of their ops.
        for label, fam in (("wav2vec-large", "wav2vec"), ("vq_wav2vec-large", "vq_wav2vec")):
            ort_rows.append(_ort_row(label, lambda label=label, fam=fam: _measure_exported(
                label, published_w2v1_streaming(fam, 320), seconds, settings, 320), settings))
    # The all-convolution families at other chunk lengths (the transformers' cost per chunk also
    # moves with their attention window, which the chunk length changes: not the same question).
    chunk_rows: list[dict] = []
    for label, m in models:
        if m.config.is_transformer:
            continue
        for chunk_ms in settings.pick((640,), CHUNK_LENGTHS_MS):
            chunk_rows.append(_ort_row(label, lambda m=m, label=label, chunk_ms=chunk_ms: _measure_exported(
                label, m.with_chunking(*chunk_frames_for(m.config, chunk_ms)), seconds, settings, chunk_ms),
                settings, chunk_ms=chunk_ms))
    worst = max((r["ratio"] for r in rows), default=None)
    ok_ort = [r["ratio"] for r in ort_rows if "ratio" in r]
    worst_ort = max(ok_ort, default=None)
    return {"utterance_s": seconds, "chunk_ms": 320, "goal": 1.2, "rows": rows, "worst_ratio": worst,
            "meets_goal": bool(worst is not None and worst <= 1.2),
            "ort_rows": ort_rows, "worst_ratio_ort": worst_ort, "chunk_rows": chunk_rows,
            "meets_goal_ort": bool(worst_ort is not None and worst_ort <= 1.2)}

