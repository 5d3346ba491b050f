"""`question-answering`: answer spans cut from the context, over as many windows as it needs, by
the same algorithm as `bertforge finetune --task qa`'s evaluation (tasks/squad.py)."""

from __future__ import annotations

from pathlib import Path

from bertforge.errors import InputError, is_whole_number
from bertforge.model import BertForQuestionAnswering
from bertforge.paths import bundled_model_path
from bertforge.pipelines.base import Pipeline, as_list
from bertforge.tasks.batching import predict_logits
from bertforge.tokenization.basic import has_text
from bertforge.tasks.squad import (MAX_ANSWER_LENGTH, MAX_QUERY_LENGTH, MAX_SEQ_LENGTH, answer_spans,
                                   doc_stride_for, encode_windows)


def default_qa_model_path() -> Path:
    """bertforge's bundled extractive QA model (all-MiniLM-L6-v2 fine-tuned on SQuAD v1.1 articles)."""
    return bundled_model_path("minilm-squad", "a model made by `bertforge finetune --task qa`")


class QuestionAnsweringPipeline(Pipeline):
    """`pipe(question="Who ...?", context="...")` → {"answer", "score", "start", "end"} (character
    span in the context); `top_k=3` gives a list of the 3 best. Lists of questions and contexts give
    one result per pair (one context for all the questions: each is asked of it); transformers' forms
    work too: `pipe({"question": q, "context": c})`, a list of such, and its argument names
    `max_answer_len` and `max_question_len`. Contexts longer than one window are read in windows
    overlapping by `doc_stride` tokens; the question is cut to `max_question_length` pieces; the best
    span by summed start and end logits over all windows wins (score: softmax over the 20 best).
    `handle_impossible_answer=True` lets "no answer" ({"answer": "", "start": 0, "end": 0}) compete,
    for models trained on SQuAD 2.0's unanswerable questions."""

    task = "question-answering"
    model_class = BertForQuestionAnswering
    head_prefix = ("qa_outputs.",)
    head_name = "question-answering head (qa_outputs.*)"
    default_model = staticmethod(default_qa_model_path)
    side_by_side = False  # its windows go through predict_logits, the evaluation's batching

    @staticmethod
    def default_max_length(path: Path, limit: int) -> int:
        return min(MAX_SEQ_LENGTH, limit)  # the window BERT's SQuAD recipe trains and evaluates with

    def __call__(self, question=None, context=None, top_k: int = 1, doc_stride: int | None = None,
                 max_answer_length: int = MAX_ANSWER_LENGTH, max_question_length: int = MAX_QUERY_LENGTH, *,
                 max_answer_len: int | None = None, max_question_len: int | None = None,
                 handle_impossible_answer: bool = False):
        question, context = questions_of_dicts(question, context)
        # transformers' names, where given, are the ones a message names
        answer_limit = ("max_answer_len", max_answer_len) if max_answer_len is not None else \
            ("max_answer_length", max_answer_length)
        question_limit = ("max_question_len", max_question_len) if max_question_len is not None else \
            ("max_question_length", max_question_length)
        max_answer_length, max_question_length = answer_limit[1], question_limit[1]
        questions, single = as_list(question, "question")
        contexts, _ = as_list(context, "context")
        if isinstance(context, str) and not single:
            contexts = contexts * len(questions)
        if len(questions) != len(contexts):
            raise InputError(f"{len(questions)} questions but {len(contexts)} contexts")
        for what, texts in (("question", questions), ("context", contexts)):
            for i, text in enumerate(texts):
                if not has_text(text):  # empty, or only spaces and characters BERT drops (control, zero-width)
                    raise InputError(f"the {what} is empty" if single else f"{what} {i + 1} is empty")
        if doc_stride is None:
            doc_stride = doc_stride_for(self.max_length)
            if doc_stride < 1:  # not the user's doc_stride to blame
                raise InputError(f"max_length {self.max_length} is too short for question answering: windows that "
                                 f"overlap need at least 4 tokens")
        for name, value in (("top_k", top_k), answer_limit, question_limit):
            if not is_whole_number(value, 1):
                raise InputError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(doc_stride, int) or not 0 < doc_stride < self.max_length // 2:
            raise InputError(f"doc_stride {doc_stride!r} must be positive and less than half of max_length "
                             f"{self.max_length}")
        features = encode_windows(questions, contexts, self.tokenizer, self.max_length, doc_stride, max_question_length)
        logits = predict_logits(self.model, features, self.batch_size, pad_token_id=self.tokenizer.pad_token_id)
        results = []
        if not isinstance(handle_impossible_answer, bool):
            raise InputError(f"handle_impossible_answer must be True or False, got {handle_impossible_answer!r}")
        for spans in answer_spans(contexts, features, logits, top_k, max_answer_length=max_answer_length,
                                  handle_impossible_answer=handle_impossible_answer):
            answers = [{"answer": s["answer"], "score": s["score"], "start": s["start"], "end": s["end"]} for s in spans]
            results.append(answers[0] if top_k == 1 and answers else answers)
        return results[0] if single else results


def questions_of_dicts(question, context):
    """transformers' form, {"question": q, "context": c} or a list of such, as (questions, contexts)."""
    rows = [question] if isinstance(question, dict) else question
    if not isinstance(rows, (list, tuple)) or not rows or not all(isinstance(row, dict) for row in rows):
        if question is None or context is None:
            raise InputError("give a question and a context (or {'question': ..., 'context': ...})")
        return question, context
    if context is not None:
        raise InputError("give context= or {'question': ..., 'context': ...} inputs, not both")
    for i, row in enumerate(rows):
        if set(row) != {"question", "context"}:
            raise InputError(f"question[{i}]: expected {{'question': ..., 'context': ...}}, got the keys {sorted(row)}")
    if isinstance(question, dict):
        return question["question"], question["context"]
    return [row["question"] for row in rows], [row["context"] for row in rows]
