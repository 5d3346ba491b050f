"""bertforge.io: every reader reports a bad file as `path:line: message`, and the atomic writer
never leaves a half-written or missing output behind. Expected values come from the standard
library (csv, json, gzip) or from the bytes written by the test, never from the readers."""

from __future__ import annotations

import csv
import gzip
import json
import os
import re
import stat

import numpy as np
import pytest

from bertforge.errors import InputError
from bertforge.io.atomic import (atomic_directory, check_output_dir, check_output_file, save_npy, write_json,
                                 write_jsonl, write_text)
from bertforge.io.datasets import read_conll, read_squad, read_text_examples
from bertforge.io.readers import decoded_lines, read_corpus, read_items, table_rows

LATIN1 = "café".encode("latin-1")  # b"caf\xe9": not UTF-8


def write(path, data: bytes):
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)
    return path


# --- one error format for every reader ------------------------------------------------------------

READERS = {
    "lines.txt": lambda p: list(decoded_lines(p)),
    "items.txt": lambda p: read_items(p, ["text"]),
    "table.tsv": lambda p: read_text_examples(p, "text", label_column="label"),
    "table.csv": lambda p: read_text_examples(p, "text", label_column="label"),
    "table.jsonl": lambda p: read_text_examples(p, "text", label_column="label"),
    "tags.conll": lambda p: read_conll(p),
    "corpus.txt.gz": lambda p: list(read_corpus([p])),
    "corpus.jsonl": lambda p: list(read_corpus([p])),
}
GOOD_FIRST_LINE = {"lines.txt": b"fine\n", "items.txt": b"fine\n", "table.tsv": b"text\tlabel\n",
                   "table.csv": b"text,label\n", "table.jsonl": b'{"text": "a", "label": "1"}\n',
                   "tags.conll": b"EU B-ORG\n", "corpus.txt.gz": b"fine\n", "corpus.jsonl": b'{"text": "a"}\n'}


@pytest.mark.parametrize("name", READERS)
def test_non_utf8_is_reported_with_file_and_line(tmp_path, name):
    bad_line = {"table.jsonl": b'{"text": "' + LATIN1 + b'", "label": "1"}\n',
                "corpus.jsonl": b'{"text": "' + LATIN1 + b'"}\n',
                "table.tsv": LATIN1 + b"\t1\n", "table.csv": LATIN1 + b",1\n",
                "tags.conll": LATIN1 + b" O\n"}.get(name, LATIN1 + b"\n")
    path = write(tmp_path / name, GOOD_FIRST_LINE[name] + bad_line)
    with pytest.raises(InputError) as caught:
        READERS[name](path)
    assert str(caught.value).startswith(f"{path}:2: not UTF-8 text (byte 0xe9 at byte ")


@pytest.mark.parametrize("name", READERS)
def test_missing_file_and_directory_are_named(tmp_path, name):
    with pytest.raises(InputError, match=f"^{tmp_path / name}: no such file$"):
        READERS[name](tmp_path / name)
    (tmp_path / name).mkdir()
    with pytest.raises(InputError, match=f"^{tmp_path / name}: is a directory, not a file$"):
        READERS[name](tmp_path / name)


def test_binary_file_is_reported_as_not_text(tmp_path):
    path = write(tmp_path / "train.tsv", np.arange(50, dtype=np.float64).tobytes() + b"\xff\xfe")
    with pytest.raises(InputError, match=r"train\.tsv:\d+: not UTF-8 text"):
        read_text_examples(path, "sentence", label_column="label")


def test_broken_gzip_names_the_file(tmp_path):
    path = write(tmp_path / "train.tsv.gz", b"text\tlabel\na\t1\n")
    path.write_bytes(path.read_bytes()[:-12])  # cut off the end of the stream
    with pytest.raises(InputError, match=rf"^{path}: not a valid gzip file"):
        read_text_examples(path, "text", label_column="label")


