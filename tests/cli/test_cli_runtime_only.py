"""The command line in a runtime-only install, --version, and what the README and events show a user.

A runtime-only install (pip install wavstream, no extras) is imitated in a
subprocess whose import system refuses torch (and jiwer where said): the
same files, no second virtual environment.
"""

from __future__ import annotations

import contextlib
import io
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from toy_bundle import build_toy_bundle, synth  # noqa: E402

from wavstream.stream import Features, Final, Partial  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "stream" / "samples"  # sample.wav with sample.txt beside it: a one-utterance eval folder

_WITHOUT = r"""
import importlib.abc, sys
BLOCKED = set(sys.argv[1].split(","))

class _NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, _NotInstalled())
from wavstream.cli.main import main
sys.exit(main(sys.argv[2:]))
"""


def wavstream_without(blocked: str, *argv: str) -> subprocess.CompletedProcess:
    """`wavstream ARGV` in a subprocess where the modules in ``blocked`` (comma-separated) are not installed."""
    return subprocess.run([sys.executable, "-c", _WITHOUT, blocked, *argv], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)


@pytest.mark.parametrize(
    "argv, extra",
    [
        (["info"], "train"),
        (["export", "no_such_checkpoint", "--out", "no_bundle"], "export"),
        (["eval", "--model", "no_such_checkpoint", str(SAMPLES)], "train"),
    ],
)
def test_torch_commands_name_the_extra_without_torch(argv: list, extra: str) -> None:
    r = wavstream_without("torch,torchaudio", *argv)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and "needs torch" in r.stderr, r.stderr
    assert f"pip install 'wavstream[{extra}]'" in r.stderr, r.stderr


def test_eval_without_jiwer_names_the_extra_before_decoding() -> None:
    r = wavstream_without("torch,jiwer", "eval", "--model", "default", str(SAMPLES))
    assert r.returncode == 2 and "needs jiwer" in r.stderr and "pip install 'wavstream[eval]'" in r.stderr, r.stderr


def test_eval_of_a_bundle_runs_without_torch() -> None:
    """`eval` of an exported bundle needs only the runtime and jiwer ([eval])."""
    import json

    r = wavstream_without("torch,torchaudio", "eval", "--model", "default", str(SAMPLES), "--threads", "1")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["utterances"] == 1 and 0.0 <= res["cer"] < 1.0


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    from wavstream.cli.main import main

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"wavstream {version('wavstream')}"


# ------------------------------------------------------------------ what a user sees
def test_readme_python_snippet_runs_and_gets_the_last_utterance(monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's embedding snippet, run as written: it ends with a Final (finish() is called) and
    prints short lines (no feature arrays)."""
    text = (ROOT / "README.md").read_text()
    snippet = re.search(r"## Embedding recognition in an app\n\n```python\n(.*?)```", text, re.S)
    assert snippet, "README lost its 'Embedding recognition in an app' snippet"
    monkeypatch.chdir(ROOT)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(snippet.group(1), "README.md", "exec"), {})
    lines = out.getvalue().splitlines()
    assert lines and lines[-1].startswith("Final(text='") and "Final(text=''" not in lines[-1], lines[-3:]
    assert max(len(x) for x in lines) < 200


def test_events_print_short() -> None:
    f = Features(np.zeros((16, 256), np.float32), 32, np.zeros((16, 2), np.int64))
    assert repr(f) == str(f) == "Features(frames=<16x256 float32>, start_frame=32, codes=<16x2 int64>)"
    assert repr(Features(np.zeros((3, 8), np.float16), 0)) == "Features(frames=<3x8 float16>, start_frame=0, codes=None)"
    assert repr(Final("hi", 0.1 * 3, 21 * 0.02, 2)) == "Final(text='hi', start=0.3, end=0.42, segment=2)"
    assert repr(Partial("h")) == "Partial(text='h', segment=0)"


def test_features_out_without_suffix_says_the_real_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`features --out f4` writes f4.npy (numpy's rule) and says so."""
    from wavstream.cli.main import main

    bundle = build_toy_bundle(tmp_path / "toy")
    wav = tmp_path / "a.wav"
    sf.write(wav, synth("abc"), 16000, subtype="FLOAT")
    assert main(["features", str(wav), "--model", str(bundle), "--out", str(tmp_path / "f4")]) == 0
    err = capsys.readouterr().err
    assert f"wrote {tmp_path / 'f4.npy'} " in err, err
    assert np.load(tmp_path / "f4.npy").shape[1] == 16 and not (tmp_path / "f4").exists()
