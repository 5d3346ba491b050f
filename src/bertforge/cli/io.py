"""Command-line plumbing shared by the inference commands: the common options, TEXT arguments
or an `--input` file (read by `bertforge.io.readers.read_items`), and outputs: JSON Lines on
stdout, or `--output` `.json` / `.jsonl` / `.npy` written atomically (`bertforge.io.atomic`), so a
failed run never leaves a truncated file where a good one was. Outputs are checked before any
work. Nothing here imports torch: `bertforge tokenize` starts without it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import click

from bertforge.errors import InputError, first_non_text
from bertforge.io.atomic import check_output_file, save_npy, write_json, write_jsonl
from bertforge.io.readers import Items, read_items
from bertforge.tokenization.basic import has_text

log = logging.getLogger("bertforge.cli")

RECORD_SUFFIXES = (".json", ".jsonl")
SEED = click.IntRange(0, 2**32 - 1)  # the seeds torch, numpy and scikit-learn take


def check_texts(texts, what: str = "TEXT argument") -> None:
    """Refuse command-line texts that are not valid UTF-8 (the shell hands undecodable bytes over
    as lone surrogates, which would fail much later, or end up in the output)."""
    for number, text in enumerate(texts, start=1):
        if text is None:
            continue
        found = first_non_text(text, escaped_bytes=True)
        if found is not None:
            raise InputError(f"{what} {number} is not valid UTF-8 text ({found[1]} at character {found[0]}); "
                             f"check the terminal's encoding")


def typed(name: str) -> bool:
    """Whether the running command's option `name` was given on the command line (not left to its default)."""
    return click.get_current_context().get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE


def check_output(output: str | Path | None, suffixes: tuple[str, ...] = RECORD_SUFFIXES, inputs=(),
                 option: str = "--output") -> None:
    """Before any work: the output file `option` names has a known suffix (so that a data file given by
    mistake is not overwritten), can be written, and is none of the `inputs`."""
    if output is None:
        return
    if Path(output).suffix.lower() not in suffixes:
        raise InputError(f"{option} {output}: use a {' or '.join(suffixes)} file")
    check_output_file(output, option, inputs)


def read_inputs(texts: tuple[str, ...], input_path: Path | None, columns: list[str]) -> Items:
    """TEXT arguments or an --input file (not both). Two columns: arguments come in pairs."""
    if texts and input_path is not None:
        raise InputError("give TEXT arguments or --input FILE, not both")
    if input_path is not None:
        return read_items(input_path, columns)
    if not texts:
        raise InputError("nothing to do: give TEXT arguments or --input FILE (see --help)")
    if any(not has_text(t) for t in texts):
        raise InputError("an empty TEXT argument was given")
    check_texts(texts)
    if len(columns) == 2:
        if len(texts) % 2:
            raise InputError(f"sentences come in pairs (A B A B ...), got {len(texts)} arguments")
        return Items(list(zip(texts[::2], texts[1::2])), [None] * (len(texts) // 2))
    return Items(list(texts), [None] * len(texts))


def _jsonable(value):
    if hasattr(value, "tolist"):  # NumPy arrays and scalars (checked by duck type: no NumPy import needed)
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def write_records(records: list[dict], output: Path | None) -> None:
    """JSON Lines to stdout, or to a .jsonl file, or one JSON array to a .json file."""
    if output is None:
        for record in records:
            click.echo(json.dumps(record, ensure_ascii=False, default=_jsonable))
        return
    check_output(output)
    if output.suffix.lower() == ".json":
        write_json(output, records, indent=1, default=_jsonable)
    else:
        write_jsonl(output, records, default=_jsonable)
    click.echo(f"wrote {len(records)} record(s) to {output}", err=True)


def write_array(array, output: Path) -> None:
    save_npy(output, array)
    click.echo(f"wrote an array of shape {tuple(array.shape)} to {output}", err=True)


def with_line_numbers(items: Items, records: list[dict]) -> list[dict]:
    """Prefix each record with the input file's line number, when there is a file."""
    return [{items.numbered_by: n, **r} if n is not None else r for n, r in zip(items.lines, records)]


def model_options(function):
    """--model, --batch-size, --parallel-batches, --max-length, --device, --dtype."""
    from bertforge.pipelines.base import DEFAULT_BATCH_SIZE  # torch: only for the model commands
    from bertforge.pipelines.loading import DTYPES

    options = [
        click.option("--model", "model", type=click.Path(path_type=Path), default=None,
                     help="Checkpoint directory (Hugging Face layout). Default: the task's default model."),
        click.option("--batch-size", type=click.IntRange(min=1), default=DEFAULT_BATCH_SIZE, show_default=True,
                     help="Texts per forward pass (texts are sorted by length into batches)."),
        click.option("--parallel-batches", type=click.IntRange(min=1), default=1, show_default=True,
                     help="CPU: run this many batches at once, sharing the threads; faster on short texts."),
        click.option("--max-length", type=click.IntRange(min=3), default=None,
                     help="Truncate longer inputs (with a warning counting them). Default: the model's limit."),
        click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N."),
        click.option("--dtype", type=click.Choice(DTYPES), default="float32", show_default=True,
                     help="float32 is exact; bfloat16 is faster on CPUs with AVX-512 BF16 or AMX; int8 = int8 encoder "
                          "(CPU; faster than float32 only with VNNI or AMX); auto = bfloat16 where the CPU has "
                          "native BF16, else float32."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def input_options(default_column: str = "text", pair_column: str | None = None):
    """--input, --column (and --pair-column), --output."""
    def decorate(function):
        options = [
            click.option("--input", "input_path", type=click.Path(path_type=Path), default=None,
                         help="Read inputs from a .txt (one a line), .jsonl, .tsv, .csv or .parquet file; empty lines are skipped "
                              "and counted."),
            click.option("--column", default=default_column, show_default=True,
                         help="Column (.tsv header name) or key (.jsonl) holding the text."),
        ]
        if pair_column is not None:
            options.append(click.option("--pair-column", default=pair_column, show_default=True,
                                        help="Column or key holding the second sentence."))
        options.append(click.option("--output", type=click.Path(path_type=Path), default=None,
                                    help="Write to a .json or .jsonl file (embed: also .npy, .parquet, or a folder "
                                         "of Parquet shards) [default: JSON Lines on stdout]."))
        for option in reversed(options):
            function = option(function)
        return function
    return decorate


def pipeline_from_options(task: str, options: dict, progress: bool):
    from bertforge.pipelines import pipeline

    return pipeline(task, model=options["model"], device=options["device"], dtype=options["dtype"],
                    batch_size=options["batch_size"], max_length=options["max_length"], progress=progress,
                    parallel_batches=options["parallel_batches"])
