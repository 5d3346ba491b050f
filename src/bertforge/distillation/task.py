"""Task distillation on the training engine: the student learns the fine-tuned teacher's
temperature-softened outputs mixed with the gold labels,

    loss = α · T² · KL(teacher_T ‖ student_T) + (1 − α) · cross-entropy(gold)
           [+ β · (1 − cos(h_s, h_t))] [+ γ · KL(teacher's attention ‖ student's)],

per sequence (classification), per word (NER) or over start and end positions (QA). The soft term
averages over every example (unlabelled ones too), the hard term over the labelled ones. With β
(`hidden_weight`) the student's last hidden state also learns the direction of the teacher's, token by
token (DistilBERT's L_cos), on the teacher's channels the student kept: a binary classifier's soft
target is one number per sentence, the hidden state hundreds per token. With γ (`attention_weight`) each
student head's attention distributions learn those of the teacher head it came from (MiniLM, TinyBERT): the
teacher runs beside the student on every batch, as its attention maps are too large to keep. Evaluation and
the best-model keeping are fine-tuning's."""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from bertforge.distillation.losses import attention_kl, hidden_cosine, soft_target_kl
from bertforge.distillation.teacher import OUTSIDE, DistillationBatches
from bertforge.errors import ConfigError
from bertforge.model import IGNORE_INDEX, BertModel
from bertforge.tasks.trainer import FinetuneArgs, features_digest, finetune

INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass(kw_only=True)
class DistillArgs(FinetuneArgs):
    # The distillation recipes (docs/results.md) were measured at batch 32 without layer-wise decay.
    batch_size: int = 32
    layer_lr_decay: float = 1.0
    alpha: float = 0.5  # the soft targets' weight; 1 − alpha is the gold labels'
    temperature: float = 2.0
    hidden_weight: float = 0.0  # β of the last-hidden-state cosine loss; 0: none
    attention_weight: float = 0.0  # γ of the attention-distribution KL; 0: none

    def __post_init__(self):
        super().__post_init__()
        if not 0 <= self.alpha <= 1:
            raise ConfigError(f"--alpha {self.alpha}: the soft targets' weight must be in [0, 1]")
        if self.temperature <= 0:
            raise ConfigError(f"--temperature {self.temperature}: must be positive")
        for option in ("hidden_weight", "attention_weight"):
            if getattr(self, option) < 0:
                raise ConfigError(f"--{option.replace('_', '-')} {getattr(self, option)}: must be 0 or more")
        soft_targets = "a student learns from the teacher's softened outputs (--alpha, --temperature)"
        labels_only = {
            "label_smoothing_factor": soft_targets,
            "rdrop_alpha": soft_targets,
            "linear_probe_first": "a student's head starts from the teacher's or learns from its outputs",
            "reinit_layers": "a student's layers come from the teacher (--student-layers) or start afresh "
                             "(--student-size)",
        }
        for option, why in labels_only.items():
            if getattr(self, option):
                raise ConfigError(f"{option} is for fine-tuning on labels; {why}")


