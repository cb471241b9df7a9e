"""Triton Inference Server support (torch-free): model repositories from a bundle.

``write_repository(bundle, out)`` writes a Triton model repository
(``repo.py``); ``validate_model_config`` checks a ``config.pbtxt`` against
Triton's own protobuf schema and its state rules (``validate.py``). The
client side, ``TritonEngine``, lives with the other engines
(``stream/engines/triton.py``). docs/scaling.md tells when to use which.
"""

from __future__ import annotations

from .repo import RepositoryLayout, TritonRepoError, write_repository
from .validate import TritonConfigError, check_against_graph, validate_model_config

__all__ = [
    "RepositoryLayout",
    "TritonRepoError",
    "TritonConfigError",
    "write_repository",
    "validate_model_config",
    "check_against_graph",
]
