"""One training loop for every objective (CTC and the five self-supervised ones).

An objective (training/objectives/base.py) owns the encoder
(``objective.model``) and its pretraining heads (``objective.heads``) and
returns ``(loss, metrics)`` from ``forward(batch, chunk, step)``. Wrapping
the objective (not the bare model) in DistributedDataParallel keeps every
parameter the loss touches inside one forward, as DDP requires.

Features: AdamW, warm-up then decay, gradient clipping, length-bucketed
batches, dynamic chunk sampling, safetensors checkpoints with resume, a
progress bar with loss and audio throughput, a JSONL log and a loss-curve PNG.
The same code runs alone or under ``torchrun`` (gloo on CPU, NCCL on GPU).
"""

from __future__ import annotations

import json
import math
import os
import queue
import random
import shutil
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from .checkpoint import HEADS_PREFIX, load_exact, split_state
from .dataset import AudioDataset, bucket_batches, collate
from .masking import ChunkSampler
from .objectives.base import Objective


@dataclass(frozen=True)
class TrainConfig:
    out_dir: str = "runs/exp"
    max_steps: int = 1000
    lr: float = 5e-4
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    warmup_steps: int = 100
    schedule: str = "linear"  # linear (warm-up, linear decay), tristage, cosine, constant
    final_lr_scale: float = 0.05
    clip_norm: float = 10.0
    batch_seconds: float = 60.0  # padded audio per batch
    max_batch: int = 64
    seed: int = 0
    log_every: int = 10
    ckpt_every: int = 200
    eval_every: int = 0
    threads: int = 0  # 0: torch default
    max_minutes: float = 0.0  # stop (with a checkpoint) after this wall time; 0 = no limit
    chunk_choices: tuple[int, ...] = (4, 8, 16, 32)
    left_choices: tuple[int, ...] = (1, 2, 4, 8)
    full_context_prob: float = 0.1
    dynamic_chunks: bool = True
    bf16: bool = False  # autocast matmuls/convs to bfloat16 (losses stay fp32)
    workers: int = 0  # DataLoader worker processes; 0: one prefetch thread (faster on 2 cores)
    # a compact resumable checkpoint (fp16 weights + resume.json, no optimizer
    # moments) to continue from when out_dir has none of its own
    resume_from: str = ""
    rewarm_steps: int = 200  # after resuming without optimizer moments, ramp the lr up again


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Multiplier of cfg.lr at `step` (0-based)."""
    total = max(cfg.max_steps, 1)
    warm = max(cfg.warmup_steps, 1)
    if cfg.schedule == "constant":
        return min(1.0, (step + 1) / warm)
    if cfg.schedule == "tristage":  # fairseq fine-tuning: 10% warm-up, 40% hold, 50% exp decay
        w, h = int(0.1 * total), int(0.4 * total)
        if step < w:
            return 0.01 + (1 - 0.01) * step / max(w, 1)
        if step < w + h:
            return 1.0
        frac = (step - w - h) / max(total - w - h, 1)
        return math.exp(math.log(cfg.final_lr_scale) * frac)
    if step < warm:
        return (step + 1) / warm
    frac = min(1.0, (step - warm) / max(total - warm, 1))
    if cfg.schedule == "cosine":
        return cfg.final_lr_scale + (1 - cfg.final_lr_scale) * 0.5 * (1 + math.cos(math.pi * frac))
    return max(1.0 - frac, 0.0)  # linear (fairseq polynomial_decay, power 1)


def bf16_supported(device: torch.device) -> bool:
    """Whether bf16 autocast is fast here: a GPU with bf16, or a CPU with AMX or AVX512-BF16
    (elsewhere CPU bf16 is emulated and slower than fp32)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


# -- distributed helpers -------------------------------------------------------------