class DistillationObjective:
    """α × the soft-target KL (per global row) + (1 − α) × the gold cross-entropy (per labelled row)
    [+ β × the hidden-state cosine loss (per token)] [+ γ × the attention KL (per token)]."""

    # "attention" comes last: a checkpoint written before it existed resumes with it at 0
    statistics = ("soft", "hard", "hidden", "soft_rows", "hard_rows", "tokens", "examples", "attention")

    def __init__(self, kind: str, alpha: float, temperature: float, hidden_weight: float = 0.0,
                 attention_weight: float = 0.0, teacher: torch.nn.Module | None = None,
                 attention_map: list[tuple[int, torch.Tensor]] | None = None):
        """`attention_map` (with `attention_weight`): for each student layer, the teacher layer it came from and
        the teacher's index of each of its heads; `teacher` (eval mode) gives those layers' attention maps."""
        self.kind, self.alpha, self.temperature, self.hidden_weight = kind, alpha, temperature, hidden_weight
        self.attention_weight, self.teacher, self.attention_map = attention_weight, teacher, attention_map
        if attention_weight:
            if teacher is None or not attention_map:
                raise ValueError("attention_weight needs the teacher and the student's attention_map")
            teacher.eval()  # no dropout in the targets

    def to(self, device: torch.device) -> None:
        """The engine's call, once: the trimmed teacher whose attention maps are the targets runs on the
        process's device, beside the student."""
        if self.teacher is not None:
            self.teacher.to(device)

    def counts(self, batch):
        tokens = int(batch["attention_mask"].sum()) if self.hidden_weight or self.attention_weight else 0
        if self.kind == "token":
            return [int(batch["soft_mask"].sum()), int((batch["labels"] != IGNORE_INDEX).sum()), tokens]
        gold = batch["start_positions"] if self.kind == "span" else batch["labels"]
        return [len(batch["input_ids"]), int((gold != IGNORE_INDEX).sum()), tokens]

    def sums(self, logits: torch.Tensor, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(Σ soft-target KL, Σ gold cross-entropy) over the batch's rows."""
        logits, teacher, temperature = logits.float(), batch["teacher_logits"], self.temperature
        if self.kind == "sequence":
            soft = soft_target_kl(logits, teacher, temperature)
            hard = F.cross_entropy(logits, batch["labels"], ignore_index=IGNORE_INDEX, reduction="sum")
        elif self.kind == "token":
            mask = batch["soft_mask"]
            soft = soft_target_kl(logits[mask], teacher[mask], temperature)
            hard = F.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten(), ignore_index=IGNORE_INDEX,
                                   reduction="sum")
        else:  # distributions over the window's positions, start and end each half of a row
            outside = ~batch["soft_mask"][:, None, :]
            student = logits.transpose(1, 2).masked_fill(outside, OUTSIDE)
            soft = soft_target_kl(student, teacher.transpose(1, 2), temperature) / 2
            hard = sum(F.cross_entropy(student[:, i], batch[key], ignore_index=IGNORE_INDEX, reduction="sum")
                       for i, key in enumerate(("start_positions", "end_positions"))) / 2
        return soft, hard

    def loss(self, model, batch, totals):
        soft_total, hard_total, tokens_total = totals
        inputs = {k: batch[k] for k in INPUTS}
        output = model(**inputs, output_hidden_states=bool(self.hidden_weight),
                       output_attentions=bool(self.attention_weight))
        soft, hard = self.sums(output.logits, batch)
        loss = self.alpha * soft / max(soft_total, 1)
        if hard_total:
            loss = loss + (1 - self.alpha) * hard / hard_total
        hidden = attention = torch.zeros(())
        if self.hidden_weight:
            tokens = batch["attention_mask"].bool()
            hidden = hidden_cosine(output.hidden_states[-1][tokens], batch["teacher_hidden"][tokens])
            loss = loss + self.hidden_weight * hidden / max(tokens_total, 1)
        if self.attention_weight:
            attention = self.attention_sum(output.attentions, inputs)
            loss = loss + self.attention_weight * attention / max(tokens_total, 1)
        values = [soft.item(), hard.item(), hidden.item(), *self.counts(batch), len(batch["input_ids"]),
                  attention.item()]
        return loss, torch.tensor(values, dtype=torch.float64)

    def attention_sum(self, student: tuple[torch.Tensor, ...], inputs: dict) -> torch.Tensor:
        """Σ over real tokens of the attention KL, averaged over the student's layers and heads."""
        with torch.no_grad():
            teacher = self.teacher(**inputs, output_attentions=True).attentions
        return sum(attention_kl(weights, teacher[layer][:, heads], inputs["attention_mask"])
                   for weights, (layer, heads) in zip(student, self.attention_map)) / len(self.attention_map)

    def summary(self, interval, seconds, cumulative):
        soft = interval["soft"] / max(interval["soft_rows"], 1)
        hard = interval["hard"] / max(interval["hard_rows"], 1)
        hidden, attention = (interval[name] / max(interval["tokens"], 1) for name in ("hidden", "attention"))
        losses = {"loss": self.alpha * soft + (1 - self.alpha) * hard + self.hidden_weight * hidden
                  + self.attention_weight * attention, "soft_loss": soft, "hard_loss": hard}
        if self.hidden_weight:
            losses["hidden_loss"] = hidden
        if self.attention_weight:
            losses["attention_loss"] = attention
        return {**losses, "examples_per_second": interval["examples"] / max(seconds, 1e-9),
                "examples_seen": int(cumulative["examples"])}


def attention_teacher(teacher: torch.nn.Module, attention_map: list[tuple[int, torch.Tensor]]) -> BertModel:
    """The teacher's encoder through the last layer `attention_map` reads, in eval mode: on every batch only those
    layers' attention maps are needed, not the layers above them nor the pooler and head (the logits are cached)."""
    bert, last = teacher.base_model, max(layer for layer, _ in attention_map)

    def needed(name: str) -> bool:  # e.g. "encoder.layers.5.attention.qkv.weight", "pooler.dense.bias"
        parts = name.split(".")
        return parts[0] != "pooler" and not (parts[:2] == ["encoder", "layers"] and int(parts[2]) > last)

    encoder = BertModel(replace(bert.config, num_hidden_layers=last + 1), add_pooling_layer=False)
    encoder.load_state_dict({name: tensor for name, tensor in bert.state_dict().items() if needed(name)})
    return encoder.eval()


def distil(build_student: Callable[[], torch.nn.Module], task, kind: str, train_features: list[dict], eval_set,
           args: DistillArgs, tokenizer=None, resume_from: str | Path | None = None,
           description: dict | None = None, teacher: torch.nn.Module | None = None,
           attention_map: list[tuple[int, torch.Tensor]] | None = None) -> dict:
    """Train `build_student()` (built after seeding) on `train_features`, which carry `teacher_logits`
    (and `teacher_hidden` with `args.hidden_weight`; see `teacher.add_teacher_logits`), on fine-tuning's loop:
    evaluation and the best student kept as `finetune` does. With `args.attention_weight`, `teacher` runs beside
    the student and `attention_map` pairs their heads (see `DistillationObjective`). `description` (how the
    student was made) goes into metrics.json."""
    return finetune(build_student, task, train_features, eval_set, args, tokenizer, resume_from,
                    objective=DistillationObjective(kind, args.alpha, args.temperature, args.hidden_weight,
                                                    args.attention_weight,
                                                    attention_teacher(teacher, attention_map)
                                                    if args.attention_weight else None, attention_map),
                    batches=partial(DistillationBatches, kind=kind,
                                    pad_token_id=tokenizer.pad_token_id if tokenizer is not None else 0),
                    digest=partial(features_digest, arrays=("teacher_logits", "teacher_hidden")),
                    about={"student": description or {}}, name="distillation")
