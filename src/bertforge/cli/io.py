"""Input and output shared by the inference commands.

Inputs are TEXT arguments or one `--input` file: `.txt` (one item a line; a pair is two
tab-separated sentences), `.jsonl` (one JSON object a line, or a JSON string for single texts),
`.tsv` (a header row; `--column` names the column). Empty lines (and empty values) are skipped
and counted in a warning, so a blank line at the end of a file is harmless; outputs keep the
file's line number (`line`) so they can be matched back. A malformed line is an error that names
the file and line. Outputs: JSON Lines on stdout, or `--output` `.json` / `.jsonl` / `.npy`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np

from bertforge.errors import InputError
from bertforge.pipelines.base import DEFAULT_BATCH_SIZE, DTYPES

log = logging.getLogger("bertforge.cli")

INPUT_SUFFIXES = (".txt", ".jsonl", ".tsv")


@dataclass
class Items:
    values: list  # strings, or tuples of strings when several columns are read
    lines: list[int | None]  # line number in the input file (None for TEXT arguments)
    skipped: int = 0


def _decoded_lines(path: Path):
    """(line number, text) for each line, naming the line that is not UTF-8."""
    try:
        handle = path.open("rb")
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror})") from None
    with handle:
        for number, raw in enumerate(handle, start=1):
            try:
                yield number, raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError:
                raise InputError(f"{path} line {number}: not UTF-8 text") from None


def read_file(path: Path, columns: list[str]) -> Items:
    """Read `columns` (one → strings, two → pairs) from a .txt, .jsonl or .tsv file."""
    if not path.is_file():
        raise InputError(f"--input {path}: no such file")
    suffix = path.suffix.lower()
    if suffix not in INPUT_SUFFIXES:
        raise InputError(f"--input {path}: unsupported file type {suffix or '(none)'}; use {', '.join(INPUT_SUFFIXES)}")
    values, numbers, skipped = [], [], 0
    lines = _decoded_lines(path)
    header = None
    if suffix == ".tsv":
        first = next(lines, None)
        if first is None:
            raise InputError(f"{path}: empty file (a .tsv needs a header row)")
        header = first[1].split("\t")
        missing = [c for c in columns if c not in header]
        if missing:
            raise InputError(f"{path}: no column {missing[0]!r} in the header (columns: {', '.join(header)}); "
                             f"choose one with --column")
        indices = [header.index(c) for c in columns]
    for number, line in lines:
        if not line.strip():
            skipped += 1
            continue
        where = f"{path} line {number}"
        if suffix == ".txt":
            fields = line.split("\t") if len(columns) > 1 else [line]
            if len(fields) != len(columns):
                raise InputError(f"{where}: expected {len(columns)} tab-separated sentences, found {len(fields)}")
        elif suffix == ".tsv":
            row = line.split("\t")
            if len(row) != len(header):
                raise InputError(f"{where}: {len(row)} fields, the header has {len(header)}")
            fields = [row[i] for i in indices]
        else:
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"{where}: not valid JSON ({e.msg})") from None
            if isinstance(record, str) and len(columns) == 1:
                fields = [record]
            elif isinstance(record, dict):
                absent = [c for c in columns if c not in record]
                if absent:
                    raise InputError(f"{where}: no key {absent[0]!r} (keys: {', '.join(record)}); choose with --column")
                fields = [record[c] for c in columns]
                if not all(isinstance(f, str) for f in fields):
                    raise InputError(f"{where}: the value of {', '.join(columns)} must be a string")
            else:
                raise InputError(f"{where}: expected a JSON object with {', '.join(map(repr, columns))}")
        if not all(f.strip() for f in fields):
            skipped += 1
            continue
        values.append(fields[0] if len(columns) == 1 else tuple(fields))
        numbers.append(number)
    if skipped:
        log.warning("%s: skipped %d empty line(s)", path, skipped)
    if not values:
        raise InputError(f"{path}: no input (the file has no non-empty lines)")
    return Items(values, numbers, skipped)


def read_inputs(texts: tuple[str, ...], input_path: Path | None, columns: list[str]) -> Items:
    """TEXT arguments or an --input file (not both). Two columns: arguments come in pairs."""
    if texts and input_path is not None:
        raise InputError("give TEXT arguments or --input FILE, not both")
    if input_path is not None:
        return read_file(input_path, columns)
    if not texts:
        raise InputError("nothing to do: give TEXT arguments or --input FILE (see --help)")
    if any(not t.strip() for t in texts):
        raise InputError("an empty TEXT argument was given")
    if len(columns) == 2:
        if len(texts) % 2:
            raise InputError(f"sentences come in pairs (A B A B ...), got {len(texts)} arguments")
        return Items(list(zip(texts[::2], texts[1::2])), [None] * (len(texts) // 2))
    return Items(list(texts), [None] * len(texts))


def _jsonable(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def write_records(records: list[dict], output: Path | None) -> None:
    """JSON Lines to stdout, or to a .jsonl file, or one JSON array to a .json file."""
    if output is None:
        for record in records:
            click.echo(json.dumps(record, ensure_ascii=False, default=_jsonable))
        return
    suffix = output.suffix.lower()
    if suffix not in (".json", ".jsonl"):
        raise InputError(f"--output {output}: use a .json or .jsonl file")
    try:
        with output.open("w", encoding="utf-8") as f:
            if suffix == ".json":
                json.dump(records, f, ensure_ascii=False, indent=1, default=_jsonable)
                f.write("\n")
            else:
                for record in records:
                    f.write(json.dumps(record, ensure_ascii=False, default=_jsonable) + "\n")
    except OSError as e:
        raise InputError(f"--output {output}: cannot write ({e.strerror})") from None
    click.echo(f"wrote {len(records)} record(s) to {output}", err=True)


def write_array(array: np.ndarray, output: Path) -> None:
    try:
        np.save(output, array)
    except OSError as e:
        raise InputError(f"--output {output}: cannot write ({e.strerror})") from None
    click.echo(f"wrote an array of shape {tuple(array.shape)} to {output}", err=True)


def with_line_numbers(items: Items, records: list[dict]) -> list[dict]:
    """Prefix each record with the input file's line number, when there is a file."""
    return [{"line": n, **r} if n is not None else r for n, r in zip(items.lines, records)]


