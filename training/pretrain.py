"""`wavstream train pretrain --family F ...`: self-supervised pretraining of
one family with the shared loop (training/loop.py), alone or under torchrun.

    wavstream train pretrain --family wav2vec2 --train corpus/train.tsv --out runs/w2v2
    wavstream train pretrain --family hubert --train corpus/train.tsv --out runs/hubert1 \\
        --labels runs/labels_mfcc                      # iteration 1: MFCC k-means (built if missing)
    wavstream train pretrain --family hubert --train corpus/train.tsv --out runs/hubert2 \\
        --labels runs/labels_it2 --kmeans-iter 2 --teacher runs/hubert1 --layer 3
    wavstream train pretrain --family wavlm --train corpus/train.tsv --out runs/wavlm --labels runs/labels_it2

Label folders (HuBERT/WavLM) are written once by rank 0 and reused
(training/labels.py). Recipe defaults follow MODELS.md; where a tiny CPU
recipe departs (learning rates, Gumbel annealing length, negatives,
clusters), the objective modules say why.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from .dataset import AudioDataset

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


def add_pretrain_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("pretraining objective")
    g.add_argument("--mask-prob", type=float, default=None,
                   help="span-mask p*M (default 0.65 wav2vec2, 0.80 hubert/wavlm)")
    g.add_argument("--num-negatives", type=int, default=None,
                   help="distractors per target (default 10 wav2vec/vq-wav2vec, 100 wav2vec2)")
    g.add_argument("--diversity-weight", type=float, default=None,
                   help="wav2vec2: 0.1; vq-wav2vec: 0 (the README Gumbel recipe has none)")
    g.add_argument("--feature-penalty", type=float, default=10.0, help="weight of the L2 conv-feature penalty")
    g.add_argument("--unmasked-weight", type=float, default=0.0,
                   help="hubert/wavlm: weight of the prediction loss on unmasked frames (published: 0)")
    g.add_argument("--temp-anneal-steps", type=int, default=-1,
                   help="Gumbel temperature reaches its floor after this many updates; "
                        "-1: 70%% of --steps for size tiny, the published rate otherwise; 0: published rate")
    g.add_argument("--vq-type", choices=["gumbel", "kmeans"], default=None, help="vq-wav2vec quantiser")
    g.add_argument("--labels", default=None, help="hubert/wavlm: label folder (built here when missing)")
    g.add_argument("--kmeans-iter", type=int, choices=[1, 2], default=None,
                   help="1: MFCC k-means labels; 2: k-means of --teacher's layer --layer "
                        "(default: reuse the --labels folder as it is, or build MFCC labels)")
    g.add_argument("--teacher", default=None, help="iteration-1 checkpoint (run folder) for --kmeans-iter 2")
    g.add_argument("--layer", type=int, default=None, help="teacher Transformer layer, 1-based (default: middle)")
    g.add_argument("--num-clusters", type=int, default=100,
                   help="k-means K (published: 100 for iteration 1, 500 for iteration 2; tiny recipes: 100)")
    g.add_argument("--kmeans-percent", type=float, default=0.1, help="fraction of utterances k-means is fit on")
    g.add_argument("--kmeans-n-init", type=int, default=20)
    g.add_argument("--mix-prob", type=float, default=0.2, help="wavlm: utterance mixing probability")
    g.add_argument("--noise-prob", type=float, default=0.25, help="wavlm: additive noise probability")
    g.add_argument("--reverb-prob", type=float, default=0.15, help="wavlm: reverberation probability")


def _get(args: argparse.Namespace, name: str, default):
    v = getattr(args, name, None)
    return default if v is None else v


def ensure_labels(args: argparse.Namespace, utts, rank: int, world: int) -> Path:
    """Build the label folder on rank 0 if it is not there yet; every rank waits for it."""
    from . import labels as L

    label_dir = Path(args.labels) if getattr(args, "labels", None) else Path(args.out) / "labels"
    it = getattr(args, "kmeans_iter", None)
    if rank == 0 and L.labels_ready(label_dir, "train", utts) and it is not None:
        meta = L.read_meta(label_dir)
        want = "teacher" if it == 2 else "mfcc"
        if meta["source"] != want:
            raise SystemExit(f"{label_dir} holds {meta['source']} labels, not iteration-{it} labels; "
                             "use another --labels folder")
        if it == 2 and args.teacher:
            from .checkpoint import resolve

            if meta["teacher"] != str(resolve(args.teacher)) or (args.layer and meta["layer"] != args.layer):
                raise SystemExit(f"{label_dir} was made from {meta['teacher']} layer {meta['layer']}; "
                                 "use another --labels folder")
    if rank == 0 and not L.labels_ready(label_dir, "train", utts):
        if it == 2:
            if not args.teacher:
                raise SystemExit("--kmeans-iter 2 needs --teacher CKPT (the iteration-1 model)")
            from .checkpoint import read_config, resolve

            cfg, _ = read_config(resolve(args.teacher))
            layer = args.layer or max(1, cfg.num_layers // 2)
            feats = L.teacher_features(args.teacher, layer, threads=args.threads)
        else:
            feats = L.mfcc_source()
        settings = L.KMeansSettings(num_clusters=_get(args, "num_clusters", 100),
                                    percent=_get(args, "kmeans_percent", 0.1),
                                    n_init=_get(args, "kmeans_n_init", 20), seed=args.seed)
        print(f"building {feats[1]['source']} k-means labels (K={settings.num_clusters}) in {label_dir}")
        L.build_labels(label_dir, {"train": utts}, feats, settings, progress=True)
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
    L.labels_ready(label_dir, "train", utts)  # raises on a mismatched manifest
    return label_dir


def build_objective(family: str, model, args: argparse.Namespace, dataset=None, label_store=None):
    """The objective module of `family` with the CLI's (or MODELS.md's) settings."""
    steps = int(_get(args, "steps", 1000))
    anneal = int(_get(args, "temp_anneal_steps", -1))
    if anneal < 0:
        anneal = int(0.7 * steps) if _get(args, "size", "tiny") == "tiny" else 0
    if family in ("wav2vec", "vq_wav2vec"):
        from .objectives.wav2vec import Wav2VecObjective

        return Wav2VecObjective(model, num_negatives=_get(args, "num_negatives", 10),
                                diversity_weight=_get(args, "diversity_weight", 0.0), temp_anneal_steps=anneal)
    if family == "wav2vec2":
        from .objectives.wav2vec2 import Wav2Vec2Objective

        return Wav2Vec2Objective(model, mask_prob=_get(args, "mask_prob", 0.65),
                                 num_negatives=_get(args, "num_negatives", 100),
                                 diversity_weight=_get(args, "diversity_weight", 0.1),
                                 feature_penalty_weight=_get(args, "feature_penalty", 10.0),
                                 temp_anneal_steps=anneal)
    crops = dataset.crop_starts if isinstance(dataset, CropTrackingDataset) else None
    kw = dict(mask_prob=_get(args, "mask_prob", 0.8), feature_penalty_weight=_get(args, "feature_penalty", 10.0),
              unmasked_weight=_get(args, "unmasked_weight", 0.0))
    if family == "hubert":
        from .objectives.hubert import HubertObjective

        return HubertObjective(model, label_store, crops, **kw)
    if family == "wavlm":
        from .objectives.wavlm import WavLMObjective

        return WavLMObjective(model, label_store, crops, mix_prob=_get(args, "mix_prob", 0.2),
                              noise_prob=_get(args, "noise_prob", 0.25),
                              reverb_prob=_get(args, "reverb_prob", 0.15), **kw)
    raise ValueError(f"unknown family {family!r}")


# Tiny-recipe optimiser defaults: (lr, warm-up fraction, schedule). Published:
# wav2vec Adam 5e-3 cosine (huge batches), vq-wav2vec 1e-5 (README) cosine,
# wav2vec2/hubert/wavlm 5e-4 linear with 8% warm-up. A few thousand updates of
# ~1 minute of audio each need a larger, steadier rate for the tiny models.
RECIPE = {
    "wav2vec": (1e-3, 0.05, "cosine"),
    "vq_wav2vec": (1e-3, 0.05, "cosine"),
    "wav2vec2": (1e-3, 0.08, "linear"),
    "hubert": (1e-3, 0.08, "linear"),
    "wavlm": (1e-3, 0.08, "linear"),
}


def run_pretrain(args: argparse.Namespace) -> int:
    import torch

    from .cli import make_train_config, parse_overrides
    from .dataset import hours, read_manifest
    from .labels import LabelStore, read_meta
    from .loop import maybe_init_distributed, train
    from .models import build_model

    if args.threads:
        torch.set_num_threads(args.threads)
    rank, world = maybe_init_distributed()
    family = args.family
    overrides = parse_overrides(args.set)
    if family == "vq_wav2vec" and args.vq_type:
        overrides.setdefault("quantizer", args.vq_type)
    utts = read_manifest(args.train)
    label_store = None
    meta: dict = {"objective": family}
    if family in ("hubert", "wavlm"):
        label_dir = ensure_labels(args, utts, rank, world)
        lm = read_meta(label_dir)
        overrides.setdefault("num_label_classes", int(lm["num_clusters"]) + 4)
        label_store = LabelStore.from_dir(label_dir, "train")
        meta["labels"] = {"dir": str(label_dir), **{k: lm[k] for k in ("source", "label_rate", "num_clusters")},
                          **({"teacher": lm["teacher"], "layer": lm["layer"]} if lm["source"] == "teacher" else {})}
    torch.manual_seed(args.seed)
    model = build_model(family, args.size, **overrides)
    if rank == 0:
        print(f"pretraining {family} ({args.size}, {model.num_parameters() / 1e6:.2f}M params) on "
              f"{len(utts)} utterances ({hours(utts):.2f} h)")
    ds = CropTrackingDataset(utts, max_samples=int(args.max_utt_seconds * 16000), progress=rank == 0,
                             seed=args.seed + 1000 * rank)
    objective = build_objective(family, model, args, ds, label_store)
    lr, warm_frac, schedule = RECIPE[family]
    cfg = make_train_config(args, lr=lr, warmup=max(int(warm_frac * args.steps), 1), schedule=schedule)
    meta["objective_settings"] = {k: v for k, v in vars(objective).items()
                                  if not k.startswith("_") and isinstance(v, (int, float, str, bool))}
    res = train(objective, ds, cfg, resume=not args.no_resume, meta=meta)
    if rank == 0:
        print(json.dumps(res))
    return 0
