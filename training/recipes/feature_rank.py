"""How much of the input survives in a checkpoint's representations?

    python training/recipes/feature_rank.py data/corpus/dev.tsv runs/pt_hubert_it1 runs/scratch1h_wav2vec2 ...

For each model, on the first N utterances of a manifest (streaming form, 320 ms
chunks): the effective rank (exp of the entropy of the normalised squared
singular values, Roy & Vetterli 2007) of the time-centred conv-encoder output
and of every Transformer input/layer output, and the conv output's mean square.
A freshly initialised tiny model gives ~35 of 256 dimensions everywhere; a
representation that has collapsed towards a few directions gives ~1-3, and CTC
fine-tuning must first undo that. `random:FAMILY` stands for a fresh model.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np


def effective_rank(x) -> float:
    import torch

    x = x.double()
    x = x - x.mean(0)
    s = torch.linalg.svdvals(x)
    p = s**2 / (s**2).sum().clamp_min(1e-30)
    return float(torch.exp(-(p * torch.log(p + 1e-30)).sum()))


def main(argv: list[str]) -> int:
    import soundfile as sf
    import torch

    from wavstream.training.checkpoint import load_checkpoint
    from wavstream.training.dataset import read_manifest
    from wavstream.training.models import build_model

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("manifest")
    ap.add_argument("models", nargs="+", help="checkpoint folders, or random:FAMILY")
    ap.add_argument("--utts", type=int, default=20)
    args = ap.parse_args(argv[1:])
    torch.set_num_threads(1)
    waves = [sf.read(u.path, dtype="float32")[0] for u in read_manifest(args.manifest)[: args.utts]]
    print("model | conv out: eff. rank, mean square | Transformer input, layer 1..L: eff. rank")
    for spec in args.models:
        torch.manual_seed(0)
        model = build_model(spec.split(":", 1)[1], "tiny") if spec.startswith("random:") else load_checkpoint(spec)
        model.eval()
        conv, msq, layers = [], [], []
        with torch.no_grad():
            for w in waves:
                x, n = torch.from_numpy(w)[None], torch.tensor([len(w)])
                z = model.feature_extractor(x)[0].T  # (C, T) -> (T, C)
                conv.append(effective_rank(z))
                msq.append(float(z.pow(2).mean()))
                out = model(x, n, chunk_frames=16, left_chunks=4, output_hidden_states=True)
                if out.hidden_states:
                    layers.append([effective_rank(h[0]) for h in out.hidden_states])
        per_layer = " ".join(f"{v:.1f}" for v in np.mean(layers, 0)) if layers else "-"
        print(f"{spec} | {np.mean(conv):.1f}, {np.mean(msq):.4f} | {per_layer}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
