"""Token classification (CoNLL-2003 NER): each word's tag goes on its first word piece, the other
pieces carry -100 (no loss); predictions are read back from first pieces and scored per entity
with seqeval (the CoNLL standard)."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, replace

import numpy as np
from seqeval.metrics import classification_report, f1_score, precision_score, recall_score

from bertforge.errors import InputError
from bertforge.model import IGNORE_INDEX, BertForTokenClassification
from bertforge.tasks.batching import predict_logits
from bertforge.io.datasets import TaggedSentence, training_file

log = logging.getLogger(__name__)
# Tags seqeval reads as entity chunks: O, or a prefix of the IOB/IOBES schemes and a type (B-PER).
SCHEME_TAG = re.compile(r"^(O|[BIESLU]-.+)$")


@dataclass
class EvalSet:
    features: list[dict]
    sentences: list[TaggedSentence]


def entity_scores(gold: list[list[str]], predicted: list[list[str]]) -> dict:
    """Entity-level precision/recall/F1 (micro over entities) and the same per entity type."""
    report = classification_report(gold, predicted, output_dict=True, zero_division=0)
    per_type = {name: {"precision": float(v["precision"]), "recall": float(v["recall"]),
                       "f1": float(v["f1-score"]), "support": int(v["support"])}
                for name, v in report.items() if not name.endswith(" avg")}
    return {"precision": float(precision_score(gold, predicted, zero_division=0)),
            "recall": float(recall_score(gold, predicted, zero_division=0)),
            "f1": float(f1_score(gold, predicted, zero_division=0)), "per_type": per_type}


def cut_into_words(sentences: list[TaggedSentence], tokenizer) -> list[TaggedSentence]:
    """Each sentence of a table (`text`, no words yet) with the words `tokenizer` cuts it into, as written in it:
    the words the token-classification pipeline tags (punctuation and CJK characters apart, special tokens
    whole), read from the tokenizer's own word ids and offsets. Sentences with their words (CoNLL) stay as they are."""
    texts = [s.text for s in sentences if s.words is None]
    if not texts:
        return sentences
    encoded = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
    words = []
    for i, text in enumerate(texts):
        spans = {}  # word index → (start of its first piece, end of its last)
        for word, (start, end) in zip(encoded.word_ids(i), encoded["offset_mapping"][i]):
            spans[word] = (spans.get(word, (start,))[0], end)
        words.append([text[start:end] for start, end in spans.values()])
    cut = iter(words)
    return [replace(s, words=next(cut)) if s.words is None else s for s in sentences]


