"""Load a training checkpoint: a folder with model.safetensors + config.json.

No pickle is involved (safetensors for weights, JSON for the config), so a
checkpoint from an untrusted source cannot run code.
"""

from __future__ import annotations

import json
from pathlib import Path

from .models import ModelConfig, SpeechEncoder, model_from_config


def read_config(path: str | Path) -> tuple[ModelConfig, dict]:
    p = Path(path)
    meta = json.loads((p / "config.json").read_text())
    cfg = meta["model"] if "model" in meta else meta
    return ModelConfig.from_dict(cfg), meta


def resolve(path: str | Path) -> Path:
    """A run folder resolves to its final/ (or last/) checkpoint."""
    p = Path(path)
    if (p / "model.safetensors").exists():
        return p
    for sub in ("final", "last"):
        if (p / sub / "model.safetensors").exists():
            return p / sub
    raise FileNotFoundError(f"no checkpoint (model.safetensors + config.json) at {p}")


def load_checkpoint(path: str | Path, drop_pretraining: bool = False) -> SpeechEncoder:
    from safetensors.torch import load_file

    p = resolve(path)
    cfg, _ = read_config(p)
    model = model_from_config(cfg)
    sd = load_file(str(p / "model.safetensors"))
    res = model.load_state_dict(sd, strict=False)
    heads = set(model.pretraining_modules())
    missing = [k for k in res.missing_keys if k.split(".")[0] not in heads]
    unexpected = [k for k in res.unexpected_keys if k.split(".")[0] not in heads]
    if missing or unexpected:
        raise ValueError(f"checkpoint {p} does not match its config: missing {missing[:8]}, "
                         f"unexpected {unexpected[:8]}")
    if drop_pretraining:
        model.drop_pretraining_modules()
    return model.eval()
