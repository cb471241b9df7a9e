"""Smoke tests of demos/: each demo runs on a file and prints what it should.

Deterministic runs use the toy bundle (tests/toy_bundle.py) and synth() audio;
the embedded default model, when installed, is run on the committed sample
and checked loosely (it runs, and live_mic prints a transcript).
"""

from __future__ import annotations

import importlib.util
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from toy_bundle import build_toy_bundle, silence, synth  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DEMOS = ROOT / "demos"
SAMPLE = ROOT / "stream" / "samples" / "sample.wav"


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_toy_bundle(tmp_path_factory.mktemp("toy") / "bundle", code_groups=2)


def _wav(path: Path, *parts: np.ndarray) -> Path:
    sf.write(str(path), np.concatenate(parts), 16000, subtype="PCM_16")
    return path


def _run(script: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(DEMOS / script), *args], capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, COLUMNS="100"))


def _load_voice_commands():
    spec = importlib.util.spec_from_file_location("voice_commands", DEMOS / "voice_commands.py")
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    sys.modules["voice_commands"] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


# ------------------------------------------------------------ voice_commands
def test_voice_commands_on_file_runs_actions(toy: Path, tmp_path: Path) -> None:
    gap = silence(1.5)
    wav = _wav(tmp_path / "cmds.wav", synth("lights on"), gap, synth("volume up"), gap, synth("please play music"), gap,
               synth("lites of"), gap, synth("banana"))
    r = _run("voice_commands.py", "--model", str(toy), "--file", str(wav))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith('heard "lights on" -> lights on (1.00): lights ON'), r.stdout
    assert lines[1].startswith('heard "volume up" -> volume up (1.00): volume 7'), r.stdout
    assert lines[2].startswith('heard "please play music" -> play music'), r.stdout
    assert lines[3].startswith('heard "lites of" -> lights off'), r.stdout  # fuzzy match
    assert lines[4].startswith('heard "banana" -> no command'), r.stdout
    assert lines[-1] == "final state: lights=off volume=7 music=playing; commands run: lights on, volume up, play music, lights off"


def test_voice_commands_matcher() -> None:
    vc = _load_voice_commands()
    assert vc.match_command("lights on") == ("lights on", 1.0)
    assert vc.match_command("valiumap")[0] == "volume up"  # merged words, as a small CTC model writes them
    assert vc.match_command("lites o")[0] is None  # on or off? too close to call: no action
    assert vc.match_command("could you turn the lights off please")[0] == "lights off"
    assert vc.match_command("volum dwn")[0] == "volume down"
    assert vc.match_command("what time isit")[0] == "what time is it"
    assert vc.match_command("the weather is nice")[0] is None
    assert vc.match_command("")[0] is None


def test_voice_commands_embeds_callback_api(toy: Path) -> None:
    """The app object works as a Recognizer listener (the callback API), in-process."""
    from wavstream.stream import Recognizer

    vc = _load_voice_commands()

    class Sink:
        def __init__(self) -> None:
            self.text = ""

        def write(self, s: str) -> None:
            self.text += s

        def flush(self) -> None:
            pass

        def isatty(self) -> bool:
            return False

    out = Sink()
    app = vc.VoiceApp(out=out)
    rec = Recognizer.from_bundle(toy, intra_op_threads=1)
    rec.add_listener(app)
    audio = np.concatenate([synth("mute"), silence(2.0), synth("stop music")])
    for pos in range(0, audio.shape[0], 1234):
        rec.feed(audio[pos : pos + 1234], 16000)
    rec.finish()
    assert app.state.log == ["mute", "stop music"] and app.state.volume == 0, out.text


# ------------------------------------------------------------------ live_mic
def test_live_mic_on_file_plain(toy: Path, tmp_path: Path) -> None:
    wav = _wav(tmp_path / "two.wav", synth("hello world"), silence(2.0), synth("good bye"))
    r = _run("live_mic.py", "--model", str(toy), "--file", str(wav), "--fast")
    assert r.returncode == 0, r.stderr
    out = r.stdout.splitlines()
    assert out[:2] == ["final: hello world", "final: good bye"], r.stdout
    # The closing snapshot of the view: meter, level history, feature heatmap, finals.
    text = r.stdout
    assert "level   " in text and "dBFS" in text and "history " in text
    heat = [ln for ln in out if ln.startswith("  │") and ln.endswith("│")]
    assert len(heat) == 8 and any(ch in "".join(heat) for ch in "▒▓█"), text
    assert "features (|x| by dimension group, last 64 frames" in text
    assert any(ln.strip().endswith("] hello world") for ln in out) and any(ln.strip().endswith("] good bye") for ln in out)


