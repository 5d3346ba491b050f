"""`bertforge nsp`: the probability that sentence B follows sentence A."""

from __future__ import annotations

import click

from bertforge.cli.io import check_output, input_options, model_options, pipeline_from_options, read_inputs, with_line_numbers, write_records


@click.command()
@click.argument("sentences", nargs=-1)
@model_options
@input_options(default_column="text", pair_column="text_pair")
def nsp(sentences, input_path, column, pair_column, output, **options):
    """Score sentence pairs A B (arguments in pairs, or --input) with the next-sentence head.

    Input files: .txt lines "A<TAB>B"; .tsv or .jsonl with --column and --pair-column.
    Output: one JSON line per pair, {"a", "b", "is_next", "not_next", "label"}.

    \b
    Examples:
      bertforge nsp --model my-bert "She cooked pasta" "It was delicious" "Turn the radio on" "She bought a new hat"
      bertforge nsp --model my-bert --input rte.tsv --column sentence1 --pair-column sentence2 --output scores.jsonl
    """
    check_output(output, inputs=(input_path,))
    items = read_inputs(sentences, input_path, [column, pair_column])
    pipe = pipeline_from_options("next-sentence", options, progress=input_path is not None)
    scores = pipe(items.values)
    records = [{"a": a, "b": b, **s} for (a, b), s in zip(items.values, scores)]
    write_records(with_line_numbers(items, records), output)
