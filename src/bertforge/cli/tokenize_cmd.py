"""`bertforge tokenize`: WordPiece tokens, ids and character offsets of each text."""

from __future__ import annotations

from pathlib import Path

import click

from bertforge.cli.io import check_output, input_options, read_inputs, with_line_numbers, write_records
from bertforge.tokenization import BertTokenizer
from bertforge.tokenization.bpe import is_merges_folder, load_merges_tokenizer
from bertforge.tokenization.truncation import encode_within, warn_truncated



@click.command()
@click.argument("texts", nargs=-1)
@click.option("--model", "model", type=click.Path(path_type=Path), default=None,
              help="Model directory or vocab.txt, or a BPE folder of `train-vocab`. Default: the bundled MiniLM "
                   "model's (uncased) vocabulary.")
@click.option("--max-length", type=click.IntRange(min=3), default=None,
              help="Truncate to this many tokens (with a warning counting the texts cut).")
@input_options()
def tokenize(texts, model, max_length, input_path, column, output):
    """Split TEXTS (or the lines of --input) into WordPiece tokens (or the pieces of a BPE vocabulary).

    \b
    Examples:
      bertforge tokenize "Let us start pretraining the model."
      bertforge tokenize --input sentences.txt --output tokens.jsonl
      bertforge tokenize --input train.tsv --column sentence --max-length 64
    """
    check_output(output, inputs=(input_path,))
    if model is not None and is_merges_folder(model):
        return tokenize_with_merges(load_merges_tokenizer(model), read_inputs(texts, input_path, [column]),
                                    max_length, output)
    tokenizer = BertTokenizer.from_pretrained(model)
    items = read_inputs(texts, input_path, [column])
    # cut to --max-length as the pipelines cut, with their warning: only the long texts are encoded twice
    rows = tokenizer(items.values).encodings if max_length is None else \
        encode_within(tokenizer, items.values, None, max_length)[0]
    records = [{"text": text, "tokens": tokenizer.convert_ids_to_tokens(row.ids), "input_ids": row.ids,
                "offsets": [list(span) for span in row.offsets]} for text, row in zip(items.values, rows)]
    write_records(with_line_numbers(items, records), output)


def tokenize_with_merges(tokenizer, items, max_length: int | None, output) -> None:
    """A BPE vocabulary's pieces and ids: no special tokens are added, and no offsets are kept."""
    encoded = [tokenizer.encode(text) for text in items.values]
    if max_length is not None:
        warn_truncated(sum(len(ids) > max_length for ids in encoded), len(encoded), max_length)
    kept = [ids[:max_length] for ids in encoded]
    records = [{"text": text, "tokens": tokenizer.convert_ids_to_tokens(ids), "input_ids": ids}
               for text, ids in zip(items.values, kept)]
    write_records(with_line_numbers(items, records), output)
