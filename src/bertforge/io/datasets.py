"""Fine-tuning data: labelled sentences (pairs) from tables, tagged sentences from CoNLL files and
questions from SQuAD JSON, as records the tasks encode. Errors name the file and line, or for
SQuAD the entry (`data[0].paragraphs[1].qas[2]`), in the format of `bertforge.io.readers`."""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

from bertforge.errors import is_whole_number
from bertforge.io.readers import (decoded_lines, file_format, input_error, jsonl_records, location, read_items,
                                  read_text, other_separator_hint, table_rows, text_cell)
from bertforge.tokenization.basic import has_text

log = logging.getLogger(__name__)


@dataclass
class TextExample:
    text: str
    text_pair: str | None
    label: str | None
    source: str  # "file:line" ("file: row N" for Parquet), for error messages
    line: int | None = field(default=None, compare=False)  # of a text to predict on, for its output record


@dataclass
class TaggedSentence:
    words: list[str] | None  # None: a table's sentence, not yet cut into its tagger's words (see `text`)
    tags: list[str] | None
    source: str
    line: int | None = field(default=None, compare=False)  # of a sentence to tag from a table, as above
    text: str | None = field(default=None, compare=False)  # a table's sentence as written


@dataclass
class SquadExample:
    id: str
    title: str
    question: str
    context: str
    answers: list[dict] = field(default_factory=list)  # {"text", "answer_start"}, checked against context
    source: str = field(default="", compare=False)  # the file it was read from, for messages about the questions
    misplaced: int = 0  # reference answers skipped: their text is not at their answer_start


def training_file(examples: list[TextExample] | list[TaggedSentence]) -> str:
    """The file the examples were read from (each `source` is "FILE:LINE"), for a message about them all."""
    return examples[0].source.rsplit(":", 1)[0] if examples else "training data"


def read_text_examples(path: str | Path, text_column: str, text_pair_column: str | None = None,
                       label_column: str | None = None) -> list[TextExample]:
    """Sentence (pair) examples from a TSV/CSV/JSONL/Parquet table naming the columns. Without
    `label_column` (texts to predict on) the labels are None and the file is read as every inference
    command reads its input (`read_items`): a .txt file too, empty lines skipped and counted."""
    path = Path(path)
    if label_column is None:
        columns = [text_column, text_pair_column] if text_pair_column else [text_column]
        # predict, the one reader of texts without labels, chooses the columns with these options
        items = read_items(path, columns, options=("--text-column", "--text-pair-column"))
        return [TextExample(*((value, None) if isinstance(value, str) else value), None, location(path, line), line)
                for value, line in zip(items.values, items.lines)]
    wanted = [c for c in (text_column, text_pair_column, label_column) if c]
    examples = []
    for number, row in table_rows(path):
        for column in wanted:
            if column not in row:
                raise input_error(path, f"no column {column!r} (columns: {', '.join(map(str, row))})"
                                  + other_separator_hint(path, row), number)
        label = None
        if label_column:
            label = _label_cell(path, number, label_column, row[label_column])
            if not label:
                raise input_error(path, f"empty label in column {label_column!r}", number)
        texts = {column: text_cell(path, number, column, row[column]).strip()
                 for column in (text_column, text_pair_column) if column}
        for column, text in texts.items():
            # nothing to read: as a training row it teaches noise, as an input it gets a made-up label
            if not has_text(text):
                raise input_error(path, f"empty text in column {column!r}", number)
        examples.append(TextExample(text=texts[text_column], text_pair=texts.get(text_pair_column),
                                    label=label, source=location(path, number)))
    return examples


