"""Shared pieces of the benchmarks: progress log, timing, bundles, audio, RSS.

Everything heavy (torch, the exporter) is imported inside functions, so the
CLI module stays light.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

SAMPLE_RATE = 16000
CHUNK_MS = (160, 320, 640)
# Attention history kept constant in time across chunk sizes (1.28 s, the tiny
# preset's 16 frames x 4 left chunks), so only the chunk changes.
HISTORY_MS = 1280


class Progress:
    """Timestamped progress lines on stderr: ``[  12.3 s] section: message``."""

    def __init__(self, stream: Any = None, quiet: bool = False) -> None:
        self.t0 = time.perf_counter()
        self.stream = stream or sys.stderr
        self.quiet = quiet

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def __call__(self, section: str, msg: str) -> None:
        if not self.quiet:
            print(f"[{self.elapsed():7.1f} s] {section}: {msg}", file=self.stream, flush=True)


@dataclass
class Settings:
    quick: bool
    threads: int
    work: Path  # scratch folder for exported bundles
    log: Progress
    server_streams: Optional[list[int]] = None  # the server section's stream counts (None: its default levels)
    server_backend: str = "onnxruntime"  # the server section's engine (as `wavstream serve --backend`)
    server_precision: str = "fp32"  # and its precision (as `wavstream serve --precision`)
    server_workers: int = 1  # inference workers (as `wavstream serve --workers`), threads // workers each

    def pick(self, quick: Any, full: Any) -> Any:
        return quick if self.quick else full


# ----------------------------------------------------------------------- timing
def time_loop(fn: Callable[[], Any], min_calls: int, min_seconds: float, warmup: int = 2) -> tuple[float, int]:
    """Call ``fn`` until both ``min_calls`` and ``min_seconds`` are reached; (seconds per call, calls)."""
    for _ in range(warmup):
        fn()
    n = 0
    t0 = time.perf_counter()
    while True:
        fn()
        n += 1
        dt = time.perf_counter() - t0
        if n >= min_calls and dt >= min_seconds:
            return dt / n, n


def percentiles(values: list[float], ps: tuple[float, ...] = (50, 95, 99)) -> dict[str, Optional[float]]:
    if not values:
        return {f"p{int(p)}": None for p in ps}
    arr = np.asarray(values, dtype=np.float64)
    return {f"p{int(p)}": float(np.percentile(arr, p)) for p in ps}


# ----------------------------------------------------------------------- memory
def rss_bytes(pid: Optional[int] = None) -> int:
    """Resident set size of a process (this one by default), from /proc."""
    path = f"/proc/{pid or 'self'}/status"
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:  # not Linux: peak RSS is the best we have
        import resource

        r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(r if sys.platform == "darwin" else r * 1024)
    except Exception:
        return 0


def linear_slope(xs: Sequence[float], ys: Sequence[float]) -> Optional[float]:
    if len(xs) < 2 or len(set(xs)) < 2:
        return None
    a, _b = np.polyfit(np.asarray(xs, float), np.asarray(ys, float), 1)
    return float(a)


# ------------------------------------------------------------------------ audio
def noise(seconds: float, seed: int = 0) -> np.ndarray:
    """Speech-level noise (compute does not depend on the content)."""
    rng = np.random.default_rng(seed)
    return (0.05 * rng.standard_normal(int(seconds * SAMPLE_RATE))).astype(np.float32)


def packaged_sample() -> Optional[tuple[np.ndarray, str]]:
    """The package's sample utterance (stream/samples/sample.wav), if installed."""
    try:
        import wavstream.stream as ws

        wav = Path(ws.__file__).resolve().parent / "samples" / "sample.wav"
        if wav.is_file():
            x, rate = _read_wav(wav)
            if rate == SAMPLE_RATE:
                return x, f"stream/samples/sample.wav ({len(x) / SAMPLE_RATE:.1f} s)"
    except Exception:
        pass
    return None