@pytest.mark.parametrize("row, pair, message", [
    (b"   \t1\n", None, "empty text in column 'text'"),
    (b"a fine film\t \t1\n", "pair", "empty text in column 'pair'"),
    ("\u200b\t1\n".encode(), None, "empty text in column 'text'"),  # BERT reads nothing of a zero-width space
], ids=["text", "pair", "zero-width"])
def test_an_example_without_text_is_named_by_line_and_column(tmp_path, row, pair, message):
    header = b"text\tpair\tlabel\n" if pair else b"text\tlabel\n"
    path = write(tmp_path / "train.tsv", header + b"good\t" + (b"fine\t" if pair else b"") + b"1\n" + row)
    with pytest.raises(InputError, match=rf"^{path}:3: {message}$"):
        read_text_examples(path, "text", pair, "label")


def test_csv_rows_match_the_csv_module(tmp_path):
    text = 'text,label\r\n"a, quoted ""field""",1\n"two\nlines",0\n\nplain,1\n'
    path = write(tmp_path / "data.csv", ("\ufeff" + text).encode("utf-8"))  # with a byte-order mark
    expected = [dict(zip(["text", "label"], row)) for row in list(csv.reader(text.splitlines(keepends=True)))[1:] if row]
    assert [row for _, row in table_rows(path)] == expected
    assert [n for n, _ in table_rows(path)] == [2, 3, 6]  # a record's first line: a quoted newline counts


def test_gzipped_tables_read_as_plain_ones(tmp_path):
    data = b"text\tlabel\n\"quoted \"\"whole\"\"\"\t1\nsecond\t0\n"
    plain = [(e.text, e.label) for e in read_text_examples(write(tmp_path / "t.tsv", data), "text", None, "label")]
    packed = [(e.text, e.label) for e in read_text_examples(write(tmp_path / "t.tsv.gz", data), "text", None, "label")]
    assert plain == packed == [('quoted "whole"', "1"), ("second", "0")]


def test_items_from_every_input_format(tmp_path):
    rows = [("first text", "a"), ("second text", "b")]
    files = {"in.txt": "".join(f"{t}\n" for t, _ in rows) + "\n",
             "in.tsv": "text\tid\n" + "".join(f"{t}\t{i}\n" for t, i in rows),
             "in.csv": "text,id\n" + "".join(f"{t},{i}\n" for t, i in rows),
             "in.jsonl": "".join(json.dumps({"text": t, "id": i}) + "\n" for t, i in rows)}
    for name, content in files.items():
        items = read_items(write(tmp_path / name, content.encode()), ["text"])
        assert items.values == [t for t, _ in rows], name
    with pytest.raises(InputError, match=r"in\.jsonl:1: no key 'sentence' \(found: text, id\)"):
        read_items(tmp_path / "in.jsonl", ["sentence"])


def test_corpus_line_numbers_span_chunks(tmp_path):
    lines = [f"line {i} " + "x" * 80 for i in range(30_000)]  # about 2.6 MB: several 1 MB pieces
    data = "\n".join(lines).encode() + b"\n" + LATIN1 + b"\n"
    path = write(tmp_path / "big.txt", data)
    with pytest.raises(InputError, match=rf"big\.txt:{len(lines) + 1}: not UTF-8"):
        list(read_corpus([path]))


# --- SQuAD ----------------------------------------------------------------------------------------

def squad(tmp_path, answers, context="The Broncos beat the Panthers."):
    data = {"data": [{"title": "t", "paragraphs": [{"context": context, "qas": [
        {"id": "q1", "question": "Who won?", "answers": answers}]}]}]}
    path = tmp_path / "squad.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_squad_answer_start_as_integer_string_is_read(tmp_path):
    examples, skipped = read_squad(squad(tmp_path, [{"text": "Broncos", "answer_start": "4"}]))
    assert skipped == 0 and examples[0].answers == [{"text": "Broncos", "answer_start": 4}]


@pytest.mark.parametrize("answers, context, message", [
    ({"text": "Broncos", "answer_start": 4}, "The Broncos.", r"qas\[0\]\.answers: expected a list, found dict"),
    ([{"text": "Broncos", "answer_start": "four"}], "The Broncos.",
     r"qas\[0\]\.answers\[0\]\.answer_start: expected a character offset .* found 'four'"),
    ([{"text": "Broncos", "answer_start": 4}], ["not", "a string"],
     r"context: expected a string, found list"),
])
def test_squad_shape_errors_name_the_entry(tmp_path, answers, context, message):
    path = squad(tmp_path, answers, context)
    with pytest.raises(InputError, match=rf"^{path}: data\[0\]\.paragraphs\[0\]\.{message}"):
        read_squad(path)


