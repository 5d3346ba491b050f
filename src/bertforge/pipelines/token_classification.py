"""`token-classification`: named entities as character spans of the input text, with scores."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bertforge.errors import InputError
from bertforge.model import BertForTokenClassification
from bertforge.paths import bundled_model_path
from bertforge.pipelines.base import Encoded, Pipeline, as_list, split_sequences
from bertforge.pipelines.text_classification import label_names


def group_entities(text: str, words: list[tuple[int, int]], tags: list[str], scores: list[float],
                   ignore_labels=("O",)) -> list[dict]:
    """Merge word-level BIO tags into entities as transformers does: `B-X` opens an entity, `I-X` extends
    one of type X (any other tag, "O" included, is its own type, extended by the next word of the same
    tag). Each entity has its type, the mean word score, its text and span; types in `ignore_labels`
    are left out."""
    entities, current = [], None
    for (start, end), tag, score in zip(words, tags, scores):
        prefix, kind = (tag[0], tag[2:]) if tag.startswith(("B-", "I-")) else ("I", tag)
        if current is None or prefix == "B" or kind != current["entity_group"]:
            current = {"entity_group": kind, "scores": [], "start": start, "end": end}
            entities.append(current)
        current["end"] = end
        current["scores"].append(score)
    return [{"entity_group": e["entity_group"], "score": float(np.mean(e["scores"])), "word": text[e["start"]:e["end"]],
             "start": e["start"], "end": e["end"]} for e in entities if e["entity_group"] not in ignore_labels]


def default_token_classification_model_path() -> Path:
    """bertforge's bundled named-entity tagger: a 3-layer student distilled from all-MiniLM-L6-v2
    fine-tuned on CoNLL-2003 (see its README)."""
    return bundled_model_path("conll-distilled", "a fine-tuned BertForTokenClassification (made by `bertforge "
                              "finetune --task ner` or `bertforge distill --task ner`, or a transformers checkpoint)")


# transformers' aggregation strategies: a word's tag from its first piece, from the mean of its pieces'
# probabilities, or from its surest piece; "simple" groups pieces, not words; "none" lists the pieces.
AGGREGATION_STRATEGIES = ("first", "average", "max", "simple", "none")


class TokenClassificationPipeline(Pipeline):
    """`pipe("Jeremy lives in Paris")` → [{"entity_group": "PER", "score": 0.99, "word": "Jeremy",
    "start": 0, "end": 6}, {"entity_group": "LOC", ..., "word": "Paris", "start": 16, "end": 21}]:
    transformers' pipeline output for each `aggregation_strategy` (default "first": each word takes the
    tag of its first word piece, as in training; "none" lists the word pieces, as transformers' own
    default does), the tags in `ignore_labels` left out ("O"). One difference, on purpose: an entity's
    `word` is the text it spans ("José Müller"), where transformers joins its pieces ("jose muller")."""

    task = "token-classification"
    model_class = BertForTokenClassification
    head_prefix = ("classifier.",)
    head_name = "token-classification head (classifier.*)"
    default_model = staticmethod(default_token_classification_model_path)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.labels = label_names(self.config)

    def __call__(self, inputs, aggregation_strategy: str = "first", ignore_labels=("O",)):
        ignore_labels = ("O",) if ignore_labels is None else ignore_labels  # transformers' None: its default
        if isinstance(ignore_labels, str) or not all(isinstance(label, str) for label in ignore_labels):
            raise InputError(f"ignore_labels must be a list of labels, got {ignore_labels!r}")
        if aggregation_strategy not in AGGREGATION_STRATEGIES:
            raise InputError(f"aggregation_strategy must be one of {', '.join(AGGREGATION_STRATEGIES)}, "
                             f"got {aggregation_strategy!r}")
        texts, single = as_list(inputs, "inputs")
        encoded = self.encode(texts)

        def run(batch: list[Encoded]) -> list[list[list[float]]]:
            # Unpadded: the encoder and the head see the real tokens only, (total tokens, hidden).
            packed = self.bert.forward_unpadded([e.ids for e in batch], [e.type_ids for e in batch])
            logits = self.model.classifier(self.model.dropout(packed.hidden_states[-1]))
            # Python lists per sequence, (length, labels): the per-word loops below do no tensor work.
            return [p.tolist() for p in split_sequences(packed, logits.float().softmax(dim=-1))]

        results = []
        for text, enc, probabilities in zip(texts, encoded, self.in_length_order(encoded, run)):
            if aggregation_strategy == "none":
                results.append(self.pieces(enc, probabilities, ignore_labels))
                continue
            units = {}  # word (or piece, for "simple") → its positions in the sequence
            for position, word in enumerate(enc.word_ids):
                if word is not None:
                    units.setdefault(position if aggregation_strategy == "simple" else word, []).append(position)
            spans, tags, scores = [], [], []
            for positions in units.values():
                label, score = self.best_label([probabilities[i] for i in positions], aggregation_strategy)
                spans.append((enc.offsets[positions[0]][0], enc.offsets[positions[-1]][1]))
                tags.append(label)
                scores.append(score)
            results.append(group_entities(text, spans, tags, scores, ignore_labels))
        return results[0] if single else results

    def best_label(self, pieces: list[list[float]], strategy: str) -> tuple[str, float]:
        """A word's tag and score from its pieces' probabilities (one piece for "simple")."""
        if strategy == "average":
            chosen = np.mean(pieces, axis=0)
        elif strategy == "max":
            chosen = max(pieces, key=max)
        else:
            chosen = pieces[0]
        best = int(np.argmax(chosen))
        return self.labels[best], float(chosen[best])

    def pieces(self, enc: Encoded, probabilities: list[list[float]], ignore_labels) -> list[dict]:
        """Each word piece whose tag is not in `ignore_labels`: transformers' output without aggregation."""
        out = []
        for index, (word, token_id, offset, row) in enumerate(zip(enc.word_ids, enc.ids, enc.offsets, probabilities)):
            best = int(np.argmax(row))
            if word is not None and self.labels[best] not in ignore_labels:
                out.append({"entity": self.labels[best], "score": float(row[best]), "index": index,
                            "word": self.tokenizer.convert_ids_to_tokens(token_id), "start": offset[0],
                            "end": offset[1]})
        return out
