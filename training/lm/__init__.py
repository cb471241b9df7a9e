"""Word n-gram language models for the CTC beam search: a modified Kneser-Ney
builder that writes ARPA (kneser_ney.py) and the text it is built from (text.py).

No wheel ships KenLM's ``lmplz``; this builder is pure Python and small enough
for the LMs the runtime ships (a few hundred thousand words of text)."""

from .kneser_ney import KneserNeyConfig, build_arpa, write_arpa

__all__ = ["KneserNeyConfig", "build_arpa", "write_arpa"]
