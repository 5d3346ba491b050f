"""The training loop every trainer runs: micro-batches and gradient accumulation, bf16 autocast,
gradient clipping, the learning-rate schedule, data-parallel processes, logs, a periodic
evaluation hook, and checkpoints from which a run continues exactly.

A trainer supplies four things:
- a model factory, called after the one seeding point so that fresh weights (a new task head, a
  model from scratch) are the same in every run with the same seed;
- a `BatchSource` whose batches are a pure function of the step number: the data position
  of a checkpoint is its step, and a run on N processes sees the data of a run on one;
- an `Objective`: the loss of a micro-batch as its share of the global batch's mean, and the
  statistics that are summed and logged (an objective that runs a module of its own beside the model,
  a distillation teacher, also has `to(device)`: the engine puts that module on the process's device);
- optionally an `Evaluator`, called on the main process every `eval_every` steps.

Ctrl-C (or SIGTERM) finishes the step under way, saves a checkpoint and raises `TrainingInterrupted`
(`interrupt.py`), so a stopped run resumes where it stopped rather than at its last periodic checkpoint.

With `ema_decay`, the model evaluated, returned and checkpointed beside the trained one is the exponential
moving average of its weights after each step (torch's `AveragedModel`; the first step's weights start it).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Protocol

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from bertforge.errors import CheckpointError, ConfigError
from bertforge.io.atomic import make_directory
from bertforge.progress import progress_bar
from bertforge.training import state as checkpoints
from bertforge.training.arguments import TrainingArguments
from bertforge.training.distributed import Processes, seed_everything
from bertforge.training.interrupt import StopRequests, TrainingInterrupted
from bertforge.training.logs import EVAL_LOG, TRAIN_LOG, CsvLog
from bertforge.training.optim import build_optimizer, learning_rate_factor, set_learning_rate

logger = logging.getLogger(__name__)


# Settings added after checkpoints were first written, with the value the runs before them had.
SETTINGS_ADDED_LATER = {"layer_lr_decay": 1.0, "lr_scheduler_type": "linear", "group_by_length": True,
                        "label_smoothing_factor": 0.0, "freeze_word_embeddings": False, "linear_probe_first": False,
                        "ema_decay": 0.0, "reinit_layers": 0, "rdrop_alpha": 0.0,
                        "attention_weight": 0.0}


# Recorded in checkpoints only since: one without them resumes whatever they are now.
RECORDED_LATER = ("eval_features", "start")


class BatchSource(Protocol):
    def micro_batches(self, step: int, rank: int, world_size: int, accumulation: int) -> list[dict[str, torch.Tensor]]:
        """This process's micro-batches of optimiser step `step` (0-based), on the CPU."""


