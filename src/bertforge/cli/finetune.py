"""`bertforge finetune`: the downstream tasks from files on disk, and what `evaluate`, `predict` and `distill`
share with it (data and model options, reading a task's data and checkpoints)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from bertforge.cli.io import SEED
from bertforge.errors import CheckpointError, ConfigError, InputError
from bertforge.io.atomic import check_output_dir

# bertforge.tasks' TASK_NAMES and SENTENCE_CLASSIFIER_TASKS, written out as CLASSIFIER_POOLINGS below is.
TASKS = ("classification", "pair-classification", "ner", "qa")
SENTENCE_CLASSIFIER_TASKS = TASKS[:2]
# BertConfig's CLASSIFIER_POOLINGS, written out: importing bertforge.model would load torch for `--help`
# (a test keeps the two equal).
CLASSIFIER_POOLINGS = ("cls", "mean")
INFERENCE_BATCH_SIZE = 32  # the pipelines' DEFAULT_BATCH_SIZE, written out as the names above


def data_options(function):
    """Options shared by the three commands: the task and where its fields are in the files."""
    options = [
        click.option("--task", type=click.Choice(TASKS), required=True,
                     help="classification (SST-2-like), pair-classification (MRPC, RTE, NLI), ner (CoNLL), qa (SQuAD JSON)."),
        click.option("--text-column", default="sentence", show_default=True, help="Column of the (first) text."),
        click.option("--text-pair-column", default=None, help="Column of the second text (pair-classification)."),
        click.option("--label-column", default="label", show_default=True, help="Column of the label."),
        click.option("--tag-column", type=int, default=None,
                     help="CoNLL column of the tag, for ner (0-based; negative counts from the end) [default: the "
                          "last]."),
        click.option("--max-length", type=click.IntRange(min=3), default=None,
                     help="Longest input in word pieces; a longer qa context is read in overlapping windows of "
                          "it, and so is a longer ner sentence to evaluate and predict (training cuts it) [default: to "
                          "train, 128, 384 for qa, cut to the model's positions; evaluate and predict read what the "
                          "task's pipeline reads: the model's length, 384 for qa]."),
        click.option("--batch-size", type=click.IntRange(1), default=None,
                     help="Examples per optimiser step (finetune: all processes together) or per inference batch "
                          "[default: 16 to fine-tune, 32 to distil and for inference]."),
        click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N."),
        click.option("--bf16", is_flag=True, help="bfloat16: autocast to train; to evaluate and predict, bfloat16 "
                     "weights as pipeline(dtype=\"bfloat16\") (faster on CPUs with AVX-512 BF16 or AMX, and GPUs)."),
        click.option("--threads", type=click.IntRange(1), default=None, help="CPU threads for torch."),
        click.option("--deterministic", is_flag=True,
                     help="Deterministic algorithms only (identical runs on a GPU too; slower)."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def classifier_pooling_option(help_text: str):
    return click.option("--classifier-pooling", type=click.Choice(CLASSIFIER_POOLINGS), default=None, help=help_text)


def check_classifier_pooling(task: str, classifier_pooling: str | None) -> None:
    if classifier_pooling and task not in SENTENCE_CLASSIFIER_TASKS:
        raise ConfigError(f"--classifier-pooling is for a sentence classifier (--task classification or "
                          f"pair-classification), not --task {task}")


def configure(threads, deterministic) -> int:
    from bertforge.training import configure_torch

    return configure_torch(threads, deterministic)


def max_length_for(task: str, max_length: int | None, model, tokenizer=None, training: bool = False) -> int:
    """--max-length, checked as the pipelines check it, else a window within the positions of `model` (a path)
    and the `tokenizer`'s model_max_length: to train, 128 (384 for qa); to evaluate and predict, the window the
    task's pipeline reads, so that `evaluate` scores what `predict`, pipeline() and the server answer."""
    from bertforge.model import BertConfig
    from bertforge.model.checkpoint import checkpoint_location
    from bertforge.pipelines import pipeline_class
    from bertforge.pipelines.base import check_max_length
    from bertforge.tasks import PIPELINE_TASK

    positions = BertConfig.from_pretrained(model).max_position_embeddings
    if max_length is not None:
        return check_max_length(max_length, positions, model)
    limit = positions if tokenizer is None else min(positions, tokenizer.model_max_length)
    if training:
        return min(384 if task == "qa" else 128, limit)
    return pipeline_class(PIPELINE_TASK[task]).default_max_length(checkpoint_location(model)[0], limit)


