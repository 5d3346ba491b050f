"""`text-classification`: scores per label from a fine-tuned BertForSequenceClassification."""

from __future__ import annotations

from pathlib import Path

import torch

from bertforge.errors import InputError
from bertforge.model import BertForSequenceClassification
from bertforge.paths import bundled_model_path
from bertforge.pipelines.base import Encoded, Pipeline, as_list, pool_sequences


def default_classification_model_path() -> Path:
    """bertforge's bundled sentiment classifier: a 3-layer student distilled from all-MiniLM-L6-v2
    fine-tuned on SST-2 (see its README)."""
    return bundled_model_path("sst2-distilled", "a fine-tuned BertForSequenceClassification (made by "
                              "`bertforge finetune` or `bertforge distill`, or a transformers checkpoint)")


def label_names(config) -> list[str]:
    """The labels in class order: the checkpoint's id2label, or transformers' LABEL_i."""
    if config.id2label:
        return [config.id2label[i] for i in sorted(config.id2label)]
    return [f"LABEL_{i}" for i in range(config.num_labels)]


# Not passing top_k gives transformers' default: each text's best label as one dict.
BEST_LABEL = object()


class TextClassificationPipeline(Pipeline):
    """As transformers' pipeline: `pipe("a gripping film")` → [{"label": "1", "score": 0.97}] (the best
    label), `pipe([a, b])` → [best of a, best of b]; with `top_k=None` every label, best first
    (`top_k=2`: the first two), one such list per text (a single text: the list itself). `text_pair`
    for pair tasks."""

    task = "text-classification"
    model_class = BertForSequenceClassification
    head_prefix = ("classifier.",)
    head_name = "sequence-classification head (classifier.*)"
    head_attribute = "classifier"
    default_model = staticmethod(default_classification_model_path)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.labels = label_names(self.config)

    def __call__(self, inputs, text_pair=None, top_k=BEST_LABEL):
        texts, single = as_list(inputs, "inputs")
        pairs = None
        if text_pair is not None:
            pairs, _ = as_list(text_pair, "text_pair")
            if len(pairs) != len(texts):
                raise InputError(f"text_pair has {len(pairs)} items, inputs {len(texts)}")
        best_only = top_k is BEST_LABEL
        if best_only:
            top_k = 1
        elif top_k is not None and (not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1):
            raise InputError(f"top_k must be a positive integer or None, got {top_k!r}")
        encoded = self.encode(texts, pairs)

        def run(batch: list[Encoded]) -> list[list[float]]:
            return self.probabilities(batch).tolist()  # one conversion per batch, not per text

        results = []
        for row in self.in_length_order(encoded, run):
            ranked = sorted(zip(self.labels, row), key=lambda item: -item[1])[:top_k]
            results.append([{"label": label, "score": score} for label, score in ranked])
        if best_only:
            return [ranked[0] for ranked in results]
        return results[0] if single else results

    def probabilities(self, batch: list[Encoded]) -> torch.Tensor:
        """(batch, labels) scores of BertForSequenceClassification's logits, on the unpadded forward
        pass (no work on padding) with only the [CLS] rows through pooler and head (or each sequence's
        mean, for a classifier trained on it)."""
        if self.model.config.classifier_pooling == "mean":
            packed = self.bert.forward_unpadded([e.ids for e in batch], [e.type_ids for e in batch])
            last = packed.hidden_states[-1]
            pooled = pool_sequences(packed, last, "mean").to(last.dtype)
        else:
            pooled = self.bert.pooler_output_unpadded([e.ids for e in batch], [e.type_ids for e in batch])
        logits = self.model.classifier(self.model.dropout(pooled)).float()
        # transformers' rule: a regression's output as it is, one output or independent labels through a
        # sigmoid, classes through a softmax
        problem_type = self.config.extra.get("problem_type")
        if problem_type == "regression":
            return logits.cpu()
        if self.config.num_labels == 1 or problem_type == "multi_label_classification":
            return logits.sigmoid().cpu()
        return logits.softmax(dim=-1).cpu()