def _label_cell(path: Path, number: int, column: str, value) -> str:
    """A label cell as text: numbers are labels too, and a whole float is the integer it holds, so that
    labels 1 and 1.0 (an int column with a missing value, in pandas) are one class."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, int) or (isinstance(value, float) and not math.isnan(value)):
        return str(value)
    return text_cell(path, number, column, value).strip()


def read_sentences(path: str | Path, text_column: str) -> list[TaggedSentence]:
    """Sentences to tag from a table's text column, as written: which words they hold is the model's tokenizer's
    to say (its special tokens stay whole), so `tasks.ner.cut_into_words` cuts them once it is loaded."""
    return [TaggedSentence(None, None, e.source, e.line, e.text) for e in read_text_examples(path, text_column)]


# Where a file meant as a text a line is read as CoNLL: predict --task ner tags a table's sentences.
SENTENCE_TABLES_HINT = "; sentences of several words a line are read from a table (.jsonl, .csv, .parquet) with --text-column"


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

    for number, line in decoded_lines(path):
        parts = line.split()
        if not parts or parts[0] == "-DOCSTART-":
            flush()
            continue
        if columns is None:
            columns = len(parts)
            if with_tags and (columns < 2 or not -columns <= tag_column < columns):
                raise input_error(path, f"{columns} column(s), no tag column {tag_column} (expected 'WORD ... TAG')",
                                  number)
            if with_tags and tag_column % columns == 0:
                raise input_error(path, f"tag column {tag_column} is the words' column (0); choose the tags' "
                                        f"with --tag-column", number)
        elif len(parts) != columns:
            raise input_error(path, f"malformed CoNLL line {line.strip()!r}: {len(parts)} columns, the file's "
                                    f"first token line has {columns}" + ("" if with_tags else SENTENCE_TABLES_HINT),
                              number)
        if not words:
            start = number
        words.append(parts[0])
        if with_tags:
            tags.append(parts[tag_column])
    flush()
    if not with_tags and sentences and columns > 1 and all(len(s.words) == 1 for s in sentences):
        # a text a line (as predict reads texts to classify), blank lines between: no CoNLL sentence is one word
        raise input_error(path, f"read as CoNLL (a word a line, in its first column), every sentence is one line of "
                                f"{columns} words, and only its first word would be tagged" + SENTENCE_TABLES_HINT,
                          int(sentences[0].source.rsplit(":", 1)[1]))
    if not with_tags and len(sentences) == 1 and columns > 1:
        log.warning("%s: read as CoNLL (a word a line, in its first column): one sentence of %d words from %d lines of "
                    "%d columns%s", path, len(sentences[0].words), len(sentences[0].words), columns,
                    SENTENCE_TABLES_HINT)
    return sentences


def read_squad(path: str | Path) -> tuple[list[SquadExample], int]:
    """Questions of a SQuAD v1.1 JSON file, or of JSON Lines with a question per line as Hugging Face
    `datasets` exports SQuAD (`"answers": {"text": [...], "answer_start": [...]}`); optionally .gz.
    Reference answers whose text is not at `answer_start` in the context are dropped, counted and
    logged; the count is returned. An `answer_start` written as an integer-valued string ("42") is
    read as that integer. Question ids must be unique: predictions are keyed by them."""
    path = Path(path)
    examples, skipped, seen = [], 0, {}
    for where, qa, context, title in _squad_questions(path):
        misplaced = skipped
        if not isinstance(qa.get("question"), str):
            raise input_error(path, f"{where} lacks a string 'question'")
        if not has_text(qa["question"]):
            raise input_error(path, f"{where}.question is empty")
        question_id = str(qa.get("id", where))
        if question_id in seen:
            raise input_error(path, f"{where}: question id {question_id!r} is also {seen[question_id]}'s; "
                                    f"ids must be unique (answers are matched to questions by id)")
        seen[question_id] = where
        answers = []
        for answer in _answers(path, where, qa.get("answers", [])):
            text, start = answer["text"], answer["answer_start"]
            if context[start:start + len(text)] != text:
                skipped += 1
                log.info("%s: %s (id %s): answer %r is not at answer_start %d; skipped",
                         path, where, question_id, text, start)
                continue
            answers.append(answer)
        examples.append(SquadExample(question_id, str(title or ""), qa["question"], context, answers, str(path),
                                     skipped - misplaced))
    if skipped:
        log.warning("%s: %d reference answers skipped: their text is not at their answer_start", path, skipped)
    return examples, skipped


def _squad_questions(path: Path):
    """(where the question is, the question's object, its context, its article's title) for each question
    of the file: `data[0].paragraphs[1].qas[2]`, or `line 3` of JSON Lines. Contexts are checked here,
    a paragraph without questions included."""
    if file_format(path) == ".jsonl":
        for number, record in jsonl_records(path):
            where = f"line {number}"
            if not isinstance(record, dict):
                raise input_error(path, "expected a JSON object (a question) per line", number)
            answers = record.get("answers", [])
            if isinstance(answers, dict):  # datasets' columns: {"text": [...], "answer_start": [...]}
                texts, starts = answers.get("text"), answers.get("answer_start")
                if not isinstance(texts, list) or not isinstance(starts, list) or len(texts) != len(starts):
                    raise input_error(path, "answers: expected lists 'text' and 'answer_start' of one length", number)
                record = dict(record, answers=[{"text": t, "answer_start": a} for t, a in zip(texts, starts)])
            yield where, record, _context(path, where, record.get("context")), record.get("title")
        return
    try:
        data = json.loads(read_text(path))
    except json.JSONDecodeError as e:
        hint = "; a question per line is read from a .jsonl file" if e.msg == "Extra data" else ""
        raise input_error(path, f"not valid JSON ({e.msg}){hint}", e.lineno) from None
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise input_error(path, "not SQuAD JSON (expected an object with a 'data' list)")
    for a, article in enumerate(data["data"]):
        paragraphs = article.get("paragraphs") if isinstance(article, dict) else None
        if not isinstance(paragraphs, list):
            raise input_error(path, f"data[{a}]: expected an object with a 'paragraphs' list")
        for p, paragraph in enumerate(paragraphs):
            where = f"data[{a}].paragraphs[{p}]"
            if not isinstance(paragraph, dict) or "context" not in paragraph or "qas" not in paragraph:
                raise input_error(path, f"{where} lacks 'context' or 'qas'")
            context = _context(path, where, paragraph["context"])
            if not isinstance(paragraph["qas"], list):
                raise input_error(path, f"{where}.qas: expected a list, found {type(paragraph['qas']).__name__}")
            for q, qa in enumerate(paragraph["qas"]):
                if not isinstance(qa, dict):
                    raise input_error(path, f"{where}.qas[{q}] lacks a string 'question'")
                yield f"{where}.qas[{q}]", qa, context, article.get("title")


def _context(path: Path, where: str, context) -> str:
    if context is None:  # no key (JSON Lines): named as a missing question is, not as Python's "found NoneType"
        raise input_error(path, f"{where} lacks a string 'context'")
    if not isinstance(context, str):
        raise input_error(path, f"{where}.context: expected a string, found {type(context).__name__}")
    if not has_text(context):  # nothing to answer from: every answer would be empty
        raise input_error(path, f"{where}.context is empty")
    return context


def _answers(path: Path, entry: str, answers) -> list[dict]:
    """The {"text", "answer_start"} of each answer, checked for shape (not yet against the context)."""
    if not isinstance(answers, list):
        raise input_error(path, f"{entry}.answers: expected a list, found {type(answers).__name__}")
    checked = []
    for i, answer in enumerate(answers):
        where = f"{entry}.answers[{i}]"
        if not isinstance(answer, dict) or not isinstance(answer.get("text"), str):
            raise input_error(path, f"{where}: expected an object with a string 'text'")
        start = answer.get("answer_start")
        if isinstance(start, str) and start.strip().isdigit():
            start = int(start)
        if not is_whole_number(start):
            raise input_error(path, f"{where}.answer_start: expected a character offset (an integer >= 0), "
                                    f"found {start!r}")
        checked.append({"text": answer["text"], "answer_start": start})
    return checked