def dist_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def maybe_init_distributed() -> tuple[int, int]:
    """Initialise torch.distributed when launched by torchrun."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return dist_info()


# -- checkpoints -----------------------------------------------------------------------


def save_checkpoint(path: Path, model: nn.Module, extra: dict, optimizer=None, trainer_state=None,
                    heads: nn.Module | None = None) -> None:
    """The encoder's weights (and an objective's `heads`, under ``heads.``),
    its config and `extra`. Atomic: written to a temp folder, then renamed."""
    from safetensors.torch import save_file

    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    tensors = dict(model.state_dict())
    if heads is not None:
        tensors.update({HEADS_PREFIX + k: v for k, v in heads.state_dict().items()})
    state = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    save_file(state, str(tmp / "model.safetensors"))
    cfg = {"model": model.config.to_dict(), **extra}  # type: ignore[attr-defined]
    (tmp / "config.json").write_text(json.dumps(cfg, indent=1))
    if optimizer is not None:
        torch.save({"optimizer": optimizer.state_dict(), **(trainer_state or {})}, tmp / "trainer.pt")
    if path.exists():
        shutil.rmtree(path)
    tmp.rename(path)


def save_compact(src: Path, dst: Path, resumable: bool = True) -> None:
    """A small copy of the checkpoint folder `src` (e.g. runs/x/last): float
    weights in fp16, config.json, and the run's log.jsonl; with `resumable`,
    also resume.json (step and chunk-sampler state from trainer.pt), which is
    what `--resume-from` continues from (no optimizer moments: a resume
    re-warms the lr). Replaces `dst` atomically."""
    from safetensors.torch import load_file, save_file

    state = load_file(str(src / "model.safetensors"))
    tmp = dst.with_name(dst.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save_file({k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in state.items()},
              str(tmp / "model.safetensors"))
    shutil.copyfile(src / "config.json", tmp / "config.json")
    if resumable:
        st = torch.load(src / "trainer.pt", weights_only=True)
        (tmp / "resume.json").write_text(json.dumps({"step": int(st["step"]), "rnd": st.get("rnd")}) + "\n")
    log = src.parent / "log.jsonl"
    if log.exists():
        shutil.copyfile(log, tmp / "log.jsonl")
    if dst.exists():
        shutil.rmtree(dst)
    tmp.rename(dst)


def load_weights(model: nn.Module, heads: nn.Module | None, path: Path) -> None:
    """Load a checkpoint folder's encoder (and heads) weights, exactly (cast to the modules' dtypes)."""
    from safetensors.torch import load_file

    encoder, head_state = split_state(load_file(str(Path(path) / "model.safetensors")))
    load_exact(model, encoder, f"{path}: encoder")
    if heads is not None:
        load_exact(heads, head_state, f"{path}: pretraining heads")


def load_compact(model: nn.Module, path: Path, rnd: random.Random | None = None,
                 heads: nn.Module | None = None) -> int:
    """Load a `save_compact` checkpoint into `model` (and `heads`; weights cast
    back to fp32); returns its step and restores the chunk sampler's state into `rnd`."""
    load_weights(model, heads, path)
    meta = json.loads((path / "resume.json").read_text())
    if rnd is not None and meta.get("rnd"):
        v, t, g = json.loads(meta["rnd"])
        rnd.setstate((v, tuple(t), g))
    return int(meta["step"])


# -- the loop --------------------------------------------------------------------------


def _batches(dataset: AudioDataset, cfg: TrainConfig, rank: int, world: int, epoch: int) -> list[list[int]]:
    lengths = dataset.lengths()
    all_b = bucket_batches(lengths, int(cfg.batch_seconds * 16000), cfg.seed + epoch, cfg.max_batch)
    n = len(all_b) // world * world or len(all_b)
    return all_b[rank:n:world]


def _epoch_loader(dataset: AudioDataset, batches: list[list[int]], cfg: TrainConfig, epoch: int):
    """Collated batches of one epoch. With `cfg.workers` > 0, prepared by that
    many DataLoader processes; otherwise by one background thread, which on a
    2-core machine measured faster than a worker process (no IPC, and numpy,
    scipy and pedalboard release the GIL while torch computes)."""
    dataset.set_epoch(epoch, cfg.seed)
    if cfg.workers > 0:
        return iter(torch.utils.data.DataLoader(dataset, batch_sampler=batches, collate_fn=collate,
                                                num_workers=cfg.workers, prefetch_factor=4))
    return _prefetch(collate([dataset[i] for i in idx]) for idx in batches)


