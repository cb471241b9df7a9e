"""`wavstream train pretrain|ctc`: the command line of the training loop.

Runs alone or under torchrun (DistributedDataParallel, gloo on CPU):
    torchrun --nproc_per_node 2 -m wavstream.cli.main train ctc ...
"""

from __future__ import annotations

import argparse
import json


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--train", required=True, help="training manifest (TSV) or folder")
    p.add_argument("--dev", help="dev manifest for periodic evaluation")
    p.add_argument("--out", required=True, help="run folder (checkpoints, log.jsonl, loss.png)")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--schedule", choices=["linear", "tristage", "cosine", "constant"], default=None,
                   help="learning-rate schedule (default: the recipe's)")
    p.add_argument("--batch-seconds", type=float, default=80.0, help="padded audio seconds per batch")
    p.add_argument("--max-utt-seconds", type=float, default=16.0, help="longer utterances are randomly cropped")
    p.add_argument("--max-minutes", type=float, default=0.0, help="stop with a checkpoint after this wall time")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-every", type=int, default=0)
    p.add_argument("--ckpt-every", type=int, default=200)
    p.add_argument("--no-resume", action="store_true")
    p.add_argument("--resume-from", default="",
                   help="a compact checkpoint (pack_checkpoint.py --resumable) to continue from when --out has none")
    p.add_argument("--rewarm-steps", type=int, default=200,
                   help="after --resume-from (no optimizer moments), ramp the lr up over this many steps")
    p.add_argument("--no-dynamic-chunks", action="store_true", help="train with the config's fixed chunk")
    p.add_argument("--full-context-prob", type=float, default=0.1)
    p.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto",
                   help="bf16 autocast (losses in fp32); auto: bf16 where the CPU/GPU has native bf16")
    p.add_argument("--workers", type=int, default=None,
                   help="batch-preparing DataLoader processes (default 0: one prefetch thread, "
                        "the fastest on 2 cores; more cores may prefer processes)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=JSON",
                   help="override a model config field, e.g. --set num_layers=6")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="train_command", metavar="{pretrain,ctc}", required=True)
    pre = sub.add_parser("pretrain", help="self-supervised pretraining of one family")
    pre.add_argument("--family", required=True,
                     choices=["wav2vec", "vq_wav2vec", "wav2vec2", "hubert", "wavlm"])
    pre.add_argument("--size", default="tiny", choices=["tiny", "base", "large"])
    add_common(pre)
    try:
        from .pretrain import add_pretrain_arguments  # objective-specific options

        add_pretrain_arguments(pre)
    except ImportError:
        pass
    # the self-supervised losses are not yet measured under bf16: fp32 unless asked
    pre.set_defaults(train_run=_run_pretrain, precision="fp32")

    ctc = sub.add_parser("ctc", help="fine-tune with CTC (or train from scratch with --init none)")
    ctc.add_argument("--init", required=True, help="pretrained checkpoint folder, or 'none'")
    ctc.add_argument("--family", default=None, help="family when --init none")
    ctc.add_argument("--size", default="tiny", choices=["tiny", "base", "large"])
    ctc.add_argument("--freeze-transformer-steps", type=int, default=None,
                     help="only the CTC head trains at first (default: 10%% of steps with --init, 0 without)")
    ctc.add_argument("--train-conv", action="store_true",
                     help="with --init: train the conv encoder too (published recipes freeze it)")
    ctc.add_argument("--mask-prob", type=float, default=0.3)
    ctc.add_argument("--mask-channel-prob", type=float, default=0.1)
    ctc.add_argument("--augment", choices=["channel", "none"], default="channel",
                     help="speaker/channel augmentation redrawn every epoch (training/data/channel.py)")
    ctc.add_argument("--hours", type=float, default=0.0, help="use a random labelled subset of this many hours")
    add_common(ctc)
    ctc.set_defaults(train_run=_run_ctc)


