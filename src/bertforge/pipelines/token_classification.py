"""`token-classification`: named entities as character spans of the input text, with scores."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bertforge.errors import InputError, is_whole_number
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


def aggregate_overlapping_entities(entities: list[dict]) -> list[dict]:
    """The entities of a text's overlapping windows as one list, by transformers' rule (its pipeline's
    `aggregate_overlapping_entities`, so that `stride` answers as there): in order of start, an entity that
    starts inside the one kept before it replaces it if it is longer, or as long and surer. An entity that
    a window's edge cuts is shorter than the same entity read whole by the window that overlaps it, so the
    whole one wins; of two readings of the same words, the surer one."""
    kept: list[dict] = []
    for entity in sorted(entities, key=lambda e: e["start"]):  # stable: of equal starts, the earlier window first
        last = kept[-1] if kept else None
        if last is None or not last["start"] <= entity["start"] < last["end"]:
            kept.append(entity)
        elif (entity["end"] - entity["start"], entity["score"]) > (last["end"] - last["start"], last["score"]):
            kept[-1] = entity
    return kept


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
    default does), the tags in `ignore_labels` left out ("O"). A text longer than `max_length` is cut there,
    with a warning, unless `stride=N` is given: then it is read whole, in windows of `max_length` whose text
    overlaps the previous window's by N pieces (transformers' `stride`, refused with "none" as there).
    One difference, on purpose: an entity's `word` is the text it spans ("José Müller"), where transformers
    joins its pieces ("jose muller")."""

    task = "token-classification"
    model_class = BertForTokenClassification
    head_prefix = ("classifier.",)
    head_name = "token-classification head (classifier.*)"
    default_model = staticmethod(default_token_classification_model_path)
    truncation_hint = ("; their later words were not tagged: stride=N (stride=128, say) reads a text whole, in "
                       "windows of max_length overlapping by N word pieces")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.labels = label_names(self.config)

    def __call__(self, inputs, aggregation_strategy: str = "first", ignore_labels=("O",), stride: int | None = None):
        ignore_labels = ("O",) if ignore_labels is None else ignore_labels  # transformers' None: its default
        if isinstance(ignore_labels, str) or not all(isinstance(label, str) for label in ignore_labels):
            raise InputError(f"ignore_labels must be a list of labels, got {ignore_labels!r}")
        if isinstance(aggregation_strategy, str):  # transformers reads the name in any case
            aggregation_strategy = aggregation_strategy.lower()
        if aggregation_strategy not in AGGREGATION_STRATEGIES:
            raise InputError(f"aggregation_strategy must be one of {', '.join(AGGREGATION_STRATEGIES)}, "
                             f"got {aggregation_strategy!r}")
        if stride is not None:
            self.check_stride(stride, aggregation_strategy)
        texts, single = as_list(inputs, "inputs")
        # each text's windows: one, cut to max_length (with a warning), without a stride
        windows = [[e] for e in self.encode(texts)] if stride is None else self.encode_windows(texts, stride)

        def run(batch: list[Encoded]) -> list[list[list[float]]]:
            # Unpadded: the encoder and the head see the real tokens only, (total tokens, hidden).
            packed = self.bert.forward_unpadded([e.ids for e in batch], [e.type_ids for e in batch])
            logits = self.model.classifier(self.model.dropout(packed.hidden_states[-1]))
            # Python lists per sequence, (length, labels): the per-word loops below do no tensor work.
            return [p.tolist() for p in split_sequences(packed, logits.float().softmax(dim=-1))]

        probabilities = iter(self.in_length_order([w for text_windows in windows for w in text_windows], run))
        results = []
        for text, text_windows in zip(texts, windows):
            found = [entity for window in text_windows for entity in
                     self.entities(text, window, next(probabilities), aggregation_strategy, ignore_labels)]
            results.append(aggregate_overlapping_entities(found) if len(text_windows) > 1 else found)
        return results[0] if single else results

    def check_stride(self, stride, aggregation_strategy: str) -> None:
        """transformers' refusals of `stride`: as long as a window's text or longer, and with "none", whose
        pieces of overlapping windows cannot be merged."""
        room = self.max_length - 2  # pieces of text a window holds beside [CLS] and [SEP]
        if not is_whole_number(stride) or stride >= room:
            raise InputError(f"stride must be a whole number of word pieces from 0 to {room - 1} (windows of "
                             f"max_length {self.max_length} hold {room} beside [CLS] and [SEP]), got {stride!r}")
        if aggregation_strategy == "none":
            raise InputError("stride reads overlapping windows, whose word pieces aggregation_strategy 'none' cannot "
                             "merge: give first, average, max or simple")

    def entities(self, text: str, enc: Encoded, probabilities: list[list[float]], aggregation_strategy: str,
                 ignore_labels) -> list[dict]:
        """The entities of one window (its pieces for "none"), with spans in the whole text."""
        if aggregation_strategy == "none":
            return self.pieces(enc, probabilities, ignore_labels)
        units = {}  # word (or piece, for "simple") → its positions in the window
        for position, word in enumerate(enc.word_ids):
            if word is not None:
                units.setdefault(position if aggregation_strategy == "simple" else word, []).append(position)
        spans, tags, scores = [], [], []
        for positions in units.values():
            label, score = self.best_label([probabilities[i] for i in positions], aggregation_strategy)
            spans.append((enc.offsets[positions[0]][0], enc.offsets[positions[-1]][1]))
            tags.append(label)
            scores.append(score)
        return group_entities(text, spans, tags, scores, ignore_labels)

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