class Objective(Protocol):
    statistics: tuple[str, ...]  # names of the sums `loss` returns, in order

    def counts(self, batch: dict[str, torch.Tensor]) -> list[float]:
        """What the batch's losses are averages over (examples, masked tokens, ...)."""

    def loss(self, model, batch: dict[str, torch.Tensor], totals: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
        """(this micro-batch's share of the global batch's loss given the global `totals` of
        `counts`, a float64 vector of statistics to sum over the step)."""

    def summary(self, interval: dict[str, float], seconds: float, cumulative: dict[str, float]) -> dict[str, float]:
        """The logged values (the first one is the loss) from the statistics summed over the
        steps since the last log row and over the whole run."""

    # Optional: `to(device: torch.device) -> None`, called once before the first step (see the module's docstring).


class Evaluator(Protocol):
    def __call__(self, model, step: int) -> dict:
        """Scores at `step`; the numbers go to the evaluation log."""

    def state(self) -> dict: ...  # JSON, kept in checkpoints

    def load_state(self, state: dict) -> None: ...


# Digests whose two values would tell a user nothing: what differs instead.
DIGESTS = {"train_features": "the training examples differ (--train, --train-limit, --hold-out, --max-length)",
           "eval_features": "the validation examples differ (--validation, --hold-out, --max-length)"}


def _differences(old, new, prefix="") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        return [d for key in sorted(set(old) | set(new))
                for d in _differences(old.get(key), new.get(key), f"{prefix}{key}.")]
    name = prefix.rstrip(".")
    if old == new:
        return []
    return [f"{name}: {DIGESTS[name]}" if name in DIGESTS and old and new else f"{name}: checkpoint {old!r}, now {new!r}"]


def check_run_directory(output_dir: Path, resume_from, overwrite: bool) -> bool:
    """A new run needs an empty (or absent) directory: another run's checkpoints and logs are only
    continued with --resume, or deleted with --overwrite. Whether the directory is to be deleted."""
    if resume_from is not None and overwrite:  # --resume went first and the --overwrite was silently dropped
        raise ConfigError(f"--resume {resume_from} continues the run, --overwrite deletes it and starts afresh: "
                          f"give one of them")
    if resume_from is None and output_dir.is_dir() and any(output_dir.iterdir()):
        # --resume and --overwrite both need a run there: neither is offered for someone else's files
        if not ((output_dir / TRAIN_LOG).exists() or checkpoints.has_checkpoint(output_dir)):
            raise ConfigError(f"{output_dir} is not empty and holds no training run (no {TRAIN_LOG}, no "
                              f"{checkpoints.CHECKPOINT_DIR}/), so it is neither continued nor deleted: give a new or "
                              f"empty directory")
        if not overwrite:
            raise ConfigError(f"{output_dir} holds a training run: give --resume {output_dir} to continue it, "
                              f"or --overwrite to replace it")
        return True
    return False


@dataclass
class Result:
    model: torch.nn.Module
    step: int
    last: dict  # the last training log row
    train_log: list[dict]
    eval_log: list[dict]
    cumulative: dict[str, float]
    seconds: float  # training time, this session and the ones it resumed


def optimizer_step(wrapped, optimizer: torch.optim.Optimizer, micro_batches: list[dict[str, torch.Tensor]],
                   objective: Objective, processes: Processes, bf16: bool, max_grad_norm: float
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimiser step on this process's micro-batches (`wrapped`: the model, or its DDP wrapper), at the
    learning rate the optimiser holds. Returns the step's statistics summed over all processes and the
    gradient norm before clipping (logged as transformers logs it: how often max_grad_norm cuts the step;
    it stays a tensor, so steps that log nothing wait for no device)."""
    model = wrapped.module if isinstance(wrapped, DistributedDataParallel) else wrapped
    # Each loss is a sum over the global batch divided by its global count, so accumulation and
    # DDP's gradient averaging (undone by × world size) give the gradient of one big batch.
    counts = torch.tensor([objective.counts(batch) for batch in micro_batches], dtype=torch.float64).sum(0)
    totals = processes.all_sum(counts).tolist()
    statistics = torch.zeros(len(objective.statistics), dtype=torch.float64)
    for i, batch in enumerate(micro_batches):
        is_last = i == len(micro_batches) - 1
        sync = contextlib.nullcontext() if is_last or wrapped is model else wrapped.no_sync()
        with sync:
            with torch.autocast(processes.device.type, dtype=torch.bfloat16, enabled=bf16):
                loss, values = objective.loss(wrapped, batch, totals)
            (loss * processes.world_size).backward()
        statistics += values
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return processes.all_sum(statistics), grad_norm


def run(args: TrainingArguments, processes: Processes, build_model: Callable[[], torch.nn.Module],
        batches: BatchSource, objective: Objective, total_steps: int, fingerprint: dict,
        resume_from: str | Path | None = None, evaluator: Evaluator | None = None,
        description: str = "training") -> Result:
    """Train `build_model()` for `total_steps` optimiser steps (continuing the checkpoint at
    `resume_from` when given). `fingerprint` is what a checkpoint must match to be continued."""
    if args.learning_rate is None:  # checked before the output directory is touched
        raise ConfigError("learning_rate is None: give a learning rate (only fine-tuning picks one from the "
                          "model's width)")
    per_process, remainder = divmod(args.batch_size, processes.world_size * args.gradient_accumulation_steps)
    if remainder or per_process == 0:
        raise ConfigError(f"--batch-size {args.batch_size} must be a multiple of processes × --gradient-accumulation-"
                          f"steps ({processes.world_size} × {args.gradient_accumulation_steps})")
    output_dir = Path(args.output_dir)
    replace = check_run_directory(output_dir, resume_from, args.overwrite)
    # The process count is not part of it: batches are split by rank from one global order, so a run
    # continues on more or fewer processes (or machines) with the same data and optimiser state.
    fingerprint = {**fingerprint, "total_steps": total_steps}
    warmup = args.warmup(total_steps)

    checkpoint = None
    if resume_from is not None:  # read first: a wrong --resume fails before any work
        checkpoint = checkpoints.Checkpoint(resume_from, state=checkpoints.RUN_STATE)
        # world_size and the settings now free to change (data_dir) were recorded by earlier versions
        saved = {k: v for k, v in checkpoint["run"].items()
                 if k != "world_size" and (k in fingerprint or k not in args.RESUMABLE_CHANGES)}
        saved = {**{k: v for k, v in SETTINGS_ADDED_LATER.items() if k in fingerprint}, **saved}
        differences = _differences(saved, {k: v for k, v in fingerprint.items() if k in saved or k not in RECORDED_LATER})
        if differences:
            raise CheckpointError(f"--resume {resume_from} was made with another configuration: "
                                  + "; ".join(differences))
        if checkpoint["step"] > total_steps:  # the settings match, so the step was edited: the run would end unrun
            limit = f" (--max-steps {args.max_steps})" if args.max_steps == total_steps else ""
            raise CheckpointError(f"{checkpoint.name}: {checkpoint.directory / checkpoints.MANIFEST}: 'step' is "
                                  f"{checkpoint['step']}, past the {total_steps} steps the run takes{limit}")
        if Path(resume_from).resolve() != output_dir.resolve():  # its best model and logs are there, not here
            raise ConfigError(f"--resume {resume_from} continues the run in that directory: give it as the output "
                              f"directory too ({output_dir} is another), or copy the run there first")

    # The one seeding point: before the model exists, the same in every process (same weights).
    seed_everything(args.seed)
    model = build_model().to(processes.device).train()
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    if hasattr(objective, "to"):  # its own modules (a teacher) run where the model does: this process's device
        objective.to(processes.device)
    optimizer = build_optimizer(model, args.learning_rate, args.weight_decay, (args.adam_beta1, args.adam_beta2),
                                args.adam_epsilon, layer_lr_decay=args.layer_lr_decay)
    averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(args.ema_decay)) if args.ema_decay else None
    # Only now, when the settings, the checkpoint and the model have all been accepted: a run that fails
    # before leaves no empty directory behind, and an --overwrite deletes nothing.
    if processes.is_main:
        if replace:
            shutil.rmtree(output_dir)
        make_directory(output_dir)
    processes.barrier()
    kept = averaged.module if averaged is not None else model  # what is evaluated and returned
    seed_everything(args.seed + processes.rank)  # dropout differs between processes
    step, elapsed_before = 0, 0.0
    cumulative = torch.zeros(len(objective.statistics), dtype=torch.float64)
    if checkpoint is not None:
        checkpoint.load_model(model)
        checkpoint.load_optimizer(optimizer)
        if averaged is not None:
            checkpoint.load_averaged(averaged)
        if len(checkpoint["rng"]) == processes.world_size:
            checkpoints.set_rng_state(checkpoint["rng"][processes.rank], processes.device)
        else:  # another process count: each process's dropout draws start afresh, deterministically
            logger.info("resuming %d processes' run on %d", len(checkpoint["rng"]), processes.world_size)
            seed_everything(args.seed + processes.rank + checkpoint["step"])
        step, elapsed_before = checkpoint["step"], checkpoint["elapsed_seconds"]
        recorded = checkpoint["cumulative"]  # an objective's statistics added later are appended: they start at 0
        cumulative[:len(recorded)] = torch.tensor(recorded, dtype=torch.float64)
        if evaluator is not None and checkpoint["evaluator"] is not None:
            evaluator.load_state(checkpoint["evaluator"])

    wrapped = model
    if processes.world_size > 1:
        device = processes.device
        wrapped = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    logs = None
    if processes.is_main:
        keep = step if resume_from is not None else None
        logs = CsvLog(output_dir / TRAIN_LOG, keep), CsvLog(output_dir / EVAL_LOG, keep)

    started = time.perf_counter()

    def elapsed() -> float:
        return elapsed_before + time.perf_counter() - started

    def named(totals: torch.Tensor) -> dict[str, float]:
        return dict(zip(objective.statistics, totals.tolist()))

    def save() -> None:
        rng = processes.gather(checkpoints.rng_state(processes.device))  # a collective: every process takes part
        if processes.is_main:
            checkpoints.save_checkpoint(output_dir / checkpoints.CHECKPOINT_DIR, step, model, optimizer, {
                "run": fingerprint, "args": asdict(args), "elapsed_seconds": elapsed(),
                "cumulative": cumulative.tolist(), "rng": rng,
                "evaluator": evaluator.state() if evaluator is not None else None}, averaged)

    def stop_requested() -> bool:
        """Whether any process was asked to stop: all of them must save and stop after the same step."""
        if processes.world_size == 1:
            return stop.requested
        return bool(processes.all_sum(torch.tensor([float(stop.requested)])).item())

    bar = progress_bar(total=total_steps, initial=step, desc=description, unit="step",
               disable=not (args.progress and processes.is_main))
    interval, interval_start, last = torch.zeros_like(cumulative), time.perf_counter(), {}
    with StopRequests() as stop:
        while step < total_steps:
            micro_batches = [{key: value.to(processes.device, non_blocking=True) for key, value in batch.items()}
                             for batch in batches.micro_batches(step, processes.rank, processes.world_size,
                                                                args.gradient_accumulation_steps)]
            learning_rate = args.learning_rate * learning_rate_factor(step, warmup, total_steps, args.lr_scheduler_type)
            set_learning_rate(optimizer, learning_rate)
            statistics, grad_norm = optimizer_step(wrapped, optimizer, micro_batches, objective, processes, args.bf16,
                                                   args.max_grad_norm)
            if averaged is not None:
                averaged.update_parameters(model)
            step += 1
            interval += statistics
            cumulative += statistics
            bar.update(1)

            if processes.is_main and (step % args.log_every == 0 or step == total_steps):
                now = time.perf_counter()
                values = objective.summary(named(interval), now - interval_start, named(cumulative))
                last = {"step": step, **values, "learning_rate": learning_rate, "grad_norm": float(grad_norm),
                        "elapsed_seconds": round(elapsed(), 2)}
                logs[0].write(last)
                # shown at the bar's next timed redraw: a redraw per logged step would flood a log file
                bar.set_postfix({k: f"{v:.4g}" for k, v in list(values.items())[:3]}, lr=f"{learning_rate:.2e}",
                                refresh=False)
                interval, interval_start = torch.zeros_like(cumulative), time.perf_counter()
            if evaluator is not None and processes.is_main and args.eval_every \
                    and (step % args.eval_every == 0 or step == total_steps):
                scores = evaluator(kept, step)
                logs[1].write({"step": step, **{k: v for k, v in scores.items() if isinstance(v, (int, float))},
                               "elapsed_seconds": round(elapsed(), 2)})
                logger.info("step %d evaluation: %s", step, scores)
            stopping = stop_requested()
            if step % args.checkpoint_every == 0 or stopping:
                save()
            if stopping:
                bar.close()
                processes.finish()  # every process is here: the group ends cleanly
                raise TrainingInterrupted(f"stopped at step {step} of {total_steps}: the checkpoint is saved in "
                                          f"{output_dir / checkpoints.CHECKPOINT_DIR}; the same command with "
                                          f"--resume {output_dir} continues the run")
    bar.close()
    processes.barrier()
    return Result(kept, step, last, logs[0].rows() if logs else [], logs[1].rows() if logs else [],
                  named(cumulative), elapsed())