def parse_overrides(items: list[str]) -> dict:
    out = {}
    for it in items:
        k, _, v = it.partition("=")
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def make_train_config(args: argparse.Namespace, lr: float, warmup: int, schedule: str,
                      workers: int = 0):
    import torch

    from .loop import TrainConfig, bf16_supported

    precision = getattr(args, "precision", "fp32")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    bf16 = precision == "bf16" or (precision == "auto" and bf16_supported(device))
    if getattr(args, "workers", None) is not None:
        workers = args.workers
    if workers < 0:
        raise SystemExit("--workers must be >= 0")
    return TrainConfig(
        bf16=bf16, workers=workers, resume_from=getattr(args, "resume_from", ""),
        rewarm_steps=getattr(args, "rewarm_steps", 200),
        out_dir=args.out, max_steps=args.steps, lr=args.lr or lr,
        warmup_steps=args.warmup if args.warmup is not None else warmup, schedule=args.schedule or schedule,
        batch_seconds=args.batch_seconds, seed=args.seed, ckpt_every=args.ckpt_every,
        eval_every=args.eval_every, threads=args.threads, max_minutes=args.max_minutes,
        dynamic_chunks=not args.no_dynamic_chunks, full_context_prob=args.full_context_prob,
    )


def _run_pretrain(args: argparse.Namespace) -> int:
    try:
        from .pretrain import run_pretrain
    except ImportError as exc:
        print(f"pretraining is not available: {exc}")
        return 2
    return run_pretrain(args)


def _run_ctc(args: argparse.Namespace) -> int:
    import torch

    from .checkpoint import load_checkpoint
    from .dataset import AudioDataset, hours, read_manifest, subset_hours
    from .evaluate import evaluate_checkpoint
    from .loop import train
    from .models import CTC_VOCAB, build_model
    from .objectives.ctc import CTCObjective

    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = parse_overrides(args.set)
    if args.init == "none":
        if not args.family:
            raise SystemExit("--init none needs --family")
        model = build_model(args.family, args.size, vocab=list(CTC_VOCAB), **overrides)
        init = None
    else:
        model = load_checkpoint(args.init)
        model.train()
        for k, v in overrides.items():
            setattr(model.config, k, v)
        if model.lm_head is None:
            model.add_ctc_head(CTC_VOCAB)
        init = str(args.init)
    model.drop_pretraining_modules()
    freeze_steps = args.freeze_transformer_steps
    if freeze_steps is None:
        freeze_steps = args.steps // 10 if init else 0
    objective = CTCObjective(model, freeze_encoder=init is not None and not args.train_conv,
                             freeze_transformer_steps=freeze_steps,
                             mask_prob=args.mask_prob, mask_channel_prob=args.mask_channel_prob)
    utts = read_manifest(args.train)
    if args.hours:
        utts = subset_hours(utts, args.hours, args.seed)
    print(f"training on {len(utts)} utterances ({hours(utts):.2f} h); model "
          f"{model.config.family} {model.num_parameters() / 1e6:.2f}M params; init={init}")
    transform = None
    if args.augment == "channel":
        from .data.channel import ChannelAugment

        transform = ChannelAugment()
    ds = AudioDataset(utts, max_samples=int(args.max_utt_seconds * 16000), progress=True, transform=transform)
    evaluator = None
    if args.dev:
        dev = read_manifest(args.dev)[:200]

        def evaluator(m):
            res, _ = evaluate_checkpoint(m, dev, chunk_ms=320)
            return {"cer": res["cer"], "wer": res["wer"]}

    cfg = make_train_config(args, lr=1e-3 if init is None else 5e-4, warmup=max(args.steps // 10, 1),
                            schedule="tristage" if init else "linear")
    meta = {"objective": "ctc", "init": init, "train_hours": round(hours(utts), 3), "augment": args.augment,
            "conv_frozen": objective.freeze_encoder, "freeze_transformer_steps": freeze_steps}
    res = train(objective, ds, cfg, evaluator=evaluator, resume=not args.no_resume, meta=meta)
    print(json.dumps(res))
    return 0


def run(args: argparse.Namespace) -> int:
    return args.train_run(args)
