"""`bertforge similarity`: the same word in different sentences, compared in context and without."""

from __future__ import annotations

from pathlib import Path

import click

from bertforge.cli.io import check_output, check_texts, model_options, pipeline_from_options, write_records
from bertforge.errors import InputError
from bertforge.tokenization.basic import has_text


@click.command()
@click.argument("sentences", nargs=-1)
@click.option("--word", help="The word to compare across SENTENCES (each must contain it).")
@click.option("--layer", type=int, default=-1, show_default=True, help="Hidden state to compare (-1 = last layer).")
@click.option("--output", type=click.Path(path_type=Path), default=None,
              help="Also write the pairs to a .json or .jsonl file.")
@model_options
def similarity(sentences, word, layer, output, **options):
    """Show that BERT's vectors are contextual: the cosine between the vectors of WORD in each pair
    of SENTENCES at --layer, next to the same cosine in the context-free input embedding.

    With no sentences, the lecture notes' examples: python the snake and the language, and the
    bank of a river and a bank account.

    \b
    Examples:
      bertforge similarity
      bertforge similarity --word bank "We sat on the bank of the river" "She opened an account at the bank"
    """
    check_output(output)
    empty = next((n for n, sentence in enumerate(sentences, 1) if not has_text(sentence)), None)
    if empty:
        raise InputError(f"SENTENCES: argument {empty} is empty")
    check_texts(sentences)
    check_texts([word], "--word")
    if sentences and not word:
        raise InputError("--word is required with SENTENCES (the word to compare)")
    if word and len(sentences) < 2:
        raise InputError("give at least two SENTENCES containing --word")
    pipe = pipeline_from_options("contextual-similarity", options, progress=False)
    result = pipe([(s, word) for s in sentences] if sentences else None, layer=layer)
    pairs = result.pairs()
    click.echo(f"cosine similarity of the same word: input embedding (context-free) vs layer {result.layer}")
    for pair in pairs:
        shift = round(pair["contextual"], 3) - round(pair["context_free"], 3)  # as printed
        change = "further apart" if shift < 0 else "closer" if shift > 0 else "unchanged"
        click.echo(f"\n  {pair['word']!r}: {pair['a']!r}\n     vs {pair['b']!r}\n"
                   f"     context-free {pair['context_free']:.3f} -> contextual {pair['contextual']:.3f} ({change})")
    if output is not None:
        write_records(pairs, output)
