"""`text-classification`: scores per label from a fine-tuned BertForSequenceClassification."""

from __future__ import annotations

from pathlib import Path

import torch

from bertforge.errors import InputError, is_whole_number
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
FUNCTIONS = ("softmax", "sigmoid", "none")


class TextClassificationPipeline(Pipeline):
    """As transformers' pipeline: `pipe("a gripping film")` → [{"label": "1", "score": 0.97}] (the best
    label), `pipe([a, b])` → [best of a, best of b]; with `top_k=None` every label, best first
    (`top_k=2`: the first two), one such list per text (a single text: the list itself). Pairs as
    `text_pair=` or, as transformers has them, `{"text": a, "text_pair": b}` (or a list of such).
    `function_to_apply` ("softmax", "sigmoid", "none") overrides the one the model's config implies."""

    task = "text-classification"
    model_class = BertForSequenceClassification
    head_prefix = ("classifier.",)
    head_name = "sequence-classification head (classifier.*)"
    default_model = staticmethod(default_classification_model_path)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.labels = label_names(self.config)

    def __call__(self, inputs, text_pair=None, top_k=BEST_LABEL, function_to_apply: str | None = None):
        if function_to_apply is not None and function_to_apply not in FUNCTIONS:
            raise InputError(f"function_to_apply must be one of {', '.join(FUNCTIONS)}, got {function_to_apply!r}")
        one_dict = isinstance(inputs, dict)
        inputs, text_pair = pairs_of_dicts(inputs, text_pair)
        texts, single = as_list(inputs, "inputs")
        pairs = None
        if text_pair is not None:
            pairs, _ = as_list(text_pair, "text_pair")
            if len(pairs) != len(texts):
                raise InputError(f"text_pair has {len(pairs)} items, inputs {len(texts)}")
        best_only = top_k is BEST_LABEL
        if best_only:
            top_k = 1
        elif top_k is not None and not is_whole_number(top_k, 1):
            raise InputError(f"top_k must be a positive integer or None, got {top_k!r}")
        encoded = self.encode(texts, pairs)

        def run(batch: list[Encoded]) -> list[list[float]]:
            return self.probabilities(batch, function_to_apply).tolist()  # one conversion per batch, not per text

        results = []
        for row in self.in_length_order(encoded, run):
            ranked = sorted(zip(self.labels, row), key=lambda item: -item[1])[:top_k]
            results.append([{"label": label, "score": score} for label, score in ranked])
        if best_only:  # transformers' quirk, kept: a list even for one text, but not for one dict
            return results[0][0] if one_dict else [ranked[0] for ranked in results]
        return results[0] if single else results

    def probabilities(self, batch: list[Encoded], function_to_apply: str | None = None) -> torch.Tensor:
        """(batch, labels) scores of BertForSequenceClassification's logits, on the unpadded forward
        pass (no work on padding) with only the [CLS] rows through pooler and head (or each sequence's
        mean, for a classifier trained on it), through `function_to_apply` or the one the config implies."""
        if self.model.config.classifier_pooling == "mean":
            packed = self.bert.forward_unpadded([e.ids for e in batch], [e.type_ids for e in batch])
            last = packed.hidden_states[-1]
            pooled = pool_sequences(packed, last, "mean").to(last.dtype)
        else:
            pooled = self.bert.pooler_output_unpadded([e.ids for e in batch], [e.type_ids for e in batch])
        logits = self.model.classifier(self.model.dropout(pooled)).float()
        function = function_to_apply or self.default_function()
        if function == "none":
            return logits.cpu()
        return (logits.sigmoid() if function == "sigmoid" else logits.softmax(dim=-1)).cpu()

    def default_function(self) -> str:
        """transformers' rule: a regression's output as it is, one output or independent labels through a
        sigmoid, classes through a softmax."""
        problem_type = self.config.problem_type
        if problem_type == "regression":
            return "none"
        return "sigmoid" if self.config.num_labels == 1 or problem_type == "multi_label_classification" else "softmax"


def pairs_of_dicts(inputs, text_pair):
    """transformers' pair form, {"text": a, "text_pair": b} or a list of such, as (texts, pairs)."""
    rows = [inputs] if isinstance(inputs, dict) else inputs
    if not isinstance(rows, (list, tuple)) or not rows or not all(isinstance(row, dict) for row in rows):
        return inputs, text_pair
    if text_pair is not None:
        raise InputError("give text_pair= or {'text': ..., 'text_pair': ...} inputs, not both")
    for i, row in enumerate(rows):
        if "text" not in row or set(row) - {"text", "text_pair"}:
            raise InputError(f"inputs[{i}]: a pair is {{'text': ..., 'text_pair': ...}}, got the keys {sorted(row)}")
    if len({"text_pair" in row for row in rows}) > 1:
        raise InputError("some inputs have a text_pair and some have none")
    texts = [row["text"] for row in rows]
    pairs = [row["text_pair"] for row in rows] if "text_pair" in rows[0] else None
    if isinstance(inputs, dict):
        return texts[0], pairs[0] if pairs else None
    return texts, pairs
