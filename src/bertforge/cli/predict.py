"""`bertforge evaluate` and `predict`: a fine-tuned model on files on disk, read as `finetune` reads them and
scored as the pipelines score."""

from __future__ import annotations

import json
from pathlib import Path

import click

from bertforge.cli.finetune import (INFERENCE_BATCH_SIZE, SENTENCE_CLASSIFIER_TASKS, configure, data_options, device_for,
                                    load_task_model, max_length_for, read_data, task_checkpoint)
from bertforge.cli.io import check_output, write_records
from bertforge.errors import InputError
from bertforge.io.atomic import write_text
from bertforge.io.readers import file_format


@click.command()
@data_options
@click.option("--model", "model_dir", type=click.Path(), required=True, help="A model fine-tuned for TASK.")
@click.option("--validation", "validation_path", type=click.Path(dir_okay=False), required=True)
@click.option("--output", "output_path", type=click.Path(dir_okay=False), default=None, help="Write the metrics JSON here too.")
def evaluate(task, model_dir, validation_path, output_path, max_length, batch_size, device, bf16, threads,
             deterministic, **columns):
    """Score a fine-tuned model on a labelled file (accuracy/F1, entity F1, or SQuAD EM/F1).

    \b
    Examples:
      bertforge evaluate --task classification --model sst2-model --validation dev.tsv
      bertforge evaluate --task ner --model conll-model --validation test.conll --output scores.json
    """
    check_output(output_path, (".json",), inputs=(validation_path,))  # before the work, not after it
    configure(threads, deterministic)
    directory, task_object, tokenizer, model = load_task_model(task, model_dir)
    data = read_data(task, validation_path, columns)
    if not data:
        raise InputError(f"{validation_path}: the validation set is empty")
    eval_set = task_object.eval_set(data, tokenizer, max_length_for(task, max_length, directory, tokenizer))
    metrics = task_object.evaluate(inference_model(model, device, bf16), eval_set, batch_size or INFERENCE_BATCH_SIZE)
    text = json.dumps(metrics, indent=2)
    if output_path:
        write_text(output_path, text + "\n")
    click.echo(text)


@click.command()
@data_options
@click.option("--model", "model_dir", type=click.Path(), required=True, help="A model fine-tuned for TASK.")
@click.option("--input", "input_path", type=click.Path(dir_okay=False), required=True,
              help="Texts (a .txt file, a text a line, or a TSV/CSV/JSONL/Parquet table), SQuAD JSON, or for ner "
                   "CoNLL words (first column) or "
                   "sentences (a .jsonl/.csv/.parquet table's --text-column).")
@click.option("--output", "output_path", type=click.Path(dir_okay=False), default=None,
              help="A .jsonl file (one JSON line per example) or .json (one array) [default: JSON Lines on stdout].")
def predict(task, model_dir, input_path, output_path, max_length, batch_size, device, bf16, threads, deterministic,
            **columns):
    """Predict with a fine-tuned model: one JSON line per input example. Classifiers score as the
    text-classification pipeline does: texts up to the model's length, through the function its config
    implies (softmax; sigmoid for independent labels; a regression's value as it is).

    \b
    Examples:
      bertforge predict --task classification --model sst2-model --input texts.tsv --output predictions.jsonl
      bertforge predict --task qa --model qa-model --input questions.json
    """
    check_output(Path(output_path) if output_path else None, inputs=(input_path,))
    configure(threads, deterministic)
    table = task in SENTENCE_CLASSIFIER_TASKS
    if task == "ner":  # words already split: the task tags them as the token-classification pipeline would
        directory, task_object, tokenizer, model = load_task_model(task, model_dir)
    else:  # the task's pipeline loads the model: its scores and lengths, as `pipeline()` gives
        directory = task_checkpoint(task, model_dir, fine_tuned=True)[0]
    data = read_data(task, input_path, columns, labelled=False, tokenizer=tokenizer if task == "ner" else None)
    if not data:  # a CoNLL file without sentences, or SQuAD without questions (texts' readers say so themselves)
        raise InputError(f"{input_path}: no examples to predict")
    batch_size = batch_size or INFERENCE_BATCH_SIZE
    if table:
        results = classify(directory, data, device, bf16, batch_size, max_length)
    elif task == "qa":
        results = answer(directory, data, device, bf16, batch_size, max_length)
    else:
        results = task_object.predict(inference_model(model, device, bf16), data, tokenizer,
                                      max_length_for(task, max_length, directory, tokenizer), batch_size)
    numbered_by = "row" if file_format(input_path) == ".parquet" else "line"
    lines = []
    for example, result in zip(data, results):
        # where a text came from, as embed and the other inference commands say it: empty lines are skipped
        where = {numbered_by: example.line} if task != "qa" and example.line is not None else {}
        if task == "ner":
            lines.append({**where, "words": example.words, "tags": [t for t, _ in result],
                          "scores": [s for _, s in result]})
        elif task == "qa":
            lines.append({"id": example.id, **result})
        else:
            lines.append({**where, "text": example.text,
                          **({"text_pair": example.text_pair} if example.text_pair else {}), **result})
    write_records(lines, Path(output_path) if output_path else None)


def inference_model(model, device: str, bf16: bool):
    """`model` on `device` as the pipelines run it: --bf16 means bfloat16 weights, their dtype="bfloat16"."""
    from bertforge.pipelines.loading import apply_dtype

    return apply_dtype(model, "bfloat16" if bf16 else "float32", device_for(device))


def classify(model: Path, examples, device: str, bf16: bool, batch_size: int, max_length: int | None):
    """{"label", "score", "scores"} for each example, from the text-classification pipeline: scores through
    the function the model's config implies (a regression's value as it is), texts up to the model's length."""
    from bertforge.pipelines import pipeline

    pipe = pipeline("text-classification", model=model, device=device,
                    dtype="bfloat16" if bf16 else "float32", batch_size=batch_size, max_length=max_length)
    pairs = [e.text_pair for e in examples] if examples[0].text_pair is not None else None
    results = []
    for ranked in pipe([e.text for e in examples], text_pair=pairs, top_k=None):
        scores = {item["label"]: item["score"] for item in ranked}
        results.append({"label": ranked[0]["label"], "score": ranked[0]["score"],
                        "scores": {label: scores[label] for label in pipe.labels}})
    return results


def answer(model: Path, examples, device: str, bf16: bool, batch_size: int, max_length: int | None):
    """{"answer", "score", "start", "end"} for each question, from the question-answering pipeline; nulls
    where no span of the context can be an answer (the pipeline gives no answer there)."""
    from bertforge.pipelines import pipeline

    pipe = pipeline("question-answering", model=model, device=device,
                    dtype="bfloat16" if bf16 else "float32", batch_size=batch_size, max_length=max_length)
    answers = pipe(question=[e.question for e in examples], context=[e.context for e in examples])
    return [a or dict.fromkeys(("answer", "score", "start", "end")) for a in answers]
