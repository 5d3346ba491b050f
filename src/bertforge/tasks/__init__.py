"""Fine-tuning tasks: sentence (pair) classification, NER, extractive QA, the feature-based probe,
and the trainer they share. `build_task` and `read_task_data` connect them to files on disk."""

from __future__ import annotations

from pathlib import Path

from bertforge.errors import ConfigError
from bertforge.tasks.classification import ClassificationTask
from bertforge.io.datasets import read_conll, read_sentences, read_squad, read_text_examples
from bertforge.io.readers import file_format
from bertforge.tasks.ner import TokenClassificationTask, cut_into_words
from bertforge.tasks.squad import QuestionAnsweringTask
from bertforge.tasks.trainer import FinetuneArgs, default_learning_rate, finetune

SENTENCE_CLASSIFIER_TASKS = ("classification", "pair-classification")
TASK_NAMES = (*SENTENCE_CLASSIFIER_TASKS, "ner", "qa")
HEAD_OF_TASK = {"classification": "BertForSequenceClassification", "pair-classification": "BertForSequenceClassification",
                "ner": "BertForTokenClassification", "qa": "BertForQuestionAnswering"}
# The pipeline task (`model.capabilities`) each head serves.
PIPELINE_TASK = {"classification": "text-classification", "pair-classification": "text-classification",
                 "ner": "token-classification", "qa": "question-answering"}
# Tables whose rows are sentences to tag; other files given to NER are CoNLL (a token a line), .tsv
# included: CoNLL files are often named so.
SENTENCE_TABLES = (".jsonl", ".json", ".csv", ".parquet")


def read_task_data(task: str, path, text_column: str = "sentence", text_pair_column: str | None = None,
                   label_column: str | None = "label", tag_column: int | None = None, labelled: bool = True,
                   tokenizer=None) -> list:
    """Examples of `task` from `path`; `labelled=False` reads prediction input (no labels). NER sentences to tag
    from a table are cut into the words of `tokenizer`, the model's (as the token-classification pipeline cuts).
    `tag_column` is the CoNLL tags' column (None: the last), for ner only."""
    # A tag column that is not read would be ignored without a word.
    if tag_column is not None and task != "ner":
        raise ConfigError(f"--tag-column {tag_column}: --task {task} reads no CoNLL tags; the option is for --task ner")
    if tag_column is not None and not labelled:
        raise ConfigError(f"--tag-column {tag_column}: {path} is read for its words to tag, not for tags; the option "
                          f"is for labelled CoNLL files")
    if task in SENTENCE_CLASSIFIER_TASKS:
        if task == "pair-classification" and not text_pair_column:
            raise ConfigError("--task pair-classification needs --text-pair-column")
        if task == "classification" and text_pair_column:
            raise ConfigError(f"--text-pair-column {text_pair_column}: --task classification reads one text; "
                              f"use --task pair-classification for pairs")
        _check_distinct_columns(text_column=text_column, text_pair_column=text_pair_column,
                                label_column=label_column if labelled else None)
        return read_text_examples(path, text_column, text_pair_column if task == "pair-classification" else None,
                                  label_column if labelled else None)
    if task == "ner":
        if not labelled and file_format(path) in SENTENCE_TABLES:
            if tokenizer is None:
                raise ConfigError(f"{path}: sentences to tag are cut into the words of the model's tokenizer: "
                                  f"give tokenizer=")
            return cut_into_words(read_sentences(path, text_column), tokenizer)
        return read_conll(path, -1 if tag_column is None else tag_column, with_tags=labelled)
    if task == "qa":
        return read_squad(path)[0]
    raise ConfigError(f"--task {task!r}: use one of {', '.join(TASK_NAMES)}")


def _check_distinct_columns(**columns) -> None:
    """A column read twice (the label as the text, say) would train on nonsense without a word."""
    seen = {}
    for option, column in columns.items():
        if column is None:
            continue
        if column in seen:
            raise ConfigError(f"--{seen[column].replace('_', '-')} and --{option.replace('_', '-')} both name the "
                              f"column {column!r}; each must name a column of its own")
        seen[column] = option


def build_task(task: str, train_data=None, id2label: dict | None = None):
    """The task object, its labels read from the training data or (for a fine-tuned model) its id2label."""
    labels = [id2label[i] for i in sorted(id2label)] if id2label else None
    if task in SENTENCE_CLASSIFIER_TASKS:
        pair = task == "pair-classification"
        return ClassificationTask(labels, pair) if labels else ClassificationTask.from_examples(train_data, pair)
    if task == "ner":
        return TokenClassificationTask(labels) if labels else TokenClassificationTask.from_sentences(train_data)
    if task == "qa":
        return QuestionAnsweringTask()
    raise ConfigError(f"--task {task!r}: use one of {', '.join(TASK_NAMES)}")


def check_head(task: str, model_dir: Path, fine_tuned: bool) -> None:
    """A fine-tuned model must carry the head of `task`; starting a fine-tuning run from another
    task's fine-tuned head is refused as well (an encoder or pre-training checkpoint is fine). Judged
    by the weights, as the pipelines judge (`checkpoint_tasks`), so Google's folders count too."""
    from bertforge.model.capabilities import checkpoint_tasks, head_model

    tasks = checkpoint_tasks(model_dir)
    if PIPELINE_TASK[task] in tasks:
        return
    other = next((t for t in PIPELINE_TASK.values() if t in tasks), None)
    if fine_tuned or other:
        raise ConfigError(f"--task {task} needs a {HEAD_OF_TASK[task]} model, but {model_dir} holds "
                          f"{'the head of a ' + head_model([other]) if other else 'no task head'}"
                          + ("" if fine_tuned else "; give --new-head to start from its encoder"))


__all__ = ["SENTENCE_CLASSIFIER_TASKS", "TASK_NAMES", "ClassificationTask", "FinetuneArgs", "default_learning_rate", "QuestionAnsweringTask", "TokenClassificationTask",
           "build_task", "check_head", "finetune", "read_task_data"]
