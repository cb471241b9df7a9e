"""CTC fine-tuning (or training from scratch) with the shared loop. The command
is `wavstream train ctc` (cli/train.py); this module is the job:

    job = FinetuneJob(train="corpus/train.tsv", init="runs/hubert1")
    result = finetune_ctc(job, TrainConfig(out_dir="runs/ft", ...))

With `init`, the encoder comes from a pretrained checkpoint (its pretraining
heads stay behind) and gets a CTC head when it has none; without, a fresh
model of `family` and `size`. `overrides` change model config fields (e.g.
dropouts, or `chunk_frames` for another latency) before the weights load.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from wavstream.stream.errors import WavstreamError

from .loop import TrainConfig
from .objectives.settings import CTCSettings


def ctc_recipe(from_pretrained: bool, steps: int) -> tuple[float, int, str]:
    """(lr, warm-up steps, schedule): fairseq's tri-stage at 5e-4 when fine-tuning,
    a linear decay at 1e-3 from scratch."""
    warmup = max(steps // 10, 1)
    return (5e-4, warmup, "tristage") if from_pretrained else (1e-3, warmup, "linear")


def default_freeze_steps(from_pretrained: bool, steps: int) -> int:
    """Only the CTC head trains for the first 10% of a fine-tuning run; 0 from scratch."""
    return steps // 10 if from_pretrained else 0


@dataclass(frozen=True)
class FinetuneJob:
    train: str  # training manifest (TSV) or folder
    init: str | None = None  # pretrained checkpoint; None: train `family` from scratch
    family: str | None = None
    size: str = "tiny"
    overrides: Mapping[str, Any] = field(default_factory=dict)  # model config fields
    objective: CTCSettings = CTCSettings()
    hours: float = 0.0  # a random labelled subset of this many hours; 0: all
    seed: int = 0
    max_utt_seconds: float = 16.0  # longer utterances are randomly cropped
    augment: str = "channel"  # "channel": speaker/channel augmentation (training/data/channel.py); "none"
    dev: str | None = None  # dev manifest evaluated every `eval_every` steps (streaming, 320 ms chunks)
    dev_utterances: int = 200
    resume: bool = True


class FinetuneError(WavstreamError, ValueError):
    """The job cannot run as given (e.g. no family to train from scratch)."""


def build_ctc_model(job: FinetuneJob) -> Any:
    """The model the job trains: a pretrained encoder with a CTC head, or a fresh one."""
    from .checkpoint import load_checkpoint, read_config
    from .models import CTC_VOCAB, build_model

    if job.init is None:
        if not job.family:
            raise FinetuneError("training from scratch (--init none) needs a family (--family)")
        return build_model(job.family, job.size, vocab=list(CTC_VOCAB), **job.overrides)
    cfg, _ = read_config(job.init)
    model = load_checkpoint(job.init, config=cfg.replace(**job.overrides) if job.overrides else None)
    if model.lm_head is None:
        model.add_ctc_head(CTC_VOCAB)
    return model.train()


def finetune_ctc(job: FinetuneJob, cfg: TrainConfig, log: Callable[[str], None] = lambda _: None) -> dict:
    """Train the job's model with CTC and the loop settings `cfg`; returns the loop's final metrics."""
    from .dataset import AudioDataset, hours, read_manifest, subset_hours
    from .evaluate import evaluate_checkpoint
    from .loop import train
    from .objectives.ctc import CTCObjective

    import torch

    torch.manual_seed(cfg.seed)  # the CTC head's (and a from-scratch model's) initial weights: the same every run
    model = build_ctc_model(job)
    objective = CTCObjective(model, job.objective)
    utts = read_manifest(job.train)
    if job.hours:
        utts = subset_hours(utts, job.hours, job.seed)
    log(f"training on {len(utts)} utterances ({hours(utts):.2f} h); model "
        f"{model.config.family} {model.num_parameters() / 1e6:.2f}M params; init={job.init}")
    transform = None
    if job.augment == "channel":
        from .data.channel import ChannelAugment

        transform = ChannelAugment()
    ds = AudioDataset(utts, max_samples=int(job.max_utt_seconds * 16000), progress=True, transform=transform)
    evaluator = None
    if job.dev:
        dev = read_manifest(job.dev)[: job.dev_utterances]

        def evaluator(m: Any) -> dict:
            res, _ = evaluate_checkpoint(m, dev, chunk_ms=320)
            return {"cer": res["cer"], "wer": res["wer"]}

    meta = {"objective": "ctc", "init": job.init, "train_hours": round(hours(utts), 3), "augment": job.augment,
            "conv_frozen": job.objective.freeze_encoder,
            "freeze_transformer_steps": job.objective.freeze_transformer_steps}
    return train(objective, ds, cfg, evaluator=evaluator, resume=job.resume, meta=meta, log=log)
