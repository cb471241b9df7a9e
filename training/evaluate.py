"""`wavstream eval`: CER/WER of a model, run in its streaming form.

The model is a training checkpoint (torch, chunk by chunk through `step`),
an exported bundle (the torch-free runtime), or `default` (the bundle the
package ships). `--full-context` runs the offline form instead.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", help="folder of .wav files with .txt beside them, or a TSV manifest")
    p.add_argument("--model", required=True, help="checkpoint folder, bundle folder, or 'default'")
    p.add_argument("--chunk-ms", type=int, default=320, help="streaming chunk length (checkpoints only)")
    p.add_argument("--left-chunks", type=int, default=None, help="left context in chunks (default: the model's)")
    p.add_argument("--full-context", action="store_true", help="run the offline form (full attention)")
    p.add_argument("--per-utt", help="write each hypothesis next to its reference (TSV)")
    p.add_argument("--limit", type=int, default=0, help="evaluate only the first N utterances")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--batch", type=int, default=16, help="utterances decoded side by side")
    p.add_argument("--int8", action="store_true", help="bundles: run model.int8.onnx")
    from .data.channel import CHANNELS  # numpy only: fine in a runtime-only install

    p.add_argument("--channel", default="clean", choices=list(CHANNELS),
                   help="pass the audio through a fixed channel first: clean, telephone (300-3400 Hz + GSM), "
                        "telephone_mulaw, mp3, noisy (pink noise at 10 dB SNR)")
    p.add_argument("--by-engine", action="store_true",
                   help="also score each TTS engine apart (reads <manifest>_utts.tsv from the corpus build)")


def score(refs: list[str], hyps: list[str]) -> dict:
    import jiwer

    refs_ = [r if r.strip() else "<empty>" for r in refs]
    return {"cer": float(jiwer.cer(refs_, hyps)), "wer": float(jiwer.wer(refs_, hyps))}


def _normalise(text: str) -> str:
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

    vocab = Vocabulary(tuple(model.config.vocab))
    hyps: list[str] = [""] * len(waves)
    order = sorted(range(len(waves)), key=lambda i: len(waves[i]))
    if not full_context:
        model.set_chunking(chunk_frames, left_chunks)
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
                cs = model.chunk_samples
                n = -(-wave.shape[1] // cs)
                wave = torch.nn.functional.pad(wave, (0, n * cs - wave.shape[1]))
                state = model.init_state(len(idx))
                parts = []
                for k in range(n):
                    _, lg, state = model.step(wave[:, k * cs:(k + 1) * cs], state)
                    parts.append(lg)
                logits = torch.cat(parts, dim=1)
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
        refs.append(_normalise(u.text))
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
    res = score([_normalise(u.text) for u in utts], hyps)
    res.update(utterances=len(utts), audio_seconds=round(audio, 2), rtf=el / max(audio, 1e-9),
               chunk_ms=None if full_context else C * frame_ms, chunk_frames=None if full_context else C,
               left_chunks=None if full_context else left_chunks, full_context=full_context, channel=channel)
    return res, hyps


def run(args: argparse.Namespace) -> int:
    # Before any decoding: a missing scorer should not cost a whole run.
    # (A bundle needs only jiwer, pip install 'wavstream[eval]'; a checkpoint needs torch too.)
    import jiwer  # noqa: F401

    from .data.manifest import read_manifest

    utts = read_manifest(args.data)
    if args.limit:
        utts = utts[: args.limit]
    model_path = Path(args.model)
    is_bundle = args.model == "default" or (model_path / "model.onnx").exists()
    if is_bundle:
        res, hyps = _evaluate_bundle(args, utts)
    else:
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        from .checkpoint import load_checkpoint

        model = load_checkpoint(args.model, drop_pretraining=True)
        if model.lm_head is None:
            print(f"{args.model}: this model has no CTC head; fine-tune it first (wavstream train ctc)",
                  file=sys.stderr)
            return 2
        res, hyps = evaluate_checkpoint(model, utts, args.chunk_ms, args.left_chunks, args.full_context,
                                        args.batch, args.channel)
        res["model"] = str(args.model)
    if args.by_engine:
        res["by_engine"] = score_by_engine(utts, hyps)
    if args.per_utt:
        with open(args.per_utt, "w") as f:
            f.write("path\treference\thypothesis\n")
            for u, h in zip(utts, hyps):
                f.write(f"{u.path}\t{_normalise(u.text)}\t{h}\n")
    print(json.dumps(res))
    return 0


def _evaluate_bundle(args, utts) -> tuple[dict, list[str]]:
    """Run an exported bundle through the torch-free runtime."""
    from wavstream.stream import Recognizer

    opts = {"quantized": True} if getattr(args, "int8", False) else {}
    if args.threads:
        opts["intra_op_threads"] = args.threads
    rec = Recognizer.default(**opts) if args.model == "default" else Recognizer.from_bundle(args.model, **opts)
    hyps = []
    audio = 0.0
    t0 = time.perf_counter()
    for wave in load_waves(utts, args.channel):
        audio += len(wave) / 16000
        hyps.append(rec.transcribe(wave, 16000))
    el = time.perf_counter() - t0
    res = score([_normalise(u.text) for u in utts], hyps)
    c = rec.config
    res.update(utterances=len(utts), audio_seconds=round(audio, 2), rtf=el / max(audio, 1e-9),
               model=str(args.model), chunk_ms=round(c.chunk_samples * 1000 / c.sample_rate),
               chunk_frames=c.chunk_frames, left_chunks=c.left_chunks, full_context=False,
               engine="onnxruntime int8" if opts.get("quantized") else "onnxruntime", channel=args.channel)
    return res, hyps
