"""`token-classification`: named entities as character spans of the input text, with scores."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bertforge.model import BertForTokenClassification
from bertforge.paths import bundled_model_path
from bertforge.pipelines.base import Encoded, Pipeline, as_list, split_sequences
from bertforge.pipelines.text_classification import label_names


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


def default_token_classification_model_path() -> Path:
    """bertforge's bundled named-entity tagger: a 3-layer student distilled from all-MiniLM-L6-v2
    fine-tuned on CoNLL-2003 (see its README)."""
    return bundled_model_path("conll-distilled", "a fine-tuned BertForTokenClassification (made by `bertforge "
                              "finetune --task ner` or `bertforge distill --task ner`, or a transformers checkpoint)")


class TokenClassificationPipeline(Pipeline):
    """`pipe("Jeremy lives in Paris")` → [{"entity_group": "PER", "score": 0.99, "word": "Jeremy",
    "start": 0, "end": 6}, {"entity_group": "LOC", ..., "word": "Paris", "start": 16, "end": 21}].
    Each word takes the tag of its first word piece (as in training): the output of transformers' pipeline
    with `aggregation_strategy="first"` (its default, "none", lists word pieces instead of entities)."""

    task = "token-classification"
    model_class = BertForTokenClassification
    head_prefix = ("classifier.",)
    head_name = "token-classification head (classifier.*)"
    head_attribute = "classifier"
    default_model = staticmethod(default_token_classification_model_path)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.labels = label_names(self.config)

    def __call__(self, inputs):
        texts, single = as_list(inputs, "inputs")
        encoded = self.encode(texts)

        def run(batch: list[Encoded]) -> list[tuple[list[float], list[int]]]:
            # Unpadded: the encoder and the head see the real tokens only, (total tokens, hidden).
            packed = self.bert.forward_unpadded([e.ids for e in batch], [e.type_ids for e in batch])
            logits = self.model.classifier(self.model.dropout(packed.hidden_states[-1]))
            best_scores, best_labels = logits.float().softmax(dim=-1).max(dim=-1)  # (total tokens,) each
            # Python lists per sequence: the per-word loop below then does no tensor work.
            return [(scores.tolist(), labels.tolist()) for scores, labels
                    in zip(split_sequences(packed, best_scores), split_sequences(packed, best_labels))]

        results = []
        for text, enc, (best_scores, best_labels) in zip(texts, encoded, self.in_length_order(encoded, run)):
            spans, tags, scores = {}, {}, {}
            for position, (word, offset) in enumerate(zip(enc.word_ids, enc.offsets)):
                if word is None:
                    continue
                if word not in spans:  # first piece: the word's tag
                    tags[word], scores[word] = self.labels[best_labels[position]], best_scores[position]
                    spans[word] = [offset[0], offset[1]]
                spans[word][1] = offset[1]
            order = sorted(spans)
            results.append(group_entities(text, [tuple(spans[w]) for w in order], [tags[w] for w in order],
                                          [scores[w] for w in order]))
        return results[0] if single else results
