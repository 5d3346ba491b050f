"""The inference commands end to end: inputs from arguments and files, outputs to stdout, JSON
Lines and .npy, and one clean `error: ...` line with exit code 2 for every bad input."""

from __future__ import annotations

import json
import logging
import re

import numpy as np
import pytest
from click.testing import CliRunner

from bertforge.cli.main import cli
from bertforge.pipelines import pipeline



def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def json_lines(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def assert_clean_error(result, *fragments):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and "error: " in result.output
    for fragment in fragments:
        assert fragment in result.output, result.output


def _commands(group, path=()):
    import click

    context = click.Context(group)
    for name in group.list_commands(context):
        command = group.get_command(context, name)
        if isinstance(command, click.Group):
            yield from _commands(command, (*path, name))
        else:
            yield (*path, name), command


@pytest.mark.parametrize("path, command", list(_commands(cli)), ids=lambda value: " ".join(value)
                         if isinstance(value, tuple) else "")
def test_every_command_has_help_with_examples_that_use_its_options(path, command):
    result = run(*path, "--help")
    assert result.exit_code == 0 and "Examples:" in result.output, result.output
    name = "bertforge " + " ".join(path) + " "
    examples = [line.strip() for line in command.help.replace("\\\n", " ").splitlines() if name in line]
    assert examples, result.output
    options = {option for parameter in command.params for option in (*parameter.opts, *parameter.secondary_opts)}
    for example in examples:
        flags = re.findall(r"(?<!\S)--[a-z0-9-]+", example.split("#")[0])
        assert set(flags) <= options, (example, set(flags) - options)


def test_tokenize_prints_pieces_ids_and_offsets():
    result = run("tokenize", "I love Paris", "Let us start pretraining the model.")
    first, second = json_lines(result.output)
    assert first["input_ids"] == [101, 1045, 2293, 3000, 102] and first["offsets"][3] == [7, 12]
    assert second["tokens"][4:7] == ["pre", "##train", "##ing"]


@pytest.mark.parametrize("parallel_batches", [1, 2])
def test_embed_file_to_npy_skips_and_counts_empty_lines_at_the_end_only(tmp_path, caplog, parallel_batches):
    """A .npy has no line numbers: an empty line before the last text would shift every vector after it
    (before, it did so with a warning)."""
    source = tmp_path / "sentences.txt"
    source.write_text("A cat sat on the mat.\n\n   \nThe dog slept.\n", encoding="utf-8")
    assert_clean_error(run("embed", "--input", source, "--output", tmp_path / "vectors.npy"),
                       f"error: {source}:2: an empty line: a .npy has a row per vector and no line numbers")
    assert not (tmp_path / "vectors.npy").exists()
    source.write_text("A cat sat on the mat.\nThe dog slept.\n\n   \n", encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        result = run("embed", "--input", source, "--output", tmp_path / "vectors.npy", "--batch-size", 1,
                     "--parallel-batches", parallel_batches)
    assert result.exit_code == 0, result.output
    assert "skipped 2 empty line(s)" in caplog.text
    vectors = np.load(tmp_path / "vectors.npy")
    expected = pipeline("sentence-embedding")(["A cat sat on the mat.", "The dog slept."])
    np.testing.assert_allclose(vectors, expected, atol=1e-5)


def test_embed_tsv_column_words_and_line_numbers(tmp_path):
    table = tmp_path / "data.tsv"
    table.write_text("label\tsentence\n1\tHe got bit by Python\n0\t\n1\tGood film\n", encoding="utf-8")
    result = run("embed", "--input", table, "--column", "sentence", "--level", "word", "--layers", "last-four",
                 "--combine", "concat")
    assert result.exit_code == 0, result.output
    records = json_lines(result.output)
    assert [r["line"] for r in records] == [2, 4]
    assert records[0]["tokens"] == ["He", "got", "bit", "by", "Python"] and records[0]["spans"][4] == [14, 20]
    assert len(records[0]["vectors"][0]) == 4 * 384


def test_fill_mask_and_nsp_commands(tiny_pretraining_checkpoint, tmp_path):
    result = run("fill-mask", "--model", tiny_pretraining_checkpoint, "--top-k", 3, "The [MASK] is red.",
                 "A [MASK] and a [MASK].")
    single, double = json_lines(result.output)
    assert len(single["predictions"]) == 3 and set(single["predictions"][0]) == {"score", "token", "token_str", "sequence"}
    assert len(double["predictions"]) == 2 and len(double["predictions"][1]) == 3
    output = tmp_path / "scores.json"
    result = run("nsp", "--model", tiny_pretraining_checkpoint, "She cooked pasta", "It was delicious",
                 "Turn the radio on", "She bought a new hat", "--output", output)
    assert result.exit_code == 0, result.output
    scores = json.loads(output.read_text())
    assert [s["a"] for s in scores] == ["She cooked pasta", "Turn the radio on"]
    assert all(0 < s["is_next"] < 1 for s in scores)


def test_nsp_reads_pairs_from_a_jsonl_file(tiny_pretraining_checkpoint, tmp_path):
    source = tmp_path / "pairs.jsonl"
    source.write_text('{"text": "A dog.", "text_pair": "It barked."}\n\n{"text": "Rain.", "text_pair": "Sun."}\n')
    result = run("nsp", "--model", tiny_pretraining_checkpoint, "--input", source)
    assert [r["line"] for r in json_lines(result.output)] == [1, 3]


def test_similarity_prints_a_readable_comparison():
    result = run("similarity")
    assert result.exit_code == 0, result.output
    assert "'He got bit by Python'" in result.output and "context-free" in result.output
    assert "(further apart)" in result.output


def test_similarity_names_a_word_truncation_cut_and_an_unchanged_cosine():
    assert_clean_error(run("similarity", "--word", "bank", "word " * 300 + "bank", "a bank", "--max-length", 32),
                       "the word 'bank' lies beyond max_length 32", "where truncation cut it away")
    # an empty sentence is named as the argument it is, not as one the word does not occur in
    assert_clean_error(run("similarity", "--word", "bank", "a bank", " "), "SENTENCES: argument 2 is empty")
    result = run("similarity", "--word", "bank", "the bank", "a bank", "--layer", 0)  # context-free on both sides
    assert result.exit_code == 0 and "context-free 1.000 -> contextual 1.000 (unchanged)" in result.output, result.output


def test_attention_writes_png_and_html(tmp_path):
    result = run("attention", "Paris is a beautiful city", "I love Paris", "--png", tmp_path / "a.png",
                 "--html", tmp_path / "a.html")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "a.png").stat().st_size > 20_000
    assert "beautiful" in (tmp_path / "a.html").read_text(encoding="utf-8")


def test_attention_html_must_be_a_page_so_a_data_file_is_not_overwritten(tmp_path):
    """Before, `--html train.tsv` replaced the training data with the page. (One file for both outputs cannot
    pass either: matplotlib writes no .html, and the page no image format.)"""
    data = tmp_path / "train.tsv"
    data.write_text("sentence\tlabel\nfine\t1\n", encoding="utf-8")
    for html in (data, tmp_path / "a.png"):
        assert_clean_error(run("attention", "Paris", "--html", html), f"--html {html}: use a .html or .htm file")
    assert data.read_text(encoding="utf-8") == "sentence\tlabel\nfine\t1\n" and not (tmp_path / "a.png").exists()


def test_fill_mask_file_names_the_line_of_a_text_whose_masks_truncation_would_cut(tiny_pretraining_checkpoint,
                                                                                   tmp_path):
    path = tmp_path / "masks.txt"
    path.write_text("a [MASK] here\n\nthe [MASK] sat\n" + "word " * 40 + "[MASK]\n", encoding="utf-8")
    assert_clean_error(run("fill-mask", "--model", tiny_pretraining_checkpoint, "--max-length", 32, "--input", path),
                       f"{path}:4: 1 of its 1 [MASK] tokens beyond max_length 32")


def test_attention_png_format_follows_the_suffix_and_unknown_ones_are_refused_first(tmp_path):
    result = run("attention", "Paris", "--png", tmp_path / "grid")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "grid").read_bytes().startswith(b"\x89PNG")  # no suffix: PNG, whatever the temporary file's
    assert run("attention", "Paris", "--png", tmp_path / "a.svg").exit_code == 0
    assert (tmp_path / "a.svg").read_text(encoding="utf-8").lstrip().startswith("<?xml")
    for name in ("a.xyz", "a.html"):
        assert_clean_error(run("attention", "Paris", "--png", tmp_path / name, "--html", tmp_path / "page.html"),
                           f"--png {tmp_path / name}: matplotlib cannot write {name[1:]} files", ".png, .ps, .raw")
    assert not (tmp_path / "page.html").exists()  # refused before anything was written