def read_data(task, path, options, labelled=True, tokenizer=None):
    """`task`'s examples in `path`; NER sentences to tag from a table are cut into the words of `tokenizer`,
    the model's."""
    from bertforge.tasks import read_task_data

    return read_task_data(task, path, options["text_column"], options["text_pair_column"], options["label_column"],
                          options["tag_column"], labelled, tokenizer)


def check_held_out(train_path, validation_path, options: tuple[str, str] = ("--train", "--validation")) -> None:
    """The held-out file is not the training file under another spelling (./x, an absolute path, a symlink):
    scores on the data a model learnt from say nothing of new data. Before the run card reads the files."""
    from bertforge.io.readers import check_distinct_files

    check_distinct_files([train_path, validation_path], options,
                         "scores on the training data say nothing of new data: give held-out data")


def read_splits(task, train_path, validation_path, hold_out, train_limit, options) -> tuple[list, list | None]:
    """The training examples and the validation examples (from --validation, --hold-out or none)."""
    if validation_path and hold_out:
        raise ConfigError("give either --validation or --hold-out, not both")
    train_data = read_data(task, train_path, options)
    if not train_data:
        raise InputError(f"{train_path}: no training examples in the file")
    if hold_out:
        train_data, validation_data = _hold_out(task, train_data, hold_out, train_path)
    else:
        validation_data = read_data(task, validation_path, options) if validation_path else None
    if validation_data is not None and not validation_data:
        raise InputError(f"{validation_path or train_path}: the validation set is empty")
    return (train_data[:train_limit] if train_limit else train_data), validation_data


def _hold_out(task: str, data: list, count: int, path) -> tuple[list, list]:
    """The last `count` examples (for qa: articles) of the training data become the validation set."""
    if task != "qa":
        if count >= len(data):
            raise InputError(f"{path}: --hold-out {count} leaves no training examples ({len(data)} in the file)")
        return data[:-count], data[-count:]
    titles = list(dict.fromkeys(e.title for e in data))
    if count >= len(titles):
        raise InputError(f"{path}: --hold-out {count} leaves no training articles ({len(titles)} in the file)")
    held = set(titles[-count:])
    return [e for e in data if e.title not in held], [e for e in data if e.title in held]


def checkpoint_option(path: str | Path, option: str) -> tuple[Path, Path]:
    """(what to load, its folder) for a model given to `option` as its folder, a file in it or Google's
    checkpoint prefix, as the pipelines take one; errors name `option`."""
    from bertforge.model.checkpoint import model_folder

    try:
        folder, prefix = model_folder(path)
    except CheckpointError as e:
        raise ConfigError(f"{option} {e}") from None
    return prefix or folder, folder


def task_checkpoint(task_name: str, model_dir, fine_tuned: bool, option: str = "--model",
                    new_head: bool = False) -> tuple[Path, Path]:
    """(what to load, its folder) of `model_dir` for `task_name`: fine-tuned for it, or (not `fine_tuned`) a start
    for it, an encoder, a pre-training checkpoint or a model already fine-tuned for this task (`check_head`); with
    `new_head`, any checkpoint's encoder."""
    from bertforge.tasks import check_head

    load, folder = checkpoint_option(model_dir, option)
    if not new_head:
        check_head(task_name, folder, fine_tuned)
    return load, folder


