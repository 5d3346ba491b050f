"""Every input format bertforge reads, and one way of reporting what is wrong with a file.

Formats: plain text lines; JSON Lines records; tables (`.tsv`, `.csv` with a header row,
`.jsonl` objects, or `.parquet`); CoNLL columns; SQuAD JSON; training corpora (`.txt` or
`.jsonl`). Any text format may be gzip-compressed (`.gz`). Files are read as bytes and decoded
here, so text that is not UTF-8 is reported with its line instead of a bare `UnicodeDecodeError`
from deep inside a command. Every problem is an `InputError` reading `path:line: message`
(`path: row N: message` for Parquet, which has rows, not lines), or `path: message` when no
line applies (a missing file, a SQuAD entry, a broken gzip stream).
"""

from __future__ import annotations

import csv
import gzip
import itertools
import json
import logging
import math
import re
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bertforge.errors import BertforgeError, InputError
from bertforge.tokenization.basic import has_text

log = logging.getLogger(__name__)

UTF8_BOM = b"\xef\xbb\xbf"
# Plain-text corpora are handed on in pieces of about this many bytes, cut at line ends: large
# enough that the per-piece overhead vanishes, small enough to keep memory flat.
TEXT_CHUNK_BYTES = 1 << 20
# A TSV field wrapped in quotes with inner quotes doubled (pandas' default export, e.g. GLUE RTE).
_CSV_QUOTED = re.compile(r'^"((?:[^"]|"")*)"$')
_GZIP_ERRORS = (gzip.BadGzipFile, EOFError, zlib.error)
JSON_LINES_HINT = ("; JSON Lines hold one object per line, and this looks like one JSON document: pandas "
                   "writes JSON Lines with to_json(orient='records', lines=True)")
# Parquet is read a record batch at a time: memory stays flat however large the file.
PARQUET_BATCH_ROWS = 8192


def location(path: str | Path, line: int) -> str:
    """Where a record is: `path:line`, or `path: row N` for a Parquet file (rows counted from 1)."""
    return f"{path}: row {line}" if file_format(path) == ".parquet" else f"{path}:{line}"


def input_error(path: str | Path, message: str, line: int | None = None) -> InputError:
    """The one error format: `path:line: message` (`path: row N: message` for Parquet), or
    `path: message` without a line."""
    return InputError(f"{location(path, line)}: {message}" if line is not None else f"{path}: {message}")


def check_input_file(path: str | Path) -> Path:
    """`path` as a Path, or an error saying it is missing or a directory."""
    path = Path(path)
    if path.is_dir():
        raise input_error(path, "is a directory, not a file")
    if not path.exists():
        raise input_error(path, "no such file")
    return path


def check_distinct_files(paths: Iterable[str | Path | None], what: str | Iterable[str],
                         why: str = "it would be counted twice: give it once") -> None:
    """None of `paths` is the same file as another (by where it resolves to): one given twice would be read, and
    counted, twice without a word. `what` is the option or argument that named them, or one name for each path
    where files of different options must differ (a None path is an option not given); `why` says what the same
    file would do. Nothing is read, so a command checks this before its run card reads the files whole."""
    seen = {}
    for name, path in zip(itertools.repeat(what) if isinstance(what, str) else what, paths):
        if path is None:
            continue
        resolved = Path(path).resolve()
        if resolved in seen:
            first_name, first = seen[resolved]
            if first_name != name:
                raise InputError(f"{name} {path}: the same file as {first_name} {first}; {why}")
            also = "" if str(first) == str(path) else f" (as {first} too)"
            raise InputError(f"{name} {path}: the same file given twice{also}; {why}")
        seen[resolved] = name, path


def check_input_files(paths: Iterable[str | Path], what: str) -> list[Path]:
    """`check_input_file` of each of `paths`, after `check_distinct_files`."""
    paths = list(paths)
    check_distinct_files(paths, what)
    return [check_input_file(path) for path in paths]


def file_format(path: str | Path) -> str:
    """The format suffix, lower-cased, looking through a `.gz`: "data.jsonl.gz" -> ".jsonl"."""
    path = Path(path)
    if path.suffix.lower() == ".gz":
        path = Path(path.stem)
    return path.suffix.lower()


@contextmanager
def _open_bytes(path: Path):
    path = check_input_file(path)
    try:
        handle = gzip.open(path, "rb") if path.suffix.lower() == ".gz" else open(path, "rb")
    except OSError as e:
        raise input_error(path, f"cannot read ({e.strerror})") from None
    try:
        with handle:
            yield handle
    except _GZIP_ERRORS as e:
        raise input_error(path, f"not a valid gzip file ({e})") from None


