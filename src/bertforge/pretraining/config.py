"""The settings of a pre-training run."""

from __future__ import annotations

from dataclasses import dataclass

from bertforge.errors import ConfigError
from bertforge.training.arguments import TrainingArguments


@dataclass(kw_only=True)
class TrainingConfig(TrainingArguments):
    data_dir: str
    model_size: str = "mini"
    init_from: str | None = None  # continue pre-training a checkpoint (its config sets the size)
    max_steps: int = 1000
    learning_rate: float = 1e-4
    warmup_ratio: float = 0.01  # the paper's 10k of 1M steps
    dropout: float = 0.1
    eval_data_dir: str | None = None
    eval_every: int = 500
    eval_instances: int = 2000
    log_every: int = 10

    # The data is recognised by what it holds (`fingerprint`), not where it is: a run resumes after a move.
    RESUMABLE_CHANGES = TrainingArguments.RESUMABLE_CHANGES + ("data_dir", "eval_data_dir", "eval_instances")

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"--dropout {self.dropout}: must be in [0, 1)")
        if self.eval_instances < 1:
            raise ConfigError(f"--eval-instances {self.eval_instances}: must be at least 1")

    def fingerprint(self, data) -> dict:
        """What must be equal for a checkpoint to continue this run exactly."""
        settings = self.settings()
        settings["data"] = {key: data.index[key] for key in ("instances", "vocab_fingerprint", "options")}
        return settings
