"""Helpers for tests that go through a REAL PortAudio capture device.

``VirtualMic`` starts a private PulseAudio daemon (its own XDG_RUNTIME_DIR,
HOME and cookie in a temp dir, so it touches nothing of the user's) with a
16 kHz mono null sink ``vmic`` whose monitor is the default source. PortAudio
opens it through ALSA's ``pulse`` plugin (device name "pulse"); anything
played into the sink with ``paplay --device=vmic`` arrives at the capture
callback in real time (demos/README.md, "Trying it without a sound card").

Why a second toy model (``build_tone_bundle`` / ``tone_synth``): the toy
bundle of toy_bundle.py codes a token as a DC level per 10 ms frame, so it
only decodes exactly when the audio is aligned to its 160-sample frame grid.
A live capture starts at an arbitrary sample, so frames straddle level steps
and their means decode as other tokens ("hello" -> "fhaceailb..."). The tone
bundle codes token j as a sine at an exact DFT bin of the frame and scores
frame energy in that bin; a frame straddling silence and a tone has energy in
that tone's bin only (leakage into any other bin is never larger), so it
decodes as that token or as blank, whatever the alignment, and the text is
deterministic through a live, paced device.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from toy_bundle import STRIDE, VOCAB, _const, build_toy_bundle  # noqa: E402

SR = 16000
TONE_AMP = 0.3
FIRST_BIN = 3  # token j (j >= 1) is a sine at (FIRST_BIN + j - 1) * 100 Hz: 300 .. 3100 Hz
THRESHOLD = 0.3  # a frame holding < ~30% of a tone's amplitude is blank

PULSE_BINARIES = ("pulseaudio", "pactl", "paplay")


# ------------------------------------------------------------------ tone bundle
def _tone_freq_bin(j: int) -> int:
    return FIRST_BIN + j - 1


def build_tone_bundle(path: Path) -> Path:
    """A toy bundle (same states/features as toy_bundle) whose logits score tone energy."""
    path = build_toy_bundle(Path(path))
    model = onnx.load(str(path / "model.onnx"))
    g = model.graph
    drop = {"mean", "diff", "sq", "logits"}
    keep = [n for n in g.node if not (set(n.output) & drop)]
    V = len(VOCAB)
    n = np.arange(STRIDE)
    cos_b = np.zeros((STRIDE, V), np.float32)
    sin_b = np.zeros((STRIDE, V), np.float32)
    for j in range(1, V):
        k = _tone_freq_bin(j)
        cos_b[:, j] = np.cos(2 * np.pi * k * n / STRIDE)
        sin_b[:, j] = np.sin(2 * np.pi * k * n / STRIDE)
    full = (TONE_AMP * STRIDE / 2) ** 2  # bin energy of a whole frame of tone
    scale = np.array(10.0 / full, np.float32)
    bias = np.zeros(V, np.float32)
    bias[0] = 10.0 * THRESHOLD**2  # blank wins below THRESHOLD of the tone's amplitude
    new_nodes = [
        _const("tone_cos", cos_b),
        _const("tone_sin", sin_b),
        _const("tone_scale", scale),
        _const("tone_bias", bias),
        helper.make_node("MatMul", ["frames", "tone_cos"], ["tone_re"]),
        helper.make_node("MatMul", ["frames", "tone_sin"], ["tone_im"]),
        helper.make_node("Mul", ["tone_re", "tone_re"], ["tone_re2"]),
        helper.make_node("Mul", ["tone_im", "tone_im"], ["tone_im2"]),
        helper.make_node("Add", ["tone_re2", "tone_im2"], ["tone_e"]),
        helper.make_node("Mul", ["tone_e", "tone_scale"], ["tone_es"]),
        helper.make_node("Add", ["tone_es", "tone_bias"], ["logits"]),
    ]
    del g.node[:]
    g.node.extend(keep + new_nodes)
    onnx.checker.check_model(model)
    onnx.save(model, str(path / "model.onnx"))
    return path


def tone_synth(
    text: str,
    *,
    frames_per_token: int = 5,
    gap_frames: int = 3,
    lead_s: float = 0.3,
    tail_s: float = 0.3,
    seed: int = 0,
) -> np.ndarray:
    """16 kHz audio that the tone bundle decodes to ``text`` at any frame alignment."""
    parts = [np.zeros(int(lead_s * SR), np.float32)]
    t = np.arange(frames_per_token * STRIDE)
    gap = np.zeros(gap_frames * STRIDE, np.float32)
    for ch in text:
        j = VOCAB.index("|" if ch == " " else ch)
        k = _tone_freq_bin(j)
        parts.append((TONE_AMP * np.sin(2 * np.pi * k * t / STRIDE)).astype(np.float32))
        parts.append(gap)
    parts.append(np.zeros(int(tail_s * SR), np.float32))
    wave = np.concatenate(parts)
    rng = np.random.default_rng(seed)
    return (wave + 1e-4 * rng.standard_normal(wave.shape[0])).astype(np.float32)


# ---------------------------------------------------------------- virtual mic
def pulse_available() -> bool:
    return all(shutil.which(b) for b in PULSE_BINARIES)


def portaudio_available() -> bool:
    try:
        import sounddevice  # noqa: F401
    except OSError:
        return False
    return True


def require_pulse() -> None:
    """Missing tools are a failure with the install hint, not a skip: scripts/test.sh (and CI) install them."""
    missing = [b for b in PULSE_BINARIES if not shutil.which(b)]
    if not portaudio_available():
        missing.append("libportaudio2")
    if missing:
        raise RuntimeError(f"virtual microphone needs {', '.join(missing)}: apt-get install pulseaudio "
                           "pulseaudio-utils libasound2-plugins libportaudio2 (or run bash scripts/test.sh)")


class VirtualMic:
    """A private PulseAudio daemon with a null sink whose monitor is the default capture source.

    Use as a context manager; ``env`` is the environment a child process
    (``wavstream mic``) needs to reach this daemon. PortAudio device: "pulse".
    """

    def __init__(self, rate: int = SR, channels: int = 1) -> None:
        self.rate = rate
        self.channels = channels
        self.dir = Path(tempfile.mkdtemp(prefix="vmic-"))
        self.env: dict[str, str] = {}
        self._players: list[subprocess.Popen] = []

    def start(self, timeout: float = 20.0) -> "VirtualMic":
        runtime = self.dir / "run"
        home = self.dir / "home"
        runtime.mkdir(mode=0o700)
        home.mkdir()
        script = self.dir / "vmic.pa"
        script.write_text(
            "load-module module-native-protocol-unix\n"
            f"load-module module-null-sink sink_name=vmic rate={self.rate} channels={self.channels}\n"
            "set-default-sink vmic\n"
            "set-default-source vmic.monitor\n"
        )
        env = dict(os.environ)
        env.update(
            XDG_RUNTIME_DIR=str(runtime),
            HOME=str(home),
            PULSE_COOKIE=str(home / "cookie"),
            PULSE_RUNTIME_PATH=str(runtime / "pulse"),
            PULSE_SERVER=f"unix:{runtime / 'pulse' / 'native'}",
        )
        env.pop("PULSE_SINK", None)
        env.pop("PULSE_SOURCE", None)
        self.env = env
        # As root, pulseaudio refuses to run unless told this is intended.
        subprocess.run(
            ["pulseaudio", "--daemonize=yes", "--exit-idle-time=-1", "-n", "-F", str(script), "--system=no",
             "--disallow-exit", "--log-target=file:" + str(self.dir / "pulse.log")],
            env=env, check=True, timeout=timeout, capture_output=True,
        )
        t_end = time.monotonic() + timeout
        while time.monotonic() < t_end:
            r = subprocess.run(["pactl", "info"], env=env, capture_output=True, text=True)
            if r.returncode == 0 and "vmic" in r.stdout:
                return self
            time.sleep(0.1)
        raise RuntimeError(f"PulseAudio did not come up; log:\n{self.log()}")

    def pid(self) -> int:
        """The daemon's process id (from its pid file), e.g. to kill it mid-capture."""
        return int((self.dir / "run" / "pulse" / "pid").read_text().split()[0])

    def log(self) -> str:
        p = self.dir / "pulse.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def play(self, wav: Path) -> subprocess.Popen:
        """Start playing a WAV into the sink (returns at once; the file plays in real time)."""
        p = subprocess.Popen(["paplay", "--device=vmic", str(wav)], env=self.env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self._players.append(p)
        return p

    def stop(self) -> None:
        for p in self._players:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    p.kill()
        if self.env:
            subprocess.run(["pulseaudio", "--kill"], env=self.env, capture_output=True, timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "VirtualMic":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


def write_wav(path: Path, wave: np.ndarray, rate: int = SR) -> Path:
    import soundfile as sf

    sf.write(str(path), wave, rate, subtype="PCM_16")
    return path
