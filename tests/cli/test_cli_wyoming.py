"""`wavstream wyoming`: the missing extra is named, flags come from the environment, stdio:// serves one client."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from toy_bundle import build_toy_bundle, silence, synth  # noqa: E402

from wavstream.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[2]

_WITHOUT_WYOMING = r"""
import importlib.abc, sys

class _NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "wyoming":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, _NotInstalled())
from wavstream.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def test_without_the_extra_the_command_names_it() -> None:
    r = subprocess.run([sys.executable, "-c", _WITHOUT_WYOMING, "wyoming", "--health-check"], capture_output=True,
                       text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 2, r.stderr
    assert "pip install 'wavstream[wyoming]'" in r.stderr


def test_every_flag_can_come_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("WAVSTREAM_WYOMING_URI", "tcp://0.0.0.0:10555")
    monkeypatch.setenv("WAVSTREAM_WYOMING_ENDPOINTING", "1")
    monkeypatch.setenv("WAVSTREAM_WYOMING_STREAMING", "0")
    monkeypatch.setenv("WAVSTREAM_WYOMING_LANGUAGE", "en,de")
    monkeypatch.setenv("WAVSTREAM_WYOMING_MAX_SESSIONS", "3")
    monkeypatch.setenv("WAVSTREAM_WYOMING_RULE2_SILENCE", "0.8")
    a = build_parser(load_all=False, only="wyoming").parse_args(["wyoming"])
    assert (a.uri, a.endpointing, a.streaming, a.language, a.max_sessions, a.rule2_silence) == \
        ("tcp://0.0.0.0:10555", True, False, ["en", "de"], 3, 0.8)
    b = build_parser(load_all=False, only="wyoming").parse_args(["wyoming", "--uri", "tcp://127.0.0.1:1", "--max-sessions", "5"])
    assert (b.uri, b.max_sessions) == ("tcp://127.0.0.1:1", 5)  # the command line wins
    monkeypatch.setenv("WAVSTREAM_WYOMING_MAX_SESSIONS", "zero")
    with pytest.raises(SystemExit) as exc:  # a bad value is refused, naming the variable
        build_parser(load_all=False, only="wyoming")
    assert exc.value.code == 2


def test_stdio_serves_one_client(tmp_path: Path) -> None:
    from wyoming.asr import Transcribe
    from wyoming.audio import AudioChunk, AudioStart, AudioStop
    from wyoming.event import read_event, write_event
    from wyoming.info import Describe

    bundle = build_toy_bundle(tmp_path / "bundle")
    wave = np.concatenate([synth("over stdio"), silence(0.3)])
    pcm = np.clip(np.round(wave * 32768), -32768, 32767).astype("<i2").tobytes()
    stdin = io.BytesIO()
    fmt = dict(rate=16000, width=2, channels=1)
    for ev in [Describe().event(), Transcribe(language="en").event(), AudioStart(**fmt).event()]:
        write_event(ev, stdin)
    for i in range(0, len(pcm), 1024):
        write_event(AudioChunk(audio=pcm[i:i + 1024], **fmt).event(), stdin)
    write_event(AudioStop().event(), stdin)
    # stdin stays open until the transcript is out: the reply must not depend on end-of-input
    proc = subprocess.Popen([sys.executable, "-m", "wavstream.cli.main", "wyoming", "--uri", "stdio://", "--model",
                             str(bundle), "--threads", "1", "--no-streaming"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(stdin.getvalue())
    proc.stdin.flush()
    events = []
    while True:
        ev = read_event(proc.stdout)
        assert ev is not None, proc.stderr.read().decode() if proc.stderr else ""
        events.append(ev)
        if ev.type == "transcript":
            break
    proc.stdin.close()
    assert proc.wait(timeout=60) == 0
    assert [e.type for e in events] == ["info", "transcript"]
    assert events[-1].data["text"] == "over stdio"