def _prefetch(items: Iterator, depth: int = 2) -> Iterator:
    """Iterate `items` in a background thread, `depth` ahead; its errors are raised here."""
    q: queue.Queue = queue.Queue(depth)
    stop = threading.Event()
    end = object()

    def produce() -> None:
        try:
            for x in items:
                while not stop.is_set():
                    try:
                        q.put((x, None), timeout=0.2)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put((end, None))
        except BaseException as exc:  # handed to the consumer
            q.put((end, exc))

    threading.Thread(target=produce, daemon=True, name="batch-prefetch").start()
    try:
        while True:
            x, exc = q.get()
            if exc is not None:
                raise exc
            if x is end:
                return
            yield x
    finally:  # the consumer stopped early (max_minutes, max_steps): let the thread go
        stop.set()


def plot_curve(log_path: Path, png_path: Path, title: str = "") -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # plotting is a nicety, never a failure
        return
    allrows = [json.loads(l) for l in log_path.read_text().splitlines() if l.strip()]
    rows = [r for r in allrows if "loss" in r]
    if not rows:
        return
    steps = [r["step"] for r in rows]
    loss = np.array([r["loss"] for r in rows])
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, loss, lw=0.6, alpha=0.4, color="C0", label="train loss (per batch)")
    if len(loss) >= 10:  # batches differ in chunk size and length: show the trend too
        k = max(5, len(loss) // 20)
        smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
        ax.plot(steps[k - 1:], smooth, lw=1.8, color="C0", label=f"running mean ({k})")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)
    evals = [r for r in allrows if any(k.startswith("dev_") for k in r)]
    if evals:
        key = "dev_cer" if "dev_cer" in evals[0] else next(k for k in evals[0] if k.startswith("dev_"))
        ax2 = ax.twinx()
        ax2.plot([r["step"] for r in evals], [r[key] for r in evals], "r.-", label=key)
        ax2.set_ylabel(key, color="r")
        ax2.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)


