"""`bertforge embed`: sentence vectors (to .npy or JSON Lines) or token vectors (JSON Lines)."""

from __future__ import annotations

import click

from bertforge.cli.io import (check_output, input_options, model_options, pipeline_from_options, read_inputs,
                              with_line_numbers, write_array, write_records)
from bertforge.errors import InputError
from bertforge.pipelines.features import COMBINATIONS, LAYER_PRESETS, POOLINGS


def parse_layers(value: str):
    """"-1", "-4,-3,-2,-1" or a preset name (last, last-four, embeddings)."""
    if value in LAYER_PRESETS:
        return value
    try:
        return [int(part) for part in value.split(",")]
    except ValueError:
        raise InputError(f"--layers {value!r}: give layer indices like -1 or -4,-3,-2,-1, or one of "
                         f"{', '.join(LAYER_PRESETS)}") from None


@click.command()
@click.argument("texts", nargs=-1)
@click.option("--level", type=click.Choice(["sentence", "word", "piece"]), default="sentence", show_default=True,
              help="One vector per text, per word (pieces averaged, with character spans) or per word piece.")
@click.option("--pooling", type=click.Choice(POOLINGS), default="mean", show_default=True,
              help="Sentence vector: [CLS], mean over the tokens, or max.")
@click.option("--layers", default="-1", show_default=True,
              help="Hidden state(s): 0 = input embeddings, -1 = last; several as -4,-3,-2,-1; or last-four.")
@click.option("--combine", type=click.Choice(COMBINATIONS), default="sum", show_default=True,
              help="How several layers are combined.")
@click.option("--normalize/--no-normalize", default=None,
              help="L2-normalise the vectors. Default: on for sentences, off for tokens.")
@model_options
@input_options()
def embed(texts, level, pooling, layers, combine, normalize, input_path, column, output, **options):
    """Embed TEXTS (or the lines of --input) with a BERT model (default: the bundled all-MiniLM-L6-v2).

    Sentence vectors go to stdout as JSON Lines ({"text", "embedding"}) or to an --output .npy array
    (rows in input order); token vectors go to JSON Lines ({"text", "tokens", "spans", "vectors"}).

    \b
    Examples:
      bertforge embed "A cat sat on the mat." "The dog slept."
      bertforge embed --input sentences.txt --output vectors.npy --batch-size 64 --dtype bfloat16
      bertforge embed --input train.tsv --column sentence --pooling cls --layers last-four --combine concat --output x.npy
      bertforge embed --level word "He got bit by Python"
    """
    to_npy = output is not None and output.suffix.lower() == ".npy"
    if to_npy and level != "sentence":
        raise InputError("--output .npy holds sentence vectors only; token vectors go to .json or .jsonl")
    check_output(output, (".npy", ".json", ".jsonl"))
    items = read_inputs(texts, input_path, [column])
    chosen = parse_layers(layers)
    if level == "sentence":
        pipe = pipeline_from_options("sentence-embedding", options, progress=input_path is not None)
        vectors = pipe(items.values, pooling=pooling, layers=chosen, combine=combine,
                       normalize=True if normalize is None else normalize)
        if to_npy:
            write_array(vectors, output)
            return
        records = [{"text": t, "embedding": v} for t, v in zip(items.values, vectors)]
    else:
        pipe = pipeline_from_options("feature-extraction", options, progress=input_path is not None)
        features = pipe(items.values, layers=chosen, combine=combine, level=level, normalize=bool(normalize))
        records = [{"text": t, "tokens": f.tokens, "spans": [list(s) for s in f.spans], "vectors": f.vectors}
                   for t, f in zip(items.values, features)]
    write_records(with_line_numbers(items, records), output)
