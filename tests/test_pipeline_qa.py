"""The question-answering pipeline on the bundled SQuAD model: the span it picks against an
exhaustive search over transformers' logits, long contexts read in windows, and empty input."""

from __future__ import annotations

import pytest
import torch
from conftest import sst2_sentences

from bertforge.errors import InputError
from bertforge.pipelines import pipeline


@pytest.fixture(scope="module")
def reader():
    return pipeline("question-answering")


QA_CONTEXT = ("The Normans were the people who in the 10th and 11th centuries gave their name to Normandy, a "
              "region in France. They were descended from Norse raiders and pirates from Denmark, Iceland and "
              "Norway who, under their leader Rollo, agreed to swear fealty to King Charles III of West Francia.")
QA_QUESTIONS = ["In what country is Normandy located?", "Who was the Norse leader?",
                "What king did Rollo swear fealty to?", "When did the Normans give their name to Normandy?"]


def test_question_answering_finds_the_best_span_of_the_reference_model(reader):
    """One window: the answer is the valid span (in the context, end ≥ start, ≤ 30 tokens) with the
    largest start + end logit, found exhaustively on transformers' logits for the same checkpoint."""
    from transformers import AutoModelForQuestionAnswering, BertTokenizerFast

    model = AutoModelForQuestionAnswering.from_pretrained(str(reader.model_path)).eval()
    tokenizer = BertTokenizerFast.from_pretrained(str(reader.model_path))
    answers = reader(question=QA_QUESTIONS, context=[QA_CONTEXT] * len(QA_QUESTIONS))
    for question, answer in zip(QA_QUESTIONS, answers):
        encoded = tokenizer(question, QA_CONTEXT, return_offsets_mapping=True, return_tensors="pt")
        offsets = encoded.pop("offset_mapping")[0]
        with torch.inference_mode():
            out = model(**encoded)
        in_context = torch.tensor([s == 1 for s in encoded.sequence_ids(0)])
        n = len(in_context)
        length = torch.arange(n)[None, :] - torch.arange(n)[:, None]
        valid = in_context[:, None] & in_context[None, :] & (length >= 0) & (length < 30)
        sums = (out.start_logits[0][:, None] + out.end_logits[0][None, :]).masked_fill(~valid, -torch.inf)
        start, end = divmod(int(sums.argmax()), n)
        assert (answer["start"], answer["end"]) == (int(offsets[start][0]), int(offsets[end][1])), question
        assert answer["answer"] == QA_CONTEXT[answer["start"]:answer["end"]]
    assert [a["answer"] for a in answers[:2]] == ["France", "Rollo"]


def test_question_answering_reads_a_long_context_in_windows(reader):
    from bertforge.tasks.squad import encode_windows

    filler = " ".join(sst2_sentences(120))
    context = filler + " " + QA_CONTEXT + " " + filler
    assert len(encode_windows([QA_QUESTIONS[1]], [context], reader.tokenizer)) >= 4
    answer = reader(question=QA_QUESTIONS[1], context=context)
    # found in the window that holds the paragraph, among windows of film reviews
    assert "Rollo" in answer["answer"] and answer["answer"] == context[answer["start"]:answer["end"]]
    assert len(filler) < answer["start"] and answer["end"] <= len(filler) + 1 + len(QA_CONTEXT)
    top = reader(question=QA_QUESTIONS[1], context=context, top_k=3)
    assert len(top) == 3 and top[0] == answer and top[0]["score"] >= top[1]["score"] >= top[2]["score"]


@pytest.mark.parametrize("question, context, message", [
    ("Who?", "", "the context is empty"),
    ("Who?", "   ", "the context is empty"),
    ("", QA_CONTEXT, "the question is empty"),
    (["Who?", " "], [QA_CONTEXT, QA_CONTEXT], "question 2 is empty"),
    (["Who?"], [QA_CONTEXT, QA_CONTEXT], "1 questions but 2 contexts"),
])
def test_question_answering_refuses_empty_input(reader, question, context, message):
    with pytest.raises(InputError, match=message):
        reader(question=question, context=context)


def test_question_answering_takes_transformers_input_forms(reader):
    """A {"question", "context"} dict, a list of them, one context for several questions, and the argument
    names max_answer_len / max_question_len give what the question=/context= call gives."""
    context = "The Broncos beat the Panthers 24 to 10 in Santa Clara, California."
    questions = ["Who won the game?", "Where was the game played?"]
    expected = reader(questions, [context] * 2)
    assert reader({"question": questions[0], "context": context}) == expected[0]
    assert reader([{"question": q, "context": context} for q in questions]) == expected
    assert reader(questions, context) == expected
    assert reader(questions[1], context, max_answer_len=1, max_question_len=8) == \
        reader(questions[1], context, max_answer_length=1, max_question_length=8)
    with pytest.raises(InputError, match=r"question\[0\]: expected \{'question': ..., 'context': ...\}, got the keys "
                                         r"\['q'\]"):
        reader([{"q": "Who?"}])
    with pytest.raises(InputError, match="give a question and a context"):
        reader(questions[0])
    with pytest.raises(InputError, match=r"give context= or \{'question': ..., 'context': ...\} inputs, not both"):
        reader({"question": questions[0], "context": context}, context)
    with pytest.raises(InputError, match="handle_impossible_answer must be True or False, got 'yes'"):
        reader(questions[0], context, handle_impossible_answer="yes")


def test_no_answer_competes_with_the_lowest_cls_score_of_the_windows_when_asked(reader):
    """Google's SQuAD 2.0 rule: the null answer's logit is [CLS]'s start + end in the window where it is lowest."""
    import numpy as np

    from bertforge.tasks.squad import best_spans

    context = "The Broncos won."
    features = [{"offsets": [None, (4, 11), (12, 15)]}] * 2
    span = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # "Broncos won": start 1 + end 1 = 2
    for cls_sums, expected in (((3.0, 1.0), "Broncos won"), ((5.0, 4.0), "")):
        logits = [span + np.array([[total, 0.0], [0, 0], [0, 0]]) for total in cls_sums]
        assert best_spans(context, features, logits)[0]["answer"] == "Broncos won"
        best = best_spans(context, features, logits, handle_impossible_answer=True)[0]
        assert best["answer"] == expected and best["logit"] == (min(cls_sums) if expected == "" else 2.0)
    question, unrelated = "What is the capital of Mars?", "The cat sat on the mat."
    assert reader(question, unrelated)["answer"] != ""
    result = reader(question, unrelated, handle_impossible_answer=True)
    assert (result["answer"], result["start"], result["end"]) == ("", 0, 0) and 0.5 < result["score"] <= 1


def test_a_question_too_long_for_the_model_names_max_question_len(reader):
    """No max_length the model takes fits a 400-word question beside the context: the message names the lever
    that can help (it asked for a --max-length above the model's 512 positions)."""
    question = " ".join(["why"] * 400) + "?"
    with pytest.raises(InputError, match=r"a question of 401 word pieces leaves no room for context in the model's "
                                         r"512 tokens .* cut questions to 380 pieces \(max_question_len\)"):
        reader(question=question, context=QA_CONTEXT, max_question_len=100000)


def test_a_bad_limit_is_named_as_the_caller_spelled_it(reader):
    """max_answer_len=0 (transformers' name) was refused as max_answer_length, a keyword the caller never gave."""
    for name in ("max_answer_len", "max_answer_length", "max_question_len", "max_question_length"):
        with pytest.raises(InputError, match=rf"^{name} must be a positive integer, got 0$"):
            reader(question=QA_QUESTIONS[1], context=QA_CONTEXT, **{name: 0})
