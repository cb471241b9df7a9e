"""Reading and writing corpus manifests.

A corpus is either

* a folder of ``.wav`` files with a ``.txt`` transcript beside each (searched
  recursively), or
* a TSV manifest with a header row and the columns ``path``, ``num_samples``,
  ``text``; ``path`` is relative to the folder that holds the TSV (absolute
  paths are kept as they are).

``subset_hours`` picks a deterministic random subset of about N hours.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

SAMPLE_RATE = 16000
HEADER = ("path", "num_samples", "text")


@dataclass(frozen=True)
class Entry:
    path: str  # absolute path of the wav
    num_samples: int
    text: str

    @property
    def seconds(self) -> float:
        return self.num_samples / SAMPLE_RATE


def _num_samples(path: str | os.PathLike) -> int:
    import soundfile as sf

    return int(sf.info(str(path)).frames)


def load_audio(path: str | os.PathLike, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Mono float32 at `sample_rate` (resampled with soxr when needed). Torch-free, so
    `wavstream eval` of a bundle runs in a runtime-only install."""
    import soundfile as sf

    data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    data = data.mean(axis=1)
    if sr != sample_rate:
        import soxr

        data = soxr.resample(data, sr, sample_rate).astype(np.float32)
    return data


def read_folder(root: str | os.PathLike) -> list[Entry]:
    """Entries of every ``*.wav`` under ``root`` that has a ``.txt`` beside it."""
    root = Path(root)
    out = []
    for wav in sorted(root.rglob("*.wav")):
        txt = wav.with_suffix(".txt")
        if not txt.exists():
            continue
        text = " ".join(txt.read_text(encoding="utf-8").split())
        out.append(Entry(str(wav.resolve()), _num_samples(wav), text))
    return out


def read_tsv(path: str | os.PathLike) -> list[Entry]:
    path = Path(path)
    base = path.resolve().parent
    out = []
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        for i, row in enumerate(reader):
            if not row or (i == 0 and tuple(c.strip() for c in row[:3]) == HEADER):
                continue
            if len(row) < 3:
                raise ValueError(f"{path}:{i + 1}: expected path, num_samples, text")
            p = Path(row[0])
            p = p if p.is_absolute() else base / p
            out.append(Entry(str(p), int(row[1]), row[2]))
    return out


def read_manifest(source: str | os.PathLike) -> list[Entry]:
    """Entries of a TSV manifest file, or of a folder of wav files with .txt transcripts."""
    source = Path(source)
    if source.is_dir():
        return read_folder(source)
    if source.is_file():
        return read_tsv(source)
    raise FileNotFoundError(f"no manifest or folder at {source}")


def write_tsv(entries: Iterable[Entry], path: str | os.PathLike) -> None:
    """Write a manifest atomically; paths are written relative to its folder when inside it."""
    path = Path(path)
    base = path.resolve().parent
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        f.write("\t".join(HEADER) + "\n")
        for e in entries:
            p = Path(e.path)
            try:
                rel = p.resolve().relative_to(base).as_posix()
            except ValueError:
                rel = str(p)
            if "\t" in e.text or "\n" in e.text:
                raise ValueError(f"tab/newline in transcript of {p}")
            f.write(f"{rel}\t{e.num_samples}\t{e.text}\n")
    os.replace(tmp, path)


def total_hours(entries: Iterable[Entry]) -> float:
    return sum(e.num_samples for e in entries) / SAMPLE_RATE / 3600.0


def subset_hours(entries: list[Entry], hours: float, seed: int = 0) -> list[Entry]:
    """A random subset of about ``hours`` of audio, deterministic for a seed.

    Utterances are taken in a seeded random order until the total reaches
    ``hours`` (so it overshoots by less than one utterance); the result keeps
    the input order. All entries if they hold less than ``hours``.
    """
    target = hours * 3600.0 * SAMPLE_RATE
    order = np.random.default_rng(seed).permutation(len(entries))
    chosen, total = [], 0
    for i in order:
        if total >= target:
            break
        chosen.append(int(i))
        total += entries[i].num_samples
    return [entries[i] for i in sorted(chosen)]