def test_squad_invalid_json_names_the_line(tmp_path):
    path = tmp_path / "squad.json"
    path.write_text('{"data": [\n  {"title": "x",\n  oops}\n]}\n', encoding="utf-8")
    with pytest.raises(InputError, match=rf"^{path}:3: not valid JSON"):
        read_squad(path)


def test_a_json_lines_question_without_a_context_says_so(tmp_path):
    """A line of some other JSON Lines file (a corpus's {"text": ...}) said `line 1.context: expected a string,
    found NoneType`."""
    path = tmp_path / "corpus.jsonl"
    path.write_text(json.dumps({"text": "A book."}) + "\n", encoding="utf-8")
    with pytest.raises(InputError, match=rf"^{path}: line 1 lacks a string 'context'$"):
        read_squad(path)


def test_squad_as_json_lines_from_datasets_reads_as_the_json_file_does(tmp_path):
    """Hugging Face datasets exports SQuAD a question per line, with answers as two lists."""
    context = "The Broncos beat the Panthers."
    path = tmp_path / "squad.jsonl"
    path.write_text(json.dumps({"id": "q1", "title": "t", "context": context, "question": "Who won?",
                                "answers": {"text": ["Broncos"], "answer_start": [4]}}) + "\n", encoding="utf-8")
    assert read_squad(path) == read_squad(squad(tmp_path, [{"text": "Broncos", "answer_start": 4}]))
    uneven = write(tmp_path / "uneven.jsonl", (json.dumps({"id": "q1", "context": context, "question": "Who won?",
                                                           "answers": {"text": ["Broncos"], "answer_start": []}})
                                               + "\n").encode())
    with pytest.raises(InputError, match=rf"^{uneven}:1: answers: expected lists 'text' and 'answer_start' of one "
                                         r"length$"):
        read_squad(uneven)
    with pytest.raises(InputError, match=r"squad\.json:2: not valid JSON \(Extra data\); a question per line is read "
                                         r"from a \.jsonl file"):
        read_squad(write(tmp_path / "squad.json", path.read_bytes() * 2))


def test_squad_question_ids_must_be_unique(tmp_path):
    """Before, two questions with one id were scored as one, the other's answer lost."""
    path = squad(tmp_path, [])
    data = json.loads(path.read_text())
    qas = data["data"][0]["paragraphs"][0]["qas"]
    qas.append(dict(qas[0], question="Who lost?"))
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(InputError, match=r"qas\[1\]: question id 'q1' is also data\[0\]\.paragraphs\[0\]\.qas\[0\]'s"):
        read_squad(path)


@pytest.mark.parametrize("value, message", [
    (None, "empty text in column 'text'"), (float("nan"), "empty text in column 'text'"),
    (["a", "list"], "column 'text' holds a list, not text"), (5, "column 'text' holds an int, not text"),
])
def test_a_text_that_is_not_text_is_refused_not_spelt_out(tmp_path, value, message, caplog):
    """Before, JSON null, NaN and lists were read as the texts "None", "nan" and "['a', 'list']". The readers of
    training rows and of inference inputs take a text cell by one rule: a number was the text "5" in one and
    refused in the other, a null refused where an empty line is skipped."""
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps({"text": "fine", "label": 1}) + "\n" + json.dumps({"text": value, "label": 0}) + "\n")
    with pytest.raises(InputError, match=rf"^{path}:2: {re.escape(message)}$"):
        read_text_examples(path, "text", label_column="label")
    if message.startswith("empty"):
        assert read_items(path, ["text"]).values == ["fine"] and "skipped 1 empty line(s)" in caplog.text
    else:
        with pytest.raises(InputError, match=rf"^{path}:2: {re.escape(message)}$"):
            read_items(path, ["text"])


