"""Word n-gram language models for the CTC beam search (pure Python, no KenLM).

``load_lm(path)`` reads an ARPA file (plain or .gz); ``load_lm("default")``
loads the small English model shipped in this folder (``default.arpa.gz``,
built by ``wavstream lm build``, docs/decoding.md).
"""

from .arpa import DEFAULT_LM_PATH, LmFormatError, NgramLm, load_lm

__all__ = ["DEFAULT_LM_PATH", "LmFormatError", "NgramLm", "load_lm"]
