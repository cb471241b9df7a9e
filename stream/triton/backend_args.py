"""What a Triton python-backend model of wavstream reads from Triton's ``initialize(args)``.

Both generated models (``model.py``: features and logits; ``decode_model.py``:
text events) serve the folder ``bundle/`` beside them, at the latency, thread
count and idle time their config.pbtxt names; this reads those once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..bundle import Bundle, load_bundle

__all__ = ["BackendArgs", "read_backend_args"]


@dataclass(frozen=True)
class BackendArgs:
    bundle: Bundle
    config: dict[str, Any]  # the model's config.pbtxt as Triton passes it (JSON)
    params: dict[str, str]  # its `parameters` block
    threads: int | None  # ONNX Runtime intra-op threads (None: its default)
    idle_s: float  # the sequence batcher forgets a stream idle this long; the model forgets it too


def read_backend_args(args: dict[str, str]) -> BackendArgs:
    """The bundle and settings of the model Triton is initialising (``args`` as Triton hands them over)."""
    cfg = json.loads(args["model_config"])
    params = {k: v["string_value"] for k, v in cfg.get("parameters", {}).items()}
    folder = Path(args["model_repository"]) / str(args["model_version"]) / "bundle"
    latency = int(params["latency_ms"]) if params.get("latency_ms") else None
    idle_us = int(cfg.get("sequence_batching", {}).get("max_sequence_idle_microseconds", 60_000_000))
    return BackendArgs(bundle=load_bundle(folder, latency_ms=latency), config=cfg, params=params,
                       threads=int(params.get("intra_op_threads") or 0) or None, idle_s=idle_us / 1e6)
