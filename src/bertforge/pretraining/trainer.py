"""Pre-training: BertForPreTraining on MLM + NSP, run by the training engine.

One optimiser step consumes one global batch: `batch_size` instances, split over the processes
(`torchrun`) and over gradient-accumulation micro-batches. Batch k of epoch e is a fixed slice of
a permutation seeded by (seed, e) and masks are seeded per instance, so the data a step sees
depends only on the step number: a checkpoint's data position is its step, and a run on N
processes sees the same data as a run on one.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from bertforge.errors import ConfigError
from bertforge.io.atomic import write_json
from bertforge.model import BertConfig
from bertforge.model.heads import BertForPreTraining
from bertforge.pretraining.config import TrainingConfig
from bertforge.pretraining.evaluation import STATISTICS, averages, evaluate, step_statistics, to_tensors
from bertforge.pretraining.shards import PretrainingData
from bertforge.training import Processes, run
from bertforge.training.logs import plot_curves

CURVES_FILE = "training_curves.png"


class BatchOrder:
    """The instances of each optimiser step: step → (epoch, global indices); this process's part."""

    def __init__(self, num_instances: int, batch_size: int, seed: int):
        if num_instances < batch_size:
            raise ConfigError(f"--batch-size {batch_size} is larger than the {num_instances} prepared instances")
        self.num_instances, self.batch_size, self.seed = num_instances, batch_size, seed
        self.steps_per_epoch = num_instances // batch_size  # the incomplete last batch is dropped
        self._epoch, self._permutation = -1, None

    def global_batch(self, step: int) -> tuple[int, np.ndarray]:
        epoch, position = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            self._epoch = epoch
            self._permutation = np.random.default_rng([self.seed, epoch]).permutation(self.num_instances)
        return epoch, self._permutation[position * self.batch_size:(position + 1) * self.batch_size]


class InstanceBatches:
    """The engine's batch source: prepared instances in BatchOrder, masked for their epoch."""

    def __init__(self, data: PretrainingData, order: BatchOrder):
        self.data, self.order = data, order

    def micro_batches(self, step: int, rank: int, world_size: int, accumulation: int) -> list[dict[str, torch.Tensor]]:
        epoch, indices = self.order.global_batch(step)
        mine = np.array_split(indices, world_size)[rank]
        return [to_tensors(self.data.batch(part, epoch)) for part in np.array_split(mine, accumulation)]


class PretrainingObjective:
    """MLM loss averaged over the global batch's masked tokens plus NSP loss over its sequences."""

    statistics = STATISTICS

    def counts(self, batch):
        return [int((batch["labels"] != -100).sum()), len(batch["next_sentence_label"])]

    def loss(self, model, batch, totals):
        masked_total, sequences_total = totals
        output = model(**batch, labelled_logits_only=True)
        loss = (output.mlm_loss * (output.mlm_labels.numel() / max(masked_total, 1))
                + output.nsp_loss * (len(batch["next_sentence_label"]) / sequences_total))
        return loss, step_statistics(output, batch)

    def summary(self, interval, seconds, cumulative):
        return {**averages(interval), "tokens_per_second": interval["tokens"] / max(seconds, 1e-9),
                "tokens_seen": int(cumulative["tokens"])}


class HeldOutEvaluator:
    def __init__(self, data: PretrainingData, device: torch.device, batch_size: int, instances: int, bf16: bool):
        self.data, self.device, self.batch_size, self.instances, self.bf16 = data, device, batch_size, instances, bf16

    def __call__(self, model, step: int) -> dict:
        return evaluate(model, self.data, self.device, self.batch_size, self.instances, self.bf16)

    def state(self) -> dict:
        return {}  # the scores are in the evaluation log; nothing else to carry over

    def load_state(self, state: dict) -> None:
        pass


def build_model(config: TrainingConfig, vocab_size: int, max_seq_length: int) -> BertForPreTraining:
    if config.init_from is not None:
        # Heads the checkpoint lacks (an encoder-only model has no MLM/NSP weights) start from
        # the seeded initialisation, so the run stays deterministic.
        model = BertForPreTraining.from_pretrained(config.init_from, hidden_dropout_prob=config.dropout,
                                                   attention_probs_dropout_prob=config.dropout)
        if model.config.max_position_embeddings < max_seq_length:
            raise ConfigError(f"--init-from {config.init_from}: {model.config.max_position_embeddings} positions, "
                              f"fewer than the data's max_seq_length {max_seq_length}")
        return model
    try:
        model_config = BertConfig.from_size(config.model_size, vocab_size=vocab_size,
                                            hidden_dropout_prob=config.dropout,
                                            attention_probs_dropout_prob=config.dropout,
                                            max_position_embeddings=max(512, max_seq_length))
    except (KeyError, ValueError) as e:
        raise ConfigError(f"--model-size {config.model_size!r}: {e}") from None
    return BertForPreTraining(model_config)


def train_on_shards(config: TrainingConfig, processes: Processes, data: PretrainingData, build, objective,
                    fingerprint: dict, resume_from: str | Path | None, description: str):
    """The engine on prepared shards (`config.data_dir`), with the held-out evaluation of
    `config.eval_data_dir` when given: pre-training and general distillation both run here.
    Returns the engine's result and the last held-out scores (or None)."""
    eval_data = PretrainingData(config.eval_data_dir) if config.eval_data_dir else None
    if eval_data is not None and eval_data.index["vocab_fingerprint"] != data.index["vocab_fingerprint"]:
        raise ConfigError(f"--eval-data {config.eval_data_dir} was prepared with another vocabulary than "
                          f"{config.data_dir}")
    per_process = max(1, config.batch_size // (processes.world_size * config.gradient_accumulation_steps))
    evaluator = HeldOutEvaluator(eval_data, processes.device, per_process, config.eval_instances, config.bf16) \
        if eval_data is not None else None
    batches = InstanceBatches(data, BatchOrder(len(data), config.batch_size, data.seed + config.seed))
    result = run(config, processes, build, batches, objective, config.max_steps, fingerprint, resume_from, evaluator,
                 description=description)
    scores = None
    if result.eval_log:
        scores = {k: v for k, v in result.eval_log[-1].items() if k not in ("step", "elapsed_seconds")}
    return result, scores


def train(config: TrainingConfig, resume_from: str | Path | None = None) -> dict:
    """Run (or continue) pre-training; returns the last logged metrics and the final model path."""
    processes = Processes.start(config.device)
    data = PretrainingData(config.data_dir)
    tokenizer = data.tokenizer()
    if config.init_from is not None:
        data.check_model(config.init_from, "--init-from")
    result, scores = train_on_shards(
        config, processes, data, lambda: build_model(config, len(tokenizer), data.options.max_seq_length),
        PretrainingObjective(), config.fingerprint(data), resume_from, "pre-training")

    output_dir = Path(config.output_dir)
    final_dir = output_dir / "final"
    if processes.is_main:
        write_json(output_dir / "training_config.json", asdict(config), indent=2)
        result.model.save_pretrained(final_dir, tokenizer)
        plot_curves(output_dir, [("mlm_loss", "MLM loss"), ("mlm_accuracy", "MLM accuracy"),
                                 ("nsp_accuracy", "NSP accuracy")], output_dir / CURVES_FILE)
    processes.finish()
    last = dict(result.last)
    if scores is not None:
        last["eval"] = scores
    return {**last, "final_model": str(final_dir), "tokens_seen": int(result.cumulative["tokens"])}
