"""The layering rule of the runtime package: a library module takes and returns typed values; commands live
in cli/, programs in bench/ and demos/. Importing every wavstream.stream module must pull in no argparse,
no torch, and nothing of wavstream.cli or wavstream.bench; and no stream module prints, exits or parses argv."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

STREAM = Path(__file__).resolve().parents[2] / "stream"

PROBE = r"""
import importlib, json, pkgutil, sys
import wavstream.stream as pkg
names = [pkg.__name__]
for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
    names.append(m.name)
# The Wyoming edge is checked on its own (below): the third-party wyoming package imports argparse.
names = [n for n in names if n != "wavstream.stream.server.wyoming"]
failed = {}
for name in names:
    try:
        importlib.import_module(name)
    except ImportError as exc:  # an optional backend (tensorrt) that is not installed is fine
        failed[name] = str(exc)
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("argparse", "torch")
                or m.startswith(("wavstream.cli", "wavstream.bench", "wavstream.training", "wavstream.export")))
print(json.dumps({"modules": names, "failed": failed, "loaded": loaded}))
"""


def test_importing_every_stream_module_loads_no_argparse_torch_or_upper_layer() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=120)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(res["modules"]) > 15, res["modules"]  # the walk really found the package
    assert set(res["failed"]) <= {"wavstream.stream.engines.tensorrt"}, res["failed"]
    assert res["loaded"] == [], res["loaded"]


WYOMING_PROBE = r"""
import json, sys
import wyoming.audio  # its own command-line helper imports argparse: not ours
third_party = sorted(m for m in sys.modules if m.split(".")[0] == "argparse")
import wavstream.stream.server.wyoming
loaded = sorted(m for m in sys.modules if (m.split(".")[0] == "torch" or m.startswith(
    ("wavstream.cli", "wavstream.bench", "wavstream.training", "wavstream.export"))))
print(json.dumps({"third_party": third_party, "loaded": loaded}))
"""


def test_the_wyoming_edge_loads_no_torch_or_upper_layer() -> None:
    out = subprocess.run([sys.executable, "-c", WYOMING_PROBE], capture_output=True, text=True, check=True, timeout=120)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["loaded"] == [], res["loaded"]


def _calls(tree: ast.AST) -> list[str]:
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Name):
                names.append(f.id)
            elif isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name):
                names.append(f"{f.value.id}.{f.attr}")
    return names


def test_no_stream_module_prints_exits_or_parses_argv() -> None:
    offenders = []
    for path in sorted(STREAM.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        calls = _calls(tree)
        bad = [c for c in calls if c in ("print", "exit", "sys.exit", "os._exit", "input")]
        bad += [n.names[0].name for n in ast.walk(tree) if isinstance(n, ast.Import) and n.names[0].name == "argparse"]
        bad += ["SystemExit" for n in ast.walk(tree) if isinstance(n, ast.Raise) and "SystemExit" in ast.dump(n)]
        bad += ["sys.argv" for n in ast.walk(tree)
                if isinstance(n, ast.Attribute) and n.attr == "argv" and isinstance(n.value, ast.Name) and n.value.id == "sys"]
        if bad:
            offenders.append((str(path.relative_to(STREAM.parent)), sorted(set(bad))))
    assert offenders == []


def test_commands_do_not_borrow_from_each_other() -> None:
    """Shared flags live in cli/args.py: no command imports another command to reuse its flags."""
    import re

    cli_dir = STREAM.parent / "cli"
    commands = sorted(p.stem for p in cli_dir.glob("*.py") if p.stem not in ("__init__", "args", "main", "terminal"))
    assert {"mic", "transcribe", "features", "serve", "client", "train", "eval", "export"} <= set(commands)
    alt = "|".join(commands)
    pattern = re.compile(rf"from \.({alt}) import|from wavstream\.cli\.({alt}) import|import wavstream\.cli\.({alt})\b")
    for name in commands:
        m = pattern.search((cli_dir / f"{name}.py").read_text())
        assert m is None, f"cli/{name}.py imports another command: {m.group(0)}"