def speech(text: str, seed: int = 0) -> tuple[np.ndarray, str]:
    """An utterance at 16 kHz and where it came from.

    The package's sample utterance when installed; else ``text`` spoken by
    espeak-ng when it is installed (the default model was trained on such
    voices); otherwise a speech-like signal (voiced harmonic bursts with
    syllable-rate amplitude modulation), so the benchmark runs anywhere.
    """
    import shutil
    import subprocess
    import tempfile

    packaged = packaged_sample()
    if packaged is not None:
        return packaged
    if shutil.which("espeak-ng"):
        with tempfile.TemporaryDirectory() as d:
            wav = Path(d) / "u.wav"
            try:
                subprocess.run(["espeak-ng", "-v", "en-us", "-s", "160", "-w", str(wav), text],
                               check=True, capture_output=True, timeout=30)
                x, rate = _read_wav(wav)
                from wavstream.stream.resample import StreamResampler

                if rate != SAMPLE_RATE:
                    r = StreamResampler(rate, SAMPLE_RATE)
                    x = np.concatenate([r.process(x), r.flush()])
                return x.astype(np.float32), "espeak-ng en-us"
            except Exception:
                pass
    rng = np.random.default_rng(seed)
    n = int(0.09 * len(text) * SAMPLE_RATE) + SAMPLE_RATE // 2
    t = np.arange(n) / SAMPLE_RATE
    f0 = 120 + 20 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    voiced = sum(np.sin(k * phase) / k for k in range(1, 12))
    env = np.clip(np.sin(2 * np.pi * 4.0 * t), 0, None) ** 0.5
    x = 0.1 * env * voiced + 0.005 * rng.standard_normal(n)
    return x.astype(np.float32), "synthetic voiced bursts (espeak-ng not installed)"


def _read_wav(path: Path) -> tuple[np.ndarray, int]:
    import wave

    with wave.open(str(path), "rb") as w:
        rate, ch, width = w.getframerate(), w.getnchannels(), w.getsampwidth()
        raw = w.readframes(w.getnframes())
    if width != 2:
        raise ValueError("expected 16-bit PCM")
    x = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    if ch > 1:
        x = x.reshape(-1, ch).mean(axis=1)
    return x, rate


def speech_end_sample(x: np.ndarray, threshold_db: float = -40.0, win: int = 160) -> int:
    """Index just after the last 10 ms window louder than ``threshold_db`` below the peak."""
    n = len(x) // win
    if n == 0:
        return len(x)
    e = np.sqrt((x[: n * win].reshape(n, win) ** 2).mean(axis=1) + 1e-12)
    thr = e.max() * 10 ** (threshold_db / 20)
    loud = np.nonzero(e > thr)[0]
    return int((loud[-1] + 1) * win) if loud.size else len(x)


# ---------------------------------------------------------------------- models
def chunk_frames_for(config: Any, chunk_ms: int) -> tuple[int, int]:
    """(chunk frames C, left chunks L) for a chunk of ``chunk_ms`` at constant history."""
    frame_ms = 1000.0 * config.stride / config.sample_rate
    C = int(round(chunk_ms / frame_ms))
    if not config.is_transformer:
        return C, 0  # fully causal convs: no attention, no left chunks
    L = max(1, int(round(HISTORY_MS / chunk_ms)))
    return C, L


# The chunk of the HF comparison. Its bundles (single_stream's, reused there) also carry the static
# int8 model (calibrated on the export's synthetic signal: the weights are random, the timing counts).
HF_COMPARE_CHUNK_MS = 320


def export(model: Any, out: Path, int8: bool, log: Progress, section: str,
           int8_static: bool = False) -> tuple[Path, float]:
    """Export ``model`` (its current chunking) to a bundle folder; (folder, seconds)."""
    from wavstream.export.bundle import export_bundle

    t0 = time.perf_counter()
    export_bundle(model, out, verify=False, simplify=False, int8=int8, int8_static=int8_static,
                  log=lambda *a: None)
    dt = time.perf_counter() - t0
    log(section, f"exported {out.name} in {dt:.1f} s")
    return out, dt


