"""`question-answering`: answer spans cut from the context, over as many windows as it needs."""

from __future__ import annotations

from pathlib import Path

from bertforge.errors import InputError
from bertforge.pipelines.base import bundled_model_path
from bertforge.pipelines.text_classification import as_list, load_finetuned


def default_qa_model_path() -> Path:
    """bertforge's bundled extractive QA model (all-MiniLM-L6-v2 fine-tuned on SQuAD v1.1 articles)."""
    return bundled_model_path("minilm-squad", "a model made by `bertforge finetune --task qa`")


class QuestionAnsweringPipeline:
    """`pipe(question="Who ...?", context="...")` → {"answer", "score", "start", "end"} (character
    span in the context); `top_k=3` gives a list of the 3 best. Lists of questions and contexts give
    one result per pair. Contexts longer than one window are read in windows overlapping by
    `doc_stride` tokens and the best span over all windows wins."""

    def __init__(self, model=None, device="cpu", dtype="float32", batch_size=32, max_length=None):
        from bertforge.model import BertForQuestionAnswering

        self.model_path = Path(model) if model is not None else default_qa_model_path()
        self.model, self.tokenizer = load_finetuned(BertForQuestionAnswering, self.model_path, device, dtype)
        self.batch_size = batch_size
        self.max_length = max_length or 384

    def __call__(self, question, context, top_k: int = 1, doc_stride: int = 128, max_answer_length: int = 30,
                 max_question_length: int = 64):
        from bertforge.tasks.batching import predict_logits
        from bertforge.tasks.squad import best_spans, encode_windows

        questions, single = as_list(question, "question")
        contexts, _ = as_list(context, "context")
        if len(questions) != len(contexts):
            raise InputError(f"{len(questions)} questions but {len(contexts)} contexts")
        if top_k < 1:
            raise InputError(f"top_k must be at least 1, got {top_k}")
        if doc_stride >= self.max_length // 2:
            raise InputError(f"doc_stride {doc_stride} must be less than half of max_length {self.max_length}")
        features = encode_windows(questions, contexts, self.tokenizer, self.max_length, doc_stride, max_question_length)
        logits = predict_logits(self.model, features, self.batch_size)
        results = []
        for i, context_text in enumerate(contexts):
            mine = [(f, row) for f, row in zip(features, logits) if f["example"] == i]
            spans = best_spans(context_text, [f for f, _ in mine], [row for _, row in mine],
                               n_best=max(20, top_k), max_answer_length=max_answer_length)[:top_k]
            answers = [{"answer": s["answer"], "score": s["score"], "start": s["start"], "end": s["end"]} for s in spans]
            results.append(answers[0] if top_k == 1 and answers else answers)
        return results[0] if single else results
