"""SQuAD v1.1: the official EM/F1 on hand-made predictions, and span search across the windows of
a context longer than one 384-token window."""

from __future__ import annotations

import re
import string
from collections import Counter

import numpy as np
import pytest

from bertforge.errors import InputError
from bertforge.io.datasets import SquadExample, read_squad
from bertforge.tasks.squad import (DOC_STRIDE, MAX_SEQ_LENGTH, QuestionAnsweringTask, add_answer_positions,
                                   best_spans, encode_windows, normalize_answer, squad_evaluate)
from conftest import fixture_data, gutenberg_lines


# The official evaluate-v1.1.py, as published with SQuAD (the reference the re-implementation must equal).
def official_normalize_answer(s):
    def remove_articles(text):
        return re.sub(r'\b(a|an|the)\b', ' ', text)

    def white_space_fix(text):
        return ' '.join(text.split())

    def remove_punc(text):
        exclude = set(string.punctuation)
        return ''.join(ch for ch in text if ch not in exclude)

    def lower(text):
        return text.lower()

    return white_space_fix(remove_articles(remove_punc(lower(s))))


def official_f1_score(prediction, ground_truth):
    prediction_tokens = official_normalize_answer(prediction).split()
    ground_truth_tokens = official_normalize_answer(ground_truth).split()
    common = Counter(prediction_tokens) & Counter(ground_truth_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(prediction_tokens)
    recall = 1.0 * num_same / len(ground_truth_tokens)
    return (2 * precision * recall) / (precision + recall)


def official_evaluate(dataset, predictions):
    f1 = exact_match = total = 0
    for article in dataset:
        for paragraph in article['paragraphs']:
            for qa in paragraph['qas']:
                total += 1
                if qa['id'] not in predictions:
                    continue
                ground_truths = [x['text'] for x in qa['answers']]
                prediction = predictions[qa['id']]
                exact_match += max(official_normalize_answer(prediction) == official_normalize_answer(t)
                                   for t in ground_truths)
                f1 += max(official_f1_score(prediction, t) for t in ground_truths)
    return {'exact_match': 100.0 * exact_match / total, 'f1': 100.0 * f1 / total}


HAND_MADE = {  # question id: (references, prediction)
    "q1": (["Denver Broncos", "The Denver Broncos"], "the Denver Broncos!"),  # articles and punctuation go
    "q2": (["Santa Clara, California"], "Santa Clara"),  # F1 2*(1*2/3)/(1+2/3) = 0.8
    "q3": (["1990s", "the 1990s"], "in the late 1990s"),  # best reference: P 1/3, R 1 → 0.5
    "q4": (["gold"], "silver"),
    "q5": (["Levi's Stadium"], "Levis Stadium"),  # the apostrophe is punctuation: exact match
    "q6": (["the the cat"], "cat cat"),  # repeated tokens count once each: P 1/2, R 1 → 2/3
}


def test_squad_metrics_equal_the_official_script_on_hand_made_predictions():
    references = {qid: refs for qid, (refs, _) in HAND_MADE.items()}
    predictions = {qid: prediction for qid, (_, prediction) in HAND_MADE.items()}
    del predictions["q4"]
    predictions["q4-typo"] = "gold"  # a prediction for no question is ignored; q4 scores 0
    ours = squad_evaluate(predictions, references)
    dataset = [{"paragraphs": [{"qas": [{"id": qid, "answers": [{"text": t} for t in refs]}
                                        for qid, refs in references.items()]}]}]
    assert ours == pytest.approx(official_evaluate(dataset, predictions))
    assert ours["exact_match"] == pytest.approx(100 * 2 / 6)
    assert ours["f1"] == pytest.approx(100 * (1 + 0.8 + 0.5 + 0 + 1 + 2 / 3) / 6)
    for text in ["The  Eiffel-Tower.", "an apple a day", "ÉCOLE d'été", "   "]:
        assert normalize_answer(text) == official_normalize_answer(text)




def long_context_example():
    """A real SQuAD paragraph with real book text before it: the answer lies beyond the first window."""
    examples, _ = read_squad(fixture_data("squad", "squad-v1.1-dev-part-train.json.gz"))
    example = examples[0]
    prefix = " ".join(gutenberg_lines(120)) + " "
    answers = [{"text": a["text"], "answer_start": a["answer_start"] + len(prefix)} for a in example.answers]
    return SquadExample("long", example.title, example.question, prefix + example.context, answers)


def test_windows_cover_a_long_context_and_label_the_answer(tokenizer):
    example = long_context_example()
    features = QuestionAnsweringTask().train_features([example], tokenizer, MAX_SEQ_LENGTH)
    assert len(features) >= 3 and all(len(f["input_ids"]) <= MAX_SEQ_LENGTH for f in features)
    answer = example.answers[0]
    holding = [f for f in features if f["start_positions"]]
    assert holding and features[0]["start_positions"] == 0  # the first window does not hold the answer
    for feature in holding:
        start, end = feature["offsets"][feature["start_positions"]][0], feature["offsets"][feature["end_positions"]][1]
        assert example.context[start:end] == answer["text"]
    # Consecutive windows overlap by doc_stride context tokens.
    first, second = ([o for o in f["offsets"] if o is not None] for f in features[:2])
    assert first[-DOC_STRIDE:] == second[:DOC_STRIDE]


def test_questions_without_an_answer_are_left_out_with_a_warning_that_counts_them(tokenizer, caplog):
    example = long_context_example()
    unanswered = SquadExample("q-without", example.title, example.question, example.context, [])
    task = QuestionAnsweringTask()
    with caplog.at_level("WARNING", logger="bertforge.tasks.squad"):
        features = task.train_features([example, unanswered], tokenizer, MAX_SEQ_LENGTH)
        evaluated = task.eval_set([unanswered, example], tokenizer, MAX_SEQ_LENGTH)
    assert {f["example"] for f in features} == {0} and evaluated.examples == [example]
    assert [r.getMessage() for r in caplog.records] == [
        f"1 of 2 questions have no reference answer and are left out of {use} (first: 'q-without')"
        for use in ("training", "the evaluation")]


def test_a_max_length_with_no_room_beyond_the_doc_stride_names_the_length_to_give(tokenizer):
    """A window must hold [CLS] question [SEP], more context than the stride overlaps, and [SEP]: below that
    the message names --max-length and the least that works for these questions, and that length works."""
    example = long_context_example()
    pieces = len(tokenizer.tokenize(example.question))
    enough = pieces + 3 + DOC_STRIDE + 1
    with pytest.raises(InputError, match=rf"^max length {enough - 1} \(--max-length\) .* question of {pieces} word "
                                         rf"pieces .* give at least {enough}$"):
        encode_windows([example.question], [example.context], tokenizer, max_length=enough - 1)
    assert len(encode_windows([example.question], [example.context], tokenizer, max_length=enough)) > 1


def test_span_search_across_windows_finds_the_answer(tokenizer):
    example = long_context_example()
    answer = example.answers[0]
    answer_end = answer["answer_start"] + len(answer["text"])
    features = encode_windows([example.question], [example.context], tokenizer)
    rng = np.random.default_rng(0)
    logits = []
    for feature in features:
        row = rng.normal(0, 1, size=(len(feature["input_ids"]), 2)).astype(np.float32)
        row[0] = 8.0  # a strong [CLS] score must not be taken as an answer
        probe = dict(feature)
        add_answer_positions(probe, answer["answer_start"], answer_end)
        if probe["start_positions"]:
            # Only the windows holding the whole answer score it, the last one more confidently.
            bonus = 1.0 if feature is features[-1] else 0.0
            row[probe["start_positions"], 0] = row[probe["end_positions"], 1] = 10.0 + bonus
        else:
            # Distractors: a strong start whose strong ends lie too far after it or before it.
            context = [i for i, o in enumerate(feature["offsets"]) if o is not None]
            row[context[10], 0] = row[context[10] + 40, 1] = row[context[5], 1] = 9.0
        logits.append(row)
    spans = best_spans(example.context, features, logits)
    assert len(spans) <= 20
    best = spans[0]
    assert (best["start"], best["end"]) == (answer["answer_start"], answer_end)
    assert best["answer"] == answer["text"] == example.context[best["start"]:best["end"]]
    assert all(s["end"] > s["start"] for s in spans)
    assert len({(s["start"], s["end"]) for s in spans}) == len(spans)  # one entry per span over all windows
    assert sum(s["score"] for s in spans) == pytest.approx(1.0)


def test_question_answering_pipeline_reads_long_contexts(tmp_path, tokenizer):
    from bertforge.model import BertForQuestionAnswering
    from bertforge.pipelines.question_answering import QuestionAnsweringPipeline

    BertForQuestionAnswering.from_pretrained(None, num_hidden_layers=1).save_pretrained(tmp_path, tokenizer)
    example = long_context_example()
    pipe = QuestionAnsweringPipeline(str(tmp_path))
    top = pipe(example.question, example.context, top_k=3)
    assert len(top) == 3 and top[0]["score"] >= top[1]["score"]
    for answer in top:
        assert example.context[answer["start"]:answer["end"]] == answer["answer"]
        assert 0 < len(tokenizer.tokenize(answer["answer"])) <= 30
    single = pipe(example.question, example.context)
    assert single["answer"] == top[0]["answer"]
