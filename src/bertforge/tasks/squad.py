"""Extractive question answering (SQuAD v1.1): windows over long contexts, span search across
windows, and the official v1.1 exact-match / F1 evaluation."""

from __future__ import annotations

import collections
import logging
import re
import string
from dataclasses import dataclass

import numpy as np

from bertforge.errors import InputError
from bertforge.model import BertForQuestionAnswering
from bertforge.tasks.batching import predict_logits
from bertforge.io.datasets import SquadExample

log = logging.getLogger(__name__)

MAX_SEQ_LENGTH, DOC_STRIDE, MAX_QUERY_LENGTH = 384, 128, 64
N_BEST, MAX_ANSWER_LENGTH = 20, 30


# --- the official SQuAD v1.1 evaluation (evaluate-v1.1.py), re-implemented -------------------

def normalize_answer(text: str) -> str:
    """Lower case, drop punctuation and the articles a/an/the, collapse whitespace."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match_score(prediction: str, truth: str) -> bool:
    return normalize_answer(prediction) == normalize_answer(truth)


def f1_score(prediction: str, truth: str) -> float:
    prediction_tokens, truth_tokens = normalize_answer(prediction).split(), normalize_answer(truth).split()
    common = collections.Counter(prediction_tokens) & collections.Counter(truth_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(prediction_tokens), same / len(truth_tokens)
    return 2 * precision * recall / (precision + recall)


def squad_evaluate(predictions: dict[str, str], references: dict[str, list[str]]) -> dict:
    """EM and F1 in percent, each the max over a question's reference answers, averaged over
    the questions of `references` (a question without a prediction scores 0, as in the script)."""
    if not references:
        raise InputError("no questions to evaluate")
    exact = f1 = 0.0
    for qid, truths in references.items():
        if qid not in predictions:
            continue
        exact += max(exact_match_score(predictions[qid], t) for t in truths)
        f1 += max(f1_score(predictions[qid], t) for t in truths)
    return {"exact_match": 100.0 * exact / len(references), "f1": 100.0 * f1 / len(references)}


# --- features -------------------------------------------------------------------------------

def doc_stride_for(max_length: int) -> int:
    """How far windows of `max_length` overlap by default: transformers' 128, kept below half a window
    for short-window models."""
    return min(DOC_STRIDE, max_length // 2 - 1)


def _cut_question(question: str, tokenizer, max_query_length: int) -> tuple[str, int]:
    """The question cut to its first `max_query_length` word pieces, and how many pieces it keeps."""
    encoded = tokenizer(question, add_special_tokens=False, return_offsets_mapping=True)
    offsets = encoded["offset_mapping"]
    if len(offsets) > max_query_length:
        return question[:offsets[max_query_length - 1][1]], max_query_length
    return question, len(offsets)


def encode_windows(questions: list[str], contexts: list[str], tokenizer, max_length: int = MAX_SEQ_LENGTH,
                   doc_stride: int = DOC_STRIDE, max_query_length: int = MAX_QUERY_LENGTH) -> list[dict]:
    """One feature per window of each (question, context): input ids, the sample it came from,
    and each token's character span in the context (None outside the context)."""
    cut = [_cut_question(q.strip(), tokenizer, max_query_length) for q in questions]
    questions = [question for question, _ in cut]
    longest = max((pieces for _, pieces in cut), default=0)
    if max_length - longest - 3 <= doc_stride:  # [CLS] question [SEP] context [SEP]
        room = tokenizer.model_max_length - 4 - doc_stride  # pieces of question a window of the model's length fits
        if 0 < room < longest:  # no --max-length the model takes would do: the question is what must give
            raise InputError(f"a question of {longest} word pieces leaves no room for context in the model's "
                             f"{tokenizer.model_max_length} tokens beside the {doc_stride} that windows overlap by "
                             f"(the doc stride): cut questions to {room} pieces (max_question_len)")
        raise InputError(f"max length {max_length} (--max-length) leaves no more context beside a question of "
                         f"{longest} word pieces than the {doc_stride} pieces that windows overlap by (the doc "
                         f"stride): give at least {longest + 3 + doc_stride + 1}")
    encoded = tokenizer(questions, contexts, truncation="only_second", max_length=max_length, stride=doc_stride,
                        return_overflowing_tokens=True, return_offsets_mapping=True)
    features = []
    for i, sample in enumerate(encoded["overflow_to_sample_mapping"]):
        sequence_ids = encoded.sequence_ids(i)
        offsets = [tuple(o) if s == 1 else None for o, s in zip(encoded["offset_mapping"][i], sequence_ids)]
        features.append({"input_ids": encoded["input_ids"][i], "token_type_ids": encoded["token_type_ids"][i],
                         "example": int(sample), "offsets": offsets})
    return features


def add_answer_positions(feature: dict, answer_start: int, answer_end: int) -> None:
    """Token start/end of the answer's characters [answer_start, answer_end) in this window, or
    both at [CLS] (position 0) when the window does not hold the whole answer."""
    offsets = feature["offsets"]
    context = [i for i, o in enumerate(offsets) if o is not None]
    if not context or offsets[context[0]][0] > answer_start or offsets[context[-1]][1] < answer_end:
        feature["start_positions"] = feature["end_positions"] = 0
        return
    start = next(i for i in context if offsets[i][1] > answer_start)
    end = next(i for i in reversed(context) if offsets[i][0] < answer_end)
    feature["start_positions"], feature["end_positions"] = start, end


@dataclass
class EvalSet:
    features: list[dict]
    examples: list[SquadExample]