def decode_text(data: bytes, path: str | Path, first_line: int = 1, error: type[BertforgeError] = InputError) -> str:
    """`data` (starting at line `first_line` of the file `path`) as text, or an `error` naming the line: the one
    not-UTF-8 message, for data and settings files alike."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line_start = data.rfind(b"\n", 0, e.start) + 1
        line = first_line + data.count(b"\n", 0, e.start)
        raise error(f"{location(path, line)}: not UTF-8 text (byte 0x{data[e.start]:02x} at byte "
                    f"{e.start - line_start + 1} of the line); is it a text file? Save it as UTF-8") from None


def decoded_lines(path: str | Path, keep_ends: bool = False) -> Iterator[tuple[int, str]]:
    """(line number, text) for each line of a text file, a leading byte-order mark dropped
    (GLUE MRPC has one that would otherwise stick to the first column name)."""
    path = Path(path)
    with _open_bytes(path) as f:
        for number, raw in enumerate(f, start=1):
            if number == 1:
                raw = raw.removeprefix(UTF8_BOM)
                if b"\r" in raw.rstrip(b"\r\n"):  # read as one line, every row would run together
                    raise input_error(path, "lines end in a carriage return alone (old Mac line endings); "
                                            "save the file with \\n or \\r\\n line endings", number)
            text = decode_text(raw, path, number)
            yield number, text if keep_ends else text.rstrip("\r\n")


def read_text(path: str | Path) -> str:
    """A whole (small) text file."""
    path = Path(path)
    with _open_bytes(path) as f:
        data = f.read()
    return decode_text(data.removeprefix(UTF8_BOM), path)


def jsonl_records(path: str | Path) -> Iterator[tuple[int, object]]:
    """(line number, value) for each non-blank line of a JSON Lines file."""
    for number, line in decoded_lines(path):
        if line.strip():
            yield number, _json_line(path, number, line)


def _json_line(path, number: int, line: str) -> object:
    try:
        return json.loads(line)
    except json.JSONDecodeError as e:
        hint = JSON_LINES_HINT if line.strip() in ("[", "{") else ""
        raise input_error(path, f"not valid JSON ({e.msg}){hint}", number) from None


def table_rows(path: str | Path) -> Iterator[tuple[int, dict]]:
    """(line number, {column: value}) for each row of a table: `.jsonl`/`.json` (one object a
    line), `.parquet` (row numbers from 1, see `parquet_rows`), `.csv` (a header row, quoting as
    the csv module reads it), anything else tab-separated (a header row; split on tabs without CSV
    quoting, because SST-2 and MRPC hold unbalanced quotes, then a field quoted whole, as pandas
    writes RTE, is unquoted)."""
    path = Path(path)
    kind = file_format(path)
    if kind == ".parquet":
        yield from parquet_rows(path)
    elif kind in (".jsonl", ".json"):
        for number, row in jsonl_records(path):
            if not isinstance(row, dict):
                hint = JSON_LINES_HINT if number == 1 and isinstance(row, list) else ""
                raise input_error(path, f"expected a JSON object per line, found {type(row).__name__}{hint}", number)
            yield number, row
    elif kind == ".csv":
        reader = csv.reader(line for _, line in decoded_lines(path, keep_ends=True))
        header, start = None, 1
        try:
            for cells in reader:
                # A record is named by its first line: a quote left open runs it over the lines after.
                first, start = start, reader.line_num + 1
                if not cells:
                    continue
                if header is None:
                    header = _header(path, cells, first)
                    continue
                yield first, _row_dict(path, first, header, cells, reader.line_num)
        except csv.Error as e:
            raise input_error(path, f"not valid CSV ({e})", reader.line_num) from None
    else:
        header = None
        for number, line in decoded_lines(path):
            if not line.strip():
                continue
            cells = [_unquote(cell) for cell in line.split("\t")]
            if header is None:
                header = _header(path, cells, number)
                continue
            yield number, _row_dict(path, number, header, cells)


def parquet_rows(path: str | Path) -> Iterator[tuple[int, dict]]:
    """(row number from 1, {column: value}) for each row of a Parquet file. A null reads as an
    empty string, as an empty cell of a TSV file does; other values keep their Parquet type."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = check_input_file(path)
    number = 0
    try:
        parquet = pq.ParquetFile(path)
        check_unique_columns(path, parquet.schema_arrow.names)
        for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS):
            for row in batch.to_pylist():
                number += 1
                yield number, {column: "" if value is None else value for column, value in row.items()}
    except (pa.ArrowException, OSError) as e:
        # A broken data page is reported at the first row not read; a bad footer, before any row, is the file's.
        raise input_error(path, f"not a readable Parquet file ({e})", number + 1 if number else None) from None