def check_class_labels(task_name: str, config, model_dir, option: str, hint: str) -> None:
    """Fine-tuning, evaluation and distillation train and score class labels: a regression head (transformers'
    rule: problem_type regression, or one output) would make every label but its own unknown."""
    regression = config.problem_type == "regression" or (config.problem_type is None and config.num_labels == 1)
    if task_name in SENTENCE_CLASSIFIER_TASKS and regression:
        raise ConfigError(f"{option} {model_dir}: a regression model (problem_type regression, one output); "
                          f"--task {task_name} trains and scores class labels; {hint}")


def start_model(task_name: str, model_dir, new_head: bool = False) -> tuple[Path, object]:
    """(what to load, its tokenizer) to fine-tune `model_dir` (None: the bundled model) for `task_name`."""
    from bertforge.model import BertConfig, default_model_path
    from bertforge.tokenization import BertTokenizer

    load, folder = task_checkpoint(task_name, model_dir or default_model_path(), False, new_head=new_head)
    if not new_head:
        check_class_labels(task_name, BertConfig.from_pretrained(load), model_dir, "--model",
                           "give --new-head to train a classifier on its encoder")
    return load, BertTokenizer.from_pretrained(folder)


def load_task_model(task_name: str, model_dir, option: str = "--model"):
    """(what was loaded, the task, the tokenizer, the model) of a model fine-tuned for `task_name`; a
    classifier without label names has transformers' LABEL_i, as in the pipelines (as many as its head has)."""
    from bertforge.model import ARCHITECTURES
    from bertforge.pipelines.text_classification import label_names
    from bertforge.tasks import HEAD_OF_TASK, build_task
    from bertforge.tokenization import BertTokenizer

    load, folder = task_checkpoint(task_name, model_dir, fine_tuned=True, option=option)
    model = ARCHITECTURES[HEAD_OF_TASK[task_name]].from_pretrained(load)
    check_class_labels(task_name, model.config, model_dir, option, "`bertforge predict` gives its values")
    task = build_task(task_name, id2label=None if task_name == "qa" else dict(enumerate(label_names(model.config))))
    return load, task, BertTokenizer.from_pretrained(folder), model


@click.command()
@data_options
@click.option("--train", "train_path", type=click.Path(dir_okay=False), required=True, help="Training file.")
@click.option("--validation", "validation_path", type=click.Path(dir_okay=False), default=None,
              help="Validation file (evaluated every epoch; the best model is kept).")
@click.option("--hold-out", type=click.IntRange(1), default=None,
              help="Validate on the last N examples of --train (for qa: the last N articles) and train on the rest.")
@click.option("--train-limit", type=click.IntRange(1), default=None, help="Train on the first N examples only.")
@click.option("--model", "model_dir", type=click.Path(), default=None,
              help="Pre-trained checkpoint directory [default: the bundled all-MiniLM-L6-v2].")
@click.option("--output", "output_dir", type=click.Path(file_okay=False), required=True,
              help="Where the best model, metrics.json, curves.png, the logs and the checkpoint go.")
@click.option("--new-head", is_flag=True,
              help="Train the task head from scratch even if --model has one (e.g. an SNLI model fine-tuned on RTE).")
@click.option("--epochs", type=float, default=3, show_default=True)
@click.option("--learning-rate", "--lr", "learning_rate", type=float, default=None,
              help="Peak learning rate [default: 2e-4 at batch 32 for models up to 384 wide, such as the bundled "
                   "MiniLM; 3e-5 for wider ones such as BERT-base; times the square root of batch / 32].")
@click.option("--layer-lr-decay", type=click.FloatRange(0, 1, min_open=True), default=None,
              help="Layer-wise learning-rate decay (ELECTRA's): the heads train at the full rate, each encoder "
                   "layer below at this times the rate of the one above, the embeddings lowest [default: 0.8 for "
                   "classification, 1 (none) for the other tasks and for distill].")