@pytest.mark.parametrize("view", ["plain-ansi", "rich-if-installed"])
def test_live_mic_on_file_in_a_terminal(toy: Path, tmp_path: Path, view: str) -> None:
    """On a terminal (pty) the live view redraws (rich if installed, else ANSI) and ends with the finals."""
    wav = _wav(tmp_path / "one.wav", synth("hello world"))
    master, slave = pty.openpty()
    extra = ["--plain"] if view == "plain-ansi" else []
    proc = subprocess.Popen([sys.executable, str(DEMOS / "live_mic.py"), "--model", str(toy), "--file", str(wav), *extra],
                            stdin=slave, stdout=slave, stderr=subprocess.PIPE, env=dict(os.environ, COLUMNS="100", LINES="40"))
    os.close(slave)
    buf = b""
    t_end = time.monotonic() + 120
    try:
        while time.monotonic() < t_end:
            r, _, _ = select.select([master], [], [], 0.1)
            if r:
                try:
                    chunk = os.read(master, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                buf += chunk
            elif proc.poll() is not None:
                break
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
    text = buf.decode("utf-8", "replace")
    assert "\x1b[" in text and "hello world" in text and "█" in text


# ------------------------------------------------- against the embedded default
def test_demos_run_on_default_model_with_sample() -> None:
    r = _run("live_mic.py", "--file", str(SAMPLE), "--fast", timeout=300)
    assert r.returncode == 0, r.stderr
    assert "features (" in r.stdout and "dBFS" in r.stdout
    finals = [ln[len("final: "):] for ln in r.stdout.splitlines() if ln.startswith("final: ")]
    assert finals and any(c.isalpha() for c in " ".join(finals)), r.stdout
    r = _run("voice_commands.py", "--file", str(SAMPLE), timeout=300)
    assert r.returncode == 0, r.stderr
    assert "final state:" in r.stdout and 'heard "' in r.stdout, r.stdout
    assert "commands run: none" in r.stdout  # a sentence that is no command triggers nothing


def test_voice_commands_default_model_on_espeak_commands(tmp_path: Path) -> None:
    """Spoken (espeak-ng) commands through the shipped model: some fire, none that was not said."""
    import shutil

    import soxr

    if not shutil.which("espeak-ng"):
        raise RuntimeError("espeak-ng missing: apt-get install espeak-ng (or run bash scripts/test.sh)")
    said = ["lights on", "volume up", "what time is it"]
    parts = []
    for i, cmd in enumerate(said):
        raw = tmp_path / f"c{i}.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "140", "-w", str(raw), cmd], check=True, timeout=60)
        x, sr = sf.read(str(raw), dtype="float32")
        x = soxr.resample(x, sr, 16000)
        parts += [silence(0.5), (0.7 * x / max(1e-6, float(np.abs(x).max()))).astype(np.float32), silence(1.5)]
    wav = _wav(tmp_path / "cmds.wav", *parts)
    r = _run("voice_commands.py", "--file", str(wav), timeout=300)
    assert r.returncode == 0, r.stderr
    ran = r.stdout.strip().splitlines()[-1].split("commands run: ")[1]
    ran_list = [] if ran == "none" else ran.split(", ")
    assert ran_list and set(ran_list) <= set(said), r.stdout


@pytest.mark.parametrize("demo", ["live_mic", "voice_commands"])
def test_a_lost_microphone_ends_the_demo_with_a_message(demo: str, toy: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """The microphone disappears mid-stream: the demo keeps what it heard, says why, exits 1 (no traceback)."""
    from wavstream.stream.sources import DeviceLostError

    spec = importlib.util.spec_from_file_location(demo, DEMOS / f"{demo}.py")
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    sys.modules[demo] = mod
    spec.loader.exec_module(mod)

    class VanishingMic:
        device_name, sample_rate = "usb mic", 16000

        def __init__(self, *args: object, **kwargs: object) -> None:
            pass

        def __iter__(self):
            yield np.zeros(800, np.float32)
            raise DeviceLostError("capture stopped: device unplugged")

        def take_dropped(self) -> int:
            return 0

        def stop(self) -> None:
            pass

    monkeypatch.setattr(mod, "MicrophoneSource", VanishingMic)
    rc = mod.main(["--model", str(toy)] + (["--plain"] if demo == "live_mic" else []))
    err = capsys.readouterr().err
    assert rc == 1 and "audio input lost: capture stopped: device unplugged" in err
