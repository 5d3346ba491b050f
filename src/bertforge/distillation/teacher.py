"""The teacher's outputs, computed once per training feature and kept beside it, so an epoch of
distillation costs the student's forward and backward passes only; and the batches that carry them."""

from __future__ import annotations

import numpy as np
import torch

from bertforge.model import IGNORE_INDEX
from bertforge.tasks.batching import collate, predict_logits
from bertforge.tasks.ner import TokenClassificationTask
from bertforge.tasks.squad import QuestionAnsweringTask
from bertforge.tasks.trainer import FeatureBatches

# Outside a window's tokens a QA distribution gets this logit: exp(-1e4 / T) is 0 in float32, and
# unlike -inf it gives no 0 × ∞ in the KL.
OUTSIDE = -1e4


def output_kind(task) -> str:
    """What one teacher output is: a distribution per sequence, per word, or over positions (QA)."""
    if isinstance(task, TokenClassificationTask):
        return "token"
    if isinstance(task, QuestionAnsweringTask):
        return "span"
    return "sequence"


def unlabelled(features: list[dict], kind: str) -> list[dict]:
    """Mark features as having no gold label (the loss ignores IGNORE_INDEX), so the teacher alone
    labels them; they batch with labelled ones."""
    for feature in features:
        if kind == "token":
            feature["labels"] = [IGNORE_INDEX] * len(feature["input_ids"])
        elif kind == "span":
            feature["start_positions"] = feature["end_positions"] = IGNORE_INDEX
        else:
            feature["labels"] = IGNORE_INDEX
    return features


def add_teacher_logits(teacher, features: list[dict], batch_size: int = 64, bf16: bool = False,
                       hidden_channels: torch.Tensor | None = None) -> list[dict]:
    """Store the teacher's logits (float32, cut to the feature's length) in each feature as
    `teacher_logits`: the one pass of the teacher over the training data. With `hidden_channels`
    (the student's channels of the teacher's hidden state), also those channels of the teacher's
    last hidden state as `teacher_hidden`, (length, channels) float16, for the hidden-state loss."""
    outputs = predict_logits(teacher, features, batch_size, bf16, progress="teacher outputs",
                             hidden_channels=hidden_channels)
    for feature, output in zip(features, outputs):
        if hidden_channels is None:
            feature["teacher_logits"] = output
        else:
            feature["teacher_logits"], feature["teacher_hidden"] = output
    return features


def first_pieces(word_ids: list[int | None]) -> list[bool]:
    """True at each word's first piece: where NER reads its tags, so where the student learns the teacher's."""
    return [word is not None and (i == 0 or word != word_ids[i - 1]) for i, word in enumerate(word_ids)]


def collate_with_teacher(features: list[dict], kind: str, pad_token_id: int = 0) -> dict[str, torch.Tensor]:
    """The usual padded batch plus `teacher_logits` (padded; QA padding is OUTSIDE), `teacher_hidden`
    where the features carry it and, per token, `soft_mask`: the positions whose teacher distribution is
    a target."""
    batch = collate(features, pad_token_id)
    if "teacher_hidden" in features[0]:  # padded rows are zeros; the loss reads attention_mask
        hidden = np.zeros((*batch["input_ids"].shape, features[0]["teacher_hidden"].shape[-1]), dtype=np.float16)
        for row, feature in enumerate(features):
            hidden[row, :len(feature["input_ids"])] = feature["teacher_hidden"]
        batch["teacher_hidden"] = torch.from_numpy(hidden)
    if kind == "sequence":
        batch["teacher_logits"] = torch.from_numpy(np.stack([f["teacher_logits"] for f in features]))
        return batch
    width = batch["input_ids"].shape[1]
    classes = features[0]["teacher_logits"].shape[-1]
    logits = np.full((len(features), width, classes), OUTSIDE if kind == "span" else 0.0, dtype=np.float32)
    mask = np.zeros((len(features), width), dtype=bool)
    for row, feature in enumerate(features):
        n = len(feature["input_ids"])
        logits[row, :n] = feature["teacher_logits"]
        mask[row, :n] = first_pieces(feature["word_ids"]) if kind == "token" else True
    batch["teacher_logits"], batch["soft_mask"] = torch.from_numpy(logits), torch.from_numpy(mask)
    return batch


class DistillationBatches(FeatureBatches):
    """Fine-tuning's batches, step-addressed the same way, carrying the teacher's logits."""

    def __init__(self, features: list[dict], batch_size: int, seed: int, smallest: int, kind: str,
                 group_by_length: bool = True, pad_token_id: int = 0):
        super().__init__(features, batch_size, seed, smallest, group_by_length, pad_token_id)
        self.kind = kind

    def collate(self, features: list[dict]) -> dict[str, torch.Tensor]:
        return collate_with_teacher(features, self.kind, self.pad_token_id)