def model_options(function):
    """--model, --batch-size, --max-length, --device, --dtype."""
    options = [
        click.option("--model", "model", type=click.Path(path_type=Path), default=None,
                     help="Checkpoint directory (Hugging Face layout). Default: the task's default model."),
        click.option("--batch-size", type=click.IntRange(min=1), default=DEFAULT_BATCH_SIZE, show_default=True,
                     help="Texts per forward pass (texts are sorted by length into batches)."),
        click.option("--max-length", type=click.IntRange(min=3), default=None,
                     help="Truncate longer inputs (with a warning counting them). Default: the model's limit."),
        click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N."),
        click.option("--dtype", type=click.Choice(DTYPES), default="float32", show_default=True,
                     help="float32 is exact; bfloat16 is faster on CPUs with AVX-512 BF16; int8 = dynamic quantisation."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def input_options(default_column: str = "text", pair_column: str | None = None):
    """--input, --column (and --pair-column), --output."""
    def decorate(function):
        options = [
            click.option("--input", "input_path", type=click.Path(path_type=Path), default=None,
                         help="Read inputs from a .txt (one a line), .jsonl or .tsv file; empty lines are skipped "
                              "and counted."),
            click.option("--column", default=default_column, show_default=True,
                         help="Column (.tsv header name) or key (.jsonl) holding the text."),
        ]
        if pair_column is not None:
            options.append(click.option("--pair-column", default=pair_column, show_default=True,
                                        help="Column or key holding the second sentence."))
        options.append(click.option("--output", type=click.Path(path_type=Path), default=None,
                                    help="Write to a .json or .jsonl file (default: JSON Lines on stdout)."))
        for option in reversed(options):
            function = option(function)
        return function
    return decorate


def pipeline_from_options(task: str, options: dict, progress: bool):
    from bertforge.pipelines import pipeline

    return pipeline(task, model=options["model"], device=options["device"], dtype=options["dtype"],
                    batch_size=options["batch_size"], max_length=options["max_length"], progress=progress)
