"""Load a training checkpoint into a `SpeechEncoder`.

A checkpoint is ``model.safetensors`` (the state dict) plus ``config.json``
(``ModelConfig.to_dict()``, either bare or wrapped as ``{"model": {...}, ...}``
beside other trainer fields). Accepted spellings of ``path``:

- a folder holding ``model.safetensors`` and ``config.json``, or a training
  run folder whose ``final/`` (else ``last/``) subfolder holds them;
- the ``model.safetensors`` file itself (``config.json`` beside it);
- a file prefix ``P`` with ``P.model.safetensors`` / ``P_model.safetensors`` /
  ``P-model.safetensors`` (or ``P.safetensors``) and ``P.config.json`` /
  ``P_config.json`` / ``P-config.json`` (or ``P.json``, else ``config.json``
  in the same folder).

Weights are read with safetensors only (never pickle). Keys that are missing
from, or unexpected in, the checkpoint are tolerated only when they belong to
pretraining modules (``model.pretraining_modules()``); anything else is an
error naming the keys.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Union

__all__ = ["CheckpointError", "load_checkpoint", "find_checkpoint_files", "read_model_config", "read_config",
           "resolve"]


class CheckpointError(Exception):
    """The checkpoint is missing, unreadable, or does not fit its config."""


_SEPS = (".", "_", "-")


def find_checkpoint_files(path: Union[str, Path]) -> tuple[Path, Path]:
    """Return (weights, config) paths for a checkpoint folder, file or prefix."""
    p = Path(path).expanduser()
    if p.is_dir():
        if not (p / "model.safetensors").is_file():  # a training run folder: its final/ or last/ checkpoint
            for sub in ("final", "last"):
                if (p / sub / "model.safetensors").is_file():
                    p = p / sub
                    break
        w, c = p / "model.safetensors", p / "config.json"
        missing = [x.name for x in (w, c) if not x.is_file()]
        if missing:
            have = sorted(x.name for x in p.iterdir())
            raise CheckpointError(f"checkpoint folder {p} lacks {missing} (files present: {have})")
        return w, c
    if p.is_file() and p.suffix == ".safetensors":
        stem = p.name[: -len("model.safetensors")] if p.name.endswith("model.safetensors") else p.stem
        candidates = [p.with_name(stem + "config.json"), p.with_name(p.stem + ".json"), p.with_name("config.json")]
        for c in candidates:
            if c.is_file():
                return p, c
        raise CheckpointError(f"checkpoint weights {p} have no config beside them (looked for {[x.name for x in candidates]})")
    # file prefix
    weights = [p.with_name(p.name + s + "model.safetensors") for s in _SEPS] + [p.with_name(p.name + ".safetensors")]
    configs = [p.with_name(p.name + s + "config.json") for s in _SEPS] + [p.with_name(p.name + ".json"),
                                                                           p.parent / "config.json"]
    w = next((x for x in weights if x.is_file()), None)
    c = next((x for x in configs if x.is_file()), None)
    if w is None or c is None:
        raise CheckpointError(
            f"checkpoint not found: {p} is neither a folder with model.safetensors + config.json nor a file prefix "
            f"(looked for {[x.name for x in weights]} and {[x.name for x in configs]})")
    return w, c


def read_model_config(config_path: Union[str, Path]) -> Any:
    """Parse a checkpoint's config.json (bare or ``{"model": {...}}``) into a ModelConfig."""
    from .models import ModelConfig

    config_path = Path(config_path)
    try:
        raw = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{config_path}: cannot read the model config ({exc})") from exc
    if not isinstance(raw, dict):
        raise CheckpointError(f"{config_path}: expected a JSON object")
    d = raw
    if "family" not in raw:
        for key in ("model", "model_config", "config"):
            if isinstance(raw.get(key), dict) and "family" in raw[key]:
                d = raw[key]
                break
        else:
            raise CheckpointError(f"{config_path}: no model config found (expected a 'family' field at the top "
                                  f"level or under 'model'; top-level keys: {sorted(raw)})")
    try:
        cfg = ModelConfig.from_dict(d)
        cfg.validate()
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{config_path}: invalid model config: {exc}") from exc
    return cfg


def load_checkpoint(path: Union[str, Path], device: str = "cpu", drop_pretraining: bool = False) -> Any:
    """Build the model described by the checkpoint's config and load its weights.

    Returns the `SpeechEncoder` in eval mode (call ``.train()`` to continue
    training). Pretraining-only keys (``model.pretraining_modules()``) may be
    missing or extra; every other key must match exactly. Pretraining modules
    whose keys were missing keep their fresh initialisation (the exporter
    drops them; a trainer may re-train them).
    """
    import torch
    from safetensors.torch import load_file

    from .models import model_from_config

    weights, config_path = find_checkpoint_files(path)
    cfg = read_model_config(config_path)
    model = model_from_config(cfg)
    try:
        state = load_file(str(weights), device="cpu")
    except Exception as exc:  # safetensors raises SafetensorError / OSError
        raise CheckpointError(f"{weights}: cannot read safetensors weights ({type(exc).__name__}: {exc})") from exc
    # Tolerate the common wrappers: DDP's "module." and torch.compile's "_orig_mod.".
    for prefix in ("module.", "_orig_mod."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    pre = set(model.pretraining_modules())
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    bad_missing = [k for k in missing if k.split(".")[0] not in pre]
    bad_unexpected = [k for k in unexpected if k.split(".")[0] not in pre]
    if bad_missing or bad_unexpected:
        raise CheckpointError(
            f"{weights} does not fit the {cfg.family} config in {config_path}: "
            f"missing {bad_missing[:8]}{' ...' if len(bad_missing) > 8 else ''} ({len(bad_missing)}), "
            f"unexpected {bad_unexpected[:8]}{' ...' if len(bad_unexpected) > 8 else ''} ({len(bad_unexpected)})")
    shape_bad = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                 for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if shape_bad:
        raise CheckpointError(f"{weights}: tensor shapes do not fit the config in {config_path}: {shape_bad[:5]}")
    state = {k: v for k, v in state.items() if k in own}
    model.load_state_dict(state, strict=False)
    if drop_pretraining:
        model.drop_pretraining_modules()
    return model.to(torch.device(device)).eval()


def resolve(path: Union[str, Path]) -> Path:
    """The checkpoint folder a path names (a run folder resolves to final/ or last/)."""
    return find_checkpoint_files(path)[0].parent


def read_config(path: Union[str, Path]) -> tuple[Any, dict]:
    """(ModelConfig, the whole config.json) of a checkpoint."""
    _, config_path = find_checkpoint_files(path)
    return read_model_config(config_path), json.loads(Path(config_path).read_text(encoding="utf-8"))