def best_spans(example_context: str, features: list[dict], logits: list[np.ndarray], n_best: int = N_BEST,
               max_answer_length: int = MAX_ANSWER_LENGTH, handle_impossible_answer: bool = False) -> list[dict]:
    """The n best answer spans over all windows of one example, best first: text cut from the
    original context, char start/end, the summed start+end logits and a probability (softmax over
    the n best, as in the original BERT code). The same span from two windows is kept once. With
    `handle_impossible_answer`, "no answer" (the empty span at 0) competes too, its logit [CLS]'s
    start + end in the window where that is lowest, as in Google's SQuAD 2.0 code."""
    candidates = {}
    if handle_impossible_answer and logits:
        candidates[(0, 0)] = min(float(row[0, 0] + row[0, 1]) for row in logits)
    for feature, row in zip(features, logits):
        offsets = feature["offsets"]
        start_logits, end_logits = row[:, 0], row[:, 1]
        starts = np.argsort(start_logits)[::-1][:n_best]
        ends = np.argsort(end_logits)[::-1][:n_best]
        for s in starts:
            for e in ends:
                if offsets[s] is None or offsets[e] is None or e < s or e - s + 1 > max_answer_length:
                    continue
                span = (offsets[s][0], offsets[e][1])
                logit = float(start_logits[s] + end_logits[e])
                if span not in candidates or candidates[span] < logit:
                    candidates[span] = logit
    best = sorted(candidates.items(), key=lambda item: -item[1])[:n_best]
    if not best:
        return []
    logit_values = np.array([logit for _, logit in best])
    probabilities = np.exp(logit_values - logit_values.max())
    probabilities /= probabilities.sum()
    return [{"answer": example_context[start:end], "start": start, "end": end, "logit": logit, "score": float(p)}
            for ((start, end), logit), p in zip(best, probabilities)]


def answer_spans(contexts: list[str], features: list[dict], logits: list[np.ndarray], top_k: int = 1,
                 n_best: int = N_BEST, max_answer_length: int = MAX_ANSWER_LENGTH,
                 handle_impossible_answer: bool = False) -> list[list[dict]]:
    """The `top_k` best spans of each context from the logits of all its windows: the one answer
    algorithm of `evaluate`, the question-answering pipeline and the server."""
    by_example = collections.defaultdict(list)
    for feature, row in zip(features, logits):
        by_example[feature["example"]].append((feature, row))
    out = []
    for i, context in enumerate(contexts):
        pairs = by_example.get(i, [])
        spans = best_spans(context, [f for f, _ in pairs], [r for _, r in pairs], max(n_best, top_k), max_answer_length,
                           handle_impossible_answer)
        out.append(spans[:top_k])
    return out


def _answered(examples: list[SquadExample], use: str) -> list[SquadExample]:
    """The questions with a reference answer: SQuAD v1.1 training and scoring need one; the others are counted."""
    answered = [e for e in examples if e.answers]
    if examples and not answered:  # else the run would end in "the training set is empty", not saying why
        misplaced = sum(e.misplaced for e in examples)
        why = (f"the text of all {misplaced} given is not at its answer_start in the context" if misplaced else
               "SQuAD v1.1: questions without one, as in SQuAD 2.0, are left out")
        raise InputError(f"{examples[0].source or 'SQuAD data'}: none of the {len(examples)} questions has a "
                         f"reference answer, and {use} needs them ({why})")
    if len(answered) < len(examples):
        log.warning("%d of %d questions have no reference answer and are left out of %s (first: %r)",
                    len(examples) - len(answered), len(examples), use,
                    next(e.id for e in examples if not e.answers))
    return answered


class QuestionAnsweringTask:
    model_class = BertForQuestionAnswering
    metric = "f1"
    labels = None
    default_layer_lr_decay = 1.0  # the bundled QA recipe was measured without decay

    def __init__(self, doc_stride: int | None = None, max_query_length: int = MAX_QUERY_LENGTH):
        self.doc_stride, self.max_query_length = doc_stride, max_query_length  # None: doc_stride_for(max_length)

    def windows(self, examples: list[SquadExample], tokenizer, max_length: int) -> list[dict]:
        return encode_windows([e.question for e in examples], [e.context for e in examples], tokenizer,
                              max_length, self.doc_stride or doc_stride_for(max_length), self.max_query_length)

    def train_features(self, examples: list[SquadExample], tokenizer, max_length: int) -> list[dict]:
        """Windows of the questions that have an answer, labelled with the first answer's span."""
        examples = _answered(examples, "training")
        features = self.windows(examples, tokenizer, max_length)
        for feature in features:
            answer = examples[feature["example"]].answers[0]
            add_answer_positions(feature, answer["answer_start"], answer["answer_start"] + len(answer["text"]))
        return features

    def eval_set(self, examples, tokenizer, max_length: int) -> EvalSet:
        examples = _answered(examples, "the evaluation")
        return EvalSet(self.windows(examples, tokenizer, max_length), examples)

    def evaluate(self, model, eval_set: EvalSet, batch_size: int = 64, bf16: bool = False) -> dict:
        logits = predict_logits(model, eval_set.features, batch_size, bf16)
        answers = answer_spans([e.context for e in eval_set.examples], eval_set.features, logits)
        predictions = {e.id: (a[0]["answer"] if a else "") for e, a in zip(eval_set.examples, answers)}
        references = {e.id: [a["text"] for a in e.answers] for e in eval_set.examples}
        return {**squad_evaluate(predictions, references), "questions": len(references)}