@click.option("--warmup-ratio", type=float, default=0.1, show_default=True, help="Warm-up as a share of the steps.")
@click.option("--warmup-steps", type=click.IntRange(0), default=None, help="Warm-up steps (overrides --warmup-ratio).")
@click.option("--lr-scheduler-type", type=click.Choice(["linear", "cosine"]), default="linear", show_default=True,
              help="How the rate falls to 0 after the warm-up: a straight line, or half a cosine.")
@click.option("--weight-decay", type=click.FloatRange(0), default=0.01, show_default=True,
              help="AdamW's decoupled weight decay on the weight matrices (none on biases and LayerNorm).")
@click.option("--adam-beta2", type=click.FloatRange(0, 1, max_open=True), default=0.999, show_default=True,
              help="AdamW's decay of its running mean of squared gradients.")
@click.option("--adam-epsilon", type=click.FloatRange(0, min_open=True), default=1e-6, show_default=True,
              help="AdamW's term added to the root of the squared-gradient mean (Google's BERT: 1e-6; "
                   "transformers' Trainer: 1e-8).")
@click.option("--max-grad-norm", type=click.FloatRange(0, min_open=True), default=1.0, show_default=True,
              help="Clip the gradients' total norm to this before each step.")
@click.option("--ema-decay", type=click.FloatRange(0, 1, max_open=True), default=0.0, show_default=True,
              help="Evaluate and keep the exponential moving average of the weights, each step's weights entering "
                   "it with weight 1 - this (0: the last weights).")
@click.option("--gradient-accumulation-steps", type=click.IntRange(1), default=1, show_default=True,
              help="Micro-batches per optimiser step (--batch-size stays the examples per step).")
@click.option("--gradient-checkpointing", is_flag=True,
              help="Recompute each layer's activations in the backward pass instead of keeping them: the same "
                   "run in a fraction of the memory, for about a fifth more time per step (docs/benchmarks.md).")
@click.option("--label-smoothing-factor", type=click.FloatRange(0, 1, max_open=True), default=0.0,
              show_default=True, help="Spread this share of each label's weight over all classes (not for qa).")
@click.option("--rdrop-alpha", type=click.FloatRange(0), default=0.0, show_default=True,
              help="R-Drop (Liang et al., 2021): each batch twice, under two dropout masks, and this weight on the "
                   "two predictions' disagreement (KL); twice the compute per step (not for qa).")
@click.option("--freeze-word-embeddings", is_flag=True,
              help="Keep the token embedding table as pre-trained (only the rows of words in --train would move).")
@click.option("--linear-probe-first", is_flag=True,
              help="Start the classifier from a logistic regression on the model's pooled outputs of --train "
                   "(LP-FT; classification and pair-classification).")
@click.option("--reinit-layers", type=click.IntRange(0), default=0, show_default=True,
              help="Start the top N encoder layers afresh with BERT's initialisation (Zhang et al., 2021).")
@classifier_pooling_option("What a sentence classifier reads: the pooler on [CLS] (BERT's; the one transformers' "
                           "BertForSequenceClassification runs), or the mean of the last layer's token vectors "
                           "[default for --task classification: mean if --model is a sentence-transformers export "
                           "that pools by the mean, as the bundled all-MiniLM-L6-v2 is; otherwise the model's own, "
                           "cls for BERT checkpoints].")
@click.option("--group-by-length/--no-group-by-length", default=True, show_default=True,
              help="Batch examples of similar length together (less padding, faster), or draw batches at random.")
@click.option("--eval-every", "--eval-steps", "eval_every", type=click.IntRange(1), default=None,
              help="Evaluate every N steps [default: every epoch].")
@click.option("--max-steps", type=click.IntRange(1), default=None, help="Stop after N optimiser steps.")
@click.option("--checkpoint-every", type=click.IntRange(1), default=500, show_default=True,
              help="Steps between checkpoints (for --resume).")
@click.option("--seed", type=SEED, default=42, show_default=True)
@click.option("--resume", default=None, type=click.Path(file_okay=False),
              help="Continue the run whose checkpoint is in this directory (usually --output).")
