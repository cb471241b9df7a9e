"""The text an LM is built from: the corpus builder's sentence pool without the
sentences of its dev and test splits, plus optional extra text files.

The corpus (training/data/corpus.py) shuffles one sentence list with its seed
and gives the first ``test`` sentences to test and the next ``dev`` to dev;
``training_sentences`` repeats that split and keeps only the train pool, and
also drops any sentence listed in the given held-out manifests (a corpus's
dev.tsv / test.tsv), so an LM never sees the text it is measured on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence, Union

from ..data import text as T
from ..data.corpus import sentence_pools
from ..data.manifest import read_manifest

__all__ = ["training_sentences", "manifest_texts", "read_text_file"]


def manifest_texts(path: Union[str, Path]) -> set[str]:
    """The normalised texts of a manifest: a TSV file, or a folder of .wav files with .txt beside them."""
    return {" ".join(T.normalize(e.text).split()) for e in read_manifest(path)}


def read_text_file(path: Union[str, Path]) -> list[str]:
    """One sentence per line, normalised like the corpus text (lines that normalise to nothing dropped)."""
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        s = " ".join(T.normalize(line).split())
        if s:
            out.append(s)
    return out


def training_sentences(seed: int = 0, n_dev: int = 300, n_test: int = 300,
                       exclude_manifests: Sequence[Union[str, Path]] = (),
                       extra: Iterable[str] = (), sources: Sequence[str] = ("fortunes", "wordnet")) -> list[str]:
    """The corpus's train sentence pool (seed/dev/test as the corpus was built) plus ``extra``,
    without any sentence of the held-out pools or manifests."""
    pools = sentence_pools(T.load_sentences(sources), seed, n_dev, n_test)
    held = set(pools["dev"]) | set(pools["test"])
    for m in exclude_manifests:
        held |= manifest_texts(m)
    return [s for s in list(pools["train"]) + list(extra) if s not in held]
