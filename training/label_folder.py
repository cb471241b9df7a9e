"""The label folder of a HuBERT/WavLM pretraining run: reuse it when it fits,
build it (rank 0) when it is missing, refuse it when it was made otherwise.

    folder = ensure_labels(LabelPlan(Path("runs/labels_mfcc")), utts, rank, world)

Iteration 1 labels are k-means of MFCCs; iteration 2 labels are k-means of a
teacher's Transformer layer (training/labels.py builds both). A mismatch is a
`LabelError` that says which folder to change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from . import labels as L
from .labels import KMeansSettings, LabelError


@dataclass(frozen=True)
class LabelPlan:
    folder: Path
    iteration: int | None = None  # 1: MFCC k-means; 2: k-means of `teacher`; None: reuse as is, else MFCC
    teacher: str | None = None  # the iteration-1 checkpoint (run folder) for iteration 2
    layer: int | None = None  # teacher Transformer layer, 1-based; None: the middle one
    kmeans: KMeansSettings = field(default_factory=KMeansSettings)
    threads: int = 0


def _check_reuse(plan: LabelPlan) -> None:
    """An existing folder must hold the iteration (and teacher layer) asked for."""
    from .checkpoint import resolve

    meta = L.read_meta(plan.folder)
    want = "teacher" if plan.iteration == 2 else "mfcc"
    if meta["source"] != want:
        raise LabelError(f"{plan.folder} holds {meta['source']} labels, not iteration-{plan.iteration} labels; "
                         "use another --labels folder")
    if plan.iteration == 2 and plan.teacher:
        if meta["teacher"] != str(resolve(plan.teacher)) or (plan.layer and meta["layer"] != plan.layer):
            raise LabelError(f"{plan.folder} was made from {meta['teacher']} layer {meta['layer']}; "
                             "use another --labels folder")


def build_plan(plan: LabelPlan, utts: list, log: Callable[[str], None]) -> None:
    if plan.iteration == 2:
        if not plan.teacher:
            raise LabelError("iteration-2 labels need a teacher checkpoint (--teacher, the iteration-1 model)")
        from .checkpoint import read_config

        cfg, _ = read_config(plan.teacher)
        layer = plan.layer or max(1, cfg.num_layers // 2)
        feats = L.teacher_features(plan.teacher, layer, threads=plan.threads)
    else:
        feats = L.mfcc_source()
    log(f"building {feats[1]['source']} k-means labels (K={plan.kmeans.num_clusters}) in {plan.folder}")
    L.build_labels(plan.folder, {"train": utts}, feats, plan.kmeans, progress=True)


def ensure_labels(plan: LabelPlan, utts: list, rank: int = 0, world: int = 1,
                  log: Callable[[str], None] = lambda _: None) -> Path:
    """Build the label folder on rank 0 if it is not there yet; every rank waits for it."""
    if rank == 0:
        ready = L.labels_ready(plan.folder, "train", utts)
        if ready and plan.iteration is not None:
            _check_reuse(plan)
        if not ready:
            build_plan(plan, utts, log)
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
    L.labels_ready(plan.folder, "train", utts)  # raises on a mismatched manifest
    return plan.folder
