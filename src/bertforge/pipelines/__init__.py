"""`pipeline(task, model=...)`: one call from a checkpoint directory to a ready-to-use predictor.

Pipeline modules are imported only when their task is asked for, so importing bertforge stays fast.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING

from bertforge.errors import InputError
from bertforge.paths import default_pretraining_model_path
from bertforge.pipelines.base import DEFAULT_BATCH_SIZE, Pipeline

if TYPE_CHECKING:
    from torch import nn

# task name -> "module:class"
TASKS = {
    "feature-extraction": "bertforge.pipelines.features:FeatureExtractionPipeline",
    "sentence-embedding": "bertforge.pipelines.features:SentenceEmbeddingPipeline",
    "fill-mask": "bertforge.pipelines.fill_mask:FillMaskPipeline",
    "next-sentence": "bertforge.pipelines.next_sentence:NextSentencePipeline",
    "contextual-similarity": "bertforge.pipelines.similarity:ContextualSimilarityPipeline",
    "attention": "bertforge.pipelines.attention:AttentionPipeline",
    "text-classification": "bertforge.pipelines.text_classification:TextClassificationPipeline",
    "token-classification": "bertforge.pipelines.token_classification:TokenClassificationPipeline",
    "question-answering": "bertforge.pipelines.question_answering:QuestionAnsweringPipeline",
}


# transformers' other names for the same tasks
TASK_ALIASES = {"sentiment-analysis": "text-classification", "ner": "token-classification"}


def pipeline_class(task: str) -> type[Pipeline]:
    task = TASK_ALIASES.get(task, task)
    if task not in TASKS:
        raise InputError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    module, name = TASKS[task].split(":")
    return getattr(importlib.import_module(module), name)


def pipeline(task: str, model: str | Path | nn.Module | None = None, device: str | None = None,
             dtype: str = "float32", batch_size: int = DEFAULT_BATCH_SIZE, max_length: int | None = None,
             **kwargs) -> Pipeline:
    """A pipeline for `task` on the checkpoint directory `model` (None: the task's default model), or on a
    model in memory (one just fine-tuned) with its `tokenizer=`, as transformers takes them: used as it is, in
    eval mode, on its own device unless `device` is given.

    dtype: "float32" (exact), "bfloat16", "int8" (CPU) or "auto" (bfloat16 on native-BF16 CPUs). max_length:
    longer inputs are truncated with a warning that counts them (None: the model's limit).
    """
    return pipeline_class(task)(model=model, device=device, dtype=dtype, batch_size=batch_size,
                                max_length=max_length, **kwargs)


__all__ = ["TASKS", "Pipeline", "default_pretraining_model_path", "pipeline", "pipeline_class"]