@pytest.mark.parametrize("name, content, fragments", [
    ("bad.jsonl", '{"text": "fine"}\n{"text": oops}\n', ["bad.jsonl:2: not valid JSON"]),
    ("keys.jsonl", '{"sentence": "x"}\n', ["keys.jsonl:1: no key 'text'"]),
    ("table.tsv", "sentence\tlabel\nok\t1\n", ["no column 'text'", "sentence, label"]),
    ("rows.tsv", "text\tlabel\nok\t1\nbroken\n", ["rows.tsv:3: 1 fields, the header has 2"]),
    ("latin1.txt", "caf\xe9\n".encode("latin-1"), ["latin1.txt:1: not UTF-8"]),
    ("data.xml", "<text/>\n", ["unsupported file type .xml"]),
    ("blank.txt", "\n\n", ["no input"]),
])
def test_bad_input_files_name_the_line(tmp_path, name, content, fragments):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    assert_clean_error(run("embed", "--input", path), *fragments)


def test_bad_requests_give_clean_errors(tiny_pretraining_checkpoint, default_model_dir, tmp_path):
    assert_clean_error(run("fill-mask", "--model", tiny_pretraining_checkpoint, "no mask here"), "no [MASK]")
    assert_clean_error(run("fill-mask", "--model", default_model_dir, "a [MASK]"), "masked-language-model head",
                       "it can do: feature-extraction")
    assert_clean_error(run("nsp", "--model", tiny_pretraining_checkpoint, "one", "two", "three"), "pairs")
    assert_clean_error(run("embed", "--input", tmp_path / "missing.txt"), "missing.txt: no such file")
    assert_clean_error(run("embed"), "give TEXT arguments or --input")
    assert_clean_error(run("embed", "x", "--layers", "top"), "--layers 'top'")
    assert_clean_error(run("embed", "x", "--level", "word", "--output", tmp_path / "w.npy"), "sentence vectors only")
    assert_clean_error(run("embed", "x", "--level", "word", "--pooling", "cls"),
                       "error: --pooling cls makes one vector per text; --level word gives one per word, which nothing pools")
    assert_clean_error(run("embed", "x", "--model", tmp_path / "nowhere"), "nowhere")
    assert_clean_error(run("similarity", "--word", "python", "Python is fun", "I like cake"), "'python' does not occur")
    assert_clean_error(run("attention", "hello"), "--png FILE and/or --html FILE")


