"""HuBERT / WavLM pseudo-labels: features -> MiniBatchKMeans -> label files
(docs/models.md, HuBERT; fairseq `examples/hubert/simple_kmeans`).

* Iteration 1: 39-dim MFCC + deltas + delta-deltas at 100 Hz, computed here
  with numpy to match torchaudio's Kaldi-compatible `mfcc(use_energy=False)`
  (25 ms Povey window, 10 ms shift, DC removal, pre-emphasis 0.97, 512-point
  power spectrum, 23 mel bins 20 Hz..Nyquist, log, orthonormal DCT-II with 13
  cepstra, lifter 22; no dither) and `compute_deltas` (window 5,
  edge-replicated). torchaudio is not installed in this project.
* Iteration 2: hidden states of Transformer layer N (1-based, fairseq
  `output_layer`) of the iteration-1 model, at its 50 Hz frame rate.
* Clustering: scikit-learn MiniBatchKMeans with fairseq's settings
  (k-means++, batch 10,000, max_iter 100, n_init 20, tol 0,
  max_no_improvement 100, reassignment_ratio 0), fit on a `percent` subset of
  the utterances, then every frame gets its nearest centre.

On disk (no pickle anywhere), in a labels folder:
    meta.json          label_rate, num_clusters, source, dims, per-split manifest fingerprint
    kmeans.npz         centers (K, D) float32
    <split>.npy        int16 labels of all utterances of the split, concatenated
    <split>.lengths.npy int64 number of labels per utterance (manifest order)
A later run with the same manifest reuses the files; a changed manifest is
an error rather than a silent mismatch.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from wavstream.stream.errors import WavstreamError

SAMPLE_RATE = 16000


# -- MFCC (Kaldi-compatible, numpy) ----------------------------------------------------


def _mel(f: np.ndarray) -> np.ndarray:
    return 1127.0 * np.log(1.0 + f / 700.0)


def kaldi_mel_banks(num_bins: int = 23, n_fft: int = 512, sr: int = SAMPLE_RATE,
                    low: float = 20.0, high: float = 0.0) -> np.ndarray:
    """(num_bins, n_fft // 2 + 1) triangular filters in the mel domain (Kaldi MelBanks)."""
    nyq = sr / 2
    if high <= 0:
        high += nyq
    n = n_fft // 2
    fft_freqs = np.arange(n) * sr / n_fft
    mel_lo, mel_hi = _mel(np.array(low)), _mel(np.array(high))
    delta = (mel_hi - mel_lo) / (num_bins + 1)
    m = _mel(fft_freqs)
    banks = np.zeros((num_bins, n + 1))
    for b in range(num_bins):
        left, center, right = mel_lo + b * delta, mel_lo + (b + 1) * delta, mel_lo + (b + 2) * delta
        up = (m - left) / (center - left)
        down = (right - m) / (right - center)
        banks[b, :n] = np.maximum(0.0, np.minimum(up, down))
    return banks


def kaldi_dct(num_ceps: int = 13, num_bins: int = 23) -> np.ndarray:
    """(num_bins, num_ceps) orthonormal DCT-II (Kaldi ComputeDctMatrix, transposed)."""
    k = np.arange(num_ceps)[:, None]
    n = np.arange(num_bins)[None, :]
    d = np.sqrt(2.0 / num_bins) * np.cos(np.pi / num_bins * (n + 0.5) * k)
    d[0] = np.sqrt(1.0 / num_bins)
    return d.T


def mfcc(wave: np.ndarray, sr: int = SAMPLE_RATE, num_ceps: int = 13, num_bins: int = 23,
         frame_length: int = 400, frame_shift: int = 160, preemph: float = 0.97, lifter: float = 22.0
         ) -> np.ndarray:
    """(T, 13) MFCC, T = 1 + (len - 400) // 160 (Kaldi snip_edges)."""
    x = np.asarray(wave, dtype=np.float64)
    if len(x) < frame_length:
        return np.zeros((0, num_ceps), dtype=np.float32)
    T = 1 + (len(x) - frame_length) // frame_shift
    idx = np.arange(frame_length)[None, :] + frame_shift * np.arange(T)[:, None]
    frames = x[idx]
    frames = frames - frames.mean(axis=1, keepdims=True)  # remove DC offset
    frames = np.concatenate([frames[:, :1] * (1 - preemph), frames[:, 1:] - preemph * frames[:, :-1]], axis=1)
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(frame_length) / (frame_length - 1))) ** 0.85  # Povey
    frames = frames * window
    n_fft = 1 << (frame_length - 1).bit_length()
    power = np.abs(np.fft.rfft(frames, n=n_fft, axis=1)) ** 2
    fb = power @ kaldi_mel_banks(num_bins, n_fft, sr).T
    logfb = np.log(np.maximum(fb, np.finfo(np.float32).eps))
    ceps = logfb @ kaldi_dct(num_ceps, num_bins)
    ceps *= 1.0 + 0.5 * lifter * np.sin(np.pi * np.arange(num_ceps) / lifter)
    return ceps.astype(np.float32)