def _unquote(cell: str) -> str:
    match = _CSV_QUOTED.match(cell)
    return match.group(1).replace('""', '"') if match else cell


def _header(path: Path, cells: list[str], number: int) -> list[str]:
    header = [cell.strip() for cell in cells]
    check_unique_columns(path, header, number)
    return header


def other_separator_hint(path: Path, row: dict) -> str:
    """For a missing column: a tab-separated file whose one column holds commas was written as CSV (and the
    other way round)."""
    if len(row) != 1:
        return ""
    name = str(next(iter(row)))
    if file_format(path) == ".csv" and "\t" in name:
        return " (the header holds tabs: is it a .tsv file?)"
    if file_format(path) not in (".csv", ".jsonl", ".json", ".parquet") and "," in name:
        return " (the header holds commas: is it a .csv file?)"
    return ""


def check_unique_columns(path: Path, names: list[str], number: int | None = None) -> None:
    """A column named twice: a dict of the row would keep the last one without a word."""
    twice = next((name for i, name in enumerate(names) if name in names[:i]), None)
    if twice is not None:
        raise input_error(path, f"the column {twice!r} appears twice in the header; give each column its own name",
                          number)


def _row_dict(path: Path, number: int, header: list[str], cells: list[str], last_line: int | None = None) -> dict:
    if len(cells) != len(header):
        if last_line is not None and last_line > number:
            hint = f" (the record runs to line {last_line}: a quote left open?)"
        elif len(cells) < len(header) and '"' in cells[-1]:
            hint = (" (a quoted field with a line break? TSV files are read a line at a time: "
                    "write such texts as CSV, JSON Lines or Parquet)")
        else:
            hint = ""
        raise input_error(path, f"{len(cells)} fields, the header has {len(header)}{hint}", number)
    return dict(zip(header, cells))


# --- training corpora ---------------------------------------------------------------------------

def read_corpus(paths: Iterable[str | Path], what: str = "--input") -> Iterator[str]:
    """The texts of every file in `paths`, in order: pieces of whole lines for text files, the
    `text` field of each record for `.jsonl` and `.json` files (JSON Lines). Any other extension is
    read as plain text. Missing files, and one given twice, are reported at once, before anything is
    read (`what` names the option that gave them)."""
    paths = check_input_files(paths, what)
    return (text for path in paths for text in _corpus_texts(path))


def corpus_jsonl_texts(path: Path, skip: int = 0, on_bytes: Callable[[int], None] | None = None) -> Iterator[str]:
    """The `text` of each record of a JSON Lines corpus that has any (`train-vocab` and `pretrain prepare`
    read it alike), after the first `skip` records, which are passed over unparsed; `on_bytes` is told
    the size of each line read (progress)."""
    records = 0
    for number, line in decoded_lines(path, keep_ends=True):
        if on_bytes is not None:
            on_bytes(len(line.encode("utf-8")))
        if not line.strip():
            continue
        records += 1
        if records <= skip:
            continue
        record = _json_line(path, number, line)
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise input_error(path, 'expected a JSON object with a string "text" field', number)
        if record["text"].strip():
            yield record["text"]


def _corpus_texts(path: Path) -> Iterator[str]:
    if is_jsonl(path):
        yield from corpus_jsonl_texts(path)
        return
    with _open_bytes(path) as f:
        line = 1
        while lines := f.readlines(TEXT_CHUNK_BYTES):
            data = b"".join(lines)
            if line == 1 and data.startswith(UTF8_BOM):
                data = data[len(UTF8_BOM):]
            yield decode_text(data, path, line)
            line += len(lines)


def is_jsonl(path: str | Path) -> bool:
    """Whether a corpus file holds JSON records (`.jsonl`, `.json`, either optionally `.gz`)."""
    return file_format(path) in (".jsonl", ".json")


# --- inference inputs ---------------------------------------------------------------------------

INPUT_SUFFIXES = (".txt", ".jsonl", ".json", ".tsv", ".csv", ".parquet")


@dataclass
class Items:
    """Texts to run a pipeline on, with where they came from."""
    values: list  # strings, or tuples of strings when several columns are read
    lines: list[int | None]  # line number in the input file, row number in a Parquet one (None for TEXT arguments)
    skipped: int = 0
    numbered_by: str = "line"  # what `lines` count: "line", or "row" for a Parquet file
    ids: list | None = None  # the values of the id column, when one was asked for
    first_gap: int | None = None  # the first empty line (row) skipped before a kept one: later items shift up


