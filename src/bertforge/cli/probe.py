"""`bertforge probe`: logistic regression on frozen BERT sentence vectors (the feature-based approach)."""

from __future__ import annotations

import json
import time

import click

from bertforge.cli.finetune import check_held_out
from bertforge.cli.io import SEED, check_output, typed
from bertforge.errors import InputError
from bertforge.io.atomic import write_text


@click.command()
@click.option("--train", "train_path", type=click.Path(dir_okay=False), required=True,
              help="Labelled texts (a TSV/CSV/JSONL/Parquet table).")
@click.option("--test", "test_path", type=click.Path(dir_okay=False), default=None,
              help="Held-out labelled texts [default: --test-fraction of --train].")
@click.option("--test-fraction", type=click.FloatRange(0.01, 0.9), default=0.2, show_default=True,
              help="Without --test: the share of --train held out (a seeded random split).")
@click.option("--limit", type=click.IntRange(1), default=20000, show_default=True,
              help="Use the first N rows of --train (the seed-004 setting: ~20,000 sentences).")
@click.option("--text-column", default="sentence", show_default=True)
@click.option("--label-column", default="label", show_default=True)
@click.option("--model", "model_dir", type=click.Path(), default=None,
              help="Encoder checkpoint [default: the bundled all-MiniLM-L6-v2].")
@click.option("--pooling", type=click.Choice(["cls", "mean"]), default="cls", show_default=True)
@click.option("--max-length", type=click.IntRange(min=3), default=None,
              help="Truncate longer texts (with a warning counting them) [default: the model's limit].")
@click.option("--batch-size", type=click.IntRange(1), default=64, show_default=True)
@click.option("--device", default="cpu", show_default=True)
@click.option("--threads", type=click.IntRange(1), default=None, help="CPU threads for torch.")
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--output", "output_path", type=click.Path(dir_okay=False), default=None, help="Write the result JSON here too.")
def probe(train_path, test_path, test_fraction, limit, text_column, label_column, model_dir, pooling, max_length,
          batch_size, device, threads, seed, output_path):
    """Frozen encoder → [CLS] or mean vectors → logistic regression; prints held-out accuracy.

    \b
    Examples:
      bertforge probe --train train.tsv --test dev.tsv --pooling mean
      bertforge probe --train train.tsv --limit 2000 --model my-bert --pooling cls
    """
    check_output(output_path, (".json",), inputs=(train_path, test_path))
    if test_path and typed("test_fraction"):  # it would be ignored: --test is the held-out set
        raise InputError(f"--test-fraction {test_fraction} holds out part of --train when there is no --test; "
                         f"give one of them")
    check_held_out(train_path, test_path, ("--train", "--test"))
    import torch
    from sklearn.model_selection import train_test_split

    from bertforge.pipelines import pipeline
    from bertforge.tasks import read_task_data
    from bertforge.tasks.probe import check_classes, run_probe, sentence_features

    if threads:
        torch.set_num_threads(threads)
    started = time.perf_counter()
    train = read_task_data("classification", train_path, text_column, label_column=label_column)[:limit]
    check_classes([e.label for e in train], train_path)
    if test_path:
        test = read_task_data("classification", test_path, text_column, label_column=label_column)
    else:
        try:
            train, test = train_test_split(train, test_size=test_fraction, random_state=seed,
                                           stratify=[e.label for e in train])
        except ValueError as e:  # too few rows of some label for a stratified split
            raise InputError(f"{train_path}: cannot hold out --test-fraction {test_fraction} of "
                             f"{len(train)} rows with every label on both sides ({e}); give --test") from None
        check_classes([e.label for e in train], train_path)
    if not train or not test:
        raise InputError(f"{test_path or train_path}: no examples to {'test' if train else 'train'} on")
    unseen = next((e for e in test if e.label not in {t.label for t in train}), None)
    if unseen:
        raise InputError(f"{unseen.source}: label {unseen.label!r} does not occur in the training texts")
    embedder = pipeline("sentence-embedding", model=model_dir, device=device, batch_size=batch_size,
                        max_length=max_length, progress=True)
    vectors = [sentence_features(embedder, [e.text for e in split], pooling) for split in (train, test)]
    result = run_probe(vectors[0], [e.label for e in train], vectors[1], [e.label for e in test], seed)
    result.update(pooling=pooling, wall_seconds=round(time.perf_counter() - started, 1))
    text = json.dumps(result)
    if output_path:
        write_text(output_path, text + "\n")
    click.echo(text)