class TokenClassificationTask:
    model_class = BertForTokenClassification
    metric = "f1"
    # Layer-wise decay costs CoNLL-2003 2 F1 on the one-epoch budget: every token needs the lower layers.
    default_layer_lr_decay = 1.0

    def __init__(self, labels: list[str]):
        self.labels = list(labels)
        self.label2id = {label: i for i, label in enumerate(self.labels)}

    @classmethod
    def from_sentences(cls, sentences: list[TaggedSentence]) -> "TokenClassificationTask":
        tags = {tag for s in sentences for tag in s.tags}
        if len(tags) < 2:
            raise InputError(f"{training_file(sentences)}: a tagger needs at least two tags, found {sorted(tags)}; "
                             "is the tag column the right one (--tag-column)?")
        odd = sorted(tag for tag in tags if not SCHEME_TAG.match(tag))
        if odd:  # a header line ("word tag") or a column slip; entity F1 would not count them as entities
            first = next(s for s in sentences if odd[0] in s.tags)
            log.warning("%d tag(s) outside the IOB scheme (O, B-TYPE, I-TYPE): %s, first in the sentence at %s; "
                        "a header line or the wrong --tag-column?", len(odd), ", ".join(map(repr, odd[:5])),
                        first.source)
        # "O" first, then the entity types with B- before I-, so id2label reads naturally.
        return cls(sorted(tags, key=lambda t: (t != "O", t[2:], t[:2])))

    def encode(self, sentences: list[TaggedSentence], tokenizer, max_length: int, with_labels: bool = True) -> list[dict]:
        encoded = tokenizer([s.words for s in sentences], is_split_into_words=True, truncation=True,
                            max_length=max_length)
        features = []
        for i, sentence in enumerate(sentences):
            word_ids = encoded.word_ids(i)
            feature = {"input_ids": encoded["input_ids"][i], "token_type_ids": encoded["token_type_ids"][i],
                       "word_ids": word_ids}
            if with_labels:
                labels, previous = [], None
                for word in word_ids:
                    labels.append(IGNORE_INDEX if word is None or word == previous
                                  else self.tag_id(sentence, word))
                    previous = word
                feature["labels"] = labels
            features.append(feature)
        return features

    def tag_id(self, sentence: TaggedSentence, word: int) -> int:
        tag = sentence.tags[word]
        if tag not in self.label2id:
            raise InputError(f"{sentence.source.rsplit(':', 1)[0]}:{int(sentence.source.rsplit(':', 1)[1]) + word}: "
                             f"tag {tag!r} was not seen in training (known tags: {', '.join(self.labels)})")
        return self.label2id[tag]

    def train_features(self, sentences, tokenizer, max_length: int) -> list[dict]:
        return self.encode(sentences, tokenizer, max_length)

    def eval_set(self, sentences, tokenizer, max_length: int) -> EvalSet:
        features = self.encode(sentences, tokenizer, max_length)
        warn_cut_words(features, sentences, max_length)
        return EvalSet(features, sentences)

    def word_predictions(self, features: list[dict], logits: list[np.ndarray], sentences) -> list[list[tuple[str, float]]]:
        """(tag, probability) for every word, read from its first piece. Words cut off by
        max_length get "O" with probability 0, so they still count in the evaluation."""
        out = []
        for feature, row, sentence in zip(features, logits, sentences):
            probabilities = np.exp(row - row.max(-1, keepdims=True))
            probabilities /= probabilities.sum(-1, keepdims=True)
            words = [("O", 0.0)] * len(sentence.words)
            previous = None
            for position, word in enumerate(feature["word_ids"]):
                if word is not None and word != previous:
                    best = int(probabilities[position].argmax())
                    words[word] = (self.labels[best], float(probabilities[position, best]))
                previous = word
            out.append(words)
        return out

    def evaluate(self, model, eval_set: EvalSet, batch_size: int = 64, bf16: bool = False) -> dict:
        logits = predict_logits(model, eval_set.features, batch_size, bf16)
        predicted = [[tag for tag, _ in words] for words in
                     self.word_predictions(eval_set.features, logits, eval_set.sentences)]
        gold = [s.tags for s in eval_set.sentences]
        return {**entity_scores(gold, predicted), "sentences": len(gold)}

    def predict(self, model, sentences, tokenizer, max_length: int, batch_size: int = 64,
                bf16: bool = False) -> list[list[tuple[str, float]]]:
        features = self.encode(sentences, tokenizer, max_length, with_labels=False)
        warn_cut_words(features, sentences, max_length)
        return self.word_predictions(features, predict_logits(model, features, batch_size, bf16), sentences)


def warn_cut_words(features: list[dict], sentences, max_length: int) -> None:
    """Say how many sentences lose words to max_length: those words are tagged "O" with probability 0."""
    cut = [s for f, s in zip(features, sentences) if max((w for w in f["word_ids"] if w is not None), default=-1)
           < len(s.words) - 1]
    if cut:
        log.warning("%d of %d sentences are longer than --max-length %d word pieces (the first at %s): their last "
                    "words are tagged O with probability 0; a larger --max-length (up to the model's limit) reads them",
                    len(cut), len(sentences), max_length, cut[0].source)
