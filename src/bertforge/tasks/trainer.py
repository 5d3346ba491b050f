"""One fine-tuning loop for every task: AdamW with 10% warm-up then linear decay, gradient
accumulation, length-bucketed batches, evaluation every epoch (or every N steps), the best
checkpoint kept by the task's metric, bf16 autocast, and DDP when launched with torchrun."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from bertforge.errors import ConfigError, InputError
from bertforge.tasks.batching import autocast, collate, length_bucketed_batches

log = logging.getLogger(__name__)

METRICS_FILE, CURVES_FILE = "metrics.json", "curves.png"


@dataclass
class FinetuneArgs:
    output_dir: str
    epochs: float = 3
    batch_size: int = 32  # examples per micro-batch and process; a step is batch_size × accumulation × processes
    learning_rate: float = 3e-5
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    gradient_accumulation_steps: int = 1
    max_grad_norm: float = 1.0
    eval_steps: int | None = None  # None: evaluate at the end of every epoch
    max_steps: int | None = None  # stop early (quick runs on a subset); None: epochs decide
    eval_batch_size: int = 64
    seed: int = 42
    bf16: bool = False
    device: str = "cpu"
    progress: bool = True

    def __post_init__(self):
        checks = [(self.epochs > 0, "epochs must be positive"), (self.batch_size >= 1, "batch_size must be at least 1"),
                  (self.learning_rate > 0, "learning_rate must be positive"),
                  (0 <= self.warmup_ratio < 1, "warmup_ratio must be in [0, 1)"),
                  (self.gradient_accumulation_steps >= 1, "gradient_accumulation_steps must be at least 1"),
                  (self.eval_steps is None or self.eval_steps >= 1, "eval_steps must be at least 1"),
                  (self.max_steps is None or self.max_steps >= 1, "max_steps must be at least 1")]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _distributed() -> tuple[int, int, int]:
    """(rank, world size, local rank); initialises the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, 0
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() and os.environ.get("LOCAL_RANK") else "gloo")
    return dist.get_rank(), world, int(os.environ.get("LOCAL_RANK", "0"))


def resolve_device(name: str, local_rank: int) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device {name!r} is not a torch device (use cpu or cuda)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {name}: CUDA is not available on this machine")
        if device.index is None:
            device = torch.device("cuda", local_rank)
    return device


