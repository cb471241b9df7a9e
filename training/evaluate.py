"""CER/WER of a training checkpoint, run in its streaming form (chunk by chunk
through `step`, `stream_chunks`) or offline. The command is `wavstream eval`
(cli/eval.py), which also scores exported bundles.

Evaluating at another latency runs a view of the model (`with_chunking`):
the model and its config are left as they were.
"""

from __future__ import annotations

import time
from pathlib import Path


def score(refs: list[str], hyps: list[str]) -> dict:
    import jiwer

    refs_ = [r if r.strip() else "<empty>" for r in refs]
    return {"cer": float(jiwer.cer(refs_, hyps)), "wer": float(jiwer.wer(refs_, hyps))}


def normalise_reference(text: str) -> str:
    """References in the model's vocabulary: the corpus builder's normaliser
    (numbers spelled out, punctuation removed)."""
    from .data.text import normalize

    return normalize(text)


def transcribe_checkpoint(model, waves: list, chunk_frames: int, left_chunks: int, full_context: bool,
                          batch: int = 16) -> list[str]:
    """Greedy CTC text of each wave, streaming (step) or offline (full context)."""
    import numpy as np
    import torch

    from wavstream.stream.ctc import Vocabulary, greedy_decode

    from .models import stream_chunks

    vocab = Vocabulary(tuple(model.config.vocab))
    hyps: list[str] = [""] * len(waves)
    order = sorted(range(len(waves)), key=lambda i: len(waves[i]))
    with torch.inference_mode():
        for s in range(0, len(order), batch):
            idx = order[s:s + batch]
            lens = torch.tensor([len(waves[i]) for i in idx])
            wave = torch.zeros(len(idx), int(lens.max()))
            for b, i in enumerate(idx):
                wave[b, : len(waves[i])] = torch.from_numpy(np.asarray(waves[i], dtype=np.float32))
            if full_context:
                out = model(wave, lens, chunk_frames=0, left_chunks=-1)
                logits, flen = out.logits, out.lengths
            else:
                logits = stream_chunks(model, wave, (chunk_frames, left_chunks)).logits
                flen = model.frame_lengths(lens)
            logits = logits.float().numpy()
            for b, i in enumerate(idx):
                hyps[i] = vocab.ids_to_text(greedy_decode(logits[b, : int(flen[b])], vocab.blank_id))
    return hyps


def load_waves(utts, channel: str = "clean") -> list:
    """The utterances' audio at 16 kHz, through a fixed evaluation channel."""
    from .data.channel import apply_channel
    from .data.manifest import load_audio  # torch-free: bundles evaluate without torch

    return [apply_channel(load_audio(u.path), channel, seed=i) for i, u in enumerate(utts)]


def engine_of(utts) -> dict[str, str]:
    """path -> TTS engine, from the corpus builder's `<split>_utts.tsv` beside each manifest."""
    import csv

    out: dict[str, str] = {}
    folders = {Path(u.path).parent.parent for u in utts}
    for root in folders:
        for tsv in root.glob("*_utts.tsv"):
            with open(tsv, encoding="utf-8", newline="") as f:
                for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
                    out[str((root / row["path"]).resolve())] = row["engine"]
    return out


def score_by_engine(utts, hyps: list[str]) -> dict[str, dict]:
    eng = engine_of(utts)
    groups: dict[str, tuple[list[str], list[str]]] = {}
    for u, h in zip(utts, hyps):
        refs, hs = groups.setdefault(eng.get(str(Path(u.path).resolve()), "unknown"), ([], []))
        refs.append(normalise_reference(u.text))
        hs.append(h)
    return {k: {**score(r, h), "utterances": len(r)} for k, (r, h) in sorted(groups.items())}


def evaluate_checkpoint(model, utts, chunk_ms: int = 320, left_chunks: int | None = None,
                        full_context: bool = False, batch: int = 16, channel: str = "clean"
                        ) -> tuple[dict, list[str]]:
    frame_ms = model.stride * 1000 // 16000
    C = max(1, chunk_ms // frame_ms)
    if left_chunks is None:
        # keep the model's left context in frames, expressed in chunks of the new size
        base = model.config.chunk_frames * max(model.config.left_chunks, 0)
        left_chunks = max(1, base // C) if base else 1
    waves = load_waves(utts, channel)
    t0 = time.perf_counter()
    hyps = transcribe_checkpoint(model, waves, C, left_chunks, full_context, batch)
    el = time.perf_counter() - t0
    audio = sum(len(w) for w in waves) / 16000
    res = score([normalise_reference(u.text) for u in utts], hyps)
    res.update(utterances=len(utts), audio_seconds=round(audio, 2), rtf=el / max(audio, 1e-9),
               chunk_ms=None if full_context else C * frame_ms, chunk_frames=None if full_context else C,
               left_chunks=None if full_context else left_chunks, full_context=full_context, channel=channel)
    return res, hyps