def fresh_process() -> Any:
    """One spawned worker process (a ``concurrent.futures.ProcessPoolExecutor``; use it
    as a context manager), for work whose timing must not depend on this process's
    history: after the earlier sections its heap and allocator slowed a 32-frame
    ONNX Runtime step by 5 %, and a full garbage collection paused websocket
    clients for 0.3-0.5 s. Spawning re-imports the caller's main module: a
    script that uses this needs the ``if __name__ == "__main__":`` guard."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))


def set_torch_threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass  # already set in this process


def environment(threads: int) -> dict:
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "cpu_model": _cpu_model(),
    }
    for mod in ("numpy", "onnxruntime", "torch", "transformers", "onnx"):
        try:
            m = __import__(mod)
            info[mod] = getattr(m, "__version__", "?")
        except Exception:
            info[mod] = None
    try:
        info["load_average_at_start"] = list(os.getloadavg())
    except OSError:
        pass
    return info


def _cpu_model() -> Optional[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


# ------------------------------------------------------------ other processes
class ForeignCpu:
    """CPU time used by processes outside this benchmark's process tree.

    A daemon thread reads /proc/<pid>/stat of every process once a second and
    sums the CPU-time growth of those that are neither this process nor one
    of its descendants (the server child included). ``mark()`` returns a
    (wall time, foreign CPU seconds) point; ``share(a, b)`` the foreign CPU
    between two marks as a fraction of all cores. On a shared machine this
    says how much of each measurement ran beside someone else's work.
    """

    def __init__(self, interval: float = 1.0) -> None:
        import threading

        self.interval = interval
        self.ncpu = os.cpu_count() or 1
        self.hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.foreign_s = 0.0
        self.available = os.path.isdir("/proc/self")
        self._last: dict[int, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        if self.available:
            self._sample()
            self._thread.start()

    @staticmethod
    def _read() -> dict[int, tuple[int, int]]:
        out: dict[int, tuple[int, int]] = {}
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/stat") as f:
                    s = f.read()
            except OSError:
                continue
            rest = s[s.rfind(")") + 2:].split()
            # fields after the name: state(0) ppid(1) ... utime(11) stime(12)
            out[int(name)] = (int(rest[1]), int(rest[11]) + int(rest[12]))
        return out

    def _sample(self) -> None:
        snap = self._read()
        me = os.getpid()
        mine: set[int] = set()
        for pid in snap:
            p, seen = pid, 0
            while p and p in snap and seen < 64:
                if p == me:
                    mine.add(pid)
                    break
                p = snap[p][0]
                seen += 1
        ticks = 0
        for pid, (_, t) in snap.items():
            if pid in mine:
                continue
            prev = self._last.get(pid)
            if prev is not None and t >= prev:
                ticks += t - prev
        with self._lock:
            if self._last:
                self.foreign_s += ticks / self.hz
            self._last = {pid: t for pid, (_, t) in snap.items()}

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._sample()
            except Exception:
                pass

    def mark(self) -> tuple[float, float]:
        with self._lock:
            return time.perf_counter(), self.foreign_s

    def share(self, a: tuple[float, float], b: Optional[tuple[float, float]] = None) -> Optional[float]:
        if not self.available:
            return None
        b = b or self.mark()
        wall = b[0] - a[0]
        return None if wall <= 0 else round((b[1] - a[1]) / (wall * self.ncpu), 3)

    def stop(self) -> None:
        self._stop.set()


MONITOR: Optional[ForeignCpu] = None


def foreign_mark() -> Optional[tuple[float, float]]:
    return MONITOR.mark() if MONITOR is not None else None


def foreign_share(a: Optional[tuple[float, float]]) -> Optional[float]:
    return MONITOR.share(a) if (MONITOR is not None and a is not None) else None