def test_labels_of_one_value_are_one_class_and_a_missing_one_is_empty(tmp_path):
    """pandas stores an int column with a missing value as floats: label 1.0 is class "1"."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "data.parquet"
    pq.write_table(pa.table({"text": ["good", "bad", "fine"], "label": [1.0, 0.0, 1.0]}), path)
    assert [e.label for e in read_text_examples(path, "text", label_column="label")] == ["1", "0", "1"]
    rows = [{"text": "good", "label": 1}, {"text": "meh", "label": None}]
    jsonl = write(tmp_path / "null.jsonl", "".join(json.dumps(r) + "\n" for r in rows).encode())
    with pytest.raises(InputError, match=rf"^{jsonl}:2: empty label in column 'label'$"):
        read_text_examples(jsonl, "text", label_column="label")


@pytest.mark.parametrize("name, content", [("dup.tsv", b"text\tlabel\tlabel\ngood\t1\tnegative\n"),
                                           ("dup.csv", b"text,label,text\ngood,1,bad\n")])
def test_a_column_named_twice_is_refused(tmp_path, name, content):
    """Before, the last column of the name was read without a word."""
    path = write(tmp_path / name, content)
    with pytest.raises(InputError, match=rf"^{path}:1: the column '(label|text)' appears twice in the header"):
        read_text_examples(path, "text", label_column="label")


def test_a_record_is_named_by_its_first_line_and_a_quote_left_open_is_suspected(tmp_path):
    path = write(tmp_path / "open.csv", b'text,label\n"the movie was great,1\nbad film,0\nfine,0\n')
    with pytest.raises(InputError, match=rf"^{path}:2: 1 fields, the header has 2 \(the record runs to line 4: "
                                         r"a quote left open\?\)$"):
        read_text_examples(path, "text", label_column="label")
    tsv = write(tmp_path / "pandas.tsv", b'text\tlabel\n"first line\nsecond line"\t1\n')
    with pytest.raises(InputError, match=r"pandas\.tsv:2: 1 fields, the header has 2 \(a quoted field with a line "
                                         r"break\? TSV files are read a line at a time"):
        read_text_examples(tsv, "text", label_column="label")


def test_old_mac_line_endings_are_named(tmp_path):
    """Before, a file of carriage returns alone read as one header line: "no training examples"."""
    path = write(tmp_path / "cr.tsv", b"text\tlabel\rgood\t1\rbad\t0\r")
    with pytest.raises(InputError, match=rf"^{path}:1: lines end in a carriage return alone"):
        read_text_examples(path, "text", label_column="label")


def test_json_is_read_as_json_lines_everywhere_and_a_json_document_is_named(tmp_path):
    """Before, train-vocab read a .json corpus as plain text (learning its braces and keys), and
    embed refused .json that finetune read."""
    rows = [{"text": "the cat sat"}, {"text": "on the mat"}]
    path = write(tmp_path / "corpus.json", "".join(json.dumps(r) + "\n" for r in rows).encode())
    assert list(read_corpus([path])) == ["the cat sat", "on the mat"]
    assert read_items(path, ["text"]).values == ["the cat sat", "on the mat"]
    document = write(tmp_path / "records.json", json.dumps(rows).encode())
    for read in (lambda: read_text_examples(document, "text", label_column="label"),
                 lambda: read_text_examples(document, "text")):
        with pytest.raises(InputError, match=r"records\.json:1: expected a JSON object (with 'text' )?per line, found "
                                             r"list; JSON Lines hold one object per line"):
            read()


def test_a_table_of_only_a_header_says_so(tmp_path):
    path = write(tmp_path / "header.tsv", b"sentence\tlabel\n")
    with pytest.raises(InputError, match=rf"^{path}: no input \(the file has no rows after its header line\)$"):
        read_items(path, ["text"])


def test_an_empty_id_is_refused(tmp_path):
    """Before, a Parquet null id was written as "" (and a Parquet output then failed after the work)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "ids.parquet"
    pq.write_table(pa.table({"id": [1, None, 3], "text": ["a", "b", "c"]}), path)
    with pytest.raises(InputError, match=rf"^{path}: row 2: empty id in column 'id'"):
        read_items(path, ["text"], id_column="id")


# --- the atomic writer ----------------------------------------------------------------------------

