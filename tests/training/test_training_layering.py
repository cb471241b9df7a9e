"""The library rule for training/ and export/: commands live in cli/; library
modules parse no argv, print nothing, exit no process and delete no attributes; the model
config is frozen; no command module is imported by the library."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LIBRARY = sorted(p for d in ("training", "export") for p in (ROOT / d).rglob("*.py")
                 if "recipes" not in p.parts)  # recipes are programs


def _names(tree: ast.AST) -> tuple[set[str], set[str]]:
    imports, calls = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imports.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imports.add(node.module)
        elif isinstance(node, ast.Name):
            calls.add(node.id)
        elif isinstance(node, ast.Attribute):
            calls.add(node.attr)
    return imports, calls


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: str(p.relative_to(ROOT)))
def test_library_module_follows_the_rule(path):
    imports, names = _names(ast.parse(path.read_text(encoding="utf-8")))
    assert "argparse" not in imports, "argv is parsed in cli/"
    assert not any(m.startswith("wavstream.cli") for m in imports), "the library never imports a command"
    assert "SystemExit" not in names and "exit" not in names, "a library raises its own errors"
    assert "delattr" not in names
    assert "print" not in names, "a library returns values (or takes a log callback); commands print"


def test_configs_and_settings_are_frozen():
    from wavstream.training.loop import TrainConfig
    from wavstream.training.models import ModelConfig
    from wavstream.training.objectives import settings as S

    for cls in (ModelConfig, TrainConfig, S.CTCSettings, S.Wav2VecSettings, S.Wav2Vec2Settings,
                S.HubertSettings, S.WavLMSettings):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(cls(), dataclasses.fields(cls)[0].name, None)


def test_training_commands_keep_their_flags():
    """Every flag training/recipes/*.sh types still parses."""
    import argparse
    import shlex

    from wavstream.cli import train

    p = argparse.ArgumentParser()
    train.add_arguments(p)
    a = p.parse_args(shlex.split(
        "ctc --init none --family wav2vec2 --set num_layers=8 --train t.tsv --dev d.tsv --out o --steps 15000 "
        "--lr 1e-3 --warmup 1000 --schedule cosine --batch-seconds 80 --eval-every 500 --ckpt-every 200 "
        "--threads 2 --mask-prob 0.2 --augment channel --precision bf16 --max-minutes 120 --resume-from r "
        "--rewarm-steps 100 --workers 0 --hours 1 --freeze-transformer-steps 5 --train-conv --no-dynamic-chunks"))
    assert a.train_command == "ctc" and a.set == ["num_layers=8"] and a.resume_from == "r"
    a = p.parse_args(shlex.split(
        "pretrain --family hubert --train t.tsv --out o --labels l --kmeans-iter 2 --teacher x --layer 3 "
        "--num-clusters 50 --kmeans-percent 0.5 --kmeans-n-init 2 --mask-prob 0.8 --unmasked-weight 1 "
        "--feature-penalty 10 --temp-anneal-steps 0 --mix-prob 0.1 --noise-prob 0.1 --reverb-prob 0.1 "
        "--num-negatives 50 --diversity-weight 0.5 --vq-type kmeans"))
    assert a.train_command == "pretrain" and a.precision == "fp32"


def test_training_and_export_errors_share_the_runtime_root() -> None:
    from wavstream.export.onnx_export import ExportError
    from wavstream.export.tensorrt import TensorRTUnavailable
    from wavstream.stream import WavstreamError
    from wavstream.training.checkpoint import CheckpointError
    from wavstream.training.convert import StateDictMismatch
    from wavstream.training.finetune import FinetuneError
    from wavstream.training.labels import LabelError

    for cls in (ExportError, TensorRTUnavailable, CheckpointError, StateDictMismatch, FinetuneError, LabelError):
        assert issubclass(cls, WavstreamError), cls
