"""Checkpoint loading for the exporter: the trainer's loader (one implementation,
in `wavstream.training.checkpoint`)."""

from wavstream.training.checkpoint import (  # noqa: F401
    CheckpointError,
    find_checkpoint_files,
    load_checkpoint,
    read_model_config,
)

__all__ = ["CheckpointError", "find_checkpoint_files", "load_checkpoint", "read_model_config"]
