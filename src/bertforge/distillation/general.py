"""General (task-agnostic) distillation as DistilBERT did it, on prepared pre-training shards:

    loss = 5 · L_ce + 2 · L_mlm + 1 · L_cos

L_ce: the student's MLM distribution against the teacher's at temperature T (×T²), on the masked
positions, computed as the KL (DistilBERT's cross-entropy less the teacher's entropy: the same
gradient, and a logged value that reaches 0 when the student matches); L_mlm: the usual MLM loss; L_cos: 1 − cos between the last hidden states of
teacher and student, per real token. The weights are DistilBERT's (Sanh et al. 2019). The teacher
runs online (its 30k-word distributions over every masked token are too big to store); its NSP
head is not trained against, as DistilBERT dropped NSP. Without a teacher (`--alpha 0`, the control
run) the same student learns from L_mlm alone."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from bertforge.distillation.losses import hidden_cosine, soft_target_kl
from bertforge.errors import ConfigError
from bertforge.model import BertForMaskedLM, IGNORE_INDEX
from bertforge.pretraining.config import TrainingConfig
from bertforge.pretraining.shards import PretrainingData
from bertforge.pretraining.trainer import train_on_shards
from bertforge.training import Processes
from bertforge.training.logs import plot_curves
from bertforge.io.atomic import write_json

WEIGHTS = {"ce": 5.0, "mlm": 2.0, "cos": 1.0}
INPUTS = ("input_ids", "attention_mask", "token_type_ids", "labels")


@dataclass(kw_only=True)
class GeneralDistillConfig(TrainingConfig):
    temperature: float = 2.0
    with_teacher: bool = True  # False: the control, the same student on the MLM loss alone

    def __post_init__(self):
        super().__post_init__()
        if self.temperature <= 0:
            raise ConfigError(f"--temperature {self.temperature}: must be positive")


class GeneralDistillationObjective:
    """DistilBERT's triple loss, each term averaged over the global batch's masked (or real) tokens."""

    statistics = ("ce", "mlm", "cos", "masked", "mlm_correct", "tokens")

    def __init__(self, teacher: torch.nn.Module | None, temperature: float):
        self.teacher, self.temperature = teacher, temperature
        self.weights = WEIGHTS if teacher is not None else {"ce": 0.0, "mlm": 1.0, "cos": 0.0}

    def to(self, device: torch.device) -> None:
        """The engine's call, once: the teacher runs on every batch, so it goes to the process's device."""
        if self.teacher is not None:
            self.teacher.to(device)

    def counts(self, batch):
        return [int((batch["labels"] != IGNORE_INDEX).sum()), int(batch["attention_mask"].sum())]

    def loss(self, model, batch, totals):
        masked_total, token_total = totals
        inputs = {k: batch[k] for k in INPUTS}
        student = model(**inputs, output_hidden_states=True, labelled_logits_only=True)
        masked = student.mlm_labels.numel()
        real = batch["attention_mask"].bool()
        mlm = student.mlm_loss * masked
        ce = cos = torch.zeros(())
        if self.teacher is not None:
            with torch.no_grad():
                teacher = self.teacher(**inputs, output_hidden_states=True, labelled_logits_only=True)
            ce = soft_target_kl(student.prediction_logits, teacher.prediction_logits, self.temperature)
            cos = hidden_cosine(student.hidden_states[-1][real], teacher.hidden_states[-1][real])
        w = self.weights
        loss = (w["ce"] * ce + w["mlm"] * mlm) / max(masked_total, 1) + w["cos"] * cos / token_total
        correct = (student.prediction_logits.argmax(-1) == student.mlm_labels).sum()
        values = [ce.item(), mlm.item(), cos.item(), masked, correct.item(), int(real.sum())]
        return loss, torch.tensor(values, dtype=torch.float64)

    def summary(self, interval, seconds, cumulative):
        masked, tokens = max(interval["masked"], 1), max(interval["tokens"], 1)
        ce, mlm, cos = interval["ce"] / masked, interval["mlm"] / masked, interval["cos"] / tokens
        w = self.weights
        return {"loss": w["ce"] * ce + w["mlm"] * mlm + w["cos"] * cos, "kl_loss": ce,
                "mlm_loss": mlm, "cos_loss": cos, "mlm_accuracy": interval["mlm_correct"] / masked,
                "tokens_per_second": interval["tokens"] / max(seconds, 1e-9), "tokens_seen": int(cumulative["tokens"])}


def masked_lm_student(student) -> BertForMaskedLM:
    """The student as a BertForMaskedLM (no NSP head, no pooler): the model a DistilBERT is."""
    model = BertForMaskedLM(student.config)
    state = {k: v for k, v in student.state_dict().items() if not k.startswith(("nsp.", "bert.pooler."))}
    model.load_state_dict(state)
    return model.eval()


def distil_general(config: GeneralDistillConfig, teacher, build_student, description: dict,
                   resume_from: str | Path | None = None) -> dict:
    """Train `build_student()` (a BertForPreTraining, built after seeding) against `teacher` (with its trained MLM
    head: `load_for_task` refuses one without) on the prepared shards of `config.data_dir`, on whose vocabulary it
    must have been trained; the student is saved as a masked LM in `output_dir/final`."""
    processes = Processes.start(config.device)
    data = PretrainingData(config.data_dir)
    data.check_model(description.get("teacher"), "--teacher")
    teacher = teacher.eval() if config.with_teacher else None  # the engine moves it to the process's device
    result, scores = train_on_shards(
        config, processes, data, build_student, GeneralDistillationObjective(teacher, config.temperature),
        {**config.fingerprint(data), "student": description}, resume_from, "distillation")
    output_dir = Path(config.output_dir)
    final_dir = output_dir / "final"
    summary = {**result.last, "final_model": str(final_dir), "student": description}
    if scores is not None:
        summary["eval"] = scores
    if processes.is_main:
        masked_lm_student(result.model).save_pretrained(final_dir, data.tokenizer())
        write_json(output_dir / "metrics.json", summary, indent=2)
        plot_curves(output_dir, [("loss", "distillation loss"), ("mlm_accuracy", "MLM accuracy")],
                    output_dir / "training_curves.png")
    processes.finish()
    return summary
