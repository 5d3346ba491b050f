"""Sentence and sentence-pair classification (SST-2, MRPC, RTE, SNLI): [CLS] (or the mean) → dropout → linear."""

from __future__ import annotations

import collections
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.metrics import accuracy_score, f1_score

from bertforge.errors import InputError
from bertforge.model import BertConfig, BertForSequenceClassification
from bertforge.model.checkpoint import checkpoint_location, sentence_transformers_pooling
from bertforge.paths import config_path
from bertforge.tasks.batching import predict_logits
from bertforge.tokenization.truncation import encode_within
from bertforge.io.datasets import TextExample, training_file

log = logging.getLogger(__name__)

# A label this rare among the training rows is named in a warning: likely a typing mistake ("pos" among 0s
# and 1s), which would otherwise silently become a class.
STRAY_LABEL_COUNT, STRAY_LABEL_RATIO = 3, 1000


def default_classifier_pooling(model_dir: str | Path) -> str:
    """What a single-sentence classifier started from `model_dir` reads by default: "mean" where the
    checkpoint is a sentence-transformers export that pools by the mean (all-MiniLM-L6-v2), so the head
    reads the vector the checkpoint was trained to make (SST-2's one-epoch budget: docs/results.md, issue 17);
    otherwise the checkpoint's own config ("cls", [CLS] through the pooler, for BERT checkpoints)."""
    folder = checkpoint_location(model_dir)[0]
    declared = sentence_transformers_pooling(folder)
    if declared is not None and declared[0] == "mean":
        return "mean"
    return BertConfig.from_json_file(config_path(folder)).classifier_pooling


def is_number(label: str) -> bool:
    return label.lstrip("-").isdigit()


def sorted_labels(labels) -> list[str]:
    """Label names in a stable order: numerically when they are all integers ('0' < '1' < '10')."""
    unique = set(labels)
    if all(map(is_number, unique)):
        return sorted(unique, key=int)
    return sorted(unique)


@dataclass
class EvalSet:
    features: list[dict]
    examples: list


class ClassificationTask:
    model_class = BertForSequenceClassification
    metric = "accuracy"

    def __init__(self, labels: list[str], pair: bool = False):
        self.labels = list(labels)
        self.label2id = {label: i for i, label in enumerate(self.labels)}
        self.pair = pair

    @property
    def default_layer_lr_decay(self) -> float:
        """0.8 for single sentences: +1.4 points on SST-2's unseen sentences in the one-epoch budget run.
        Sentence pairs keep none: on MRPC it cost 2 points (docs/results.md)."""
        return 1.0 if self.pair else 0.8

    @classmethod
    def from_examples(cls, examples: list[TextExample], pair: bool = False) -> "ClassificationTask":
        labels = [e.label for e in examples if e.label is not None]
        if len(set(labels)) < 2:
            raise InputError(f"{training_file(examples)}: a classifier needs at least two labels, found "
                             f"{sorted(set(labels))}")
        counts = collections.Counter(labels)
        for label, count in counts.items():
            if count <= STRAY_LABEL_COUNT and count * STRAY_LABEL_RATIO < len(labels):
                first = next(e.source for e in examples if e.label == label)
                log.warning("label %r occurs in %d of %d training rows (first at %s): a class of its own, or a "
                            "typing mistake?", label, count, len(labels), first)
        return cls(sorted_labels(labels), pair)

    def label_id(self, example: TextExample) -> int:
        try:
            return self.label2id[example.label]
        except KeyError:
            # A model whose classes have names ("negative", "positive") read against a file of class ids
            # (SST-2's 0 and 1): the id is the class, as transformers' label2id/id2label have it.
            names = not any(map(is_number, self.labels))
            if names and example.label is not None and example.label.isdigit() and int(example.label) < len(self.labels):
                return int(example.label)
            raise InputError(f"{example.source}: label {example.label!r} was not seen in training "
                             f"(known labels: {', '.join(self.labels)})") from None

    def encode(self, examples: list[TextExample], tokenizer, max_length: int, with_labels: bool = True) -> list[dict]:
        if self.pair and any(e.text_pair is None for e in examples):
            raise InputError("pair classification needs a second text column (--text-pair-column)")
        rows, _ = encode_within(tokenizer, [e.text for e in examples],
                                [e.text_pair for e in examples] if self.pair else None, max_length)
        features = []
        for row, example in zip(rows, examples):
            feature = {"input_ids": row.ids, "token_type_ids": row.type_ids}
            if with_labels:
                feature["labels"] = self.label_id(example)
            features.append(feature)
        return features

    def train_features(self, examples, tokenizer, max_length: int) -> list[dict]:
        return self.encode(examples, tokenizer, max_length)

    def eval_set(self, examples, tokenizer, max_length: int) -> EvalSet:
        return EvalSet(self.encode(examples, tokenizer, max_length), examples)

    def metrics(self, predictions: np.ndarray, gold: np.ndarray) -> dict:
        result = {"accuracy": float(accuracy_score(gold, predictions)), "examples": int(len(gold))}
        if len(self.labels) == 2:  # binary F1 of the second label (1 = positive / paraphrase in GLUE)
            result["f1"] = float(f1_score(gold, predictions, pos_label=1, average="binary", zero_division=0))
        else:
            result["macro_f1"] = float(f1_score(gold, predictions, average="macro", zero_division=0))
        return result

    def evaluate(self, model, eval_set: EvalSet, batch_size: int = 64, bf16: bool = False) -> dict:
        logits = np.stack(predict_logits(model, eval_set.features, batch_size, bf16))
        gold = np.array([f["labels"] for f in eval_set.features])
        return self.metrics(logits.argmax(-1), gold)