def test_long_inputs_are_truncated_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        result = run("embed", "short", "many words " * 50, "--max-length", 32)
    assert result.exit_code == 0
    assert "1 of 2 inputs were longer than 32 tokens and were truncated" in caplog.text


def test_embed_takes_the_models_sentence_transformers_pooling_as_the_pipeline_does(tiny_pretraining_checkpoint,
                                                                                   tmp_path):
    """A sentence-transformers export with [CLS] pooling and no Normalize module: `bertforge embed`, with no
    --pooling or --normalize, gives sentence-transformers' vectors, as the pipeline (and so the server) does."""
    import shutil

    from sentence_transformers import SentenceTransformer

    folder = tmp_path / "cls-model"
    shutil.copytree(tiny_pretraining_checkpoint, folder)
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 128,
                                                                   "pooling_mode_cls_token": True,
                                                                   "pooling_mode_mean_tokens": False}))
    texts = ["A cat sat on the mat.", "The dog slept by the fire all afternoon."]
    reference = SentenceTransformer(str(folder), device="cpu").encode(texts)
    assert np.linalg.norm(reference, axis=1).min() > 1.5  # not normalised: the test can tell
    result = run("embed", *texts, "--model", str(folder))
    assert result.exit_code == 0, result.output
    ours = np.array([row["embedding"] for row in json_lines(result.output)])
    np.testing.assert_allclose(ours, reference, atol=1e-5)
    np.testing.assert_allclose(pipeline("sentence-embedding", model=folder)(texts), reference, atol=1e-5)
    mean = np.array([row["embedding"] for row in json_lines(run("embed", *texts, "--model", str(folder),
                                                                "--pooling", "mean", "--normalize").output)])
    assert np.abs(mean - reference).max() > 0.1 and np.allclose(np.linalg.norm(mean, axis=1), 1)


def test_a_text_bert_reads_nothing_of_is_empty_everywhere(tmp_path, caplog):
    """Zero-width and control characters are dropped by BERT's cleaning: such a text is empty for the
    command line, the input readers and the attention pipeline, as it is for the server and QA."""
    from bertforge.errors import InputError

    assert_clean_error(run("embed", "a cat", "\u200b\u200d"), "error: an empty TEXT argument was given")
    source = tmp_path / "in.txt"
    source.write_text("A cat sat.\n\u200b\nThe dog slept.\n", encoding="utf-8")
    with caplog.at_level(logging.INFO):
        result = run("embed", "--input", source)
    assert result.exit_code == 0 and [r["line"] for r in json_lines(result.output)] == [1, 3], result.output
    with pytest.raises(InputError, match="^attention needs a non-empty sentence$"):
        pipeline("attention")("\u200b")
    with pytest.raises(InputError, match="^the second sentence of the pair is empty$"):
        pipeline("attention")("A cat sat.", "\x00")


def test_a_text_argument_that_is_no_text_names_its_character():
    """The shell's undecodable bytes (surrogate-escaped) are named as bytes, any other lone surrogate as one: the
    description the server's check gives (it said "code point")."""
    assert_clean_error(run("tokenize", "ok", "caf\udce9"),
                       "error: TEXT argument 2 is not valid UTF-8 text (byte 0xe9 at character 4); check the")
    assert_clean_error(run("tokenize", "x\ud800"),
                       "error: TEXT argument 1 is not valid UTF-8 text (lone surrogate U+D800 at character 2); check")


def test_a_pair_needs_room_for_both_sentences(tiny_pretraining_checkpoint):
    """Before, `nsp --max-length 3` cut both sentences away and still printed a score, exit 0; 5 keeps a piece
    of each."""
    pair = ["The cat sat on the mat.", "It was very comfortable there."]
    assert_clean_error(run("nsp", *pair, "--model", tiny_pretraining_checkpoint, "--max-length", 4),
                       "--max-length 4: a pair of sentences needs at least 5 tokens ([CLS] A [SEP] B [SEP])")
    assert run("nsp", *pair, "--model", tiny_pretraining_checkpoint, "--max-length", 5).exit_code == 0