def _write_json_atomic(path: Path, data) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def plot_curves(history: dict, metric: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    if history["train_loss"]:
        steps, losses = zip(*history["train_loss"])
        left.plot(steps, losses, linewidth=0.8)
    left.set(xlabel="step", ylabel="training loss", title="training loss")
    if history["evaluations"]:
        right.plot([e["step"] for e in history["evaluations"]], [e[metric] for e in history["evaluations"]], "o-")
    right.set(xlabel="step", ylabel=metric, title=f"validation {metric}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def finetune(model, task, train_features: list[dict], eval_set, args: FinetuneArgs, tokenizer=None) -> dict:
    """Train `model` (a task head from bertforge.model) on `train_features`; evaluate `eval_set` with
    `task.evaluate`, keep the best model by `task.metric` in `args.output_dir`, and write
    metrics.json and curves.png there. Returns the metrics dictionary."""
    if not train_features:
        raise InputError("the training set is empty")
    if eval_set is not None and not eval_set.features:
        raise InputError("the validation set is empty")
    rank, world, local_rank = _distributed()
    device = resolve_device(args.device, local_rank)
    output = Path(args.output_dir)
    if rank == 0:
        output.mkdir(parents=True, exist_ok=True)
    seed_everything(args.seed)
    model.to(device).train()
    trained = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
        if world > 1 else model

    lengths = [len(f["input_ids"]) for f in train_features]
    micro_batches_per_epoch = len(length_bucketed_batches(lengths, args.batch_size, args.seed)) // world
    if micro_batches_per_epoch < args.gradient_accumulation_steps:
        raise ConfigError(f"{len(train_features)} training examples make {micro_batches_per_epoch} batches of "
                          f"{args.batch_size} per process, fewer than gradient_accumulation_steps "
                          f"{args.gradient_accumulation_steps}")
    steps_per_epoch = micro_batches_per_epoch // args.gradient_accumulation_steps
    total_steps = max(1, round(steps_per_epoch * args.epochs))
    if args.max_steps is not None:
        total_steps = min(total_steps, args.max_steps)
    warmup = int(total_steps * args.warmup_ratio)

    no_decay = [p for n, p in model.named_parameters() if p.ndim == 1]  # biases and LayerNorm weights
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=args.learning_rate)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: step / max(1, warmup) if step < warmup
        else max(0.0, (total_steps - step) / max(1, total_steps - warmup)))

    history = {"task": type(task).__name__, "metric": task.metric, "args": asdict(args), "processes": world,
               "train_examples": len(train_features), "total_steps": total_steps, "train_loss": [], "evaluations": [],
               "best": None}
    best_value = -float("inf")

    def evaluate(step: int, epoch: float) -> None:
        nonlocal best_value
        if eval_set is None or rank != 0:
            return
        started = time.perf_counter()
        metrics = task.evaluate(model, eval_set, args.eval_batch_size, args.bf16)
        entry = {"step": step, "epoch": round(epoch, 3), **metrics, "eval_seconds": round(time.perf_counter() - started, 2)}
        history["evaluations"].append(entry)
        log.info("step %d: %s", step, {k: v for k, v in entry.items() if not isinstance(v, dict)})
        tqdm.write(f"step {step} epoch {epoch:.2f}: {task.metric} = {metrics[task.metric]:.4f}")
        if metrics[task.metric] > best_value:
            best_value = metrics[task.metric]
            history["best"] = entry
            model.save_pretrained(output, tokenizer)  # weights written to a temp file, then renamed
        _write_json_atomic(output / METRICS_FILE, history)  # so far: an interrupted run still leaves its figures

    step, seen, running, started = 0, 0, None, time.perf_counter()
    progress = tqdm(total=total_steps, desc="fine-tuning", disable=not args.progress or rank != 0)
    epoch = 0
    while step < total_steps:
        batches = length_bucketed_batches(lengths, args.batch_size, args.seed + epoch)
        batches = batches[rank::world][:micro_batches_per_epoch]
        for group_start in range(0, len(batches) - args.gradient_accumulation_steps + 1, args.gradient_accumulation_steps):
            group = batches[group_start:group_start + args.gradient_accumulation_steps]
            step_loss = 0.0
            for i, indices in enumerate(group):
                batch = {k: v.to(device) for k, v in collate([train_features[j] for j in indices]).items()}
                last = i == len(group) - 1
                sync = trained.no_sync() if world > 1 and not last else contextlib.nullcontext()
                with sync, autocast(device, args.bf16):
                    loss = trained(**batch).loss / len(group)
                loss.backward()
                step_loss += float(loss.detach())
                seen += len(indices) * world
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            running = step_loss if running is None else 0.95 * running + 0.05 * step_loss
            history["train_loss"].append([step, round(step_loss, 5)])
            progress.update(1)
            progress.set_postfix(loss=f"{running:.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
            if args.eval_steps and step % args.eval_steps == 0:
                evaluate(step, step / steps_per_epoch)
            if step >= total_steps:
                break
        epoch += 1
        # Every epoch, or with eval_steps every N steps and once more at the end.
        if not args.eval_steps or (step >= total_steps and step % args.eval_steps):
            evaluate(step, step / steps_per_epoch)
    progress.close()
    elapsed = time.perf_counter() - started
    history.update(train_seconds=round(elapsed, 2), examples_seen=seen,
                   examples_per_second=round(seen / elapsed, 2))
    if rank == 0:
        if eval_set is None:
            model.save_pretrained(output, tokenizer)
        _write_json_atomic(output / METRICS_FILE, history)
        plot_curves(history, task.metric, output / CURVES_FILE)
    if world > 1:
        dist.barrier()
    return history