def deltas(x: np.ndarray, win_length: int = 5) -> np.ndarray:
    """torchaudio.functional.compute_deltas along time for (T, D)."""
    n = (win_length - 1) // 2
    denom = n * (n + 1) * (2 * n + 1) / 3
    padded = np.pad(x, ((n, n), (0, 0)), mode="edge")
    T = x.shape[0]
    out = np.zeros_like(x, dtype=np.float64)
    for i in range(-n, n + 1):
        out += i * padded[n + i: n + i + T]
    return (out / denom).astype(np.float32)


def mfcc_features(wave: np.ndarray) -> np.ndarray:
    """(T, 39) MFCC + delta + delta-delta at 100 Hz (HuBERT iteration 1)."""
    m = mfcc(wave)
    d = deltas(m)
    return np.concatenate([m, d, deltas(d)], axis=1)


# -- k-means ----------------------------------------------------------------------------


@dataclass
class KMeansSettings:
    num_clusters: int = 100
    percent: float = 0.1  # fraction of utterances the model is fit on
    batch_size: int = 10000
    max_iter: int = 100
    n_init: int = 20
    max_no_improvement: int = 100
    seed: int = 0
    min_utts: int = 20  # fit on at least this many utterances (tiny corpora)


def fit_kmeans(feats: list[np.ndarray], s: KMeansSettings) -> np.ndarray:
    from sklearn.cluster import MiniBatchKMeans

    x = np.concatenate(feats, axis=0).astype(np.float32)
    k = min(s.num_clusters, len(x))
    km = MiniBatchKMeans(n_clusters=k, init="k-means++", max_iter=s.max_iter, batch_size=s.batch_size,
                         tol=0.0, max_no_improvement=s.max_no_improvement, n_init=s.n_init,
                         reassignment_ratio=0.0, random_state=s.seed, compute_labels=False)
    km.fit(x)
    return km.cluster_centers_.astype(np.float32)