def leftovers(directory) -> list[str]:
    return sorted(name for name in os.listdir(directory) if name.startswith("."))


def test_a_failed_write_keeps_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "out.jsonl"
    write_jsonl(path, [{"text": "good"}])
    before = path.read_bytes()
    with pytest.raises(UnicodeEncodeError):
        write_jsonl(path, [{"text": "fine"}, {"text": "bad \udcff byte"}])  # a lone surrogate, as from argv
    assert path.read_bytes() == before and leftovers(tmp_path) == []

    def records():
        yield {"n": 1}
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_jsonl(path, records())
    assert path.read_bytes() == before and leftovers(tmp_path) == []


def test_written_files_read_back_and_get_normal_permissions(tmp_path):
    write_json(tmp_path / "a.json", {"é": [1, 2]}, indent=1)
    assert json.loads((tmp_path / "a.json").read_text(encoding="utf-8")) == {"é": [1, 2]}
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    save_npy(tmp_path / "v.npy", array)
    assert np.array_equal(np.load(tmp_path / "v.npy"), array) and not (tmp_path / "v.npy.npy").exists()
    (tmp_path / "plain.txt").write_text("x")
    write_text(tmp_path / "atomic.txt", "x")
    mode = lambda name: stat.S_IMODE((tmp_path / name).stat().st_mode)  # noqa: E731
    assert mode("atomic.txt") == mode("plain.txt")


def test_writing_into_a_missing_directory_names_the_path(tmp_path):
    target = tmp_path / "nowhere" / "out.json"
    with pytest.raises(InputError, match=rf"^{target}: cannot write \(No such file or directory\)"):
        write_json(target, {})
    with pytest.raises(InputError, match=rf"^--output {target}: the directory {target.parent} does not exist"):
        check_output_file(target, "--output")
    with pytest.raises(InputError, match="is a directory, not a file"):
        check_output_file(tmp_path, "--output")
    (tmp_path / "a.npy").write_text("")
    with pytest.raises(InputError, match=rf"^--output {tmp_path}/a.npy/x.npy: {tmp_path}/a.npy is a file, not a directory$"):
        check_output_file(tmp_path / "a.npy" / "x.npy", "--output")
    (tmp_path / "file").write_text("")
    with pytest.raises(InputError, match="exists and is not a directory"):
        check_output_dir(tmp_path / "file")
    check_output_dir(tmp_path / "new" / "deeper")  # creatable: fine


def test_atomic_directory_swaps_only_when_complete(tmp_path):
    target = tmp_path / "data"
    with atomic_directory(target) as build:
        (build / "index.json").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_directory(target) as build:
            (build / "index.json").write_text("new")
            raise RuntimeError("the corpus was bad")
    assert (target / "index.json").read_text() == "old" and leftovers(tmp_path) == []
    with atomic_directory(target) as build:
        (build / "index.json").write_text("new")
    assert os.listdir(target) == ["index.json"] and (target / "index.json").read_text() == "new"
    (tmp_path / "plain").mkdir()
    assert stat.S_IMODE(target.stat().st_mode) == stat.S_IMODE((tmp_path / "plain").stat().st_mode)
    (tmp_path / "plain").rmdir()
    assert leftovers(tmp_path) == []
    with pytest.raises(RuntimeError):
        with atomic_directory(tmp_path / "a" / "b" / "data"):
            raise RuntimeError
    assert sorted(os.listdir(tmp_path)) == ["data"]  # no empty parents left behind


def test_a_table_written_with_the_other_separator_is_named(tmp_path):
    """Before, a comma-separated .tsv said only "no column 'sentence' (columns: sentence,label)"."""
    commas, tabs = tmp_path / "train.tsv", tmp_path / "train.csv"
    commas.write_text("sentence,label\ngood,1\n", encoding="utf-8")
    tabs.write_text("sentence\tlabel\ngood\t1\n", encoding="utf-8")
    with pytest.raises(InputError, match=re.escape("(the header holds commas: is it a .csv file?)")):
        read_text_examples(commas, "sentence", label_column="label")
    with pytest.raises(InputError, match=re.escape("(the header holds tabs: is it a .tsv file?)")):
        read_items(tabs, ["sentence"])
