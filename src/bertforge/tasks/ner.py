"""Token classification (CoNLL-2003 NER): each word's tag goes on its first word piece, the other
pieces carry -100 (no loss); predictions are read back from first pieces, a sentence longer than
max_length in overlapping windows, and scored per entity with seqeval (the CoNLL standard)."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, replace

import numpy as np
from seqeval.metrics import classification_report, f1_score, precision_score, recall_score

from bertforge.errors import InputError
from bertforge.model import IGNORE_INDEX, BertForTokenClassification
from bertforge.tasks.batching import predict_logits
from bertforge.tasks.squad import doc_stride_for
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

    def encode(self, sentences: list[TaggedSentence], tokenizer, max_length: int, with_labels: bool = True,
               windows: bool = False) -> list[dict]:
        """Features of `sentences`, each word's tag on its first piece: cut at `max_length`, or with `windows`
        read whole, a longer sentence in overlapping windows (the tokenizer's overflowing tokens, overlapping by
        squad's `doc_stride_for`). `reads` lists the (position, word) a feature's logits tag: each word once, in
        the window where it has the most context (BERT's run_squad rule: the nearer edge, then the longer window)."""
        stride = doc_stride_for(max_length) if windows else 0
        encoded = tokenizer([s.words for s in sentences], is_split_into_words=True, truncation=True,
                            max_length=max_length, stride=stride, return_overflowing_tokens=windows)
        samples = [int(i) for i in encoded["overflow_to_sample_mapping"]] if windows else range(len(sentences))
        features, best = [], {}  # best: (sentence, word) → (context, feature, position) where the word is read
        start = length = 0  # where the window starts in its sentence's pieces, and how many it holds
        for i, sample in enumerate(samples):
            word_ids = encoded.word_ids(i)
            content = [position for position, word in enumerate(word_ids) if word is not None]
            if i and sample == samples[i - 1]:  # the tokenizer starts a window `stride` pieces before the last ends
                start += length - stride
            else:
                start, first_piece = 0, {}  # word → the index of its first piece in the sentence
            length = len(content)
            labels = [IGNORE_INDEX] * len(word_ids)
            for j, position in enumerate(content):
                word = word_ids[position]
                if first_piece.setdefault(word, start + j) != start + j:
                    continue  # a later piece of the word (its first may be in the window before)
                context = min(j, length - 1 - j) + 0.01 * length
                if context > best.get((sample, word), (-1.0,))[0]:
                    best[sample, word] = (context, i, position)
                if with_labels:
                    labels[position] = self.tag_id(sentences[sample], word)
            features.append({"input_ids": encoded["input_ids"][i], "token_type_ids": encoded["token_type_ids"][i],
                             "word_ids": word_ids, "sentence": sample, "reads": [],
                             **({"labels": labels} if with_labels else {})})
        for (_, word), (_, i, position) in best.items():
            features[i]["reads"].append((position, word))
        return features

    def tag_id(self, sentence: TaggedSentence, word: int) -> int:
        tag = sentence.tags[word]
        if tag not in self.label2id:
            raise InputError(f"{sentence.source.rsplit(':', 1)[0]}:{int(sentence.source.rsplit(':', 1)[1]) + word}: "
                             f"tag {tag!r} was not seen in training (known tags: {', '.join(self.labels)})")
        return self.label2id[tag]

    def train_features(self, sentences, tokenizer, max_length: int) -> list[dict]:
        # Cut at max_length, as transformers' run_ner trains: windows would count the words they overlap twice.
        return self.encode(sentences, tokenizer, max_length)

    def eval_set(self, sentences, tokenizer, max_length: int) -> EvalSet:
        return EvalSet(self.encode(sentences, tokenizer, max_length, windows=True), sentences)

    def word_predictions(self, features: list[dict], logits: list[np.ndarray], sentences) -> list[list[tuple[str, float]]]:
        """(tag, probability) for every word `features` read (all with `encode`'s windows), from its first piece."""
        out = [[None] * len(sentence.words) for sentence in sentences]
        for feature, row in zip(features, logits):
            probabilities = np.exp(row - row.max(-1, keepdims=True))
            probabilities /= probabilities.sum(-1, keepdims=True)
            for position, word in feature["reads"]:
                best = int(probabilities[position].argmax())
                out[feature["sentence"]][word] = (self.labels[best], float(probabilities[position, best]))
        return out

    def evaluate(self, model, eval_set: EvalSet, batch_size: int = 64, bf16: bool = False) -> dict:
        logits = predict_logits(model, eval_set.features, batch_size, bf16)
        predicted = [[tag for tag, _ in words] for words in
                     self.word_predictions(eval_set.features, logits, eval_set.sentences)]
        gold = [s.tags for s in eval_set.sentences]
        return {**entity_scores(gold, predicted), "sentences": len(gold)}

    def predict(self, model, sentences, tokenizer, max_length: int, batch_size: int = 64,
                bf16: bool = False) -> list[list[tuple[str, float]]]:
        features = self.encode(sentences, tokenizer, max_length, with_labels=False, windows=True)
        return self.word_predictions(features, predict_logits(model, features, batch_size, bf16), sentences)
