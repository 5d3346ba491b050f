"""`token-classification`: named entities as character spans of the input text, with scores."""

from __future__ import annotations

import numpy as np

from bertforge.pipelines.text_classification import as_list, load_finetuned


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


class TokenClassificationPipeline:
    """`pipe("Jeremy lives in Paris")` → [{"entity_group": "PER", "score": 0.99, "word": "Jeremy",
    "start": 0, "end": 6}, {"entity_group": "LOC", ..., "word": "Paris", "start": 16, "end": 21}].
    Each word takes the tag of its first word piece (as in training)."""

    def __init__(self, model=None, device="cpu", dtype="float32", batch_size=32, max_length=None):
        from bertforge.model import BertForTokenClassification

        self.model, self.tokenizer = load_finetuned(BertForTokenClassification, model, device, dtype)
        config = self.model.config
        self.labels = [config.id2label[i] for i in sorted(config.id2label)] if config.id2label \
            else [f"LABEL_{i}" for i in range(config.num_labels)]
        self.batch_size = batch_size
        self.max_length = max_length or config.max_position_embeddings

    def __call__(self, inputs):
        from bertforge.tasks.batching import predict_logits

        texts, single = as_list(inputs, "inputs")
        encoded = self.tokenizer(texts, truncation=True, max_length=self.max_length, return_offsets_mapping=True)
        features = [{"input_ids": ids, "token_type_ids": types}
                    for ids, types in zip(encoded["input_ids"], encoded["token_type_ids"])]
        logits = predict_logits(self.model, features, self.batch_size)
        results = []
        for i, (text, row) in enumerate(zip(texts, logits)):
            probabilities = np.exp(row - row.max(-1, keepdims=True))
            probabilities /= probabilities.sum(-1, keepdims=True)
            spans, tags, scores = {}, {}, {}
            for position, (word, offset) in enumerate(zip(encoded.word_ids(i), encoded["offset_mapping"][i])):
                if word is None:
                    continue
                if word not in spans:  # first piece: the word's tag
                    best = int(probabilities[position].argmax())
                    tags[word], scores[word] = self.labels[best], float(probabilities[position, best])
                    spans[word] = [offset[0], offset[1]]
                spans[word][1] = offset[1]
            order = sorted(spans)
            results.append(group_entities(text, [tuple(spans[w]) for w in order], [tags[w] for w in order],
                                          [scores[w] for w in order]))
        return results[0] if single else results
