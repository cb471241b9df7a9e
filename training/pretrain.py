"""Self-supervised pretraining of one family with the shared loop
(training/loop.py), alone or under torchrun. The command is
`wavstream train pretrain` (cli/train.py); this module is the job:

    job = PretrainJob(family="hubert", train="corpus/train.tsv",
                      labels=LabelPlan(Path("runs/labels_mfcc")))
    result = pretrain(job, TrainConfig(out_dir="runs/hubert1", ...))

Label folders (HuBERT/WavLM) are written once by rank 0 and reused
(training/label_folder.py). The objectives' settings default to the published
recipes (docs/pretraining.md); where a tiny CPU recipe departs (learning
rates, Gumbel annealing length, negatives, clusters), the objective modules
say why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from .label_folder import LabelPlan
from .loop import TrainConfig

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


def default_anneal_steps(size: str, steps: int) -> int:
    """Gumbel annealing length: the floor after 70% of a tiny run (a few thousand
    updates); the published per-update rate (0) for the published sizes."""
    return int(0.7 * steps) if size == "tiny" else 0


@dataclass(frozen=True)
class PretrainJob:
    family: str
    train: str  # training manifest (TSV) or folder
    size: str = "tiny"
    overrides: Mapping[str, Any] = field(default_factory=dict)  # model config fields
    objective: Any = None  # the family's settings (objectives/settings.py); None: its defaults
    labels: LabelPlan | None = None  # HuBERT/WavLM: the label folder (default: <out>/labels)
    seed: int = 0
    max_utt_seconds: float = 16.0  # longer utterances are randomly cropped
    resume: bool = True


def pretrain(job: PretrainJob, cfg: TrainConfig, log: Callable[[str], None] = lambda _: None) -> dict:
    """Pretrain `job.family` with the loop settings `cfg`; returns the loop's final metrics."""
    import torch

    from .dataset import CropTrackingDataset, hours, read_manifest
    from .label_folder import ensure_labels
    from .labels import LabelStore, read_meta
    from .loop import maybe_init_distributed, train
    from .models import build_model
    from .objectives.build import build_objective

    rank, world = maybe_init_distributed()
    family = job.family
    overrides = dict(job.overrides)
    utts = read_manifest(job.train)
    label_store = None
    meta: dict = {"objective": family}
    if family in ("hubert", "wavlm"):
        plan = job.labels or LabelPlan(Path(cfg.out_dir) / "labels")
        label_dir = ensure_labels(plan, utts, rank, world, log)
        lm = read_meta(label_dir)
        overrides.setdefault("num_label_classes", int(lm["num_clusters"]) + 4)
        label_store = LabelStore.from_dir(label_dir, "train")
        meta["labels"] = {"dir": str(label_dir), **{k: lm[k] for k in ("source", "label_rate", "num_clusters")},
                          **({"teacher": lm["teacher"], "layer": lm["layer"]} if lm["source"] == "teacher" else {})}
    torch.manual_seed(job.seed)
    model = build_model(family, job.size, **overrides)
    if rank == 0:
        log(f"pretraining {family} ({job.size}, {model.num_parameters() / 1e6:.2f}M params) on "
            f"{len(utts)} utterances ({hours(utts):.2f} h)")
    ds = CropTrackingDataset(utts, max_samples=int(job.max_utt_seconds * 16000), progress=rank == 0,
                             seed=job.seed + 1000 * rank)
    objective = build_objective(family, model, job.objective, label_store, ds.crop_starts)
    meta["objective_settings"] = objective.settings_dict()
    return train(objective, ds, cfg, resume=job.resume, meta=meta, log=log)