def train(objective: Objective, dataset: AudioDataset, cfg: TrainConfig,
          evaluator: Callable[[nn.Module], dict] | None = None, progress: bool = True,
          resume: bool = True, meta: dict | None = None, log: Callable[[str], None] = lambda _: None) -> dict:
    """Train `objective` (which holds `.model` and `.heads`) on `dataset`. Returns final metrics.
    Writes checkpoints, log.jsonl and loss.png under `cfg.out_dir`; with
    `progress`, a progress bar on stderr (rank 0 only); `log` gets the run's
    messages (where it resumed from)."""
    rank, world = maybe_init_distributed()
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed + rank)
    rnd = random.Random(cfg.seed)  # same chunk draws on every rank
    np_rng_seed = cfg.seed + 1000 * rank
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = objective.model
    heads = objective.heads
    device = next(model.parameters()).device

    params = [p for p in objective.parameters()]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
    start_step = 0
    rewarm_from = -1  # step from which the lr ramps up again (moments were not restored)
    last = out / "last"
    if resume and (last / "trainer.pt").exists():
        load_weights(model, heads, last)
        st = torch.load(last / "trainer.pt", weights_only=True)
        if "optimizer" in st:
            opt.load_state_dict(st["optimizer"])
        else:
            rewarm_from = int(st["step"])
        start_step = int(st["step"])
        if "rnd" in st:
            v, t, g = json.loads(st["rnd"])
            rnd.setstate((v, tuple(t), g))
        if rank == 0:
            log(f"resumed from {last} at step {start_step}")
    elif resume and cfg.resume_from:
        start_step = load_compact(model, Path(cfg.resume_from), rnd, heads)
        rewarm_from = start_step
        if rank == 0 and (Path(cfg.resume_from) / "log.jsonl").exists() and not (out / "log.jsonl").exists():
            shutil.copyfile(Path(cfg.resume_from) / "log.jsonl", out / "log.jsonl")  # one curve across sessions
        if rank == 0:
            log(f"resumed from {cfg.resume_from} at step {start_step} (fp16 weights, fresh optimizer moments, "
                  f"lr re-warmed over {cfg.rewarm_steps} steps)")
    if start_step >= cfg.max_steps:
        return {"step": start_step}

    wrapped: nn.Module = objective
    if world > 1:
        wrapped = nn.parallel.DistributedDataParallel(objective, find_unused_parameters=True)

    meta = dict(meta or {})
    meta["train_config"] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()}
    sampler = ChunkSampler(cfg.chunk_choices, cfg.left_choices, cfg.full_context_prob, cfg.dynamic_chunks)
    default_chunk = (model.config.chunk_frames, model.config.left_chunks)
    log_path = out / "log.jsonl"
    bar = None
    if progress and rank == 0:
        from tqdm import tqdm

        bar = tqdm(total=cfg.max_steps, initial=start_step, desc=out.name, unit="step", dynamic_ncols=True)
    t0 = time.time()
    audio_s = 0.0
    step = start_step
    per_epoch = max(len(_batches(dataset, cfg, rank, world, 0)), 1)  # the count does not depend on the seed
    epoch, skip = divmod(start_step, per_epoch)  # resume mid-epoch
    metrics: dict = {}
    stop_reason = "max_steps"
    objective.train()

    def checkpoint(name: str) -> None:
        if rank != 0:
            return
        v, t, g = rnd.getstate()
        st = {"step": step, "rnd": json.dumps([v, list(t), g])}
        save_checkpoint(out / name, model, {**meta, "step": step}, opt, st, heads=heads)
        plot_curve(log_path, out / "loss.png", out.name)

    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16)
    while step < cfg.max_steps:
        batches = _batches(dataset, cfg, rank, world, epoch)[skip:]
        skip = 0
        for batch in _epoch_loader(dataset, batches, cfg, epoch):
            if step >= cfg.max_steps:
                break
            batch = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
            batch["rng"] = np.random.default_rng(np_rng_seed + step)
            chunk = sampler.sample(rnd, default_chunk)
            lr = cfg.lr * lr_factor(step, cfg)
            if rewarm_from >= 0:
                lr *= min(1.0, (step - rewarm_from + 1) / max(cfg.rewarm_steps, 1))
            for g in opt.param_groups:
                g["lr"] = lr
            objective.before_step(step)
            with amp:
                loss, metrics = wrapped(batch, chunk, step)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            gnorm = torch.nn.utils.clip_grad_norm_(params, cfg.clip_norm) if cfg.clip_norm > 0 else torch.tensor(0.0)
            if torch.isfinite(gnorm):
                opt.step()
            step += 1
            audio_s += float(batch["lengths"].sum()) / 16000 * world
            if rank == 0 and (step % cfg.log_every == 0 or step == cfg.max_steps):
                el = time.time() - t0
                row = {"step": step, "loss": float(loss.detach()), "lr": opt.param_groups[0]["lr"],
                       "grad_norm": float(gnorm), "chunk": list(chunk), "audio_per_s": audio_s / max(el, 1e-9),
                       "elapsed_s": el, **{k: float(v) for k, v in metrics.items()}}
                with open(log_path, "a") as f:
                    f.write(json.dumps(row) + "\n")
                if bar is not None:
                    bar.set_postfix(loss=f"{row['loss']:.3f}", audio_x=f"{row['audio_per_s']:.0f}")
            if bar is not None:
                bar.update(1)
            if evaluator is not None and cfg.eval_every and step % cfg.eval_every == 0 and rank == 0:
                objective.eval()
                res = evaluator(model)
                objective.train()
                with open(log_path, "a") as f:
                    f.write(json.dumps({"step": step, **{f"dev_{k}": v for k, v in res.items()}}) + "\n")
                if bar is not None:
                    bar.write(f"step {step}: " + " ".join(f"{k}={v:.4f}" for k, v in res.items()))
            if step % cfg.ckpt_every == 0:
                checkpoint("last")
            if cfg.max_minutes and (time.time() - t0) / 60 > cfg.max_minutes:
                stop_reason = "max_minutes"
                break
        if stop_reason != "max_steps":
            break
        epoch += 1
    if bar is not None:
        bar.close()
    checkpoint("last")
    if rank == 0:
        if stop_reason == "max_steps":
            save_checkpoint(out / "final", model, {**meta, "step": step}, heads=heads)
        plot_curve(log_path, out / "loss.png", out.name)
    if world > 1:
        dist.barrier()
    return {"step": step, "stop": stop_reason, "elapsed_s": time.time() - t0,
            **{k: float(v) for k, v in metrics.items()}}
