"""Readers for the data formats users have: TSV/CSV/JSONL with named columns, CoNLL columns and
SQuAD JSON. Every problem is reported as an InputError naming the file and line (or question id)."""

from __future__ import annotations

import csv
import gzip
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from bertforge.errors import InputError

log = logging.getLogger(__name__)

# A TSV field wrapped in quotes with inner quotes doubled (pandas' default export, e.g. GLUE RTE).
_CSV_QUOTED = re.compile(r'^"((?:[^"]|"")*)"$')


@dataclass
class TextExample:
    text: str
    text_pair: str | None
    label: str | None
    source: str  # "file:line", for error messages


@dataclass
class TaggedSentence:
    words: list[str]
    tags: list[str] | None
    source: str


@dataclass
class SquadExample:
    id: str
    title: str
    question: str
    context: str
    answers: list[dict] = field(default_factory=list)  # {"text", "answer_start"}, checked against context


def _open_text(path: Path):
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
    # utf-8-sig: GLUE MRPC starts with a byte-order mark that would otherwise stick to the first column name.
    return path.open(encoding="utf-8-sig", newline="")


def _table_rows(path: Path):
    """Yield (line number, {column: value}) for TSV, CSV or JSONL files."""
    name = path.name.removesuffix(".gz")
    with _open_text(path) as f:
        if name.endswith((".jsonl", ".json")):
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise InputError(f"{path}:{number}: not valid JSON ({e.msg})") from None
                if not isinstance(row, dict):
                    raise InputError(f"{path}:{number}: expected a JSON object per line")
                yield number, row
        elif name.endswith(".csv"):
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                return
            for row in reader:
                if row:
                    yield reader.line_num, _row_dict(path, reader.line_num, header, row)
        else:
            # Tab-separated: split on tabs without CSV quoting (SST-2 and MRPC hold unbalanced quotes),
            # then undo pandas-style quoting where a whole field is quoted (RTE).
            header = None
            for number, line in enumerate(f, 1):
                line = line.rstrip("\r\n")
                if not line.strip():
                    continue
                cells = [_unquote(cell) for cell in line.split("\t")]
                if header is None:
                    header = [cell.strip() for cell in cells]
                    continue
                yield number, _row_dict(path, number, header, cells)


def _unquote(cell: str) -> str:
    match = _CSV_QUOTED.match(cell)
    return match.group(1).replace('""', '"') if match else cell


def _row_dict(path: Path, number: int, header: list[str], cells: list[str]) -> dict:
    if len(cells) != len(header):
        raise InputError(f"{path}:{number}: {len(cells)} fields, the header has {len(header)}")
    return dict(zip(header, cells))


def read_text_examples(path: str | Path, text_column: str, text_pair_column: str | None = None,
                       label_column: str | None = None) -> list[TextExample]:
    """Sentence (pair) examples from a TSV/CSV/JSONL file with a header naming the columns.
    Without `label_column` the labels are None (prediction input)."""
    path = Path(path)
    wanted = [c for c in (text_column, text_pair_column, label_column) if c]
    examples = []
    for number, row in _table_rows(path):
        for column in wanted:
            if column not in row:
                raise InputError(f"{path}:{number}: no column {column!r} (columns: {', '.join(map(str, row))})")
        label = row[label_column] if label_column else None
        if label is not None:
            label = str(label).strip()
            if not label:
                raise InputError(f"{path}:{number}: empty label in column {label_column!r}")
        examples.append(TextExample(
            text=str(row[text_column]).strip(),
            text_pair=str(row[text_pair_column]).strip() if text_pair_column else None,
            label=label, source=f"{path}:{number}"))
    return examples


def read_conll(path: str | Path, tag_column: int = -1, with_tags: bool = True) -> list[TaggedSentence]:
    """Sentences of a CoNLL file (one token per line, whitespace-separated columns, blank line
    between sentences, `-DOCSTART-` lines skipped). Every token line must have as many columns
    as the file's first one; the tag is column `tag_column` (default: the last)."""
    path = Path(path)
    sentences, words, tags, start = [], [], [], 0
    columns = None

    def flush():
        if words:
            sentences.append(TaggedSentence(list(words), list(tags) if with_tags else None, f"{path}:{start}"))
            words.clear()
            tags.clear()

    with _open_text(path) as f:
        for number, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                flush()
                continue
            if parts[0] == "-DOCSTART-":
                flush()
                continue
            if columns is None:
                columns = len(parts)
                if with_tags and (columns < 2 or not -columns <= tag_column < columns):
                    raise InputError(f"{path}:{number}: {columns} column(s), no tag column {tag_column} "
                                     f"(expected 'WORD ... TAG')")
            elif len(parts) != columns:
                raise InputError(f"{path}:{number}: malformed CoNLL line {line.strip()!r}: {len(parts)} "
                                 f"columns, the file's first token line has {columns}")
            if not words:
                start = number
            words.append(parts[0])
            if with_tags:
                tags.append(parts[tag_column])
    flush()
    return sentences


def read_squad(path: str | Path) -> tuple[list[SquadExample], int]:
    """Questions of a SQuAD v1.1 JSON file (optionally .gz). Reference answers whose text is not at
    `answer_start` in the context are dropped, counted and logged; the count is returned."""
    path = Path(path)
    with _open_text(path) as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            raise InputError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise InputError(f"{path}: not SQuAD JSON (expected an object with a 'data' list)")
    examples, skipped = [], 0
    for a, article in enumerate(data["data"]):
        for p, paragraph in enumerate(article.get("paragraphs", [])):
            try:
                context = paragraph["context"]
                qas = paragraph["qas"]
            except (KeyError, TypeError):
                raise InputError(f"{path}: data[{a}].paragraphs[{p}] lacks 'context' or 'qas'") from None
            for q, qa in enumerate(qas):
                where = f"{path}: data[{a}].paragraphs[{p}].qas[{q}]"
                if not isinstance(qa, dict) or "question" not in qa:
                    raise InputError(f"{where}: lacks 'question'")
                answers = []
                for answer in qa.get("answers", []):
                    text, start = answer.get("text"), answer.get("answer_start")
                    if not isinstance(text, str) or not isinstance(start, int) or context[start:start + len(text)] != text:
                        skipped += 1
                        log.info("%s (id %s): answer %r is not at answer_start %r; skipped",
                                 where, qa.get("id"), text, start)
                        continue
                    answers.append({"text": text, "answer_start": start})
                examples.append(SquadExample(str(qa.get("id", f"{a}-{p}-{q}")), article.get("title", ""),
                                             qa["question"], context, answers))
    if skipped:
        log.warning("%s: %d reference answers skipped: their text is not at their answer_start", path, skipped)
    return examples, skipped