def read_items(path: str | Path, columns: list[str], id_column: str | None = None,
               options: tuple[str, str] = ("--column", "--pair-column")) -> Items:
    """`columns` (one → strings, two → pairs) of a `.txt` (one item a line; a pair is two
    tab-separated sentences), `.jsonl`/`.json` (objects, or JSON strings for single texts), `.tsv`,
    `.csv` (a header row names the columns) or `.parquet` file. Empty lines and values are
    skipped, counted and logged, so a blank line at the end of a file is harmless. `id_column`
    (tables only) is carried along as is, for outputs keyed by the input's own ids. `options` are the
    command's options that choose the columns, which a missing column's message names."""
    path = check_input_file(path)
    kind = file_format(path)
    if kind not in INPUT_SUFFIXES:
        raise input_error(path, f"unsupported file type {kind or '(none)'}; use {', '.join(INPUT_SUFFIXES)}")
    if id_column is not None and kind == ".txt":
        raise input_error(path, f"a .txt file has no columns, so no id column {id_column!r}: its line numbers "
                                f"are the ids; use a table ({', '.join(INPUT_SUFFIXES[1:])}) for ids of your own")
    numbered_by = "row" if kind == ".parquet" else "line"
    values, numbers, ids, skipped, pending_gap, first_gap = [], [], [], 0, None, None
    for number, fields, row_id in _item_fields(path, kind, columns, id_column, options):
        if not all(map(has_text, fields)):
            if any(map(has_text, fields)):  # half a pair is a mistake, not an empty line
                empty = next(i for i, f in enumerate(fields) if not has_text(f))
                name = ("the first text", "the second text")[empty]
                name += "" if kind == ".txt" else f" ({columns[empty]!r})"
                raise input_error(path, f"{name} of the pair is empty", number)
            skipped += 1
            pending_gap = pending_gap or number
            continue
        first_gap = first_gap or pending_gap
        values.append(fields[0] if len(columns) == 1 else tuple(fields))
        numbers.append(number)
        ids.append(row_id)
    if skipped:
        log.warning("%s: skipped %d empty %s(s)", path, skipped, numbered_by)
    if not values:
        header_only = not skipped and kind in (".tsv", ".csv")  # its columns were never looked at
        raise input_error(path, "no input (the file has " + ("no rows after its header line)" if header_only
                                                            else f"no non-empty {numbered_by}s)"))
    return Items(values, numbers, skipped, numbered_by, ids if id_column is not None else None, first_gap)


def text_cell(path: Path, number: int, column: str, value) -> str:
    """A table cell that holds a text, as every reader of texts takes one: a string; JSON's null and NaN
    (pandas' missing value) are empty; numbers, lists and objects are refused rather than read as their
    Python spelling (a column of them is the wrong column)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if not isinstance(value, str):
        kind = type(value).__name__
        raise input_error(path, f"column {column!r} holds {'an' if kind[0] in 'aeiou' else 'a'} {kind}, not text",
                          number)
    return value


def _item_fields(path: Path, kind: str, columns: list[str], id_column: str | None,
                 options: tuple[str, str]) -> Iterator[tuple[int, list[str], object]]:
    """(line number, the texts of `columns`, the value of `id_column` or None) for each record."""
    if kind == ".txt":
        for number, line in decoded_lines(path):
            fields = line.split("\t") if len(columns) > 1 else [line]
            if line.strip() and len(fields) != len(columns):
                raise input_error(path, f"expected {len(columns)} tab-separated sentences, found {len(fields)}", number)
            yield number, fields, None
        return
    rows = jsonl_records(path) if is_jsonl(path) else table_rows(path)
    wanted = [*columns, id_column] if id_column is not None else columns
    for number, row in rows:
        if isinstance(row, str) and id_column is None and len(columns) == 1:
            yield number, [row], None
            continue
        if not isinstance(row, dict):
            hint = JSON_LINES_HINT if number == 1 and isinstance(row, list) else ""
            raise input_error(path, f"expected a JSON object with {', '.join(map(repr, wanted))} per line, found "
                                    f"{type(row).__name__}{hint}", number)
        absent = [c for c in wanted if c not in row]
        if absent:
            option = "--id-column" if absent[0] == id_column else options[absent[0] in columns[1:]]
            raise input_error(path, f"no {'key' if is_jsonl(path) else 'column'} {absent[0]!r} "
                                    f"(found: {', '.join(map(str, row))}); choose it with {option}"
                                    + other_separator_hint(path, row), number)
        fields = [text_cell(path, number, c, row[c]) for c in columns]
        row_id = row[id_column] if id_column is not None else None
        if id_column is not None and (row_id is None or row_id == ""):  # a Parquet null reads as ""
            raise input_error(path, f"empty id in column {id_column!r}: each row needs one", number)
        yield number, fields, row_id
