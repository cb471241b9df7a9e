"""Audio datasets for training: manifests in memory, batches bucketed by length.

Manifests (a TSV or a folder of .wav + .txt) are read by
`wavstream.training.data.manifest`. The tiny corpora here fit in memory (int16), which on 2 cores is much
faster than decoding files in loader workers.
"""

from __future__ import annotations

import random
from typing import Callable

import numpy as np
import torch

from .data.manifest import Entry, load_audio, read_manifest, subset_hours
from .data.manifest import total_hours as hours
from .tokens import encode

__all__ = ["AudioDataset", "CropTrackingDataset", "bucket_batches", "collate", "hours", "load_audio",
           "read_manifest", "subset_hours"]


class AudioDataset(torch.utils.data.Dataset):
    def __init__(self, utterances: list[Entry], max_samples: int | None = None,
                 preload: bool = True, transform: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None,
                 progress: bool = False) -> None:
        self.utts = utterances
        self.max_samples = max_samples
        self.transform = transform
        # (seed, epoch) key the per-utterance generator: crops and augmentation
        # are redrawn every epoch, and the same after a resume
        self.seed = 0
        self.epoch = 0
        self._audio: list[np.ndarray] | None = None
        if preload:
            it = utterances
            if progress:
                from tqdm import tqdm

                it = tqdm(utterances, desc="loading audio", unit="utt")
            self._audio = [(load_audio(u.path) * 32767).clip(-32768, 32767).astype(np.int16) for u in it]

    def __len__(self) -> int:
        return len(self.utts)

    def audio(self, i: int) -> np.ndarray:
        if self._audio is not None:
            return self._audio[i].astype(np.float32) / 32767
        return load_audio(self.utts[i].path)

    def lengths(self) -> list[int]:
        n = [u.num_samples for u in self.utts]
        return [min(x, self.max_samples) for x in n] if self.max_samples else n

    def set_epoch(self, epoch: int, seed: int | None = None) -> None:
        self.epoch = epoch
        if seed is not None:
            self.seed = seed

    def __getitem__(self, i: int) -> dict:
        rng = np.random.default_rng([self.seed, self.epoch, i])
        wave = self.audio(i)
        if self.max_samples and len(wave) > self.max_samples:
            start = int(rng.integers(0, len(wave) - self.max_samples + 1))
            wave = wave[start:start + self.max_samples]
        if self.transform is not None:  # after the crop: cheaper (speed may stretch it by ~18%)
            wave = self.transform(wave, rng)
        return {"index": i, "wave": wave, "text": self.utts[i].text}


def collate(items: list[dict]) -> dict:
    B = len(items)
    lengths = torch.tensor([len(it["wave"]) for it in items], dtype=torch.long)
    wave = torch.zeros(B, int(lengths.max()))
    for b, it in enumerate(items):
        wave[b, : len(it["wave"])] = torch.from_numpy(np.asarray(it["wave"], dtype=np.float32))
    toks = [encode(it["text"]) for it in items]
    tok_len = torch.tensor([len(t) for t in toks], dtype=torch.long)
    tokens = torch.zeros(B, max(1, int(tok_len.max())), dtype=torch.long)
    for b, t in enumerate(toks):
        tokens[b, : len(t)] = torch.tensor(t, dtype=torch.long)
    out = {"wave": wave, "lengths": lengths, "tokens": tokens, "token_lengths": tok_len,
           "texts": [it["text"] for it in items], "indices": torch.tensor([it["index"] for it in items])}
    return out


def bucket_batches(lengths: list[int], batch_samples: int, seed: int, max_batch: int = 64,
                   shuffle: bool = True) -> list[list[int]]:
    """Group utterances of similar length so a batch holds at most
    `batch_samples` padded samples; the batch order is shuffled per seed."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    cur: list[int] = []
    longest = 0
    for i in order:
        longest_new = max(longest, lengths[i])
        if cur and (longest_new * (len(cur) + 1) > batch_samples or len(cur) >= max_batch):
            batches.append(cur)
            cur, longest_new = [], lengths[i]
        cur.append(i)
        longest = longest_new
    if cur:
        batches.append(cur)
    if shuffle:
        random.Random(seed).shuffle(batches)
    return batches


STRIDE_ALIGN = 320  # crops start on a multiple of the 50 Hz frame hop (and of the 10 ms label hop)


class CropTrackingDataset(AudioDataset):
    """AudioDataset whose random crops start on a frame boundary and are
    recorded in `crop_starts[index]`, so frame-level labels follow the crop
    (fairseq: label offset = round(start * label_rate / 16000))."""

    def __init__(self, *a, seed: int = 0, **kw) -> None:
        super().__init__(*a, **kw)
        self.crop_starts: dict[int, int] = {}
        self.rng = random.Random(seed)  # seeded crops (AudioDataset uses the global `random`)

    def __getitem__(self, i: int) -> dict:
        wave = self.audio(i)
        start = 0
        if self.max_samples and len(wave) > self.max_samples:
            start = self.rng.randint(0, (len(wave) - self.max_samples) // STRIDE_ALIGN) * STRIDE_ALIGN
            wave = wave[start:start + self.max_samples]
        self.crop_starts[i] = start
        return {"index": i, "wave": wave, "text": self.utts[i].text}