@click.option("--overwrite", is_flag=True, help="Replace the run already in --output.")
def finetune(task, train_path, validation_path, hold_out, train_limit, model_dir, output_dir, new_head, resume,
             max_length, threads, deterministic, classifier_pooling, **options):
    """Fine-tune a pre-trained BERT on a labelled TASK file and keep the best model in --output.

    --batch-size is the number of examples per optimiser step, over all processes (torchrun) and
    accumulation micro-batches together.

    \b
    Examples:
      bertforge finetune --task classification --train train.tsv --validation dev.tsv --output sst2-model
      bertforge finetune --task ner --train train.conll --validation valid.conll --epochs 3 --output conll-model
      bertforge finetune --task qa --train squad.json --hold-out 5 --output qa-model
      bertforge finetune --task classification --train train.tsv --output sst2-model --resume sst2-model
    """
    threads = configure(threads, deterministic)
    from bertforge.model import default_model_path
    from bertforge.runcard import RunCard
    from bertforge.tasks import FinetuneArgs, build_task, finetune as run
    from bertforge.tasks.classification import default_classifier_pooling
    from bertforge.training import is_main_process

    check_held_out(train_path, validation_path)
    card = RunCard.start(click.get_current_context().params,
                         [train_path, validation_path, model_dir or default_model_path()], output_dir, options["seed"])
    check_output_dir(output_dir, "--output", inputs=(train_path, validation_path, model_dir))  # --overwrite deletes it

    check_classifier_pooling(task, classifier_pooling)
    directory, tokenizer = start_model(task, model_dir, new_head)
    max_length = max_length_for(task, max_length, directory, tokenizer, training=True)
    train_data, validation_data = read_splits(task, train_path, validation_path, hold_out, train_limit, options)
    task_object = build_task(task, train_data)
    overrides = {"id2label": dict(enumerate(task_object.labels))} if task_object.labels else {}
    if classifier_pooling is None and task == "classification":
        classifier_pooling = default_classifier_pooling(directory)
        card.options["classifier_pooling"] = classifier_pooling  # so that `rerun` repeats it if the rule changes
    if classifier_pooling:
        overrides["classifier_pooling"] = classifier_pooling
    # None (not given) is FinetuneArgs' own "resolve later" for the rate and the decay.
    args = training_args(FinetuneArgs, output_dir=output_dir, **options)
    started = time.perf_counter()
    train_features = task_object.train_features(train_data, tokenizer, max_length)
    eval_set = task_object.eval_set(validation_data, tokenizer, max_length) if validation_data else None
    # The model is built by the trainer after it seeds, so a fresh head is the same in every run.
    history = run(lambda: task_object.model_class.from_pretrained(directory, fresh_head=new_head, **overrides),
                  task_object, train_features, eval_set, args, tokenizer, resume_from=resume,
                  about={"start": {"new_head": new_head, "classifier_pooling": classifier_pooling}})
    card.options.update({name: history["args"][name] for name in FinetuneArgs.RESOLVED_DEFAULTS})
    best = history["best"] or {}
    summary = {"output": output_dir, "train_examples": len(train_data), "steps": history["total_steps"],
               "wall_seconds": round(time.perf_counter() - started, 1),
               "best": {k: v for k, v in best.items() if not isinstance(v, dict)}}
    if is_main_process():
        card.finish(output_dir, {k: v for k, v in summary.items() if k != "output"}, threads, options["device"])
    click.echo(json.dumps(summary))


def training_args(kind, **options):
    """`kind` (FinetuneArgs or a subclass) from a command's options of the same names, so that every option a
    command shows reaches the run; the others (data columns, threads) are the command's own. An option left
    unset (None) keeps the field's default: `kind`'s own batch size and layer-wise decay, or None where the
    field resolves later (the learning rate)."""
    from dataclasses import fields

    names = {f.name for f in fields(kind) if f.init}
    return kind(**{name: value for name, value in options.items() if name in names and value is not None})


def device_for(name: str):
    from bertforge.training import resolve_device

    return resolve_device(name)
