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

Weights are read with safetensors only (never pickle). The encoder's keys
must match the config exactly; anything else is an error naming the keys.
A pretraining checkpoint also stores its objective's heads, under
``heads.``; `load_checkpoint` returns the encoder alone, and `load_heads`
puts the heads' tensors into an objective's heads.

The key shim: checkpoints written before the heads moved out of the encoder
keep them as encoder submodules (``label_head.``, ``quantizer.``,
``project_q.``, ``project_hid.``, ``wav2vec_predictions.``). `split_state`
reads both layouts, so every committed checkpoint loads unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Union

from wavstream.stream.errors import WavstreamError

__all__ = ["CheckpointError", "load_checkpoint", "load_heads", "find_checkpoint_files", "read_model_config",
           "read_config", "resolve", "split_state", "HEADS_PREFIX"]


class CheckpointError(WavstreamError):
    """The checkpoint is missing, unreadable, or does not fit its config."""


HEADS_PREFIX = "heads."
# The older layout: the pretraining heads were encoder submodules. Old prefix ->
# key inside the objective's heads module (training/objectives/heads.py).
_LEGACY_HEADS = {
    "label_head.": "",  # HubertHead
    "wav2vec_predictions.": "",  # Wav2VecPredictions
    "quantizer.": "quantizer.",  # Wav2Vec2Heads (wav2vec 2.0; vq-wav2vec's is `vector_quantizer.`)
    "project_q.": "project_q.",
    "project_hid.": "project_hid.",
}


def split_state(state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(encoder tensors, pretraining-head tensors keyed as in the heads module)
    of a checkpoint's state dict, in the current or the older layout."""
    encoder: dict[str, Any] = {}
    heads: dict[str, Any] = {}
    for k, v in state.items():
        if k.startswith(HEADS_PREFIX):
            heads[k[len(HEADS_PREFIX):]] = v
            continue
        old = next((p for p in _LEGACY_HEADS if k.startswith(p)), None)
        if old is None:
            encoder[k] = v
        else:
            heads[_LEGACY_HEADS[old] + k[len(old):]] = v
    return encoder, heads


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


def read_state(weights: Union[str, Path]) -> dict[str, Any]:
    """The tensors of a safetensors file, without DDP's or torch.compile's key prefix."""
    from safetensors.torch import load_file

    try:
        state = load_file(str(weights), device="cpu")
    except Exception as exc:  # safetensors raises SafetensorError / OSError
        raise CheckpointError(f"{weights}: cannot read safetensors weights ({type(exc).__name__}: {exc})") from exc
    for prefix in ("module.", "_orig_mod."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def load_exact(module: Any, state: dict[str, Any], what: str) -> None:
    """Copy `state` into `module` (dtypes cast to the module's): every key and
    shape must match, else a CheckpointError naming the keys."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise CheckpointError(
            f"{what}: missing {missing[:8]}{' ...' if len(missing) > 8 else ''} ({len(missing)}), "
            f"unexpected {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''} ({len(unexpected)})")
    shape_bad = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                 for k in own if tuple(state[k].shape) != tuple(own[k].shape)]
    if shape_bad:
        raise CheckpointError(f"{what}: tensor shapes do not fit: {shape_bad[:5]}")
    module.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=True)


def load_checkpoint(path: Union[str, Path], device: str = "cpu", config: Any = None) -> Any:
    """Build the encoder described by the checkpoint's config (or by `config`,
    e.g. the saved one with other dropouts) and load its weights.

    Returns the `SpeechEncoder` in eval mode (call ``.train()`` to continue
    training). Pretraining heads stored beside it are left out (`load_heads`).
    """
    import torch

    from .models import model_from_config

    weights, config_path = find_checkpoint_files(path)
    cfg = read_model_config(config_path) if config is None else config
    model = model_from_config(cfg)
    encoder, _ = split_state(read_state(weights))
    load_exact(model, encoder, f"{weights} does not fit the {cfg.family} config in {config_path}")
    return model.to(torch.device(device)).eval()


def load_heads(path: Union[str, Path], heads: Any) -> None:
    """Load the pretraining heads stored in a checkpoint into `heads` (an
    objective's heads module); a CheckpointError when they are absent or do not fit."""
    weights, _ = find_checkpoint_files(path)
    _, state = split_state(read_state(weights))
    if not state:
        raise CheckpointError(f"{weights} holds no pretraining heads")
    load_exact(heads, state, f"{weights}: pretraining heads")


def resolve(path: Union[str, Path]) -> Path:
    """The checkpoint folder a path names (a run folder resolves to final/ or last/)."""
    return find_checkpoint_files(path)[0].parent


def read_config(path: Union[str, Path]) -> tuple[Any, dict]:
    """(ModelConfig, the whole config.json) of a checkpoint."""
    _, config_path = find_checkpoint_files(path)
    return read_model_config(config_path), json.loads(Path(config_path).read_text(encoding="utf-8"))
