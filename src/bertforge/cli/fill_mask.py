"""`bertforge fill-mask`: the masked-language-model head's best guesses for each [MASK]."""

from __future__ import annotations

import click

from bertforge.cli.io import check_output, input_options, model_options, pipeline_from_options, read_inputs, with_line_numbers, write_records
from bertforge.errors import InputError


@click.command("fill-mask")
@click.argument("texts", nargs=-1)
@click.option("--top-k", type=click.IntRange(min=1), default=5, show_default=True, help="Guesses per [MASK].")
@click.option("--target", "targets", multiple=True, help="Score only these tokens (repeat the option).")
@model_options
@input_options()
def fill_mask(texts, top_k, targets, input_path, column, output, **options):
    """Fill the [MASK] tokens of TEXTS (or of the lines of --input).

    Needs a checkpoint with a masked-language-model head (--model; default: bertforge's own
    pre-trained model when installed). Output: one JSON line per text, {"text", "predictions"},
    predictions shaped like the Hugging Face pipeline's ({score, token, token_str, sequence};
    a list per [MASK] when a text has several).

    \b
    Examples:
      bertforge fill-mask --model my-bert "Love is like the [MASK]. You can't see it but you can feel it"
      bertforge fill-mask --model my-bert --top-k 10 --target wind --target air "The [MASK] blew."
      bertforge fill-mask --model my-bert --input masked.txt --output guesses.jsonl
    """
    check_output(output, inputs=(input_path,))
    items = read_inputs(texts, input_path, [column])
    pipe = pipeline_from_options("fill-mask", options, progress=input_path is not None)
    problem = pipe.first_unfillable(items.values) if input_path is not None else None
    if problem is not None:  # the pipeline would count texts; a file's user needs its line
        line = items.lines[problem[0]]
        where = f"{input_path}:{line}" if items.numbered_by == "line" else f"{input_path}: row {line}"
        raise InputError(f"{where}: {problem[1]}")
    predictions = pipe(items.values, top_k=top_k, targets=list(targets) or None)
    records = [{"text": t, "predictions": p} for t, p in zip(items.values, predictions)]
    write_records(with_line_numbers(items, records), output)
