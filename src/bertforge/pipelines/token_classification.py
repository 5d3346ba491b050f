"""`token-classification`: named entities as character spans of the input text, with scores."""

from __future__ import annotations

import numpy as np
import torch

from bertforge.model import BertForTokenClassification
from bertforge.pipelines.base import Encoded, Pipeline, needs_model
from bertforge.pipelines.text_classification import as_list, label_names


def group_entities(text: str, words: list[tuple[int, int]], tags: list[str], scores: list[float]) -> list[dict]:
    """Merge word-level BIO tags into entities: a `B-X` (or an `I-X` after another type) opens an
    entity, `I-X` extends it. Each entity has its type, the mean word score, its text and span."""
    entities, current = [], None
    for (start, end), tag, score in zip(words, tags, scores):
        prefix, _, kind = tag.partition("-") if "-" in tag else ("I", "", tag)
        if tag == "O":
            current = None
            continue
        if current is None or prefix == "B" or kind != current["entity_group"]:
            current = {"entity_group": kind, "scores": [], "start": start, "end": end}
            entities.append(current)
        current["end"] = end
        current["scores"].append(score)
    return [{"entity_group": e["entity_group"], "score": float(np.mean(e["scores"])), "word": text[e["start"]:e["end"]],
             "start": e["start"], "end": e["end"]} for e in entities]


class TokenClassificationPipeline(Pipeline):
    """`pipe("Jeremy lives in Paris")` → [{"entity_group": "PER", "score": 0.99, "word": "Jeremy",
    "start": 0, "end": 6}, {"entity_group": "LOC", ..., "word": "Paris", "start": 16, "end": 21}].
    Each word takes the tag of its first word piece (as in training)."""

    task = "token-classification"
    model_class = BertForTokenClassification
    head_prefix = ("classifier.",)
    head_name = "token-classification head (classifier.*)"
    head_attribute = "classifier"
    default_model = staticmethod(needs_model("token-classification", "a fine-tuned BertForTokenClassification "
                                             "(made by `bertforge finetune --task ner`, or a transformers checkpoint)"))

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.labels = label_names(self.config)

    def __call__(self, inputs):
        texts, single = as_list(inputs, "inputs")
        encoded = self.encode(texts)

        def run(batch: list[Encoded]) -> list[torch.Tensor]:
            probs = self.model(**self.padded(batch)).logits.float().softmax(dim=-1).cpu()
            return [row[:len(e.ids)] for row, e in zip(probs, batch)]

        results = []
        for text, enc, probs in zip(texts, encoded, self.in_length_order(encoded, run)):
            spans, tags, scores = {}, {}, {}
            for position, (word, offset) in enumerate(zip(enc.word_ids, enc.offsets)):
                if word is None:
                    continue
                if word not in spans:  # first piece: the word's tag
                    score, best = probs[position].max(dim=-1)
                    tags[word], scores[word] = self.labels[int(best)], float(score)
                    spans[word] = [offset[0], offset[1]]
                spans[word][1] = offset[1]
            order = sorted(spans)
            results.append(group_entities(text, [tuple(spans[w]) for w in order], [tags[w] for w in order],
                                          [scores[w] for w in order]))
        return results[0] if single else results
