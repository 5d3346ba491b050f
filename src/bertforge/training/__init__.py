"""The one training engine shared by pre-training, fine-tuning and distillation: devices and process
groups, optimiser and schedule, atomic checkpoints, logs, stopping on Ctrl-C, and the loop."""

from bertforge.training.distributed import (
    Processes,
    configure_torch,
    is_main_process,
    resolve_device,
    seed_everything,
)
from bertforge.training.arguments import TrainingArguments
from bertforge.training.engine import BatchSource, Evaluator, Objective, Result, run
from bertforge.training.interrupt import TrainingInterrupted
from bertforge.training.optim import build_optimizer, learning_rate_factor

__all__ = ["BatchSource", "Evaluator", "Objective", "Processes", "Result", "TrainingArguments", "build_optimizer",
           "TrainingInterrupted", "configure_torch", "is_main_process", "learning_rate_factor", "resolve_device", "run",
           "seed_everything"]