def assign(feats: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Nearest centre (squared Euclidean) per frame, int16 (K < 32768)."""
    x = feats.astype(np.float32)
    d = (x * x).sum(1, keepdims=True) - 2 * x @ centers.T + (centers * centers).sum(1)[None, :]
    return d.argmin(axis=1).astype(np.int16)


# -- feature sources --------------------------------------------------------------------


FeatureFn = Callable[[np.ndarray], np.ndarray]


def teacher_features(checkpoint: str | Path, layer: int, chunk_frames: int = 0, left_chunks: int = -1,
                     threads: int = 0) -> tuple[FeatureFn, dict]:
    """Features of Transformer layer `layer` (1-based: the output of layer N)
    of a trained model, at its frame rate. Full context by default (labels
    are an offline product; the chunk can be set to label like the stream)."""
    import torch

    from .checkpoint import load_checkpoint, resolve

    if threads:
        torch.set_num_threads(threads)
    model = load_checkpoint(checkpoint).eval()
    if not model.config.is_transformer:
        raise ValueError("iteration-2 labels need a Transformer teacher (wav2vec2, hubert or wavlm)")
    n = model.config.num_layers
    if not 1 <= layer <= n:
        raise ValueError(f"layer must be in 1..{n}, got {layer}")

    @torch.no_grad()
    def fn(wave: np.ndarray) -> np.ndarray:
        w = torch.from_numpy(np.asarray(wave, dtype=np.float32))[None]
        out = model(w, chunk_frames=chunk_frames, left_chunks=left_chunks, output_hidden_states=True)
        return out.hidden_states[layer][0, : int(out.lengths[0])].numpy()

    info = {"source": "teacher", "teacher": str(resolve(checkpoint)), "layer": layer,
            "label_rate": SAMPLE_RATE / model.stride, "dim": model.config.feature_dim,
            "teacher_chunk": [chunk_frames, left_chunks]}
    return fn, info


def mfcc_source() -> tuple[FeatureFn, dict]:
    return mfcc_features, {"source": "mfcc", "label_rate": 100.0, "dim": 39}


# -- label folders ----------------------------------------------------------------------


def manifest_fingerprint(utts) -> dict:
    h = hashlib.sha1()
    for u in utts:
        h.update(f"{Path(u.path).name}\t{u.num_samples}\n".encode())
    return {"num_utts": len(utts), "sha1": h.hexdigest()}


def _progress(it: Iterable, desc: str, total: int, show: bool):
    if not show:
        return it
    from tqdm import tqdm

    return tqdm(it, desc=desc, total=total, unit="utt")


def build_labels(out_dir: str | Path, splits: dict[str, list], features: tuple[FeatureFn, dict],
                 settings: KMeansSettings, fit_split: str = "train",
                 audio: Callable[[object], np.ndarray] | None = None, progress: bool = False) -> dict:
    """Cluster `features` of `splits[fit_split]` and write labels for every split.

    splits: name -> list of manifest entries (training.data.manifest.Entry). `audio(utt)` loads
    a waveform (default: dataset.load_audio). Returns the meta dict."""
    from .dataset import load_audio

    audio = audio or (lambda u: load_audio(u.path))
    fn, info = features
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fit_utts = splits[fit_split]
    rng = np.random.default_rng(settings.seed)
    n_fit = min(len(fit_utts), max(settings.min_utts, int(round(settings.percent * len(fit_utts)))))
    pick = sorted(rng.choice(len(fit_utts), n_fit, replace=False).tolist())
    feats = [fn(audio(fit_utts[i])) for i in _progress(pick, "k-means features", n_fit, progress)]
    centers = fit_kmeans(feats, settings)
    del feats
    np.savez(out / "kmeans.npz", centers=centers)
    meta = {"version": 1, **info, "num_clusters": int(centers.shape[0]),
            "kmeans": {k: v for k, v in settings.__dict__.items()}, "fit_split": fit_split,
            "fit_utterances": n_fit, "splits": {}}
    for name, utts in splits.items():
        labs, lens = [], []
        for u in _progress(utts, f"labels {name}", len(utts), progress):
            lab = assign(fn(audio(u)), centers)
            labs.append(lab)
            lens.append(len(lab))
        tmp = out / f"{name}.tmp.npy"
        np.save(tmp, np.concatenate(labs) if labs else np.zeros(0, np.int16))
        tmp.replace(out / f"{name}.npy")
        np.save(out / f"{name}.lengths.npy", np.asarray(lens, dtype=np.int64))
        meta["splits"][name] = manifest_fingerprint(utts)
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    return meta


class LabelError(WavstreamError, ValueError):
    """A label folder does not fit the run (another manifest, iteration or teacher)."""


def read_meta(label_dir: str | Path) -> dict:
    return json.loads((Path(label_dir) / "meta.json").read_text())


def labels_ready(label_dir: str | Path, split: str, utts=None) -> bool:
    p = Path(label_dir)
    if not (p / "meta.json").exists() or not (p / f"{split}.npy").exists():
        return False
    meta = read_meta(p)
    if split not in meta.get("splits", {}):
        return False
    if utts is not None and meta["splits"][split] != manifest_fingerprint(utts):
        raise LabelError(f"labels in {p} were made for a different '{split}' manifest "
                         f"({meta['splits'][split]}), not this one ({manifest_fingerprint(utts)}); "
                         "use another --labels folder")
    return True


def load_labels(label_dir: str | Path, split: str) -> list[np.ndarray]:
    p = Path(label_dir)
    flat = np.load(p / f"{split}.npy", allow_pickle=False)
    lens = np.load(p / f"{split}.lengths.npy", allow_pickle=False)
    bounds = np.concatenate([[0], np.cumsum(lens)])
    return [flat[bounds[i]:bounds[i + 1]] for i in range(len(lens))]


def load_centers(label_dir: str | Path) -> np.ndarray:
    with np.load(Path(label_dir) / "kmeans.npz", allow_pickle=False) as z:
        return z["centers"]


class LabelStore:
    """Per-utterance labels for the objectives: frame targets for a batch.

    Frame i of the model (at `frame_rate` Hz) takes label floor(i * ratio),
    ratio = label_rate / frame_rate (2 for 100 Hz MFCC labels and 50 Hz
    frames, docs/models.md, HuBERT); a crop starting at sample s starts at label
    round(s * label_rate / 16000). Frames without a label get `ignore`.
    Label k is class k + `offset` (fairseq's dictionary puts 4 specials first).
    """

    def __init__(self, labels: list[np.ndarray], label_rate: float, offset: int = 4, ignore: int = -100) -> None:
        self.labels = labels
        self.label_rate = float(label_rate)
        self.offset, self.ignore = offset, ignore

    @classmethod
    def from_dir(cls, label_dir: str | Path, split: str = "train", offset: int = 4) -> "LabelStore":
        meta = read_meta(label_dir)
        return cls(load_labels(label_dir, split), meta["label_rate"], offset)

    def targets(self, indices: list[int], starts: list[int], T: int, frame_rate: float,
                frame_lengths: list[int]) -> np.ndarray:
        ratio = self.label_rate / frame_rate
        out = np.full((len(indices), T), self.ignore, dtype=np.int64)
        pos = np.floor(np.arange(T) * ratio + 1e-9).astype(np.int64)
        for b, (i, s) in enumerate(zip(indices, starts)):
            lab = self.labels[int(i)]
            p = pos + int(round(s * self.label_rate / SAMPLE_RATE))
            n = min(T, int(frame_lengths[b]))
            ok = (p < len(lab)) & (np.arange(T) < n)
            out[b, ok] = lab[p[ok]].astype(np.int64) + self.offset
        return out
