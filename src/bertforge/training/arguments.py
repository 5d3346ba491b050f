"""TrainingArguments: the settings every trainer shares, each checked when given (type and range), and which of
them a checkpoint must match to be continued."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, fields

from bertforge.errors import ConfigError
from bertforge.training.optim import SCHEDULES

# The annotations __post_init__ checks (a settings class's other annotations are its own to check).
FIELD_TYPES = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str, os.PathLike)}


def _check_types(settings) -> None:
    """Each setting of the type its annotation names: from Python, "16" would fail deep inside training,
    bf16="no" would turn bf16 on, and a NaN rate would train to NaN without a word."""
    for field in fields(settings):
        value, kinds = getattr(settings, field.name), [kind.strip() for kind in str(field.type).split("|")]
        if (value is None and "None" in kinds) or any(k not in FIELD_TYPES and k != "None" for k in kinds):
            continue
        allowed = tuple(t for kind in kinds for t in FIELD_TYPES.get(kind, ()))
        if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
            raise ConfigError(f"{field.name} must be {' or '.join(kinds)}, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{field.name} must be a finite number, got {value}")


@dataclass(kw_only=True)
class TrainingArguments:
    """Settings every trainer shares; the option names are the CLI's (`--batch-size`, ...)."""

    output_dir: str
    max_steps: int | None = None
    batch_size: int = 32  # examples per optimiser step, over all processes and micro-batches
    gradient_accumulation_steps: int = 1
    learning_rate: float | None = 1e-4  # None: the run must pick one (finetune does, from the width)
    warmup_ratio: float = 0.1
    warmup_steps: int | None = None  # overrides warmup_ratio
    lr_scheduler_type: str = "linear"  # the decay after warm-up: "linear" or "cosine" (optim.SCHEDULES)
    weight_decay: float = 0.01
    layer_lr_decay: float | None = 1.0  # below 1: each layer below the heads at this times the rate above it
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-6
    max_grad_norm: float = 1.0
    ema_decay: float = 0.0  # above 0: evaluate and keep the moving average of the weights, not the last ones
    bf16: bool = False
    # Keep only each layer's input in the forward pass and recompute the rest in the backward pass: the same
    # weights (dropout's random state is replayed) in less memory, for more time per step.
    gradient_checkpointing: bool = False
    seed: int = 42
    device: str = "cpu"
    eval_every: int | None = None
    log_every: int = 1
    checkpoint_every: int = 500
    overwrite: bool = False
    progress: bool = True

    # Settings that may change between a run and its resumption (they do not change the weights).
    RESUMABLE_CHANGES = ("output_dir", "device", "eval_every", "log_every", "checkpoint_every", "overwrite",
                         "progress", "gradient_checkpointing")

    def __post_init__(self):
        _check_types(self)
        checks = [
            (self.max_steps is None or self.max_steps >= 1, "max_steps must be at least 1"),
            (self.batch_size >= 1, "batch_size must be at least 1"),
            (self.gradient_accumulation_steps >= 1, "gradient_accumulation_steps must be at least 1"),
            (self.gradient_accumulation_steps < 1 or self.batch_size % self.gradient_accumulation_steps == 0,
             f"--batch-size {self.batch_size} must be a multiple of --gradient-accumulation-steps "
             f"{self.gradient_accumulation_steps}: each step adds up that many micro-batches of equal size"),
            (self.learning_rate is None or self.learning_rate > 0, "learning_rate must be positive"),
            (0 <= self.warmup_ratio < 1, "warmup_ratio must be in [0, 1)"),
            (self.lr_scheduler_type in SCHEDULES,
             f"lr_scheduler_type must be one of {', '.join(SCHEDULES)}, got {self.lr_scheduler_type!r}"),
            (0 <= self.ema_decay < 1, f"ema_decay must be in [0, 1), got {self.ema_decay}"),
            (self.weight_decay >= 0, f"weight_decay must be 0 or more, got {self.weight_decay}"),
            (0 <= self.adam_beta1 < 1 and 0 <= self.adam_beta2 < 1,
             f"adam_beta1 and adam_beta2 must be in [0, 1), got {self.adam_beta1} and {self.adam_beta2}"),
            (self.adam_epsilon > 0, f"adam_epsilon must be positive, got {self.adam_epsilon}"),
            (self.max_grad_norm > 0, f"max_grad_norm must be positive, got {self.max_grad_norm}"),
            (self.layer_lr_decay is None or 0 < self.layer_lr_decay <= 1, "layer_lr_decay must be in (0, 1]"),
            (self.warmup_steps is None or self.warmup_steps >= 0, "warmup_steps must be at least 0"),
            (self.eval_every is None or self.eval_every >= 1, "eval_every must be at least 1"),
            (min(self.log_every, self.checkpoint_every) >= 1, "log_every and checkpoint_every must be at least 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    def warmup(self, total_steps: int) -> int:
        steps = self.warmup_steps if self.warmup_steps is not None else round(self.warmup_ratio * total_steps)
        if steps > total_steps:
            raise ConfigError(f"warmup_steps {steps} is more than the {total_steps} training steps")
        return steps

    def settings(self) -> dict:
        """What must be equal for a checkpoint to continue this run exactly."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in self.RESUMABLE_CHANGES}
